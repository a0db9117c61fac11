//! Rating: a rate deck (CSV) matched by longest prefix on the E.164 destination, in a digit
//! trie so a lookup costs the length of the number whatever the deck's size. Money is held
//! in millionths (i64) so no charge is ever off by a float's rounding.

use std::fmt;

/// How a rate applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateType {
    PerMinute,
    PerSecond,
    PerCall,
}

impl RateType {
    pub fn as_str(self) -> &'static str {
        match self {
            RateType::PerMinute => "perMinute",
            RateType::PerSecond => "perSecond",
            RateType::PerCall => "perCall",
        }
    }

    fn parse(s: &str) -> Option<RateType> {
        match s.trim().to_ascii_lowercase().replace(['_', '-', ' '], "").as_str() {
            "perminute" | "minute" | "min" => Some(RateType::PerMinute),
            "persecond" | "second" | "sec" => Some(RateType::PerSecond),
            "percall" | "call" | "flat" => Some(RateType::PerCall),
            _ => None,
        }
    }
}

/// An amount in millionths of the currency unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Micros(pub i64);

impl Micros {
    /// `0.0125` -> 12500; at most 6 decimals, no exponent, no sign games.
    pub fn parse(s: &str) -> Option<Micros> {
        let s = s.trim();
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if (int.is_empty() && frac.is_empty()) || frac.len() > 6 || int.len() > 12 {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let whole: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_val: i64 =
            if frac.is_empty() { 0 } else { frac.parse::<i64>().ok()? * 10_i64.pow(6 - frac.len() as u32) };
        let v = whole * 1_000_000 + frac_val;
        Some(Micros(if neg { -v } else { v }))
    }
}

impl fmt::Display for Micros {
    /// Shortest exact decimal: 12500 -> "0.0125", 2_000_000 -> "2".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.unsigned_abs();
        let (whole, frac) = (v / 1_000_000, v % 1_000_000);
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// One row of the deck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub prefix: String,
    pub country_code: String,
    pub country: String,
    pub primary_band_type: String,
    pub sub_band_type: String,
    pub charge_band: String,
    pub connect_charge: Micros,
    pub rate: Micros,
    pub rate_type: RateType,
    /// Seconds billed for the first increment, then per increment (e.g. 60/60, 1/1, 30/6).
    pub first_increment: u32,
    pub next_increment: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate deck line {line}: {message}")]
pub struct DeckError {
    pub line: usize,
    pub message: String,
}

/// The CSV columns, in order; a header line naming them is expected (and checked).
pub const DECK_COLUMNS: [&str; 11] = [
    "prefix",
    "country_code",
    "country",
    "primary_band_type",
    "sub_band_type",
    "charge_band",
    "connect_charge",
    "rate",
    "rate_type",
    "first_increment",
    "next_increment",
];

/// A digit trie over the prefixes: `nodes[i]` holds the child index per digit (0 = none)
/// and the rate ending there.
#[derive(Default)]
pub struct RateDeck {
    children: Vec<[u32; 10]>,
    rate_at: Vec<Option<u32>>,
    rates: Vec<Rate>,
}

impl fmt::Debug for RateDeck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RateDeck({} prefixes)", self.rates.len())
    }
}

impl RateDeck {
    /// Parses the CSV (header first). A repeated prefix is an error: which row would win
    /// would otherwise depend on file order.
    pub fn parse(text: &str) -> Result<RateDeck, DeckError> {
        let mut deck = RateDeck { children: vec![[0; 10]], rate_at: vec![None], rates: Vec::new() };
        let mut lines =
            text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let (hline, header) = lines.next().ok_or(DeckError { line: 1, message: "empty rate deck".into() })?;
        let names: Vec<String> = header.split(',').map(|h| h.trim().to_ascii_lowercase()).collect();
        if names != DECK_COLUMNS {
            return Err(DeckError { line: hline + 1, message: format!("header must be {}", DECK_COLUMNS.join(",")) });
        }
        for (i, line) in lines {
            let err = |message: String| DeckError { line: i + 1, message };
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if cols.len() != DECK_COLUMNS.len() {
                return Err(err(format!("{} columns, expected {}", cols.len(), DECK_COLUMNS.len())));
            }
            let prefix = cols[0];
            if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(format!("prefix '{prefix}' is not digits")));
            }
            let money = |k: usize| {
                Micros::parse(cols[k]).ok_or_else(|| err(format!("{} '{}' is not an amount", DECK_COLUMNS[k], cols[k])))
            };
            let secs = |k: usize| {
                cols[k].parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    err(format!("{} '{}' is not a whole number of seconds > 0", DECK_COLUMNS[k], cols[k]))
                })
            };
            let rate = Rate {
                prefix: prefix.to_string(),
                country_code: cols[1].to_string(),
                country: cols[2].to_string(),
                primary_band_type: cols[3].to_string(),
                sub_band_type: cols[4].to_string(),
                charge_band: cols[5].to_string(),
                connect_charge: money(6)?,
                rate: money(7)?,
                rate_type: RateType::parse(cols[8])
                    .ok_or_else(|| err(format!("rate_type '{}' is not perMinute, perSecond or perCall", cols[8])))?,
                first_increment: secs(9)?,
                next_increment: secs(10)?,
            };
            let node = deck.node_for(prefix);
            if deck.rate_at[node].is_some() {
                return Err(err(format!("prefix {prefix} appears twice")));
            }
            deck.rate_at[node] = Some(deck.rates.len() as u32);
            deck.rates.push(rate);
        }
        Ok(deck)
    }

    fn node_for(&mut self, prefix: &str) -> usize {
        let mut node = 0usize;
        for d in prefix.bytes().map(|b| (b - b'0') as usize) {
            let next = self.children[node][d];
            node = if next == 0 {
                self.children.push([0; 10]);
                self.rate_at.push(None);
                let id = self.children.len() - 1;
                self.children[node][d] = id as u32;
                id
            } else {
                next as usize
            };
        }
        node
    }

    pub fn len(&self) -> usize {
        self.rates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// The rate of the longest prefix of `digits` (E.164, digits only).
    pub fn lookup(&self, digits: &str) -> Option<&Rate> {
        let mut node = 0usize;
        let mut best = self.rate_at[0];
        for b in digits.bytes() {
            if !b.is_ascii_digit() {
                return None;
            }
            let next = self.children[node][(b - b'0') as usize];
            if next == 0 {
                break;
            }
            node = next as usize;
            best = self.rate_at[node].or(best);
        }
        best.map(|i| &self.rates[i as usize])
    }
}

/// A dialled number as E.164 digits: `+44 20 7123-4567` and `0044207…` give `44207…`; a
/// national `020 7…` takes `default_country_code`. SIP URIs, letters and short codes (fewer
/// than 7 digits after normalizing) are not rated.
pub fn e164(number: &str, default_country_code: Option<&str>) -> Option<String> {
    let n = number.trim();
    let n = n.split('@').next().unwrap_or(n).trim_start_matches("sip:").trim_start_matches("tel:");
    let digits: String = n.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    let (intl, rest) = if let Some(r) = digits.strip_prefix('+') {
        (true, r.to_string())
    } else if let Some(r) = digits.strip_prefix("00") {
        (true, r.to_string())
    } else {
        (false, digits)
    };
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let full = if intl {
        rest
    } else if let (Some(cc), Some(national)) = (default_country_code, rest.strip_prefix('0')) {
        format!("{cc}{national}")
    } else {
        rest
    };
    (full.len() >= 7).then_some(full)
}

/// Seconds billed for `billsec` under the increments: nothing for an unanswered call, at
/// least the first increment, then whole next increments.
pub fn billed_seconds(billsec: i64, first: u32, next: u32) -> i64 {
    if billsec <= 0 {
        return 0;
    }
    let (first, next) = (first as i64, next.max(1) as i64);
    if billsec <= first {
        first
    } else {
        first + (billsec - first + next - 1) / next * next
    }
}

/// The retail fields of a rated call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rated {
    pub quantity: i64,
    pub charge: Micros,
    pub rate: Rate,
}

/// The call's charge: connect charge plus the rate over the billed seconds (per minute,
/// per second) or once (per call), rounded half up to a millionth. Unanswered: nothing.
pub fn rate_call(rate: &Rate, billsec: i64) -> Rated {
    let quantity = billed_seconds(billsec, rate.first_increment, rate.next_increment);
    let charge = if quantity == 0 {
        Micros(0)
    } else {
        let usage = match rate.rate_type {
            RateType::PerMinute => (rate.rate.0 as i128 * quantity as i128 + 30) / 60,
            RateType::PerSecond => rate.rate.0 as i128 * quantity as i128,
            RateType::PerCall => rate.rate.0 as i128,
        };
        Micros(rate.connect_charge.0 + usage as i64)
    };
    Rated { quantity, charge, rate: rate.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECK: &str = "prefix,country_code,country,primary_band_type,sub_band_type,charge_band,connect_charge,rate,rate_type,first_increment,next_increment
# UK
44,GB,United Kingdom,International,Geographic,A,0.01,0.02,perMinute,60,60
447,GB,United Kingdom,International,Mobile,B,0,0.12,perMinute,30,6
4420,GB,United Kingdom,International,London,A,0.01,0.0125,perMinute,1,1
1,US,United States,International,Geographic,C,0,0.0002,perSecond,1,1
800,XX,Freephone,Special,Freephone,F,0.5,0.5,perCall,1,1
";

    fn deck() -> RateDeck {
        RateDeck::parse(DECK).unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let d = deck();
        assert_eq!(d.len(), 5);
        assert_eq!(d.lookup("442071234567").unwrap().prefix, "4420");
        assert_eq!(d.lookup("447700900123").unwrap().prefix, "447");
        assert_eq!(d.lookup("441312345678").unwrap().prefix, "44");
        assert_eq!(d.lookup("15550100").unwrap().prefix, "1");
        assert!(d.lookup("33123456789").is_none(), "no French rate");
        assert!(d.lookup("4420x").is_none());
    }

    #[test]
    fn increments_connect_charge_and_rate_types() {
        let d = deck();
        // 60/60 per minute: 61 s bill as 120 s; 0.01 + 0.02 * 2 = 0.05
        let r = rate_call(d.lookup("441312345678").unwrap(), 61);
        assert_eq!((r.quantity, r.charge.to_string()), (120, "0.05".to_string()));
        // 30/6: 31 s -> 36 s at 0.12/min = 0.072
        let r = rate_call(d.lookup("447700900123").unwrap(), 31);
        assert_eq!((r.quantity, r.charge.to_string()), (36, "0.072".to_string()));
        // a 5 s mobile call is still the first 30 s
        assert_eq!(rate_call(d.lookup("447700900123").unwrap(), 5).quantity, 30);
        // per second: 42 s * 0.0002 = 0.0084
        let r = rate_call(d.lookup("15550100").unwrap(), 42);
        assert_eq!((r.quantity, r.charge.to_string()), (42, "0.0084".to_string()));
        // per call: connect + flat, whatever the length
        let r = rate_call(d.lookup("8001234567").unwrap(), 3600);
        assert_eq!(r.charge.to_string(), "1");
        // unanswered: nothing billed, not even the connect charge
        let r = rate_call(d.lookup("441312345678").unwrap(), 0);
        assert_eq!((r.quantity, r.charge), (0, Micros(0)));
    }

    #[test]
    fn numbers_are_normalized_to_e164() {
        assert_eq!(e164("+44 20 7123-4567", None).as_deref(), Some("442071234567"));
        assert_eq!(e164("00442071234567", None).as_deref(), Some("442071234567"));
        assert_eq!(e164("020 7123 4567", Some("44")).as_deref(), Some("442071234567"));
        assert_eq!(e164("sip:+15550100123@example.com", None).as_deref(), Some("15550100123"));
        assert_eq!(e164("1001", Some("44")), None, "an extension is not rated");
        assert_eq!(e164("conference", None), None);
    }

    #[test]
    fn bad_decks_name_the_line() {
        let bad = DECK.replace("0.0125,perMinute", "cheap,perMinute");
        assert_eq!(RateDeck::parse(&bad).unwrap_err().line, 5);
        let dup = format!("{DECK}44,GB,UK,I,G,A,0,0.01,perMinute,1,1\n");
        assert!(RateDeck::parse(&dup).unwrap_err().message.contains("appears twice"));
        assert!(RateDeck::parse("prefix,rate\n44,0.1").unwrap_err().message.starts_with("header must be"));
        assert!(RateDeck::parse(&DECK.replace("perSecond", "perFortnight")).is_err());
    }

    #[test]
    fn money_parses_and_prints_exactly() {
        assert_eq!(Micros::parse("0.0125"), Some(Micros(12_500)));
        assert_eq!(Micros::parse("2"), Some(Micros(2_000_000)));
        assert_eq!(Micros::parse("1e3"), None);
        assert_eq!(Micros::parse("0.0000001"), None, "below a millionth");
        assert_eq!(Micros(12_500).to_string(), "0.0125");
        assert_eq!(Micros(-1_500_000).to_string(), "-1.5");
    }

    proptest::proptest! {
        #[test]
        fn billing_never_undercharges_and_lookups_never_panic(billsec in 0i64..100_000, first in 1u32..120, next in 1u32..120, number in ".{0,40}") {
            let billed = billed_seconds(billsec, first, next);
            proptest::prop_assert!(billed >= billsec);
            proptest::prop_assert!(billsec == 0 || billed - billsec < first.max(next) as i64);
            let d = deck();
            if let Some(n) = e164(&number, Some("44")) {
                let _ = d.lookup(&n);
            }
            let _ = RateDeck::parse(&number);
        }
    }

    #[test]
    fn a_hundred_thousand_prefixes_load_and_match() {
        let mut csv = DECK_COLUMNS.join(",");
        csv.push('\n');
        for i in 0..100_000u32 {
            csv.push_str(&format!("9{i:05},ZZ,Test,I,G,A,0,0.{:04},perMinute,60,60\n", i % 10_000));
        }
        let d = RateDeck::parse(&csv).unwrap();
        assert_eq!(d.len(), 100_000);
        assert_eq!(d.lookup("912345999").unwrap().prefix, "912345");
    }
}

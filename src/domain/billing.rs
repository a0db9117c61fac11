//! The billing feeder's record: the seed's `billing-feeder.field_names` / `field_types` /
//! `node_name_map__*`, filled from a normalized CDR and its billing `<task>`.

use std::collections::BTreeMap;

use super::ncdr::{NormalizedDoc, TaskDoc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `s`: text.
    Text,
    /// `d`: decimal number.
    Decimal,
}

/// Column layout from config, checked once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingLayout {
    pub columns: Vec<(String, ColumnType)>,
    /// source field -> billing column (`node_name_map__billsec = quantity`).
    pub node_name_map: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingValue {
    Text(String),
    /// A decimal in canonical text form, bound as text so no precision is lost.
    Decimal(String),
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    #[error("billing-feeder.field_names must include uuid (the idempotency key)")]
    NoUuidColumn,
    #[error("billing column '{0}' is not a valid column name (letters, digits, '_')")]
    BadColumn(String),
    #[error("billing field '{field}' = '{value}' is not a decimal number")]
    NotANumber { field: String, value: String },
    #[error("normalized CDR has no uuid")]
    NoUuid,
}

impl BillingLayout {
    pub fn new(
        names: &[String],
        types: &[String],
        node_name_map: BTreeMap<String, String>,
    ) -> Result<BillingLayout, BillingError> {
        let mut columns = Vec::with_capacity(names.len());
        for (name, ty) in names.iter().zip(types) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(BillingError::BadColumn(name.clone()));
            }
            columns.push((name.clone(), if ty == "d" { ColumnType::Decimal } else { ColumnType::Text }));
        }
        if !columns.iter().any(|(n, _)| n == "uuid") {
            return Err(BillingError::NoUuidColumn);
        }
        Ok(BillingLayout { columns, node_name_map })
    }

    /// One value per column: the billing task's own child element first, then a CDR field
    /// mapped onto the column, then the CDR field of the same name; missing or empty is NULL.
    pub fn row(&self, doc: &NormalizedDoc, task: &TaskDoc) -> Result<Vec<BillingValue>, BillingError> {
        if doc.field("uuid").is_none_or(|u| u.is_empty()) {
            return Err(BillingError::NoUuid);
        }
        self.columns
            .iter()
            .map(|(column, ty)| {
                let mapped =
                    self.node_name_map.iter().filter(|(_, dst)| *dst == column).find_map(|(src, _)| doc.field(src));
                let value = task.param(column).map(str::to_string).or(mapped).or_else(|| doc.field(column));
                match (value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()), ty) {
                    (None, _) => Ok(BillingValue::Null),
                    (Some(v), ColumnType::Text) => Ok(BillingValue::Text(v)),
                    (Some(v), ColumnType::Decimal) if is_decimal(&v) => Ok(BillingValue::Decimal(v)),
                    (Some(v), ColumnType::Decimal) => Err(BillingError::NotANumber { field: column.clone(), value: v }),
                }
            })
            .collect()
    }
}

/// `-12`, `0.02`, `+3.5`: what a DECIMAL column takes as text on both engines.
fn is_decimal(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && int.len() <= 20
        && frac.len() <= 10
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> NormalizedDoc {
        let data = [("uuid", "u-1"), ("billsec", "61"), ("answer_epoch", "1700000005"), ("retailRate", "0.02")];
        NormalizedDoc { data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), tasks: vec![] }
    }

    fn layout(names: &str, types: &str) -> BillingLayout {
        let split = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        let map = [("billsec".to_string(), "quantity".to_string())].into();
        BillingLayout::new(&split(names), &split(types), map).unwrap()
    }

    #[test]
    fn columns_fill_from_task_then_mapping_then_field() {
        let l = layout("uuid,quantity,answer_stamp,retailRate,lcr_carrier", "s,d,s,d,s");
        let no_params = TaskDoc { task_type: "billing".into(), params: vec![] };
        let row = l.row(&doc(), &no_params).unwrap();
        assert_eq!(
            row,
            vec![
                BillingValue::Text("u-1".into()),
                BillingValue::Decimal("61".into()),
                BillingValue::Text("2023-11-14 22:13:25".into()),
                BillingValue::Decimal("0.02".into()),
                BillingValue::Null,
            ]
        );
        let with_param = TaskDoc { task_type: "billing".into(), params: vec![("quantity".into(), "60".into())] };
        assert_eq!(l.row(&doc(), &with_param).unwrap()[1], BillingValue::Decimal("60".into()));
    }

    #[test]
    fn bad_numbers_and_layouts_are_named() {
        let l = layout("uuid,retailRate", "s,d");
        let mut d = doc();
        d.data[3].1 = "two cents".into();
        let task = TaskDoc { task_type: "billing".into(), params: vec![] };
        assert_eq!(
            l.row(&d, &task).unwrap_err(),
            BillingError::NotANumber { field: "retailRate".into(), value: "two cents".into() }
        );
        let names = ["quantity".to_string()];
        assert_eq!(BillingLayout::new(&names, &["d".into()], BTreeMap::new()), Err(BillingError::NoUuidColumn));
        let bad = ["uuid".to_string(), "x; DROP".to_string()];
        assert!(matches!(
            BillingLayout::new(&bad, &["s".into(), "s".into()], BTreeMap::new()),
            Err(BillingError::BadColumn(_))
        ));
        assert!(is_decimal("-0.5") && is_decimal("3") && !is_decimal(".") && !is_decimal("1e5"));
    }
}

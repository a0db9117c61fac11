//! Which leg a CDR is and which legs it names: the bridge role, loopback halves, the
//! caller-ID flip, the peer uuids (FORMAT.md §5).

use super::Leg;
use crate::domain::cdr::RawCdr;
use crate::domain::intake::canonical_uuid;

/// Variables that name another leg of the same call (FORMAT.md §5). `call_uuid` is not a
/// call id, but whatever it names is a leg of this call.
const PEER_VARIABLES: [&str; 9] = [
    "originator",
    "originating_leg_uuid",
    "bridge_uuid",
    "other_leg_uuid",
    "signal_bond",
    "last_bridge_to",
    "call_uuid",
    "other_loopback_leg_uuid",
    "other_loopback_from_uuid",
];

/// The uuids of the other legs a CDR names: its link variables and its peer caller profiles.
pub(super) fn peers_of(raw: &RawCdr, own: &[u8; 16]) -> Vec<[u8; 16]> {
    let profiles = raw.callflows.iter().flat_map(|c| c.profile.originator.iter().chain(&c.profile.originatee));
    let named = PEER_VARIABLES.iter().flat_map(|k| raw.vars(k)).chain(profiles.filter_map(|p| p.get("uuid")));
    let mut peers: Vec<[u8; 16]> = named.filter_map(|v| canonical_uuid(v.trim())).filter(|u| u != own).collect();
    peers.sort();
    peers.dedup();
    peers
}

/// The caller id a leg presented when FreeSWITCH flipped its caller profile
/// (`channel_cid_flipped=yes`): `switch_channel_flip_cid()` (switch_channel.c), called for
/// legs it originates — `originate`, API/ESL calls, outbound legs given an inline extension —
/// moves the profile's `callee_id_*` into `caller_id_*`, so the profile then names the callee.
/// Before it does, it saves the presented value as `pre_transfer_caller_id_*`; the value
/// originate was told to present is `origination_caller_id_*`; an unbridged flip swaps the old
/// value into the profile's `callee_id_*`; SIP and the network still carry it as
/// `sip_from_user` / `ani` (numbers only). The first of these that is set wins. `part` is
/// "number" or "name". None when the leg was not flipped.
pub fn presented(raw: &RawCdr, part: &str) -> Option<String> {
    let flipped = raw.var("channel_cid_flipped").is_some_and(|v| matches!(v.trim(), "yes" | "true" | "1"));
    if !flipped {
        return None;
    }
    let set = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let profile = raw.newest_callflow().map(|c| &c.profile);
    set(raw.var(&format!("pre_transfer_caller_id_{part}")))
        .or_else(|| set(raw.var(&format!("origination_caller_id_{part}"))))
        .or_else(|| set(profile.and_then(|p| p.get(&format!("callee_id_{part}")))))
        .or_else(|| match part {
            "number" => set(raw.var("sip_from_user")).or_else(|| set(raw.var("ani"))),
            _ => None,
        })
}

/// A half of a `loopback/` channel pair (FORMAT.md §5, mod_loopback): `is_loopback`, or a
/// `loopback/…-a` / `-b` channel name — whose time repeats a real leg's. Not the `-a` half of
/// a loopback no leg originated (`originate loopback/…` from the API: mod_loopback sets
/// `loopback_from_uuid` only when a session originates it): that half is where the call
/// starts, and it stands for the caller.
pub fn is_loopback(raw: &RawCdr) -> bool {
    let name = raw
        .var("channel_name")
        .or_else(|| raw.channel_data.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str()))
        .unwrap_or_default();
    let half = raw.var("is_loopback").is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
        || name.starts_with("loopback/");
    let a_half = raw.var("loopback_leg").map_or(name.ends_with("-a"), |l| l.trim() == "A");
    let from_a_leg = ["loopback_from_uuid", "originating_leg_uuid", "originator"]
        .iter()
        .any(|k| raw.var(k).is_some_and(|v| !v.trim().is_empty()));
    let origin = a_half && !from_a_leg;
    half && !origin
}

/// B-leg markers (FORMAT.md §5): an originator caller profile or the variables that
/// FreeSWITCH sets on legs it originated for a bridge.
pub fn leg_of(raw: &RawCdr) -> Leg {
    let has_originator = raw.callflows.iter().any(|c| !c.profile.originator.is_empty());
    let var_marker = ["originator", "originating_leg_uuid"].iter().any(|k| raw.var(k).is_some_and(|v| !v.is_empty()));
    if has_originator || var_marker {
        Leg::B
    } else {
        Leg::A
    }
}

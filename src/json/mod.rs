//! The REST JSON mapping of the `imprint.v2` messages.
//!
//! `build.rs` puts a serde attribute on every generated field that points at
//! the functions here, so decoding goes straight from the response bytes into
//! the prost structs (no intermediate `serde_json::Value` tree) and follows
//! the contract's leniency rules:
//!
//! * unknown fields are ignored (serde's default);
//! * `null` means unset;
//! * an enum value the proto does not know becomes `*_UNSPECIFIED`;
//! * a malformed value (wrong JSON type, unparsable timestamp, out-of-range
//!   integer) leaves that field unset and is counted in [`malformed_values`].
//!
//! Serialization is the reverse for request bodies: unset fields are omitted,
//! enums are written as their REST value, timestamps as RFC 3339.

pub(crate) mod de;
pub(crate) mod ser;

use std::sync::atomic::{AtomicU64, Ordering};

static MALFORMED: AtomicU64 = AtomicU64::new(0);
static UNKNOWN_ENUM: AtomicU64 = AtomicU64::new(0);

/// A proto enum whose REST spelling is the value name without its prefix
/// (`PAYMENT_METHOD_TYPE_CARD` ⇄ `"CARD"`). Implemented by `build.rs`.
pub trait RestEnum: Copy + Into<i32> + TryFrom<i32> {
    /// The enum value for a REST string, if the proto knows it.
    fn from_rest(value: &str) -> Option<Self>;
    /// The REST string of this value (`""` for UNSPECIFIED).
    fn rest_name(self) -> &'static str;
}

/// The REST spelling of a raw enum number, `None` for UNSPECIFIED or unknown.
pub fn rest_name_of<E: RestEnum>(value: i32) -> Option<&'static str> {
    E::try_from(value)
        .ok()
        .map(E::rest_name)
        .filter(|s| !s.is_empty())
}

/// How many malformed values in upstream responses were left unset.
pub fn malformed_values() -> u64 {
    MALFORMED.load(Ordering::Relaxed)
}

/// How many upstream enum values were unknown and mapped to UNSPECIFIED.
pub fn unknown_enum_values() -> u64 {
    UNKNOWN_ENUM.load(Ordering::Relaxed)
}

fn note_malformed(expected: &'static str) {
    MALFORMED.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(expected, "malformed value in upstream JSON left unset");
}

fn note_unknown_enum(value: &str) {
    UNKNOWN_ENUM.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        value,
        "unknown enum value in upstream JSON mapped to UNSPECIFIED"
    );
}

/// `body` with every object member named in `fields` removed at any depth
/// (list items included), and the names that were found; `None` when none
/// was there (or the body is not JSON: decoding it will fail on its own).
pub fn strip_fields(body: &[u8], fields: &[&'static str]) -> Option<(Vec<u8>, Vec<&'static str>)> {
    // Parsed, not searched as text: a key may be written with escapes.
    if fields.is_empty() {
        return None;
    }
    let mut value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let found = remove_fields(&mut value, fields);
    if found.is_empty() {
        return None;
    }
    Some((serde_json::to_vec(&value).ok()?, found))
}

/// Removes every object member named in `fields` from `value` at any depth
/// (list items included); returns the names that were found.
pub fn remove_fields(value: &mut serde_json::Value, fields: &[&'static str]) -> Vec<&'static str> {
    fn strip(
        value: &mut serde_json::Value,
        fields: &[&'static str],
        found: &mut Vec<&'static str>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                for f in fields {
                    if map.remove(*f).is_some() && !found.contains(f) {
                        found.push(f);
                    }
                }
                map.values_mut().for_each(|v| strip(v, fields, found));
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| strip(v, fields, found))
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    strip(value, fields, &mut found);
    found
}

#[cfg(test)]
mod strip_tests {
    #[test]
    fn strips_at_any_depth_and_reports_what() {
        let body = br#"{"data":[{"card":{"last4":"1","pci_details":{"pan":"4111"}}},{"card":{"pci\u005fdetails":{"pan":"5"}}}]}"#;
        let (out, found) = super::strip_fields(body, &["pci_details"]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("pan"), "{text}");
        assert!(text.contains("last4"));
        assert_eq!(found, ["pci_details"]);
        assert!(super::strip_fields(br#"{"card":{}}"#, &["pci_details"]).is_none());
        assert!(super::strip_fields(body, &[]).is_none());
    }
}

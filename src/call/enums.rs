//! Enums as Imprint spells them: `call` takes and prints `"CARD"` where the
//! proto JSON mapping would say `"PAYMENT_METHOD_TYPE_CARD"` (both are
//! accepted as input), so the JSON looks like Imprint's REST JSON.

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

/// Which way to rewrite enum strings.
#[derive(Clone, Copy)]
pub(super) enum Direction {
    /// `"CARD"` → `"PAYMENT_METHOD_TYPE_CARD"` (input).
    ToProto,
    /// `"PAYMENT_METHOD_TYPE_CARD"` → `"CARD"` (output).
    ToRest,
}

/// The enum's value-name prefix, e.g. `PAYMENT_METHOD_TYPE_`.
fn prefix(e: &EnumDescriptor) -> String {
    let mut s = String::new();
    for (i, c) in e.name().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
    }
    s.push('_');
    s
}

fn rewrite_enum(e: &EnumDescriptor, v: &mut Value, dir: Direction) {
    let Value::String(s) = v else { return };
    let prefix = prefix(e);
    match dir {
        Direction::ToProto => {
            if e.get_value_by_name(s).is_none() {
                let full = format!("{prefix}{s}");
                if e.get_value_by_name(&full).is_some() {
                    *s = full;
                }
            }
        }
        Direction::ToRest => {
            if let Some(rest) = s.strip_prefix(&prefix) {
                *s = rest.to_string();
            }
        }
    }
}

fn rewrite_value(kind: &Kind, v: &mut Value, dir: Direction) {
    match kind {
        Kind::Enum(e) => rewrite_enum(e, v, dir),
        Kind::Message(m) => rewrite(m, v, dir),
        _ => {}
    }
}

fn rewrite_field(field: &FieldDescriptor, v: &mut Value, dir: Direction) {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return;
        };
        let value_kind = entry.map_entry_value_field().kind();
        if let Value::Object(map) = v {
            for item in map.values_mut() {
                rewrite_value(&value_kind, item, dir);
            }
        }
    } else if field.is_list() {
        if let Value::Array(items) = v {
            for item in items {
                rewrite_value(&field.kind(), item, dir);
            }
        }
    } else {
        rewrite_value(&field.kind(), v, dir);
    }
}

/// Rewrites the enum strings of a JSON object of message `desc`, in place.
pub(super) fn rewrite(desc: &MessageDescriptor, v: &mut Value, dir: Direction) {
    // Well-known types (Struct, Timestamp) carry no enums of ours.
    if desc.full_name().starts_with("google.protobuf.") {
        return;
    }
    let Value::Object(map) = v else { return };
    for (name, value) in map.iter_mut() {
        let field = desc
            .get_field_by_name(name)
            .or_else(|| desc.get_field_by_json_name(name));
        if let Some(field) = field {
            rewrite_field(&field, value, dir);
        }
    }
}

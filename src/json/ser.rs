//! Serializers named by the serde attributes `build.rs` generates: the REST
//! spelling of enums, RFC 3339 timestamps and `Struct` as a JSON object.

use std::collections::HashMap;

use prost_types::{value::Kind, Struct, Timestamp, Value};
use serde::{
    ser::{Error as _, SerializeMap, SerializeSeq},
    Serialize, Serializer,
};

use super::{rest_name_of, RestEnum};

/// `skip_serializing_if` of enum fields: UNSPECIFIED is never sent.
pub(crate) fn is_unspecified(v: &i32) -> bool {
    *v == 0
}

/// An enum field as its REST value.
pub(crate) fn enumeration<E: RestEnum, S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    match rest_name_of::<E>(*v) {
        Some(name) => s.serialize_str(name),
        None => Err(S::Error::custom(format_args!("unknown enum value {v}"))),
    }
}

/// A `map<string, SomeEnum>` field as an object of REST values.
pub(crate) fn enum_map<E: RestEnum, S: Serializer>(
    v: &HashMap<String, i32>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(v.len()))?;
    for (k, n) in v {
        if let Some(name) = rest_name_of::<E>(*n) {
            map.serialize_entry(k, name)?;
        }
    }
    map.end()
}

/// A timestamp as RFC 3339 with millisecond precision, Imprint's format.
pub(crate) fn timestamp<S: Serializer>(v: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(t) => s.serialize_str(&format_timestamp(t).map_err(S::Error::custom)?),
        None => s.serialize_none(),
    }
}

/// Formats a timestamp as `2025-02-13T19:08:07.000Z`.
pub(crate) fn format_timestamp(t: &Timestamp) -> Result<String, &'static str> {
    let nanos = u32::try_from(t.nanos).map_err(|_| "negative nanos in timestamp")?;
    let dt = time::OffsetDateTime::from_unix_timestamp(t.seconds)
        .map_err(|_| "timestamp out of range")?
        .replace_nanosecond(nanos)
        .map_err(|_| "nanos out of range in timestamp")?;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&format)
        .map_err(|_| "timestamp not representable")
}

/// A `google.protobuf.Struct` field as a JSON object.
pub(crate) fn structure<S: Serializer>(v: &Option<Struct>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(st) => StructRef(st).serialize(s),
        None => s.serialize_none(),
    }
}

struct StructRef<'a>(&'a Struct);
struct ValueRef<'a>(&'a Value);

impl Serialize for StructRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.fields.len()))?;
        for (k, v) in &self.0.fields {
            map.serialize_entry(k, &ValueRef(v))?;
        }
        map.end()
    }
}

impl Serialize for ValueRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.kind {
            None | Some(Kind::NullValue(_)) => s.serialize_unit(),
            Some(Kind::BoolValue(b)) => s.serialize_bool(*b),
            Some(Kind::NumberValue(n)) => {
                // Whole numbers go out as JSON integers: Imprint's amounts
                // and counts are integers, and 5000.0 is not 5000 to every parser.
                if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                    s.serialize_i64(*n as i64)
                } else if n.is_finite() {
                    s.serialize_f64(*n)
                } else {
                    Err(S::Error::custom("non-finite number in Struct"))
                }
            }
            Some(Kind::StringValue(v)) => s.serialize_str(v),
            Some(Kind::ListValue(l)) => {
                let mut seq = s.serialize_seq(Some(l.values.len()))?;
                for v in &l.values {
                    seq.serialize_element(&ValueRef(v))?;
                }
                seq.end()
            }
            Some(Kind::StructValue(st)) => StructRef(st).serialize(s),
        }
    }
}

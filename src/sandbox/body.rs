//! Request bodies: the schemas several endpoints share, and turning a
//! validated body into protos. A leaf (it needs only `http`'s field types),
//! so that every endpoint module can use it without using another endpoint
//! module.

use serde_json::{Map, Value};

use super::http::{opt, Field, Ty};

/// An address, as customers, merchants and orders carry it.
pub(super) const ADDRESS: &[Field] = &[
    opt("street_line1", Ty::Str),
    opt("street_line2", Ty::Str),
    opt("city", Ty::Str),
    opt("state", Ty::Str),
    opt("postal_code", Ty::Str),
    opt("country", Ty::Str),
];

/// Decodes an already validated JSON object into a proto message.
pub(super) fn decode<T: serde::de::DeserializeOwned + Default>(v: &Map<String, Value>) -> T {
    serde_json::from_value(Value::Object(v.clone())).unwrap_or_default()
}

/// Decodes a `metadata` object into a `Struct` through the generated mapping.
#[derive(serde::Deserialize, Default)]
struct StructHolder {
    #[serde(default, deserialize_with = "crate::json::de::structure")]
    metadata: Option<prost_types::Struct>,
}

pub(super) fn metadata_struct(v: Option<&Value>) -> Option<prost_types::Struct> {
    let m = v?.as_object()?;
    decode::<StructHolder>(&Map::from_iter([(
        "metadata".to_string(),
        Value::Object(m.clone()),
    )]))
    .metadata
}

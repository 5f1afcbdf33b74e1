//! Lenient deserializers named by the serde attributes `build.rs` generates.
//!
//! Each function accepts any JSON value: the expected kind is decoded, `null`
//! is unset, anything else is consumed, counted and left unset, so one odd
//! field never fails a whole call.

use std::{collections::HashMap, fmt, marker::PhantomData};

use prost_types::{value::Kind, ListValue, Struct, Timestamp, Value};
use serde::{
    de::{
        self, value::MapAccessDeserializer, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess,
        Visitor,
    },
    Deserialize, Deserializer,
};

use super::{note_malformed, note_unknown_enum, RestEnum};

/// What a scalar field accepts from each JSON kind. Every method defaults to
/// "not this kind" (`None`).
trait Scalar: Sized {
    const EXPECTED: &'static str;
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

impl Scalar for String {
    const EXPECTED: &'static str = "string";
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
}

impl Scalar for i64 {
    const EXPECTED: &'static str = "integer";
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok()
    }
}

impl Scalar for i32 {
    const EXPECTED: &'static str = "32-bit integer";
    fn from_i64(v: i64) -> Option<Self> {
        i32::try_from(v).ok()
    }
    fn from_u64(v: u64) -> Option<Self> {
        i32::try_from(v).ok()
    }
}

impl Scalar for bool {
    const EXPECTED: &'static str = "boolean";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl Scalar for Timestamp {
    const EXPECTED: &'static str = "RFC 3339 timestamp";
    fn from_str(v: &str) -> Option<Self> {
        parse_timestamp(v)
    }
}

/// An enum field: known REST values map to the variant, unknown ones to 0.
struct Enum<E>(i32, PhantomData<E>);

impl<E: RestEnum> Scalar for Enum<E> {
    const EXPECTED: &'static str = "enum string";
    fn from_str(v: &str) -> Option<Self> {
        let n = match E::from_rest(v) {
            Some(e) => e.into(),
            None => {
                if !v.is_empty() {
                    note_unknown_enum(v);
                }
                0
            }
        };
        Some(Enum(n, PhantomData))
    }
}

/// Parses RFC 3339 (`2025-02-13T19:08:07.000Z`, offsets allowed).
pub(crate) fn parse_timestamp(v: &str) -> Option<Timestamp> {
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()?;
    Some(Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    })
}

struct ScalarVisitor<T>(PhantomData<T>);

impl<T: Scalar> ScalarVisitor<T> {
    fn checked<E>(v: Option<T>) -> Result<Option<T>, E> {
        if v.is_none() {
            note_malformed(T::EXPECTED);
        }
        Ok(v)
    }
}

impl<'de, T: Scalar> Visitor<'de> for ScalarVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Self::checked(T::from_str(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::checked(T::from_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::checked(T::from_u64(v))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Self::checked(None)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Self::checked(T::from_bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Self::checked(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Self::checked(None)
    }
}

fn scalar<'de, T: Scalar, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_any(ScalarVisitor::<T>(PhantomData))
}

/// A value that decodes leniently to `Option<Self>`; used for collection
/// elements so one bad element is dropped, not the whole list.
struct Lenient<T>(Option<T>);

impl<'de, T: Scalar> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d).map(Lenient)
    }
}

// Generated attributes name only the kinds the protos use today; the rest
// stay available for the next proto change.
macro_rules! scalar_fns {
    ($($plain:ident $opt:ident: $t:ty;)*) => {$(
        #[allow(dead_code)]
        #[doc = concat!("A `", stringify!($t), "` field; malformed or null → default.")]
        pub(crate) fn $plain<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
            Ok(scalar::<$t, D>(d)?.unwrap_or_default())
        }
        #[doc = concat!("An optional `", stringify!($t), "` field; malformed or null → unset.")]
        #[allow(dead_code)]
        pub(crate) fn $opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$t>, D::Error> {
            scalar::<$t, D>(d)
        }
    )*};
}

scalar_fns! {
    string opt_string: String;
    int64 opt_int64: i64;
    int32 opt_int32: i32;
    boolean opt_boolean: bool;
}

/// A `google.protobuf.Timestamp` field from an RFC 3339 string.
pub(crate) fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    scalar::<Timestamp, D>(d)
}

/// An enum field from its REST value.
pub(crate) fn enumeration<'de, E: RestEnum, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    Ok(scalar::<Enum<E>, D>(d)?.map_or(0, |e| e.0))
}

/// A `map<string, string>` field; non-string values are dropped.
pub(crate) fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<HashMap<String, String>, D::Error> {
    map_of::<String, String, D>(d, |v| v)
}

/// A `map<string, SomeEnum>` field.
pub(crate) fn enum_map<'de, E: RestEnum, D: Deserializer<'de>>(
    d: D,
) -> Result<HashMap<String, i32>, D::Error> {
    map_of::<Enum<E>, i32, D>(d, |e| e.0)
}

fn map_of<'de, T: Scalar, V, D: Deserializer<'de>>(
    d: D,
    f: fn(T) -> V,
) -> Result<HashMap<String, V>, D::Error> {
    struct MapVisitor<T, V>(fn(T) -> V);
    impl<'de, T: Scalar, V> Visitor<'de> for MapVisitor<T, V> {
        type Value = HashMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = HashMap::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((k, Lenient(v))) = map.next_entry::<String, Lenient<T>>()? {
                if let Some(v) = v {
                    out.insert(k, (self.0)(v));
                }
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(HashMap::new())
        }
    }
    let visitor = MapVisitor(f);
    d.deserialize_any(Fallback {
        inner: visitor,
        expected: "object",
    })
}

/// A nested message field: an object decodes, anything else is unset.
pub(crate) fn message<'de, M: DeserializeOwned, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<M>, D::Error> {
    struct MessageVisitor<M>(PhantomData<M>);
    impl<'de, M: DeserializeOwned> Visitor<'de> for MessageVisitor<M> {
        type Value = Option<M>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            M::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Fallback {
        inner: MessageVisitor::<M>(PhantomData),
        expected: "object",
    })
}

/// A repeated message field; elements that are not objects are dropped.
pub(crate) fn messages<'de, M: DeserializeOwned, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<M>, D::Error> {
    struct Element<M>(Option<M>);
    impl<'de, M: DeserializeOwned> Deserialize<'de> for Element<M> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            message(d).map(Element)
        }
    }
    struct SeqVisitor<M>(PhantomData<M>);
    impl<'de, M: DeserializeOwned> Visitor<'de> for SeqVisitor<M> {
        type Value = Vec<M>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(Element(m)) = seq.next_element::<Element<M>>()? {
                match m {
                    Some(m) => out.push(m),
                    None => super::note_malformed("object"),
                }
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(Fallback {
        inner: SeqVisitor::<M>(PhantomData),
        expected: "array",
    })
}

/// A `google.protobuf.Struct` field, built directly from the JSON object.
pub(crate) fn structure<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Struct>, D::Error> {
    struct StructVisitor;
    impl<'de> Visitor<'de> for StructVisitor {
        type Value = Option<Struct>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            ValueVisitor.visit_map(map).map(|v| match v.kind {
                Some(Kind::StructValue(s)) => Some(s),
                _ => None,
            })
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Fallback {
        inner: StructVisitor,
        expected: "object",
    })
}

/// Any JSON value as a `google.protobuf.Value`.
struct ProtoValue(Value);

impl<'de> Deserialize<'de> for ProtoValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(ProtoValue)
    }
}

struct ValueVisitor;

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(value(Kind::BoolValue(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v as f64)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(value(Kind::StringValue(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(value(Kind::StringValue(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(value(Kind::NullValue(0)))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(value(Kind::NullValue(0)))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(ProtoValue(v)) = seq.next_element()? {
            values.push(v);
        }
        Ok(value(Kind::ListValue(ListValue { values })))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = std::collections::BTreeMap::new();
        while let Some((k, ProtoValue(v))) = map.next_entry::<String, ProtoValue>()? {
            fields.insert(k, v);
        }
        Ok(value(Kind::StructValue(Struct { fields })))
    }
}

/// Wraps a visitor that handles one JSON kind (plus null) so that every
/// other kind is consumed, counted as malformed and yields the default.
struct Fallback<V> {
    inner: V,
    expected: &'static str,
}

impl<V> Fallback<V> {
    fn other<T: Default, E>(&self) -> Result<T, E> {
        super::note_malformed(self.expected);
        Ok(T::default())
    }
}

impl<'de, V> Visitor<'de> for Fallback<V>
where
    V: Visitor<'de>,
    V::Value: Default,
{
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if self.expected == "object" {
            return self.inner.visit_map(map);
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.other()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if self.expected == "array" {
            return self.inner.visit_seq(seq);
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.other()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Default::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Default::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.other()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.other()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.other()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.other()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        self.other()
    }
}

//! One serialization pass that splits a request message into path values,
//! query parameters and a JSON body, and checks required fields.
//!
//! serde's derived `Serialize` calls `serialize_field` for each set field and
//! `skip_field` for each unset one, so the pass sees exactly what a caller
//! set, without building any intermediate JSON tree.

use std::fmt;

use serde::{
    ser::{self, Impossible, SerializeStruct},
    Serialize,
};

use super::Route;

/// One reason a request was refused before reaching Imprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, by its proto (= REST) name.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    pub(crate) fn new(field: &str, description: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            description: description.into(),
        }
    }
}

pub(super) struct Fields {
    path: Vec<(&'static str, String)>,
    pub(super) query: Vec<(&'static str, String)>,
    /// `{...}`: every set non-path field as JSON.
    pub(super) body: Vec<u8>,
    pub(super) sensitive_set: bool,
}

impl Fields {
    pub(super) fn path_value(&self, name: &str) -> Option<&str> {
        self.path
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn split<T: Serialize>(value: &T, route: &Route) -> Result<Fields, Vec<FieldViolation>> {
    let mut pass = Pass {
        route,
        fields: Fields {
            path: Vec::new(),
            query: Vec::new(),
            body: Vec::with_capacity(128),
            sensitive_set: false,
        },
        required_seen: 0,
        violations: Vec::new(),
        first: true,
    };
    pass.fields.body.push(b'{');
    if let Err(e) = value.serialize(&mut pass) {
        pass.violations.push(FieldViolation::new("", e.0));
    }
    pass.fields.body.push(b'}');
    for (i, name) in route.required.iter().enumerate() {
        if pass.required_seen & (1 << i) == 0 {
            pass.violations
                .push(FieldViolation::new(name, format!("{name} is required")));
        }
    }
    if pass.violations.is_empty() {
        Ok(pass.fields)
    } else {
        Err(pass.violations)
    }
}

struct Pass<'r> {
    route: &'r Route,
    fields: Fields,
    /// Bit i set: `route.required[i]` was present.
    required_seen: u64,
    violations: Vec<FieldViolation>,
    first: bool,
}

#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}
impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Whether `{key}` is a segment of `template` (a template's variables are
/// whole segments).
fn is_path_param(template: &str, key: &str) -> bool {
    template.match_indices(key).any(|(at, _)| {
        template[..at].ends_with("/{") && template[at + key.len()..].split('/').next() == Some("}")
    })
}

/// The text of a scalar JSON fragment: a string unquoted, a number or bool as is.
fn scalar_text(json: &[u8]) -> Option<String> {
    match json.first()? {
        // Without an escape, a JSON string's text is what the quotes enclose.
        b'"' => match json.get(1..json.len() - 1) {
            Some(text) if json.len() >= 2 && json.ends_with(b"\"") && !text.contains(&b'\\') => {
                String::from_utf8(text.to_vec()).ok()
            }
            _ => serde_json::from_slice::<String>(json).ok(),
        },
        b'{' | b'[' => None,
        _ => String::from_utf8(json.to_vec()).ok(),
    }
}

impl SerializeStruct for &mut Pass<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let route = self.route;
        if let Some(i) = route.required.iter().position(|r| *r == key) {
            self.required_seen |= 1 << i;
        }
        if route.sensitive_request_fields.contains(&key) {
            self.fields.sensitive_set = true;
        }
        if is_path_param(route.path, key) {
            let json = serde_json::to_vec(value).map_err(ser::Error::custom)?;
            let text =
                scalar_text(&json).ok_or_else(|| Error(format!("{key} must be a scalar")))?;
            if text == "." || text == ".." {
                self.violations.push(FieldViolation::new(
                    key,
                    format!("{key} must not be '.' or '..'"),
                ));
            }
            self.fields.path.push((key, text));
            return Ok(());
        }
        let start = self.fields.body.len();
        if !self.first {
            self.fields.body.push(b',');
        }
        serde_json::to_writer(&mut self.fields.body, key).map_err(ser::Error::custom)?;
        self.fields.body.push(b':');
        let value_start = self.fields.body.len();
        if let Err(e) = serde_json::to_writer(&mut self.fields.body, value) {
            self.fields.body.truncate(start);
            self.violations
                .push(FieldViolation::new(key, e.to_string()));
            return Ok(());
        }
        self.first = false;
        let json = &self.fields.body[value_start..];
        // Imprint's pagination `limit` is at least 1 wherever it appears.
        if key == "limit"
            && std::str::from_utf8(json)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|n| n < 1)
        {
            self.violations
                .push(FieldViolation::new(key, "limit must be at least 1"));
        }
        if route.query.contains(&key) {
            let text = scalar_text(json).ok_or_else(|| Error(format!("{key} must be a scalar")))?;
            self.fields.query.push((key, text));
        }
        Ok(())
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), Error> {
        Ok(())
    }

    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

macro_rules! unsupported {
    ($($name:ident($($arg:ty),*) -> $ret:ty;)*) => {$(
        fn $name(self, $(_: $arg),*) -> Result<$ret, Error> {
            Err(Error(concat!("request messages are structs; got ", stringify!($name)).into()))
        }
    )*};
}

impl<'a, 'r> ser::Serializer for &'a mut Pass<'r> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Error> {
        Err(Error("request messages are structs".into()))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(Error("request messages are structs".into()))
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(Error("request messages are structs".into()))
    }

    unsupported! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_are_whole_segments() {
        let t = "/v2/customers/{customer_id}/payment_methods/{id}";
        assert!(is_path_param(t, "customer_id"));
        assert!(is_path_param(t, "id"));
        assert!(!is_path_param(t, "customer"));
        assert!(!is_path_param(t, "payment_methods"));
        assert!(!is_path_param("/v2/{name}:cancel", "name"));
        assert!(!is_path_param("/v2/x{id}", "id"));
    }

    #[test]
    fn scalar_text_unquotes_strings_and_keeps_escapes_exact() {
        assert_eq!(scalar_text(br#""c-1""#).as_deref(), Some("c-1"));
        assert_eq!(scalar_text(br#""a\"b\u00e9/""#).as_deref(), Some("a\"bé/"));
        assert_eq!(scalar_text(br#""""#).as_deref(), Some(""));
        assert_eq!(scalar_text(b"42").as_deref(), Some("42"));
        assert_eq!(scalar_text(b"true").as_deref(), Some("true"));
        assert_eq!(scalar_text(br#"{"a":1}"#), None);
        assert_eq!(scalar_text(b"\""), None);
    }
}

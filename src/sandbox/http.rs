//! What every emulator endpoint shares: Imprint's error envelopes, request
//! validation in the spec's terms, and cursor pagination.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::amount::{self, range_text};

/// An error answer in one of Imprint's envelopes.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// `{"path","details":[...],"error":"Bad Request","status":400,"timestamp"}`
    Validation { path: String, details: Vec<String> },
    /// Flat `{"type","message","param"}` (the spec's *NotFoundError and
    /// ConflictError schemas).
    Flat {
        status: StatusCode,
        kind: &'static str,
        message: String,
        param: Option<&'static str>,
    },
    /// `{"error":{"type","message", ...extra}}` with any status.
    Enveloped {
        status: StatusCode,
        kind: &'static str,
        message: String,
        extra: Map<String, Value>,
    },
}

impl ApiError {
    pub(crate) fn validation(path: &str, details: Vec<String>) -> Self {
        ApiError::Validation {
            path: path.to_string(),
            details,
        }
    }

    /// A 400 for a value derived from `field` (a line total, a reward, a
    /// balance) that falls outside the emulator's bound on amounts.
    pub(crate) fn out_of_range(path: &str, field: &str, what: &str) -> Self {
        Self::validation(path, vec![format!("{field}: {what} {}", range_text())])
    }

    pub(crate) fn not_found(kind: &'static str, what: &str, param: &'static str, id: &str) -> Self {
        ApiError::Flat {
            status: StatusCode::NOT_FOUND,
            kind,
            message: format!("{what} not found for provided ID: {id}"),
            param: Some(param),
        }
    }

    pub(crate) fn enveloped(
        status: StatusCode,
        kind: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError::Enveloped {
            status,
            kind,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub(crate) fn with(mut self, key: &str, value: Value) -> Self {
        if let ApiError::Enveloped { extra, .. } = &mut self {
            extra.insert(key.to_string(), value);
        }
        self
    }

    pub(crate) fn conflict(kind: &'static str, message: impl Into<String>) -> Self {
        Self::enveloped(StatusCode::CONFLICT, kind, message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::enveloped(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or invalid API key",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Validation { path, details } => (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "path": path,
                    "details": details,
                    "error": "Bad Request",
                    "status": 400,
                    "timestamp": super::clock::now_rfc3339(),
                })),
            )
                .into_response(),
            ApiError::Flat {
                status,
                kind,
                message,
                param,
            } => {
                let mut body = json!({"type": kind, "message": message});
                if let Some(param) = param {
                    body["param"] = param.into();
                }
                (status, Json(body)).into_response()
            }
            ApiError::Enveloped {
                status,
                kind,
                message,
                mut extra,
            } => {
                extra.insert("type".into(), kind.into());
                extra.insert("message".into(), message.into());
                (status, Json(json!({ "error": extra }))).into_response()
            }
        }
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON 200 answer.
pub(crate) fn ok<T: Serialize>(value: &T) -> ApiResult {
    Ok(Json(serde_json::to_value(value).map_err(|e| {
        ApiError::enveloped(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            e.to_string(),
        )
    })?)
    .into_response())
}

// === Validation ===

/// A JSON type a field must have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    Str,
    Int,
    /// An integer amount, points value or count, within ±`MAX_AMOUNT`.
    Amount,
    /// Any object.
    Obj,
    /// An object with string values.
    StrMap,
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// An RFC 3339 date-time string.
    DateTime,
    /// An RFC 3339 date or date-time string.
    DateOrDateTime,
    /// A nested object with these fields.
    Nested(&'static [Field]),
    /// An array of objects with these fields.
    ArrayOf(&'static [Field]),
}

/// One field of a request schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) ty: Ty,
    pub(crate) required: bool,
    /// Smallest allowed value for integers.
    pub(crate) min: Option<i64>,
    /// Largest allowed value for integers.
    pub(crate) max: Option<i64>,
}

pub(crate) const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
        min: None,
        max: None,
    }
}

pub(crate) const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        min: None,
        max: None,
    }
}

pub(crate) const fn opt_min(name: &'static str, ty: Ty, min: i64) -> Field {
    Field {
        name,
        ty,
        required: false,
        min: Some(min),
        max: None,
    }
}

/// An optional integer within `min..=max`; the bound also keeps a value
/// decoded into a narrower proto field (an `int32`) from failing to decode.
pub(crate) const fn opt_range(name: &'static str, min: i64, max: i64) -> Field {
    Field {
        name,
        ty: Ty::Int,
        required: false,
        min: Some(min),
        max: Some(max),
    }
}

/// Validates a JSON body against `fields`; returns the object on success.
pub(crate) fn validate_body(
    path: &str,
    body: &[u8],
    fields: &[Field],
) -> ApiResult<Map<String, Value>> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::validation(path, vec![format!("body: malformed JSON: {e}")]))?
    };
    let Value::Object(map) = value else {
        return Err(ApiError::validation(
            path,
            vec!["body: must be a JSON object".into()],
        ));
    };
    let mut problems = Vec::new();
    check_object("", &map, fields, &mut problems);
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(ApiError::validation(path, problems))
    }
}

fn check_object(
    prefix: &str,
    map: &Map<String, Value>,
    fields: &[Field],
    problems: &mut Vec<String>,
) {
    for f in fields {
        let name = format!("{prefix}{}", f.name);
        match map.get(f.name) {
            None | Some(Value::Null) => {
                if f.required {
                    problems.push(format!("{name}: must not be null"));
                }
            }
            Some(v) => check_value(&name, v, f, problems),
        }
    }
}

fn check_value(name: &str, v: &Value, f: &Field, problems: &mut Vec<String>) {
    let ok = match f.ty {
        Ty::Str => v.is_string(),
        Ty::Int => match v.as_i64() {
            Some(n) => {
                if let Some(min) = f.min.filter(|m| n < *m) {
                    problems.push(format!("{name}: must be greater than or equal to {min}"));
                }
                if let Some(max) = f.max.filter(|m| n > *m) {
                    problems.push(format!("{name}: must be less than or equal to {max}"));
                }
                true
            }
            None => false,
        },
        // An integer too large even for an i64 is out of range, not "not an integer".
        Ty::Amount => match v.as_i64().map(amount::bounded) {
            Some(Some(_)) => true,
            Some(None) => {
                problems.push(format!("{name}: {}", range_text()));
                true
            }
            None if v.is_u64() => {
                problems.push(format!("{name}: {}", range_text()));
                true
            }
            None => false,
        },
        Ty::Obj => v.is_object(),
        Ty::StrMap => v
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string)),
        Ty::Enum(values) => match v.as_str() {
            Some(s) if values.contains(&s) => true,
            Some(_) => {
                problems.push(format!("{name}: must be one of {}", values.join(", ")));
                true
            }
            None => false,
        },
        Ty::DateTime => v
            .as_str()
            .is_some_and(|s| crate::json::de::parse_timestamp(s).is_some()),
        Ty::DateOrDateTime => v
            .as_str()
            .is_some_and(|s| crate::json::de::parse_timestamp(s).is_some() || is_date(s)),
        Ty::Nested(fields) => match v.as_object() {
            Some(m) => {
                check_object(&format!("{name}."), m, fields, problems);
                true
            }
            None => false,
        },
        Ty::ArrayOf(fields) => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_object() {
                        Some(m) => check_object(&format!("{name}[{i}]."), m, fields, problems),
                        None => problems.push(format!("{name}[{i}]: must be an object")),
                    }
                }
                true
            }
            None => false,
        },
    };
    if !ok {
        problems.push(format!("{name}: must be {}", describe(f.ty)));
    }
}

fn is_date(s: &str) -> bool {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &f).is_ok()
}

fn describe(ty: Ty) -> &'static str {
    match ty {
        Ty::Str => "a string",
        Ty::Int | Ty::Amount => "an integer",
        Ty::Obj | Ty::Nested(_) => "an object",
        Ty::StrMap => "an object of strings",
        Ty::Enum(_) => "a string",
        Ty::DateTime => "an RFC 3339 date-time",
        Ty::DateOrDateTime => "an RFC 3339 date or date-time",
        Ty::ArrayOf(_) => "an array",
    }
}

/// Query parameters, checked like the spec's `parameters`.
pub(crate) struct Query<'a> {
    path: &'a str,
    pairs: Vec<(String, String)>,
    problems: Vec<String>,
}

impl<'a> Query<'a> {
    pub(crate) fn parse(path: &'a str, raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                q.split('&')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        let dec = |s: &str| {
                            percent_encoding::percent_decode_str(&s.replace('+', " "))
                                .decode_utf8_lossy()
                                .into_owned()
                        };
                        (dec(k), dec(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            path,
            pairs,
            problems: Vec::new(),
        }
    }

    pub(crate) fn str(&self, name: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn required(&mut self, name: &str) -> String {
        match self.str(name) {
            Some(v) if !v.is_empty() => v,
            _ => {
                self.problems.push(format!("{name}: must not be null"));
                String::new()
            }
        }
    }

    pub(crate) fn enumeration(&mut self, name: &str, values: &[&str]) -> Option<String> {
        let v = self.str(name)?;
        if !values.contains(&v.as_str()) {
            self.problems
                .push(format!("{name}: must be one of {}", values.join(", ")));
        }
        Some(v)
    }

    /// `limit` (default 10, at least 1) and `starting_after`.
    pub(crate) fn page(&mut self) -> Page {
        let limit = match self.str("limit") {
            None => 10,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 1 => n.min(100) as usize,
                Ok(_) => {
                    self.problems
                        .push("limit: must be greater than or equal to 1".into());
                    10
                }
                Err(_) => {
                    self.problems.push("limit: must be an integer".into());
                    10
                }
            },
        };
        Page {
            limit,
            starting_after: self.str("starting_after"),
        }
    }

    pub(crate) fn finish(self) -> ApiResult<()> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.path, self.problems))
        }
    }
}

/// A pagination request.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) limit: usize,
    pub(crate) starting_after: Option<String>,
}

impl Page {
    pub(crate) fn from_body(body: &Map<String, Value>) -> Self {
        Page {
            limit: body
                .get("limit")
                .and_then(Value::as_i64)
                .map_or(10, |n| n.clamp(1, 100) as usize),
            starting_after: body
                .get("starting_after")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    /// Imprint's list envelope over `items` (already in list order), whose
    /// ids `id_of` gives.
    pub(crate) fn apply<T: Serialize>(
        &self,
        path: &str,
        items: Vec<T>,
        id_of: impl Fn(&T) -> &str,
    ) -> ApiResult {
        let total = items.len();
        let start = match &self.starting_after {
            None => 0,
            Some(cursor) => match items.iter().position(|i| id_of(i) == cursor) {
                Some(p) => p + 1,
                None => {
                    return Err(ApiError::validation(
                        path,
                        vec![format!("starting_after: no item with id {cursor}")],
                    ))
                }
            },
        };
        let end = (start + self.limit).min(total);
        let has_more = end < total;
        let data: Vec<&T> = items[start.min(total)..end].iter().collect();
        ok(&json!({"data": data, "has_more": has_more, "total": total}))
    }
}

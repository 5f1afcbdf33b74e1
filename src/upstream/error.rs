//! What can go wrong with an upstream call, recorded as facts (where it
//! failed, whether the request may have reached Imprint) so that the retry
//! policy and the gRPC status mapping read the same things.

use std::time::Duration;

use http::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::pb::imprint::v2::CustomerLink;

/// An upstream call that did not produce a 2xx answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Imprint answered with a non-2xx status.
    #[error("Imprint answered HTTP {status}")]
    Status {
        status: StatusCode,
        error: Box<ApiError>,
        /// From a `Retry-After` header, if Imprint sent one.
        retry_after: Option<Duration>,
    },
    /// No HTTP answer: connection refused, reset, timed out, TLS failure.
    #[error("could not reach Imprint ({kind})")]
    Transport {
        kind: TransportKind,
        /// hyper's error (or an I/O error): it carries no URL.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The caller's deadline passed before the call finished.
    #[error("deadline exceeded while calling Imprint")]
    DeadlineExceeded,
    /// The gateway has no usable Imprint credential loaded.
    #[error("the gateway has no Imprint credential configured")]
    NoCredential,
    /// A 2xx answer whose body is not the JSON we expect at all.
    #[error("Imprint's answer could not be decoded ({})", decode_where(.0))]
    Decode(#[source] serde_json::Error),
    /// One attempt took longer than the per-attempt timeout; the request
    /// may have been processed.
    #[error("Imprint did not answer within the attempt timeout")]
    AttemptTimeout,
    /// The circuit breaker is open: nothing was sent.
    #[error("Imprint is failing; calls are paused for {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
    /// Too many requests in flight to Imprint: nothing was sent.
    #[error("the gateway is at its limit of requests in flight to Imprint")]
    Overloaded,
    /// Refused or answered by the idempotency layer.
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
}

/// A state store failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("idempotency store: {0}")]
pub struct StoreError(pub String);

/// Why the idempotency layer answered instead of Imprint.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdempotencyError {
    #[error("idempotency-key was already used with a different request: {0}")]
    Mismatch(String),
    #[error(
        "the call with this idempotency-key may or may not have reached Imprint ({0}); the gateway will not send it \
         again: check the resource, then retry with a new key"
    )]
    OutcomeUnknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How far a failed transport attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Connection could not be established: the request never left.
    Connect,
    /// No answer in time; the request may have been processed.
    Timeout,
    /// The connection broke mid-call; the request may have been processed.
    Interrupted,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "connection failed",
            TransportKind::Timeout => "timed out",
            TransportKind::Interrupted => "connection interrupted",
        })
    }
}

impl UpstreamError {
    /// True when the request provably never reached Imprint, so that even
    /// a non-idempotent call may be sent again.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Transport {
                kind: TransportKind::Connect,
                ..
            } | UpstreamError::NoCredential
                | UpstreamError::CircuitOpen { .. }
                | UpstreamError::Overloaded
        )
    }

    /// True when Imprint answered that it did not process the request:
    /// 429 (slow down) and 503 (unavailable).
    pub fn refused_unprocessed(&self) -> bool {
        matches!(self.http_status().map(|s| s.as_u16()), Some(429 | 503))
    }

    /// True when the request may have reached Imprint and been processed
    /// without the gateway learning the outcome: a timeout or a broken
    /// connection after it was written, or a 5xx other than 501/503 (503
    /// says "not processed"). Repeating such a call may apply it twice.
    pub fn may_have_executed(&self) -> bool {
        match self {
            UpstreamError::Transport { kind, .. } => *kind != TransportKind::Connect,
            UpstreamError::AttemptTimeout => true,
            UpstreamError::Status { status, .. } => {
                status.is_server_error() && !matches!(status.as_u16(), 501 | 503)
            }
            _ => false,
        }
    }

    /// True when this attempt provably was not processed: it never left,
    /// or Imprint said so (429, 503), or Imprint refused the gateway's own
    /// credential or the request's timing (401, 403, 408) before acting.
    pub fn not_processed(&self) -> bool {
        self.never_sent()
            || self.refused_unprocessed()
            || matches!(
                self.http_status().map(|s| s.as_u16()),
                Some(401 | 403 | 408)
            )
    }

    /// The wait Imprint asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            UpstreamError::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether this failure says Imprint is unhealthy (for the breaker):
    /// transport failures, timeouts and 5xx; not the caller's 4xx.
    pub fn is_upstream_failure(&self) -> bool {
        match self {
            UpstreamError::Transport { .. } | UpstreamError::AttemptTimeout => true,
            UpstreamError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }

    /// A short label of the cause, for metadata and logs.
    pub fn cause(&self) -> String {
        match self {
            UpstreamError::Status { status, .. } => format!("HTTP {}", status.as_u16()),
            UpstreamError::Transport { kind, .. } => kind.to_string(),
            UpstreamError::DeadlineExceeded => "deadline exceeded".into(),
            UpstreamError::NoCredential => "no credential".into(),
            UpstreamError::Decode(_) => "undecodable answer".into(),
            UpstreamError::AttemptTimeout => "attempt timed out".into(),
            UpstreamError::CircuitOpen { .. } => "circuit open".into(),
            UpstreamError::Overloaded => "overloaded".into(),
            UpstreamError::Idempotency(_) => "idempotency".into(),
        }
    }

    /// The HTTP status Imprint answered with, if it answered.
    pub fn http_status(&self) -> Option<StatusCode> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Imprint's error body, from whichever of its envelopes it used:
/// `{"error":{"type","message","param"}}`, a flat `{"type","message","param"}`,
/// or the validation form `{"path","details":[...],"error":"Bad Request","status"}`.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct ApiError {
    pub r#type: Option<String>,
    pub message: Option<String>,
    pub param: Option<String>,
    /// Validation messages such as `email: must be a well-formed email address`.
    pub details: Vec<String>,
    /// On a 409 from the link endpoint: the link that already exists.
    pub existing_link: Option<CustomerLink>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    error: Option<ErrorField>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    details: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Object(Inner),
    Text(String),
}

#[derive(Deserialize)]
struct Inner {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    existing_link: Option<CustomerLink>,
}

/// Where and what kind of decoding failure, never the text serde_json
/// writes: that quotes the offending value, which may be a PAN or an SSN.
pub fn decode_where(e: &serde_json::Error) -> String {
    if e.line() == 0 {
        // A failure of our own (e.g. over the size limit), no input quoted.
        return e.to_string();
    }
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// What replaces a sensitive value echoed in an error text.
const SCRUBBED: &str = "[redacted]";

impl ApiError {
    /// Removes every echo of a sensitive request value (SSN, date of birth,
    /// PAN, CVV, client_secret) from the texts Imprint sent, before they
    /// reach a status, a log line or an idempotency record. Digits are
    /// compared without separators, so `123-45-6789` is caught for
    /// `123456789` and `4111 1111 1111 1111` for a PAN.
    pub fn scrub(&mut self, sensitive: &[SecretString]) {
        if sensitive.is_empty() {
            return;
        }
        for text in self
            .message
            .iter_mut()
            .chain(self.param.iter_mut())
            .chain(self.details.iter_mut())
        {
            *text = scrub_text(text, sensitive);
        }
    }

    /// Parses any of Imprint's error envelopes; anything else yields an
    /// empty error (the status code alone still says what happened).
    pub fn parse(body: &[u8]) -> ApiError {
        let Ok(env) = serde_json::from_slice::<Envelope>(body) else {
            return ApiError::default();
        };
        let mut out = ApiError {
            r#type: env.kind,
            message: env.message,
            param: env.param,
            details: env.details.unwrap_or_default(),
            existing_link: None,
        };
        match env.error {
            Some(ErrorField::Object(inner)) => {
                out.r#type = inner.kind.or(out.r#type);
                out.message = inner.message.or(out.message);
                out.param = inner.param.or(out.param);
                out.existing_link = inner.existing_link;
            }
            // The validation envelope puts the HTTP reason phrase in `error`.
            Some(ErrorField::Text(reason)) if out.message.is_none() => out.message = Some(reason),
            Some(ErrorField::Text(_)) | None => {}
        }
        out
    }
}

/// `text` with every occurrence of a secret replaced.
pub(crate) fn scrub_text(text: &str, sensitive: &[SecretString]) -> String {
    let mut out = text.to_owned();
    for secret in sensitive {
        let secret = secret.expose_secret();
        // Short numbers (a CVV) are matched as whole digit runs below.
        let short_number = secret.len() < 6 && secret.bytes().all(|b| b.is_ascii_digit());
        if secret.len() >= 3 && !short_number && out.contains(secret) {
            out = out.replace(secret, SCRUBBED);
        }
    }
    // Digit runs, separators allowed inside, compared by their digits. A
    // date `YYYY-MM-DD` is also looked for as MM/DD/YYYY and DD/MM/YYYY.
    let digits_of = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let mut wanted: Vec<String> = Vec::new();
    for secret in sensitive {
        let secret = secret.expose_secret();
        let digits = digits_of(secret);
        if let [y, m, d] = secret.split('-').collect::<Vec<_>>()[..] {
            if y.len() == 4 && m.len() == 2 && d.len() == 2 && digits.len() == 8 {
                wanted.push(format!("{m}{d}{y}"));
                wanted.push(format!("{d}{m}{y}"));
            }
        }
        if digits.len() >= 3 {
            wanted.push(digits);
        }
    }
    if wanted.is_empty() {
        return out;
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        result.push_str(&rest[..start]);
        let run = &rest[start..];
        let mut end = 0;
        for (i, c) in run.char_indices() {
            if c.is_ascii_digit() {
                end = i + 1;
            } else if !matches!(c, ' ' | '-' | '.' | '/') {
                break;
            }
        }
        let candidate = &run[..end];
        let digits = digits_of(candidate);
        // Short values (a CVV) only as a whole run, so `limit: 1234` is
        // not taken for a CVV of 123; long ones anywhere inside a run.
        let matches = |w: &String| {
            if w.len() < 6 {
                digits == *w
            } else {
                digits.contains(w.as_str())
            }
        };
        if wanted.iter().any(matches) {
            result.push_str(SCRUBBED);
        } else {
            result.push_str(candidate);
        }
        rest = &run[end..];
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_secrets_are_scrubbed_in_any_spelling() {
        let secrets: Vec<SecretString> = [
            "123456789",
            "4111111111111111",
            "1990-05-17",
            "cs_live_abc",
            "987",
        ]
        .into_iter()
        .map(|s| SecretString::from(s.to_owned()))
        .collect();
        let mut e = ApiError {
            message: Some("ssn 123-45-6789 is invalid; card 4111 1111 1111 1111 declined".into()),
            param: Some("ssn".into()),
            details: vec![
                "date_of_birth: 1990-05-17 is in the future".into(),
                "dob 05/17/1990 and 17.05.1990 both refused".into(),
                "cvv 987 wrong; limit 19876 fine".into(),
                "client_secret: cs_live_abc expired".into(),
                "limit: 25 is too large".into(),
            ],
            ..ApiError::default()
        };
        e.scrub(&secrets);
        let all = format!("{e:?}");
        for s in [
            "6789", "1111", "1990", "05-17", "05/17", "17.05", "cs_live", "cvv 987",
        ] {
            assert!(!all.contains(s), "{s} in {all}");
        }
        assert!(
            all.contains("limit 19876 fine"),
            "a short secret only as a whole run: {all}"
        );
        assert!(all.contains("limit: 25 is too large"), "{all}");
        assert_eq!(e.param.as_deref(), Some("ssn"));
    }

    #[test]
    fn parses_nested_envelope_with_existing_link() {
        let e = ApiError::parse(
            br#"{"error":{"type":"CUSTOMER_ALREADY_LINKED","message":"m","existing_link":{"customer_id":"c1","partner_customer_id":"p1","status":"ACTIVE","created_at":"2025-02-13T19:08:07.000Z"}}}"#,
        );
        assert_eq!(e.r#type.as_deref(), Some("CUSTOMER_ALREADY_LINKED"));
        assert_eq!(e.existing_link.unwrap().partner_customer_id, "p1");
    }

    #[test]
    fn parses_flat_and_validation_envelopes() {
        let flat = ApiError::parse(
            br#"{"type":"CUSTOMER_NOT_FOUND_ERROR","message":"nope","param":"customer_id"}"#,
        );
        assert_eq!(flat.param.as_deref(), Some("customer_id"));
        let v = ApiError::parse(
            br#"{"path":"/v2/customers","details":["email: must be a well-formed email address"],"error":"Bad Request","status":400}"#,
        );
        assert_eq!(v.details.len(), 1);
        assert_eq!(v.message.as_deref(), Some("Bad Request"));
        assert_eq!(ApiError::parse(b"<html>oops</html>"), ApiError::default());
    }
}

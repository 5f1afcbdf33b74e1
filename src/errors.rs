//! The one place where failures become gRPC statuses.
//!
//! Mapping follows the contract's table; details follow the richer error
//! model (`google.rpc.ErrorInfo`, `BadRequest`, `RetryInfo`), plus the
//! existing `imprint.v2.CustomerLink` on a 409 from the link endpoint.

use std::time::Duration;

use http::StatusCode;
use prost::Message;
use prost_types::Any;
use tonic::Code;
use tonic_types::pb;

use crate::{
    idempotency::IdempotencyError,
    translate::FieldViolation,
    upstream::{ApiError, UpstreamError},
};

/// `ErrorInfo.domain` of errors Imprint reported.
pub const IMPRINT_DOMAIN: &str = "imprint.co";
/// `ErrorInfo.domain` of errors the gateway itself raised.
pub const GATEWAY_DOMAIN: &str = "imprint-gateway";

const LINK_RPC: &str = "imprint.v2.CustomerLinkService/LinkCustomer";

/// A status with `google.rpc` details, assembled then encoded once.
struct RichStatus {
    code: Code,
    message: String,
    details: Vec<Any>,
}

impl RichStatus {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    fn detail<M: Message>(mut self, type_name: &str, m: &M) -> Self {
        self.details.push(Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: m.encode_to_vec(),
        });
        self
    }

    fn error_info(
        self,
        reason: &str,
        domain: &str,
        metadata: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Self {
        let info = pb::ErrorInfo {
            reason: reason.to_owned(),
            domain: domain.to_owned(),
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        };
        self.detail("google.rpc.ErrorInfo", &info)
    }

    fn bad_request(self, violations: Vec<pb::bad_request::FieldViolation>) -> Self {
        if violations.is_empty() {
            return self;
        }
        let br = pb::BadRequest {
            field_violations: violations,
        };
        self.detail("google.rpc.BadRequest", &br)
    }

    fn retry_info(self, delay: Option<Duration>) -> Self {
        let Some(delay) = delay else { return self };
        let info = pb::RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        self.detail("google.rpc.RetryInfo", &info)
    }

    fn into_status(self) -> tonic::Status {
        let details = pb::Status {
            code: self.code as i32,
            message: self.message.clone(),
            details: self.details,
        }
        .encode_to_vec();
        tonic::Status::with_details(self.code, self.message, details.into())
    }
}

fn violation(field: &str, description: &str) -> pb::bad_request::FieldViolation {
    pb::bad_request::FieldViolation {
        field: field.to_owned(),
        description: description.to_owned(),
        ..Default::default()
    }
}

/// A request refused before it reached Imprint.
pub fn invalid_request(violations: &[FieldViolation]) -> tonic::Status {
    let message = violations
        .iter()
        .map(|v| v.description.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let fields = violations
        .iter()
        .map(|v| violation(&v.field, &v.description))
        .collect();
    RichStatus::new(Code::InvalidArgument, message)
        .error_info("INVALID_REQUEST", GATEWAY_DOMAIN, [])
        .bad_request(fields)
        .into_status()
}

/// A caller over its rate limit.
pub fn rate_limited(caller: &str, retry_after: Duration) -> tonic::Status {
    RichStatus::new(
        Code::ResourceExhausted,
        format!("caller '{caller}' is over its rate limit"),
    )
    .error_info("RATE_LIMITED", GATEWAY_DOMAIN, [])
    .retry_info(Some(retry_after))
    .into_status()
}

/// Maps an upstream failure of `rpc` to the status the caller receives.
///
/// `resend_unsafe` says the call was a non-idempotent mutation (POST,
/// PATCH) without an `idempotency-key`: when such a call may have executed,
/// the answer is UNKNOWN, never UNAVAILABLE, because stock gRPC retry
/// policies re-send UNAVAILABLE and one purchase would become two.
///
/// `sent` says a request of this call went on the wire: a mutation cut by
/// the deadline after that may have executed too.
pub fn upstream_status(
    rpc: &str,
    resend_unsafe: bool,
    sent: bool,
    err: &UpstreamError,
) -> tonic::Status {
    let cut_after_sending = sent && matches!(err, UpstreamError::DeadlineExceeded);
    if resend_unsafe && (err.may_have_executed() || cut_after_sending) {
        return outcome_unknown(err);
    }
    match err {
        UpstreamError::Status {
            status,
            error,
            retry_after,
        } => http_status(rpc, *status, error, *retry_after),
        UpstreamError::Transport { kind, .. } => {
            RichStatus::new(Code::Unavailable, format!("Imprint is unreachable: {kind}"))
                .error_info("UPSTREAM_UNREACHABLE", GATEWAY_DOMAIN, [])
                .into_status()
        }
        UpstreamError::DeadlineExceeded => RichStatus::new(
            Code::DeadlineExceeded,
            "deadline exceeded before Imprint answered",
        )
        .error_info("DEADLINE_EXCEEDED", GATEWAY_DOMAIN, [])
        .into_status(),
        UpstreamError::NoCredential => RichStatus::new(
            Code::Internal,
            "the gateway has no Imprint credential configured",
        )
        .error_info("NO_CREDENTIAL", GATEWAY_DOMAIN, [])
        .into_status(),
        UpstreamError::AttemptTimeout => RichStatus::new(
            Code::Unavailable,
            "Imprint did not answer in time (per-attempt timeout)",
        )
        .error_info("UPSTREAM_TIMEOUT", GATEWAY_DOMAIN, [])
        .into_status(),
        UpstreamError::CircuitOpen { retry_after } => RichStatus::new(
            Code::Unavailable,
            "Imprint is failing; the gateway is not calling it for a moment (circuit open)",
        )
        .error_info("CIRCUIT_OPEN", GATEWAY_DOMAIN, [])
        .retry_info(Some(*retry_after))
        .into_status(),
        UpstreamError::Overloaded => RichStatus::new(
            Code::ResourceExhausted,
            "the gateway is at its limit of requests in flight to Imprint",
        )
        .error_info("OVERLOADED", GATEWAY_DOMAIN, [])
        .retry_info(Some(Duration::from_millis(100)))
        .into_status(),
        UpstreamError::Idempotency(e) => {
            let (code, reason) = match e {
                IdempotencyError::Mismatch(_) => {
                    (Code::FailedPrecondition, "IDEMPOTENCY_KEY_MISMATCH")
                }
                IdempotencyError::OutcomeUnknown(_) => (Code::Aborted, "OUTCOME_UNKNOWN"),
                IdempotencyError::Store(_) => (Code::Unavailable, "STATE_STORE_UNAVAILABLE"),
            };
            RichStatus::new(code, e.to_string())
                .error_info(reason, GATEWAY_DOMAIN, [])
                .into_status()
        }
        UpstreamError::Decode(e) => RichStatus::new(
            Code::Internal,
            format!(
                "Imprint's answer could not be decoded: {}",
                crate::upstream::decode_where(e)
            ),
        )
        .error_info("UPSTREAM_DECODE", GATEWAY_DOMAIN, [])
        .into_status(),
    }
}

/// A mutation that may or may not have happened.
fn outcome_unknown(err: &UpstreamError) -> tonic::Status {
    let mut metadata = vec![("cause", err.cause())];
    if let Some(status) = err.http_status() {
        metadata.push(("http_status", status.as_u16().to_string()));
    }
    RichStatus::new(
        Code::Unknown,
        format!(
            "Imprint may or may not have processed this call ({}); the gateway did not repeat it because \
             that could apply it twice: look the result up before retrying, or send the call with an \
             idempotency-key so that it can be retried safely",
            err.cause()
        ),
    )
    .error_info("OUTCOME_UNKNOWN", GATEWAY_DOMAIN, metadata)
    .into_status()
}

fn http_status(
    rpc: &str,
    status: StatusCode,
    error: &ApiError,
    retry_after: Option<Duration>,
) -> tonic::Status {
    let reason = error
        .r#type
        .clone()
        .unwrap_or_else(|| format!("HTTP_{}", status.as_u16()));
    let upstream_message = error
        .message
        .clone()
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let mut metadata = vec![("http_status", status.as_u16().to_string())];
    if let Some(param) = &error.param {
        metadata.push(("param", param.clone()));
    }

    let (code, message) = match status.as_u16() {
        400 | 422 => (Code::InvalidArgument, upstream_message),
        // The caller did nothing wrong: it is the gateway's key Imprint refused.
        401 => (
            Code::Internal,
            "Imprint rejected the gateway's credential; the gateway's API key needs attention"
                .to_owned(),
        ),
        403 if is_sandbox_only(error) => (Code::FailedPrecondition, upstream_message),
        403 => (Code::PermissionDenied, upstream_message),
        404 => (Code::NotFound, upstream_message),
        409 if rpc == LINK_RPC && error.existing_link.is_some() => {
            (Code::AlreadyExists, upstream_message)
        }
        409 => (Code::Aborted, upstream_message),
        429 => (Code::ResourceExhausted, upstream_message),
        500..=599 => (Code::Unavailable, upstream_message),
        other => (
            Code::Internal,
            format!("unexpected HTTP {other} from Imprint: {upstream_message}"),
        ),
    };

    let mut rich = RichStatus::new(code, message).error_info(&reason, IMPRINT_DOMAIN, metadata);
    if code == Code::InvalidArgument {
        let mut fields = Vec::new();
        if let Some(param) = &error.param {
            fields.push(violation(
                param,
                error.message.as_deref().unwrap_or("invalid"),
            ));
        }
        for d in &error.details {
            // Imprint writes `field: problem`.
            match d.split_once(": ") {
                Some((field, problem)) if !field.contains(' ') => {
                    fields.push(violation(field, problem))
                }
                _ => fields.push(violation("", d)),
            }
        }
        rich = rich.bad_request(fields);
    }
    if let Some(link) = error
        .existing_link
        .as_ref()
        .filter(|_| code == Code::AlreadyExists)
    {
        rich = rich.detail("imprint.v2.CustomerLink", link);
    }
    rich.retry_info(retry_after).into_status()
}

/// Imprint answers 403 to `simulate_*` outside the sandbox: a precondition
/// of the environment, not a permission the caller lacks.
fn is_sandbox_only(error: &ApiError) -> bool {
    let mentions = |s: &Option<String>| {
        s.as_deref()
            .is_some_and(|s| s.to_ascii_lowercase().contains("sandbox"))
    };
    mentions(&error.r#type) || mentions(&error.message)
}

//! `POST /webhooks/imprint`: verify, decode, store durably, then 2xx.
//!
//! Refusals are 4xx with a one-line reason and store nothing: 413 too
//! large, 415 not JSON content, 401 missing/garbled/forged/stale
//! signature, 400 a body that is not one JSON object or repeats a key.
//! No secret configured → 503 (Imprint retries until one is). A duplicate
//! (same `event_id` within retention) is answered 200 and not stored again.

use std::{sync::Arc, time::SystemTime};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{header, HeaderMap, StatusCode},
    routing::post,
    Router,
};
use secrecy::{ExposeSecret as _, SecretString};

use super::{
    decode,
    log::{Appended, EventLog, NewEvent},
    signature, EventsConfig,
};

/// What the webhook endpoint needs.
pub struct Ingest {
    secrets: Vec<SecretString>,
    tolerance: std::time::Duration,
    max_body: usize,
    log: Arc<dyn EventLog>,
}

impl Ingest {
    pub fn new(config: &EventsConfig, log: Arc<dyn EventLog>) -> Self {
        Self {
            secrets: config.secrets(),
            tolerance: config.tolerance,
            max_body: config.max_body_bytes,
            log,
        }
    }

    /// The route, to merge into the HTTP router.
    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.max_body;
        Router::new()
            .route("/webhooks/imprint", post(receive))
            // Larger bodies are refused with 413 before being read whole.
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }

    /// Verifies and stores one webhook; the status and reason to answer.
    pub async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
        if self.secrets.is_empty() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no webhook secret configured (IMPRINT_WEBHOOK_SECRET)\n".into(),
            );
        }
        let json_content = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case("application/json")
                    || (m.len() > 5 && m[m.len() - 5..].eq_ignore_ascii_case("+json"))
            });
        if !json_content {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type must be application/json\n".into(),
            );
        }
        let signature_header = headers
            .get("x-imprint-hmac-signature")
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        let secrets: Vec<&[u8]> = self
            .secrets
            .iter()
            .map(|s| s.expose_secret().as_bytes())
            .collect();
        if let Err(e) = signature::verify_any(
            &secrets,
            signature_header,
            body,
            SystemTime::now(),
            self.tolerance,
        ) {
            tracing::info!(reason = %e, "webhook refused");
            return (StatusCode::UNAUTHORIZED, format!("{e}\n"));
        }
        let value = match decode::parse(body) {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(reason = %e, "webhook refused");
                return (StatusCode::BAD_REQUEST, format!("{e}\n"));
            }
        };
        // parse() succeeded, so the body is UTF-8.
        let raw = String::from_utf8_lossy(body);
        let mut event = decode::event(&raw, &value);
        event.received_at = Some(SystemTime::now().into());
        match self.log.append(NewEvent { event }).await {
            Ok(Appended::New(e)) => {
                tracing::debug!(cursor = e.cursor, event_id = %e.event.event_id, "webhook stored");
                (StatusCode::OK, format!("stored {}\n", e.cursor))
            }
            Ok(Appended::Duplicate(c)) => (StatusCode::OK, format!("duplicate of {c}\n")),
            Err(e) => {
                tracing::error!(error = %e, "webhook not stored");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "event log unavailable; retry\n".into(),
                )
            }
        }
    }
}

async fn receive(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    ingest.handle(&headers, &body).await
}

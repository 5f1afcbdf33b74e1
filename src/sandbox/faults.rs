//! Injected latency and failures, per route, for tests of callers.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{http::ApiError, Emulator};

/// Slows or fails requests whose path starts with `path_prefix`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Only this method; `None` for all.
    pub method: Option<Method>,
    /// E.g. `/v2/customers`.
    pub path_prefix: String,
    /// Added before the request is handled.
    pub latency: Duration,
    /// Share of requests (0.0 to 1.0) answered with `error_status` instead.
    pub error_rate: f64,
    pub error_status: u16,
}

impl FaultRule {
    pub fn latency(path_prefix: &str, latency: Duration) -> Self {
        Self {
            method: None,
            path_prefix: path_prefix.into(),
            latency,
            error_rate: 0.0,
            error_status: 503,
        }
    }

    pub fn errors(path_prefix: &str, error_rate: f64, error_status: u16) -> Self {
        Self {
            method: None,
            path_prefix: path_prefix.into(),
            latency: Duration::ZERO,
            error_rate,
            error_status,
        }
    }
}

pub(super) async fn inject(State(emu): State<Emulator>, req: Request, next: Next) -> Response {
    let rule = emu
        .config()
        .faults
        .iter()
        .find(|r| {
            req.uri().path().starts_with(&r.path_prefix)
                && r.method.as_ref().is_none_or(|m| m == req.method())
        })
        .cloned();
    if let Some(rule) = rule {
        if !rule.latency.is_zero() {
            tokio::time::sleep(rule.latency).await;
        }
        if rule.error_rate > 0.0 && emu.store().chance() < rule.error_rate {
            let status =
                StatusCode::from_u16(rule.error_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return ApiError::enveloped(status, "INJECTED_FAULT", "fault injected by the emulator")
                .into_response();
        }
    }
    next.run(req).await
}

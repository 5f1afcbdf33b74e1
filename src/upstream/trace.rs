//! One tracing span per upstream call, with the outcome recorded on it,
//! and what the layers below decided without Imprint (cache hit or miss,
//! breaker rejection, shedding, idempotent replay or conflict) as span
//! events and counters.

use std::{sync::Arc, time::Instant};

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::{field, Instrument};

use opentelemetry::{trace::TraceContextExt as _, Context, KeyValue};

use super::{CacheStatus, IdempotencyError, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::telemetry::{events, Telemetry};

/// Builds [`Trace`].
#[derive(Debug, Clone)]
pub struct TraceLayer {
    telemetry: Arc<Telemetry>,
}

impl TraceLayer {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self { telemetry }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// Wraps each call in an `imprint.request` span. The span names the route
/// template, never the concrete path: ids stay out of span names and
/// secrets never reach a URL in the first place.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

impl<S> Service<UpstreamRequest> for Trace<S>
where
    S: Service<UpstreamRequest, Response = UpstreamResponse, Error = UpstreamError>,
    S::Future: Send + 'static,
{
    type Response = UpstreamResponse;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<UpstreamResponse, UpstreamError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: UpstreamRequest) -> Self::Future {
        let span = tracing::info_span!(
            "imprint.request",
            rpc = req.rpc,
            http.request.method = %req.call.method,
            http.route = req.template,
            request_id = %req.request_id,
            http.response.status_code = field::Empty,
            error = field::Empty,
        );
        let start = Instant::now();
        let stats = req.stats.clone();
        let rpc = req.rpc;
        let telemetry = self.telemetry.clone();
        let logged = telemetry.request_log().enabled().then(|| Logged::of(&req));
        stats.set_trace(span.clone(), Context::current());
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = fut.await;
                note_decisions(&telemetry, rpc, stats.replayed(), result.as_ref().err());
                note_cache(stats.cache());
                // A log of calls to Imprint: a cache hit made none.
                let hit = stats.cache() == Some(crate::upstream::CacheStatus::Hit);
                if let Some(logged) = logged.filter(|_| !hit) {
                    logged.record(&telemetry, &result, start.elapsed(), stats.attempts());
                }
                // Read the clock only for a line that is written.
                let elapsed_ms = || start.elapsed().as_secs_f64() * 1e3;
                let span = tracing::Span::current();
                match &result {
                    Ok(resp) => {
                        span.record("http.response.status_code", resp.status.as_u16());
                        tracing::debug!(elapsed_ms = elapsed_ms(), "upstream call succeeded");
                    }
                    Err(e) => {
                        if let Some(status) = e.http_status() {
                            span.record("http.response.status_code", status.as_u16());
                        }
                        span.record("error", field::display(e));
                        tracing::info!(elapsed_ms = elapsed_ms(), error = %e, "upstream call failed");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Records what a layer decided without Imprint: a span event on the
/// call's span and a counter.
fn note_decisions(
    telemetry: &Telemetry,
    rpc: &'static str,
    replayed: bool,
    err: Option<&UpstreamError>,
) {
    let m = telemetry.metrics();
    let (event, counted) = match err {
        _ if replayed => {
            m.idempotency
                .add(1, &[KeyValue::new("outcome", "replayed")]);
            (events::IDEMPOTENT_REPLAY, true)
        }
        Some(UpstreamError::CircuitOpen { .. }) => {
            m.rejected.add(
                1,
                &[
                    KeyValue::new("reason", "breaker_open"),
                    KeyValue::new("rpc.method", rpc),
                ],
            );
            (events::BREAKER_REJECTED, true)
        }
        Some(UpstreamError::Overloaded) => {
            m.rejected.add(
                1,
                &[
                    KeyValue::new("reason", "shed"),
                    KeyValue::new("rpc.method", rpc),
                ],
            );
            (events::LOAD_SHED, true)
        }
        Some(UpstreamError::Idempotency(IdempotencyError::Mismatch(_))) => {
            m.idempotency
                .add(1, &[KeyValue::new("outcome", "conflict")]);
            (events::IDEMPOTENCY_CONFLICT, true)
        }
        _ => ("", false),
    };
    if counted {
        let cx = Context::current();
        if cx.has_active_span() {
            cx.span().add_event(event, Vec::new());
        }
    }
}

/// What the response cache did, as an event on the call's span (a bypass
/// is not news: the RPC or the request is not cacheable).
fn note_cache(status: Option<CacheStatus>) {
    let event = match status {
        Some(CacheStatus::Hit) => events::CACHE_HIT,
        Some(CacheStatus::Miss) => events::CACHE_MISS,
        Some(CacheStatus::Bypass) | None => return,
    };
    let cx = Context::current();
    if cx.has_active_span() {
        cx.span().add_event(event, Vec::new());
    }
}

/// What the request log needs from a request, taken before it goes down.
struct Logged {
    rpc: &'static str,
    method: http::Method,
    template: &'static str,
    caller: Arc<str>,
    request_id: Arc<str>,
    body: Option<bytes::Bytes>,
    sensitive: Vec<secrecy::SecretString>,
    sensitive_fields: &'static [&'static str],
    secret_fields: &'static [&'static str],
}

impl Logged {
    fn of(req: &UpstreamRequest) -> Self {
        Self {
            rpc: req.rpc,
            method: req.call.method.clone(),
            template: req.template,
            caller: req.caller.clone(),
            request_id: req.request_id.clone(),
            body: req.call.body.clone(),
            sensitive: req.call.sensitive.clone(),
            sensitive_fields: req.sensitive_fields,
            secret_fields: req.secret_fields,
        }
    }

    fn record(
        self,
        telemetry: &Telemetry,
        result: &Result<UpstreamResponse, UpstreamError>,
        latency: std::time::Duration,
        attempts: u32,
    ) {
        use crate::telemetry::request_log::{redact, UpstreamCall};
        let fields: Vec<&str> = self
            .sensitive_fields
            .iter()
            .chain(self.secret_fields)
            .copied()
            .collect();
        let (status, error, response_body) = match result {
            Ok(resp) => (
                resp.status.as_u16(),
                None,
                redact(&resp.body, &fields, &self.sensitive),
            ),
            Err(UpstreamError::Status { status, error, .. }) => {
                let body = serde_json::to_vec(error).unwrap_or_default();
                (
                    status.as_u16(),
                    None,
                    redact(&body, &fields, &self.sensitive),
                )
            }
            Err(e) => (0, Some(e.cause()), String::new()),
        };
        let cx = Context::current();
        let span = cx.span();
        let sc = span.span_context();
        telemetry.request_log().record(UpstreamCall {
            seq: 0,
            at: std::time::SystemTime::now(),
            rpc: self.rpc,
            method: self.method.to_string(),
            template: self.template,
            status,
            error,
            latency,
            attempts,
            caller: self.caller,
            request_id: self.request_id,
            trace_id: if sc.is_valid() {
                sc.trace_id().to_string()
            } else {
                String::new()
            },
            request_body: self
                .body
                .map(|b| redact(&b, &fields, &self.sensitive))
                .unwrap_or_default(),
            response_body,
        });
    }
}

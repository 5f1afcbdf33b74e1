//! The SERVER side of every gRPC call: its span (continuing the caller's
//! W3C trace context), `x-trace-id`, `rpc.server.call.duration`, the
//! per-caller rate-limit counter and the one info log line per call.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderName, HeaderValue};
use opentelemetry::{
    trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _},
    KeyValue,
};
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::Telemetry;
use crate::{auth::Caller, ratelimit::RateLimited};

// Read or written on every call: names, not strings parsed each time.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const UPSTREAM_ATTEMPTS: HeaderName = HeaderName::from_static("x-upstream-attempts");
const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// Builds [`RpcTelemetry`].
#[derive(Clone)]
pub struct RpcTelemetryLayer {
    telemetry: Arc<Telemetry>,
    methods: Arc<HashSet<&'static str>>,
}

impl RpcTelemetryLayer {
    /// `methods` are the gRPC methods served (`pkg.Service/Method`): only
    /// those become label values, anything else is `_OTHER`.
    pub fn new(telemetry: Arc<Telemetry>, methods: impl IntoIterator<Item = &'static str>) -> Self {
        Self {
            telemetry,
            methods: Arc::new(methods.into_iter().collect()),
        }
    }
}

impl<S> Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;
    fn layer(&self, inner: S) -> RpcTelemetry<S> {
        RpcTelemetry {
            inner,
            telemetry: self.telemetry.clone(),
            methods: self.methods.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
    methods: Arc<HashSet<&'static str>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResBody> Service<http::Request<B>> for RpcTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let path = req.uri().path().trim_start_matches('/');
        let method: &'static str = self.methods.get(path).copied().unwrap_or("_OTHER");
        let caller = req
            .extensions()
            .get::<Arc<Caller>>()
            .map(|c| c.name.clone());
        // The header value itself (shared bytes), not a copy: most calls
        // read it only if a span or a log line is recorded.
        let request_id_value = req.headers().get(crate::request_id::HEADER_NAME).cloned();
        let request_id = request_id_value
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let cx = self.telemetry.tracer().map(|tracer| {
            let parent = super::extract(req.headers());
            let mut attributes = vec![
                KeyValue::new("rpc.system.name", "grpc"),
                KeyValue::new("rpc.method", method),
                KeyValue::new("gateway.request_id", request_id.to_owned()),
            ];
            if let Some(c) = &caller {
                attributes.push(KeyValue::new("gateway.caller", c.to_string()));
            }
            let span = tracer
                .span_builder(method)
                .with_kind(SpanKind::Server)
                .with_attributes(attributes)
                .start_with_context(tracer, &parent);
            parent.with_span(span)
        });
        let trace_id = cx
            .as_ref()
            .map(|cx| cx.span().span_context().trace_id().to_string());
        if let Some(cx) = &cx {
            req.extensions_mut().insert(cx.clone());
        }
        // Every log line of the call carries its trace id and request id.
        let log_span = tracing::info_span!(
            "rpc",
            rpc.method = method,
            request_id = %request_id,
            trace_id = trace_id.as_deref().unwrap_or(""),
        );
        let fut = {
            let _enter = log_span.enter();
            self.inner.call(req)
        };
        let fut = match &cx {
            Some(cx) => futures::future::Either::Left(fut.with_context(cx.clone())),
            None => futures::future::Either::Right(fut),
        };
        let telemetry = self.telemetry.clone();
        Box::pin(
            async move {
                let mut result = fut.await;
                let elapsed = start.elapsed();
                let code = match &result {
                    // Errors come trailers-only; a body means the handler answered.
                    Ok(resp) => resp
                        .headers()
                        .get(&GRPC_STATUS)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                    Err(_) => tonic::Code::Unknown,
                };
                let code_name = code_name(code);
                // For the log line only: read if it is written.
                let attempts = |result: &Result<S::Response, S::Error>| {
                    result
                        .as_ref()
                        .ok()
                        .and_then(|r| r.headers().get(&UPSTREAM_ATTEMPTS))
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(0)
                };
                let m = telemetry.metrics();
                m.rpc_duration.record(
                    elapsed.as_secs_f64(),
                    &[
                        KeyValue::new("rpc.system.name", "grpc"),
                        KeyValue::new("rpc.method", method),
                        KeyValue::new("rpc.response.status_code", code_name),
                    ],
                );
                if let Ok(resp) = &mut result {
                    if resp.extensions().get::<RateLimited>().is_some() {
                        m.rate_limited.add(
                            1,
                            &[KeyValue::new(
                                "caller",
                                caller.as_deref().unwrap_or_default().to_owned(),
                            )],
                        );
                    }
                    if let Some(mut id) = trace_id
                        .as_deref()
                        .and_then(|t| HeaderValue::from_str(t).ok())
                    {
                        // New on every call: never indexed by HPACK.
                        id.set_sensitive(true);
                        resp.headers_mut().insert(TRACE_ID, id);
                    }
                }
                if let Some(cx) = cx {
                    let span = cx.span();
                    span.set_attribute(KeyValue::new("rpc.response.status_code", code_name));
                    if code != tonic::Code::Ok {
                        span.set_attribute(KeyValue::new("error.type", code_name));
                        if server_fault(code) {
                            span.set_status(Status::error(code_name));
                        }
                    }
                    span.end();
                }
                tracing::info!(
                    code = code_name,
                    latency_ms = elapsed.as_secs_f64() * 1e3,
                    attempts = attempts(&result),
                    "call finished"
                );
                result
            }
            .instrument(log_span),
        )
    }
}

/// Codes that are the server's fault (span status ERROR), per the RPC
/// semantic conventions for a server.
fn server_fault(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

/// The canonical upper-snake name of a gRPC code.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

//! The CLIENT side of every HTTP attempt to Imprint: its span (a child of
//! the gRPC call's span, whose context it sends as `traceparent`),
//! `http.client.request.duration`, attempt and retry counters, in-flight.

use std::{sync::Arc, time::Instant};

use futures::future::BoxFuture;
use opentelemetry::{
    trace::{SpanKind, Status, TraceContextExt as _, Tracer as _},
    Context, KeyValue,
};
use tower::{Layer, Service};

use super::{UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::telemetry::Telemetry;

/// Builds [`AttemptTelemetry`].
#[derive(Debug, Clone)]
pub struct AttemptTelemetryLayer {
    telemetry: Arc<Telemetry>,
}

impl AttemptTelemetryLayer {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self { telemetry }
    }
}

impl<S> Layer<S> for AttemptTelemetryLayer {
    type Service = AttemptTelemetry<S>;
    fn layer(&self, inner: S) -> AttemptTelemetry<S> {
        AttemptTelemetry {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AttemptTelemetry<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

/// Takes an attempt off the in-flight count however it ends (cancelled too).
struct InFlight(Arc<Telemetry>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics().in_flight.add(-1, &[]);
    }
}

impl<S> Service<UpstreamRequest> for AttemptTelemetry<S>
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

    fn call(&mut self, mut req: UpstreamRequest) -> Self::Future {
        let start = Instant::now();
        let attempt = req.stats.attempts().max(1);
        let cause = (attempt > 1).then(|| req.stats.last_cause()).flatten();
        let method = req.call.method.clone();
        let template = req.template;
        let m = self.telemetry.metrics();
        m.attempts
            .add(1, &[KeyValue::new("url.template", template)]);
        if let Some(cause) = &cause {
            m.retries.add(
                1,
                &[
                    KeyValue::new("url.template", template),
                    KeyValue::new("cause", cause.clone()),
                ],
            );
        }
        m.in_flight.add(1, &[]);
        let in_flight = InFlight(self.telemetry.clone());
        let parent = Context::current();
        let cx = self
            .telemetry
            .tracer()
            .filter(|_| parent.has_active_span())
            .map(|tracer| {
                let mut attributes = vec![
                    KeyValue::new("http.request.method", method.to_string()),
                    KeyValue::new("url.template", template),
                    KeyValue::new("server.address", self.telemetry.upstream_host().to_string()),
                    KeyValue::new("rpc.method", req.rpc),
                    KeyValue::new("http.request.resend_count", i64::from(attempt - 1)),
                    KeyValue::new("gateway.attempt", i64::from(attempt)),
                ];
                if let Some(cause) = &cause {
                    attributes.push(KeyValue::new("gateway.retry_cause", cause.clone()));
                }
                let span = tracer
                    .span_builder(format!("{method} {template}"))
                    .with_kind(SpanKind::Client)
                    .with_attributes(attributes)
                    .start_with_context(tracer, &parent);
                parent.with_span(span)
            });
        if let Some(cx) = &cx {
            crate::telemetry::inject(cx, &mut req.headers);
        }
        let fut = self.inner.call(req);
        let telemetry = self.telemetry.clone();
        Box::pin(async move {
            let result = fut.await;
            drop(in_flight);
            let mut labels = vec![
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.template", template),
            ];
            let status = match &result {
                Ok(resp) => Some(resp.status.as_u16()),
                Err(e) => e.http_status().map(|s| s.as_u16()),
            };
            let error_type = match (&result, status) {
                (Ok(_), _) => None,
                (Err(_), Some(s)) => Some(s.to_string()),
                (Err(e), None) => Some(error_type(e).to_owned()),
            };
            if let Some(s) = status {
                labels.push(KeyValue::new("http.response.status_code", i64::from(s)));
            }
            if let Some(t) = &error_type {
                labels.push(KeyValue::new("error.type", t.clone()));
            }
            telemetry
                .metrics()
                .client_duration
                .record(start.elapsed().as_secs_f64(), &labels);
            if let Some(cx) = cx {
                let span = cx.span();
                if let Some(s) = status {
                    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
                }
                if let Some(t) = error_type {
                    span.set_attribute(KeyValue::new("error.type", t.clone()));
                    span.set_status(Status::error(t));
                }
                span.end();
            }
            result
        })
    }
}

/// A low-cardinality name for a failure without an HTTP status.
pub(crate) fn error_type(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Status { .. } => "http_status",
        UpstreamError::Transport { kind, .. } => match kind {
            super::TransportKind::Connect => "connect",
            super::TransportKind::Timeout => "timeout",
            super::TransportKind::Interrupted => "interrupted",
        },
        UpstreamError::DeadlineExceeded => "deadline_exceeded",
        UpstreamError::NoCredential => "no_credential",
        UpstreamError::Decode(_) => "decode",
        UpstreamError::AttemptTimeout => "attempt_timeout",
        UpstreamError::CircuitOpen { .. } => "breaker_open",
        UpstreamError::Overloaded => "shed",
        UpstreamError::Idempotency(_) => "idempotency",
    }
}

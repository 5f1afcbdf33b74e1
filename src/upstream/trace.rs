//! One tracing span per upstream call, with the outcome recorded on it.

use std::time::Instant;

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::{field, Instrument};

use super::{UpstreamError, UpstreamRequest, UpstreamResponse};

/// Builds [`Trace`].
#[derive(Debug, Clone, Default)]
pub struct TraceLayer;

impl TraceLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

/// Wraps each call in an `imprint.request` span. The span names the route
/// template, never the concrete path: ids stay out of span names and
/// secrets never reach a URL in the first place.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
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
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = fut.await;
                let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
                let span = tracing::Span::current();
                match &result {
                    Ok(resp) => {
                        span.record("http.response.status_code", resp.status.as_u16());
                        tracing::debug!(elapsed_ms, "upstream call succeeded");
                    }
                    Err(e) => {
                        if let Some(status) = e.http_status() {
                            span.record("http.response.status_code", status.as_u16());
                        }
                        span.record("error", field::display(e));
                        tracing::info!(elapsed_ms, error = %e, "upstream call failed");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

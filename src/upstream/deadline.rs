//! Bounds a call by the caller's deadline.
//!
//! The deadline travels in the request (it comes from the caller's
//! `grpc-timeout`, or the configured default) rather than in the layer, so
//! that every layer below (retries, back-off sleeps) shares one budget.

use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::{UpstreamError, UpstreamRequest};

/// Builds [`Deadline`].
#[derive(Debug, Clone, Default)]
pub struct DeadlineLayer;

impl DeadlineLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// Fails with [`UpstreamError::DeadlineExceeded`] when the request's
/// deadline passes, dropping (cancelling) the inner call.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> Service<UpstreamRequest> for Deadline<S>
where
    S: Service<UpstreamRequest, Error = UpstreamError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<S::Response, UpstreamError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: UpstreamRequest) -> Self::Future {
        let deadline = req.deadline;
        let fut = self.inner.call(req);
        Box::pin(async move {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, fut)
                    .await
                    .unwrap_or(Err(UpstreamError::DeadlineExceeded)),
                None => fut.await,
            }
        })
    }
}

/// Builds [`AttemptTimeout`].
#[derive(Debug, Clone)]
pub struct AttemptTimeoutLayer {
    timeout: std::time::Duration,
}

impl AttemptTimeoutLayer {
    pub fn new(timeout: std::time::Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;
    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Fails one attempt with [`UpstreamError::AttemptTimeout`] after a fixed
/// time, so the retry layer can try again within the caller's deadline.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: std::time::Duration,
}

impl<S> Service<UpstreamRequest> for AttemptTimeout<S>
where
    S: Service<UpstreamRequest, Error = UpstreamError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<S::Response, UpstreamError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: UpstreamRequest) -> Self::Future {
        let fut = self.inner.call(req);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, fut)
                .await
                .unwrap_or(Err(UpstreamError::AttemptTimeout))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::upstream::test_support::request;

    #[tokio::test(start_paused = true)]
    async fn slow_inner_call_ends_at_the_deadline() {
        let slow = service_fn(|_: UpstreamRequest| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, UpstreamError>(())
        });
        let svc = DeadlineLayer::new().layer(slow);
        let start = Instant::now();
        let mut req = request();
        req.deadline = Some(start + Duration::from_millis(250));
        let err = svc.oneshot(req).await.unwrap_err();
        assert!(matches!(err, UpstreamError::DeadlineExceeded));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_cuts_one_attempt() {
        let slow = service_fn(|_: UpstreamRequest| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, UpstreamError>(())
        });
        let start = Instant::now();
        let err = AttemptTimeoutLayer::new(Duration::from_secs(2))
            .layer(slow)
            .oneshot(request())
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::AttemptTimeout));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn fast_call_passes_through() {
        let fast = service_fn(|_: UpstreamRequest| async { Ok::<_, UpstreamError>(7) });
        let mut req = request();
        req.deadline = Some(Instant::now() + Duration::from_secs(1));
        assert_eq!(
            DeadlineLayer::new().layer(fast).oneshot(req).await.unwrap(),
            7
        );
    }
}

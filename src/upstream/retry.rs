//! Safe retries, within a budget and the caller's deadline.
//!
//! What may be retried depends on the method and on what is known about the
//! failed attempt (see [`UpstreamError`]):
//!
//! | attempt failed with | GET, PUT, DELETE | POST, PATCH with `idempotency-key` | POST, PATCH |
//! |---|---|---|---|
//! | connection refused, DNS (never sent) | retry | retry | retry |
//! | 429, 503 (Imprint did not process it) | retry | retry | no |
//! | 502, 504, timeouts, resets (may have been processed) | retry | no | no |
//! | 500 | when `retry_500` | no | no |
//!
//! Back-off is exponential with full jitter; a `Retry-After` that fits in the
//! deadline is honoured exactly, one that does not ends the call at once (the
//! caller gets RetryInfo). A [`TpsBudget`] caps retries at a share of the
//! traffic, so a failing Imprint never sees a retry storm.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use rand::Rng as _;
use tokio::time::Instant;
use tower::{
    retry::budget::{Budget as _, TpsBudget},
    Layer, Service, ServiceExt,
};

use super::{UpstreamError, UpstreamRequest};

/// Retry settings (`[retry]` in the configuration file).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// First back-off; doubles per attempt, with full jitter.
    #[serde(with = "humantime_serde")]
    pub base_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Whether 500 counts as retryable for idempotent methods.
    pub retry_500: bool,
    /// Retries may add at most this share of the request rate...
    pub budget_percent: f32,
    /// ...plus this many retries per second regardless.
    pub budget_min_per_sec: u32,
    /// Over this window.
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            retry_500: false,
            budget_percent: 0.2,
            budget_min_per_sec: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

/// Builds [`Retry`]; the budget is shared by every clone.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    config: Arc<RetryConfig>,
    budget: Arc<TpsBudget>,
}

impl RetryLayer {
    pub fn new(config: RetryConfig) -> Self {
        let budget = TpsBudget::new(
            config.budget_window,
            config.budget_min_per_sec,
            config.budget_percent,
        );
        Self {
            config: Arc::new(config),
            budget: Arc::new(budget),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            config: self.config.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// Retries failed attempts that are safe to repeat.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    config: Arc<RetryConfig>,
    budget: Arc<TpsBudget>,
}

/// Whether `err` on an attempt of `req` may be retried.
pub(crate) fn retryable(req: &UpstreamRequest, err: &UpstreamError, retry_500: bool) -> bool {
    if err.never_sent() {
        // Nothing left the gateway; the breaker and the load shedder fail
        // fast on purpose, so those are not retried here.
        return matches!(err, UpstreamError::Transport { .. });
    }
    if err.refused_unprocessed() {
        return req.idempotent_method() || req.idempotency_key.is_some();
    }
    if !req.idempotent_method() {
        return false;
    }
    match err {
        UpstreamError::Transport { .. } | UpstreamError::AttemptTimeout => true,
        UpstreamError::Status { status, .. } => match status.as_u16() {
            502 | 504 => true,
            500 => retry_500,
            _ => false,
        },
        _ => false,
    }
}

impl<S> Service<UpstreamRequest> for Retry<S>
where
    S: Service<UpstreamRequest, Error = UpstreamError> + Clone + Send + 'static,
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
        // The service that was polled ready serves the first attempt; clones
        // (driven to readiness with `oneshot`) serve the retries.
        let first = super::take_ready(&mut self.inner);
        let retries = self.inner.clone();
        let config = self.config.clone();
        let budget = self.budget.clone();
        Box::pin(async move {
            budget.deposit();
            let stats = req.stats.clone();
            stats.add_attempt();
            let mut result = {
                let mut first = first;
                first.call(req.clone()).await
            };
            let mut attempt = 1;
            loop {
                let err = match result {
                    Ok(resp) => return Ok(resp),
                    Err(e) => e,
                };
                stats.note_failed_attempt(&err);
                if attempt >= config.max_attempts || !retryable(&req, &err, config.retry_500) {
                    return Err(err);
                }
                let wait = match err.retry_after() {
                    Some(asked) => asked,
                    None => backoff(&config, attempt),
                };
                if let Some(deadline) = req.deadline {
                    if Instant::now() + wait >= deadline {
                        // Waiting would outlive the caller: answer now (with
                        // RetryInfo when Imprint said how long to wait).
                        return Err(err);
                    }
                }
                if !budget.withdraw() {
                    tracing::debug!(rpc = req.rpc, "retry budget exhausted");
                    return Err(err);
                }
                stats.set_cause(err.cause());
                tracing::debug!(rpc = req.rpc, attempt, cause = %err.cause(), ?wait, "retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
                stats.add_attempt();
                result = retries.clone().oneshot(req.clone()).await;
            }
        })
    }
}

/// Exponential back-off with full jitter: uniform in `[0, min(max, base·2^(n-1))]`.
fn backoff(config: &RetryConfig, attempt: u32) -> Duration {
    let exp = config
        .base_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(config.max_backoff);
    let nanos = exp.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use http::{Method, StatusCode};
    use tower::service_fn;

    use super::*;
    use crate::upstream::{test_support::request, ApiError};

    fn status(code: u16, retry_after: Option<Duration>) -> UpstreamError {
        UpstreamError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            error: Box::new(ApiError::default()),
            retry_after,
        }
    }

    /// An inner service failing with `errors` in turn, then succeeding.
    fn scripted(
        errors: Vec<UpstreamError>,
    ) -> (
        impl Service<UpstreamRequest, Response = u32, Error = UpstreamError, Future: Send>
            + Clone
            + Send,
        Arc<AtomicU32>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let errors = Arc::new(parking_lot::Mutex::new(errors));
        let c = calls.clone();
        let svc = service_fn(move |_: UpstreamRequest| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let next = {
                let mut e = errors.lock();
                if e.is_empty() {
                    None
                } else {
                    Some(e.remove(0))
                }
            };
            async move {
                match next {
                    Some(e) => Err(e),
                    None => Ok(n),
                }
            }
        });
        (svc, calls)
    }

    fn config() -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            base_backoff: Duration::from_millis(100),
            ..RetryConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn get_503_then_200_takes_two_attempts() {
        let (svc, calls) = scripted(vec![status(503, None)]);
        let req = request();
        let stats = req.stats.clone();
        let got = RetryLayer::new(config())
            .layer(svc)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(got, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(stats.attempts(), 2);
        assert_eq!(stats.last_cause().as_deref(), Some("HTTP 503"));
    }

    #[tokio::test(start_paused = true)]
    async fn post_is_not_resent_after_a_503_without_a_key() {
        let (svc, calls) = scripted(vec![status(503, None)]);
        let mut req = request();
        req.call.method = Method::POST;
        let err = RetryLayer::new(config())
            .layer(svc)
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(err.http_status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_post_retries_503_but_not_502() {
        let (svc, calls) = scripted(vec![status(503, None)]);
        let mut req = request();
        req.call.method = Method::POST;
        req.idempotency_key = Some("k".into());
        RetryLayer::new(config())
            .layer(svc)
            .oneshot(req.clone())
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let (svc, calls) = scripted(vec![status(502, None)]);
        RetryLayer::new(config())
            .layer(svc)
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_within_the_deadline() {
        let (svc, _) = scripted(vec![status(429, Some(Duration::from_secs(1)))]);
        let mut req = request();
        let start = Instant::now();
        req.deadline = Some(start + Duration::from_secs(5));
        RetryLayer::new(config())
            .layer(svc)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_the_deadline_fails_at_once() {
        let (svc, calls) = scripted(vec![status(429, Some(Duration::from_secs(30)))]);
        let mut req = request();
        let start = Instant::now();
        req.deadline = Some(start + Duration::from_secs(5));
        let err = RetryLayer::new(config())
            .layer(svc)
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_capped() {
        let (svc, calls) = scripted((0..10).map(|_| status(503, None)).collect());
        RetryLayer::new(config())
            .layer(svc)
            .oneshot(request())
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_under_a_burst() {
        let layer = RetryLayer::new(RetryConfig {
            max_attempts: 3,
            base_backoff: Duration::from_millis(1),
            budget_percent: 0.1,
            budget_min_per_sec: 1,
            budget_window: Duration::from_secs(10),
            ..RetryConfig::default()
        });
        let (svc, calls) = scripted((0..1000).map(|_| status(503, None)).collect());
        let svc = layer.layer(svc);
        for _ in 0..100 {
            let _ = svc.clone().oneshot(request()).await;
        }
        let total = calls.load(Ordering::SeqCst);
        // 100 calls; unbudgeted they would make 300 attempts. The budget
        // allows 10% of 100 plus 1/s over the 10 s window.
        assert!(total <= 100 + 10 + 10, "{total} attempts");
        assert!(total > 100, "some retries are allowed: {total}");
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let c = config();
        for attempt in 1..20 {
            assert!(backoff(&c, attempt) <= c.max_backoff);
        }
        assert!(backoff(&c, 1) <= Duration::from_millis(100));
        // Full jitter: many draws of one attempt spread over [0, cap]. A
        // constant back-off (or one stuck at either end) fails here.
        let cap = c.base_backoff.saturating_mul(4).min(c.max_backoff);
        let draws: Vec<Duration> = (0..400).map(|_| backoff(&c, 3)).collect();
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(
            distinct.len() > 300,
            "only {} distinct waits",
            distinct.len()
        );
        let low = draws.iter().filter(|d| **d < cap / 4).count();
        let high = draws.iter().filter(|d| **d > cap * 3 / 4).count();
        // Each quarter holds ~100 of 400 draws; 40 is far in the tail.
        assert!(low > 40 && high > 40, "low {low}, high {high} of 400");
    }
}

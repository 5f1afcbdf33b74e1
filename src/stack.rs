//! The upstream `tower::Service` stack, assembled in one function: one
//! `.layer(...)` per line, each with why it is there. Its own module so
//! that the layers' modules (upstream, idempotency, cache, credentials,
//! telemetry) never import each other.

use std::{sync::Arc, time::Duration};

use tower::{util::BoxCloneSyncService, ServiceBuilder};

use crate::{
    cache::{CacheLayer, ResponseCache},
    credentials::{CredentialStore, CredentialsLayer},
    idempotency::{IdempotencyConfig, IdempotencyLayer, IdempotencyStore},
    telemetry::Telemetry,
    upstream::{
        AttemptTelemetryLayer, AttemptTimeoutLayer, BreakerConfig, CircuitBreakerLayer,
        DeadlineLayer, HttpClient, LoadShedConfig, LoadShedLayer, RetryConfig, RetryLayer,
        TraceLayer, UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamService,
    },
};

/// Settings of the resilience layers.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub load_shed: LoadShedConfig,
    pub idempotency: IdempotencyConfig,
    /// Bounds one attempt; the caller's deadline bounds them all.
    pub attempt_timeout: Duration,
    /// The response cache; `None` (or `cache.enabled = false`): no cache layer.
    pub cache: Option<Arc<ResponseCache>>,
    /// Spans and metrics of this gateway instance.
    pub telemetry: Arc<Telemetry>,
}

/// Assembles the upstream stack over the HTTP client.
pub fn stack(
    client: HttpClient,
    credentials: Arc<CredentialStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    config: &StackConfig,
) -> UpstreamService {
    stack_over(client, credentials, idempotency, config)
}

/// Assembles the upstream stack over any innermost service (the HTTP client
/// in production; an in-memory one in benchmarks), outermost layer first.
pub fn stack_over<S>(
    inner: S,
    credentials: Arc<CredentialStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    config: &StackConfig,
) -> UpstreamService
where
    S: tower::Service<UpstreamRequest, Response = UpstreamResponse, Error = UpstreamError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let svc = ServiceBuilder::new()
        // One span per call, outermost so its timing covers every layer.
        .layer(TraceLayer::new(config.telemetry.clone()))
        // Cached reads are answered here, before anything below spends a
        // deadline, a breaker probe, a retry token, an in-flight slot or a
        // request to Imprint; inside the trace so hits are seen. Writes pass
        // through it to invalidate what they change once they completed.
        // Above idempotency: keyed calls are writes, never cached.
        .option_layer(config.cache.clone().map(CacheLayer::over))
        // A keyed mutation runs once per (caller, key); duplicates get its result.
        // Outside the deadline so it sees a timed-out call and records it.
        .layer(IdempotencyLayer::new(
            idempotency,
            config.idempotency.clone(),
        ))
        // The caller's deadline bounds the whole call: attempts and back-off.
        .layer(DeadlineLayer::new())
        // Fail fast while Imprint is failing, instead of piling on.
        .layer(CircuitBreakerLayer::new(
            config.breaker.clone(),
            config.telemetry.clone(),
        ))
        // Safe retries only, within a budget and the deadline.
        .layer(RetryLayer::new(config.retry.clone()))
        // Bound in-flight requests to Imprint; shed beyond a short queue.
        .layer(LoadShedLayer::new(config.load_shed.clone()))
        // One slow attempt must not eat the whole deadline.
        .layer(AttemptTimeoutLayer::new(config.attempt_timeout))
        // One CLIENT span and duration per attempt; sends the trace as traceparent.
        .layer(AttemptTelemetryLayer::new(config.telemetry.clone()))
        // The Imprint key is added last, right before the wire, and nowhere else.
        .layer(CredentialsLayer::new(credentials))
        .service(inner);
    BoxCloneSyncService::new(svc)
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            load_shed: LoadShedConfig::default(),
            idempotency: IdempotencyConfig::default(),
            attempt_timeout: Duration::from_secs(5),
            cache: None,
            telemetry: Telemetry::disabled(),
        }
    }
}

//! Per-caller rate limits: a token bucket per authenticated caller, checked
//! on the gRPC server right after authentication. Over the limit, the call
//! is refused with RESOURCE_EXHAUSTED and RetryInfo saying when a token
//! will be there; nothing reaches Imprint. The rate and burst are the
//! caller's own when its policy sets them (`rate_per_sec`, `burst`), else
//! `[limits]`'s; a reloaded policy applies from the next call.

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::{self, Either, Ready};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{auth::Caller, errors};

/// Rate-limit settings; `per_second = 0` turns limiting off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitConfig {
    /// Sustained calls per second per caller.
    pub per_second: f64,
    /// Calls a caller may burst above the sustained rate.
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets, shared by every connection.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The rate and burst that apply to `caller`.
    pub fn config_for(&self, caller: &Caller) -> RateLimitConfig {
        RateLimitConfig {
            per_second: caller.rate_per_sec.unwrap_or(self.config.per_second),
            burst: caller.burst.unwrap_or(self.config.burst),
        }
    }

    /// Takes a token for `caller` under the default limits, or says how
    /// long until one is there.
    pub fn check(&self, caller: &str) -> Result<(), Duration> {
        self.check_with(caller, self.config)
    }

    /// Takes a token for `caller` under `c`, or says how long until one is there.
    pub fn check_with(&self, caller: &str, c: RateLimitConfig) -> Result<(), Duration> {
        if c.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        // Look up before inserting: no allocation on the hot path.
        if !buckets.contains_key(caller) {
            buckets.insert(
                caller.to_string(),
                Bucket {
                    tokens: c.burst,
                    at: now,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(caller) else {
            return Ok(());
        };
        let refill = now.duration_since(bucket.at).as_secs_f64() * c.per_second;
        bucket.tokens = (bucket.tokens + refill).min(c.burst.max(1.0));
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / c.per_second,
            ))
        }
    }
}

/// Builds [`RateLimit`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
}

impl RateLimitLayer {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::new(config)),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// Marks a response as a rate-limit refusal (for metrics).
#[derive(Debug, Clone, Copy)]
pub struct RateLimited;

/// Refuses a caller's calls beyond its rate; calls without a caller
/// (health checks) pass.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
}

impl<S, B, ResBody> Service<http::Request<B>> for RateLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(caller) = req.extensions().get::<Arc<Caller>>() {
            let limits = self.limiter.config_for(caller);
            if let Err(wait) = self.limiter.check_with(&caller.name, limits) {
                let status = errors::rate_limited(&caller.name, wait);
                let mut response = status.into_http();
                // Lets the telemetry layer count refusals per caller.
                response.extensions_mut().insert(RateLimited);
                return Either::Right(future::ready(Ok(response)));
            }
        }
        Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let l = RateLimiter::new(RateLimitConfig {
            per_second: 10.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            l.check("a").unwrap();
        }
        let wait = l.check("a").unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Callers are independent.
        l.check("b").unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        l.check("a").unwrap();
        assert!(l.check("a").is_err());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let l = RateLimiter::new(RateLimitConfig {
            per_second: 0.0,
            burst: 0.0,
        });
        for _ in 0..1000 {
            l.check("a").unwrap();
        }
    }
}

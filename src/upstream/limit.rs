//! A bound on requests in flight to Imprint, with a short bounded queue;
//! beyond it, calls are shed at once with RESOURCE_EXHAUSTED rather than
//! piling up behind a slow upstream.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::{UpstreamError, UpstreamRequest};

/// Load-shedding settings.
#[derive(Debug, Clone)]
pub struct LoadShedConfig {
    /// Requests to Imprint in flight at once.
    pub max_in_flight: usize,
    /// Calls that may wait for a slot; more are shed at once.
    pub max_queue: usize,
    /// How long a queued call waits for a slot before it is shed.
    pub queue_timeout: Duration,
}

impl Default for LoadShedConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            max_queue: 64,
            queue_timeout: Duration::from_millis(100),
        }
    }
}

/// Builds [`LoadShed`]; every clone shares one set of slots.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    config: LoadShedConfig,
}

impl LoadShedLayer {
    pub fn new(config: LoadShedConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(config.max_in_flight)),
                waiting: AtomicUsize::new(0),
                config,
            }),
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> LoadShed<S> {
        LoadShed {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Holds a slot for the duration of each attempt.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> Service<UpstreamRequest> for LoadShed<S>
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
        let shared = self.shared.clone();
        let mut inner = super::take_ready(&mut self.inner);
        Box::pin(async move {
            let permit = match shared.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if shared.waiting.fetch_add(1, Ordering::AcqRel) >= shared.config.max_queue {
                        shared.waiting.fetch_sub(1, Ordering::AcqRel);
                        return Err(UpstreamError::Overloaded);
                    }
                    let _waiting = Waiting(&shared.waiting);
                    match tokio::time::timeout(
                        shared.config.queue_timeout,
                        shared.slots.clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(p)) => p,
                        _ => return Err(UpstreamError::Overloaded),
                    }
                }
            };
            let result = inner.call(req).await;
            drop(permit);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::upstream::test_support::request;

    #[tokio::test(start_paused = true)]
    async fn sheds_beyond_slots_and_queue() {
        let layer = LoadShedLayer::new(LoadShedConfig {
            max_in_flight: 2,
            max_queue: 1,
            queue_timeout: Duration::from_millis(100),
        });
        let slow = service_fn(|_: UpstreamRequest| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, UpstreamError>(())
        });
        let svc = layer.layer(slow);
        let mut running = Vec::new();
        for _ in 0..3 {
            running.push(tokio::spawn(svc.clone().oneshot(request())));
        }
        tokio::task::yield_now().await;
        // Two in flight, one queued: the fourth is shed at once.
        let start = tokio::time::Instant::now();
        let err = svc.clone().oneshot(request()).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Overloaded));
        assert_eq!(start.elapsed(), Duration::ZERO);
        let results: Vec<_> = futures::future::join_all(running).await;
        let shed = results
            .iter()
            .filter(|r| matches!(r, Ok(Err(UpstreamError::Overloaded))))
            .count();
        assert_eq!(shed, 1, "the queued call gave up after the queue timeout");
        // Slots are released: the next call goes through.
        svc.oneshot(request()).await.unwrap();
    }
}

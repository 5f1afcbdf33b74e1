//! A circuit breaker on the upstream: when too many recent attempts failed,
//! stop calling Imprint for a while and fail fast (UNAVAILABLE + RetryInfo);
//! then let a few probes through and close again on success.
//!
//! States: **closed** (calls flow, outcomes are counted in a rolling
//! window), **open** (calls fail at once for `open_for`), **half-open**
//! (up to `half_open_probes` calls at once; one success closes, one failure
//! reopens; a probe counts only in the half-open period that admitted it).
//! Only signs of an unhealthy upstream count as failures: transport errors,
//! timeouts and 5xx; a 404 is not Imprint's fault.
//!
//! There is one breaker per upstream stack, i.e. per Imprint base URL (the
//! gateway talks to one). Its state and every transition are metrics
//! (`gateway.breaker.state`, `gateway.breaker.transitions`, labelled with
//! `server.address`); open → half-open happens when the first call arrives
//! after `open_for`.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{Layer, Service};

use opentelemetry::KeyValue;

use super::{CallStats, UpstreamError, UpstreamRequest};
use crate::telemetry::Telemetry;

/// Breaker settings (`[breaker]` in the configuration file).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Rolling window over which the failure rate is computed.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Attempts the window must hold before the breaker may open.
    pub min_requests: usize,
    /// Failure share (0.0 to 1.0) that opens the breaker.
    pub failure_rate: f64,
    /// How long it stays open before probing.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Concurrent probes while half-open.
    pub half_open_probes: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_requests: 20,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probes: usize },
}

/// Every state's metric label, in a fixed order.
const STATES: [&str; 3] = ["closed", "open", "half_open"];

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Closed => STATES[0],
            State::Open { .. } => STATES[1],
            State::HalfOpen { .. } => STATES[2],
        }
    }
}

/// Slots of the rolling window; outcomes are counted per slot, so recording
/// is O(1) whatever the request rate.
const SLOTS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which `window / SLOTS`-wide interval since `start` this slot counts.
    epoch: u64,
    total: u32,
    failures: u32,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Counts transitions: a probe belongs to the half-open period it was
    /// admitted in, and says nothing about a later one.
    generation: u64,
    start: Instant,
    slots: [Slot; SLOTS],
}

impl Inner {
    fn epoch(&self, now: Instant, window: Duration) -> u64 {
        let width = (window / SLOTS as u32).max(Duration::from_millis(1));
        (now.duration_since(self.start).as_nanos() / width.as_nanos()) as u64 + 1
    }

    fn clear(&mut self) {
        self.slots = [Slot::default(); SLOTS];
    }

    /// Counts one outcome; returns (total, failures) over the window.
    fn count(&mut self, now: Instant, window: Duration, failed: bool) -> (u32, u32) {
        let epoch = self.epoch(now, window);
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        slot.total += 1;
        slot.failures += u32::from(failed);
        self.slots
            .iter()
            .filter(|s| s.epoch + SLOTS as u64 > epoch)
            .fold((0, 0), |(t, f), s| (t + s.total, f + s.failures))
    }
}

/// The shared breaker state.
#[derive(Debug)]
struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// Where state and transitions are recorded.
    telemetry: Arc<Telemetry>,
}

/// What a call may do.
enum Admission {
    Closed,
    /// A probe of the half-open period numbered `generation`.
    Probe {
        generation: u64,
    },
}

impl Breaker {
    /// Moves to `to`, recording the transition and the new state.
    fn transition(&self, inner: &mut Inner, to: State) {
        let (from, to_name) = (inner.state.name(), to.name());
        inner.state = to;
        inner.generation += 1;
        let m = self.telemetry.metrics();
        let host = KeyValue::new("server.address", self.telemetry.upstream_host().to_string());
        m.breaker_transitions.add(
            1,
            &[
                host.clone(),
                KeyValue::new("from", from),
                KeyValue::new("to", to_name),
            ],
        );
        self.record_state(to_name, &host);
    }

    /// The state gauge: 1 for `current`, 0 for the others.
    fn record_state(&self, current: &str, host: &KeyValue) {
        for state in STATES {
            self.telemetry.metrics().breaker_state.record(
                u64::from(state == current),
                &[host.clone(), KeyValue::new("state", state)],
            );
        }
    }

    fn admit(&self) -> Result<Admission, UpstreamError> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        match inner.state {
            State::Closed => Ok(Admission::Closed),
            State::Open { until } if now < until => Err(UpstreamError::CircuitOpen {
                retry_after: until - now,
            }),
            State::Open { .. } => {
                tracing::info!("circuit half-open: probing Imprint");
                self.transition(&mut inner, State::HalfOpen { probes: 1 });
                Ok(Admission::Probe {
                    generation: inner.generation,
                })
            }
            State::HalfOpen { probes } if probes < self.config.half_open_probes => {
                inner.state = State::HalfOpen { probes: probes + 1 };
                Ok(Admission::Probe {
                    generation: inner.generation,
                })
            }
            State::HalfOpen { .. } => Err(UpstreamError::CircuitOpen {
                retry_after: self.config.open_for.min(Duration::from_millis(100)),
            }),
        }
    }

    fn record(&self, admission: Admission, failed: bool) {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        match admission {
            Admission::Probe { generation } => {
                if inner.generation != generation {
                    // Another probe already decided this half-open period;
                    // a later one is for its own probes to decide.
                    return;
                }
                if failed {
                    tracing::warn!(open_for = ?self.config.open_for, "probe failed: circuit open again");
                    let until = now + self.config.open_for;
                    self.transition(&mut inner, State::Open { until });
                } else {
                    tracing::info!("probe succeeded: circuit closed");
                    self.transition(&mut inner, State::Closed);
                    inner.clear();
                }
            }
            Admission::Closed => {
                if !matches!(inner.state, State::Closed) {
                    return;
                }
                let (total, failures) = inner.count(now, self.config.window, failed);
                if total as usize >= self.config.min_requests
                    && failures > 0
                    && f64::from(failures) >= self.config.failure_rate * f64::from(total)
                {
                    tracing::warn!(failures, total, open_for = ?self.config.open_for, "circuit open: Imprint is failing");
                    let until = now + self.config.open_for;
                    self.transition(&mut inner, State::Open { until });
                    inner.clear();
                }
            }
        }
    }

    /// A probe that ended without an outcome (its caller went away before
    /// its deadline): give its slot back so another call can probe (in
    /// its own half-open period only).
    fn release_probe(&self, generation: u64) {
        let mut inner = self.inner.lock();
        if let (State::HalfOpen { probes }, true) = (&inner.state, inner.generation == generation) {
            inner.state = State::HalfOpen {
                probes: probes.saturating_sub(1),
            };
        }
    }
}

/// One admitted call's claim on the breaker. Its outcome is recorded when
/// the call finishes; if the call is dropped first, the guard decides on
/// drop: cut by the caller's deadline counts as a failure (a hanging Imprint
/// must open the breaker even when every caller's deadline is shorter than
/// the attempt timeout), cancelled earlier by the caller only gives a probe
/// slot back. Either way a half-open breaker can never be left waiting for
/// a probe that will not come back.
struct Permit {
    breaker: Arc<Breaker>,
    admission: Option<Admission>,
    deadline: Option<Instant>,
    stats: Arc<CallStats>,
}

/// A deadline cut counts against Imprint only when a request had waited on
/// Imprint at least this long: a caller whose deadline is a few
/// milliseconds (or that ran out in the shed queue) says nothing about
/// Imprint and must not open the breaker for everyone.
const SLOW_FLOOR: Duration = Duration::from_millis(100);

impl Permit {
    /// Records the outcome of a call that finished.
    fn finish(mut self, result: Result<(), &UpstreamError>) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        match result {
            // Never reached Imprint (shed, no credential): no news of
            // Imprint's health either way. A probe gives its slot back.
            Err(e) if e.never_sent() && !matches!(e, UpstreamError::Transport { .. }) => {
                self.release(admission)
            }
            Err(e) => self.breaker.record(admission, e.is_upstream_failure()),
            Ok(()) => self.breaker.record(admission, false),
        }
    }

    fn release(&self, admission: Admission) {
        if let Admission::Probe { generation } = admission {
            self.breaker.release_probe(generation);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let cut_by_deadline = self.deadline.is_some_and(|d| Instant::now() >= d);
        let waited_on_imprint = self.stats.since_sent().is_some_and(|w| w >= SLOW_FLOOR);
        if cut_by_deadline && waited_on_imprint {
            tracing::debug!("call cut by its deadline while Imprint had it: a failure of Imprint");
            self.breaker.record(admission, true);
        } else {
            self.release(admission);
        }
    }
}

/// Builds [`CircuitBreaker`]; every clone shares one breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<Breaker>,
}

impl CircuitBreakerLayer {
    /// A closed breaker whose state and transitions are recorded in
    /// `telemetry`'s metrics.
    pub fn new(config: BreakerConfig, telemetry: Arc<Telemetry>) -> Self {
        let breaker = Breaker {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                start: Instant::now(),
                slots: [Slot::default(); SLOTS],
            }),
            telemetry,
        };
        let host = KeyValue::new(
            "server.address",
            breaker.telemetry.upstream_host().to_string(),
        );
        breaker.record_state(State::Closed.name(), &host);
        Self {
            breaker: Arc::new(breaker),
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// Fails fast while open; counts outcomes while closed.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S> Service<UpstreamRequest> for CircuitBreaker<S>
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
        let admission = match self.breaker.admit() {
            Ok(a) => a,
            Err(e) => return Box::pin(futures::future::ready(Err(e))),
        };
        let permit = Permit {
            breaker: self.breaker.clone(),
            admission: Some(admission),
            deadline: req.deadline,
            stats: req.stats.clone(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            permit.finish(result.as_ref().map(|_| ()));
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::upstream::{test_support::request, ApiError};

    fn breaker_layer(config: BreakerConfig) -> CircuitBreakerLayer {
        CircuitBreakerLayer::new(config, Telemetry::disabled())
    }

    fn unavailable() -> UpstreamError {
        UpstreamError::Status {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            error: Box::new(ApiError::default()),
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_fails_fast_probes_and_closes() {
        let healthy = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let (h, c) = (healthy.clone(), calls.clone());
        let upstream = service_fn(move |_: UpstreamRequest| {
            c.fetch_add(1, Ordering::SeqCst);
            let ok = h.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(unavailable())
                }
            }
        });
        let svc = breaker_layer(BreakerConfig {
            window: Duration::from_secs(10),
            min_requests: 4,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        })
        .layer(upstream);

        for _ in 0..4 {
            svc.clone().oneshot(request()).await.unwrap_err();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Open: fails fast without calling Imprint, saying when to come back.
        let err = svc.clone().oneshot(request()).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::CircuitOpen { retry_after } if retry_after == Duration::from_secs(5))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        // After open_for, one probe; it fails: open again.
        tokio::time::advance(Duration::from_secs(5)).await;
        svc.clone().oneshot(request()).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert!(matches!(
            svc.clone().oneshot(request()).await,
            Err(UpstreamError::CircuitOpen { .. })
        ));

        // Imprint recovers; the next probe closes the breaker.
        healthy.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(5)).await;
        svc.clone().oneshot(request()).await.unwrap();
        svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let fail = Arc::new(AtomicBool::new(true));
        let f = fail.clone();
        let upstream = service_fn(move |_: UpstreamRequest| {
            let failing = f.load(Ordering::SeqCst);
            async move {
                if failing {
                    Err(unavailable())
                } else {
                    Ok(())
                }
            }
        });
        let svc = breaker_layer(BreakerConfig {
            window: Duration::from_secs(10),
            min_requests: 4,
            failure_rate: 0.5,
            ..BreakerConfig::default()
        })
        .layer(upstream);
        for _ in 0..3 {
            svc.clone().oneshot(request()).await.unwrap_err();
        }
        // Those failures age out of the window before the next ones come.
        tokio::time::advance(Duration::from_secs(11)).await;
        fail.store(false, Ordering::SeqCst);
        for _ in 0..3 {
            svc.clone().oneshot(request()).await.unwrap();
        }
        fail.store(true, Ordering::SeqCst);
        // 1 failure in 4 recent attempts: stays closed.
        svc.clone().oneshot(request()).await.unwrap_err();
        assert!(matches!(
            svc.clone().oneshot(request()).await,
            Err(UpstreamError::Status { .. })
        ));
    }

    fn hanging_after(
        healthy_from: u32,
    ) -> (
        impl Service<UpstreamRequest, Response = (), Error = UpstreamError, Future: Send>
            + Clone
            + Send
            + 'static,
        Arc<AtomicU32>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let svc = service_fn(move |r: UpstreamRequest| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            r.stats.note_sent();
            async move {
                if n < healthy_from {
                    // Imprint hangs: only the caller's deadline ends this.
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        });
        (svc, calls)
    }

    fn with_deadline(ms: u64) -> UpstreamRequest {
        let mut r = request();
        r.deadline = Some(Instant::now() + Duration::from_millis(ms));
        r.stats = Arc::default();
        r
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_requests: 4,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_imprint_opens_it_even_under_short_deadlines() {
        let (upstream, calls) = hanging_after(u32::MAX);
        let svc =
            crate::upstream::DeadlineLayer::new().layer(breaker_layer(config()).layer(upstream));
        for _ in 0..4 {
            let err = svc.clone().oneshot(with_deadline(200)).await.unwrap_err();
            assert!(matches!(err, UpstreamError::DeadlineExceeded), "{err:?}");
        }
        // Four calls cut by their deadline: Imprint is failing, stop calling it.
        let err = svc.clone().oneshot(with_deadline(200)).await.unwrap_err();
        assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_cut_by_its_deadline_reopens_instead_of_wedging() {
        // Calls 1-5 hang; from the 6th Imprint answers.
        let (upstream, calls) = hanging_after(6);
        let svc =
            crate::upstream::DeadlineLayer::new().layer(breaker_layer(config()).layer(upstream));
        for _ in 0..4 {
            svc.clone().oneshot(with_deadline(100)).await.unwrap_err();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        // The probe (call 5) hangs and is cut by its deadline: open again.
        let err = svc.clone().oneshot(with_deadline(100)).await.unwrap_err();
        assert!(matches!(err, UpstreamError::DeadlineExceeded), "{err:?}");
        let err = svc.clone().oneshot(with_deadline(100)).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::CircuitOpen { retry_after } if retry_after > Duration::from_secs(4)),
            "open again, for open_for: {err:?}"
        );
        // Next probe finds Imprint healthy: closed, calls flow.
        tokio::time::advance(Duration::from_secs(5)).await;
        svc.clone().oneshot(with_deadline(100)).await.unwrap();
        svc.clone().oneshot(with_deadline(100)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_gives_its_slot_back() {
        // Calls 1-4 fail (503), the probe (5) hangs, then Imprint is well.
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let upstream = service_fn(move |r: UpstreamRequest| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            r.stats.note_sent();
            async move {
                match n {
                    1..=4 => Err(unavailable()),
                    5 => std::future::pending().await,
                    _ => Ok(()),
                }
            }
        });
        let svc =
            crate::upstream::DeadlineLayer::new().layer(breaker_layer(config()).layer(upstream));
        for _ in 0..4 {
            svc.clone().oneshot(with_deadline(100)).await.unwrap_err();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        // The probe's caller goes away long before its deadline.
        let probe = svc.clone().oneshot(with_deadline(60_000));
        assert!(
            tokio::time::timeout(Duration::from_millis(10), probe)
                .await
                .is_err(),
            "the probe hangs"
        );
        // The slot is free again: the next call probes, finds Imprint well.
        svc.clone().oneshot(with_deadline(100)).await.unwrap();
        svc.clone().oneshot(with_deadline(100)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }

    /// With several probes, one admitted in an earlier half-open period
    /// (overtaken by another probe's failure) decides nothing in a later one.
    #[tokio::test(start_paused = true)]
    async fn a_stale_probe_does_not_decide_a_later_half_open_period() {
        // 1-4 fail (open); 5 waits for `release` then succeeds; 6 fails;
        // later calls hang.
        let calls = Arc::new(AtomicU32::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let (c, r) = (calls.clone(), release.clone());
        let upstream = service_fn(move |_: UpstreamRequest| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let r = r.clone();
            async move {
                match n {
                    1..=4 | 6 => Err(unavailable()),
                    5 => {
                        r.notified().await;
                        Ok(())
                    }
                    _ => std::future::pending().await,
                }
            }
        });
        let svc = breaker_layer(BreakerConfig {
            half_open_probes: 2,
            ..config()
        })
        .layer(upstream);
        for _ in 0..4 {
            svc.clone().oneshot(request()).await.unwrap_err();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        // Half-open, first period: probe 5 waits, probe 6 fails (open again).
        let stale = tokio::spawn(svc.clone().oneshot(request()));
        for _ in 0..100 {
            if calls.load(Ordering::SeqCst) == 5 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        svc.clone().oneshot(request()).await.unwrap_err();
        assert!(matches!(
            svc.clone().oneshot(request()).await,
            Err(UpstreamError::CircuitOpen { .. })
        ));
        // Second period: probes 7 and 8 hang; then the stale probe succeeds.
        tokio::time::advance(Duration::from_secs(5)).await;
        let _probes = [
            tokio::spawn(svc.clone().oneshot(request())),
            tokio::spawn(svc.clone().oneshot(request())),
        ];
        for _ in 0..100 {
            if calls.load(Ordering::SeqCst) == 8 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 8);
        release.notify_one();
        stale.await.unwrap().unwrap();
        // Still half-open with both slots taken: not closed by the stale one
        // (closed, the call would reach the hanging Imprint).
        let answer = tokio::time::timeout(Duration::from_secs(1), svc.clone().oneshot(request()))
            .await
            .expect("refused at once, not sent to Imprint");
        assert!(
            matches!(answer, Err(UpstreamError::CircuitOpen { .. })),
            "{answer:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_do_not_open_it() {
        let upstream = service_fn(|_: UpstreamRequest| async {
            Err::<(), _>(UpstreamError::Status {
                status: http::StatusCode::NOT_FOUND,
                error: Box::new(ApiError::default()),
                retry_after: None,
            })
        });
        let svc = breaker_layer(BreakerConfig {
            min_requests: 2,
            ..BreakerConfig::default()
        })
        .layer(upstream);
        for _ in 0..10 {
            let err = svc.clone().oneshot(request()).await.unwrap_err();
            assert!(matches!(err, UpstreamError::Status { .. }));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tiny_deadlines_and_shed_calls_say_nothing_about_imprint() {
        // Imprint hangs, but the callers' deadlines (5 ms) are far too short
        // to blame it; and calls refused below the breaker never reached it.
        let (upstream, calls) = hanging_after(u32::MAX);
        let svc =
            crate::upstream::DeadlineLayer::new().layer(breaker_layer(config()).layer(upstream));
        for _ in 0..10 {
            svc.clone().oneshot(with_deadline(5)).await.unwrap_err();
        }
        let shed = breaker_layer(config()).layer(service_fn(|_: UpstreamRequest| async {
            Err::<(), _>(UpstreamError::Overloaded)
        }));
        for _ in 0..10 {
            shed.clone().oneshot(request()).await.unwrap_err();
        }
        let err = svc.clone().oneshot(with_deadline(5)).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::DeadlineExceeded),
            "still closed: {err:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 11);
        let err = shed.oneshot(request()).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::Overloaded),
            "still closed: {err:?}"
        );
    }
}

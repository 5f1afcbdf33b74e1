//! The REST client for Imprint and the tower stack around it.
//!
//! Everything that happens to every upstream call is a layer, assembled in
//! one place, [`crate::stack`]; handlers only build an [`UpstreamRequest`].
//! The request, response and error types here are what every layer shares
//! (the idempotency, cache and credentials layers included): they import
//! this module, and only `stack` imports them, so no two modules import
//! each other.

mod attempt;
mod breaker;
mod client;
mod deadline;
mod error;
mod limit;
mod retry;
mod trace;

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;

pub use attempt::{AttemptTelemetry, AttemptTelemetryLayer};
pub use breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
pub use client::{ClientConfig, HttpClient};
pub use deadline::{AttemptTimeout, AttemptTimeoutLayer, Deadline, DeadlineLayer};
pub use error::{
    decode_where, ApiError, IdempotencyError, StoreError, TransportKind, UpstreamError,
};
pub use limit::{LoadShed, LoadShedConfig, LoadShedLayer};
pub use retry::{Retry, RetryConfig, RetryLayer};
pub use trace::{Trace, TraceLayer};

use crate::translate::RestCall;

/// Takes the service that `poll_ready` just readied, leaving a clone in its
/// place: the readied one serves this call (a clone may not be ready), as
/// tower's guidance for `Clone` services in `call` says.
pub(crate) fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

/// What the response cache did with a call (`x-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from a stored entry (or by joining a flight in progress).
    Hit,
    /// Answered by the upstream call this call made.
    Miss,
    /// The cache was skipped: `no-cache`, a sensitive request field, or
    /// the replica lost its invalidation feed.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// One call to Imprint, as it travels down the stack.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Full gRPC method the call serves (for spans and metrics).
    pub rpc: &'static str,
    /// The route template, e.g. `/v2/customers/{customer_id}`: low
    /// cardinality, and free of ids.
    pub template: &'static str,
    /// What goes on the wire.
    pub call: RestCall,
    /// Extra headers; the credentials layer adds `authorization` here.
    pub headers: HeaderMap,
    /// When the caller stops waiting; bounds everything below.
    pub deadline: Option<Instant>,
    /// Sent as `x-request-id` and returned to the caller.
    pub request_id: Arc<str>,
    /// Who is calling (scopes idempotency keys).
    pub caller: Arc<str>,
    /// The caller's `idempotency-key`, on mutating calls.
    pub idempotency_key: Option<Arc<str>>,
    /// Whether the RPC changes state (a property of the route, not of the
    /// HTTP method: a search sent as POST to keep an SSN out of the URL is
    /// not a mutation). Only mutations are subject to idempotency keys.
    pub mutating: bool,
    /// Request fields that are sensitive (the route's declaration): redacted
    /// wherever the call is recorded.
    pub sensitive_fields: &'static [&'static str],
    /// Response fields that are secrets, at any depth: never stored.
    pub secret_fields: &'static [&'static str],
    /// What the layers did, for the caller's metadata.
    pub stats: Arc<CallStats>,
    /// The configured product whose credential the call uses (`x-imprint-product`);
    /// `None`: the default product. Scopes cache entries and idempotency keys.
    pub product: Option<Arc<str>>,
    /// A key to authenticate this call with instead of the product's
    /// active one (DeleteKey: Imprint deletes the key that authenticates it;
    /// rotation: the new key's verification). Never logged (`Debug` hides it).
    pub authenticate_with: Option<secrecy::SecretString>,
}

impl UpstreamRequest {
    /// Whether the HTTP method is idempotent by definition (GET, PUT, DELETE...).
    pub fn idempotent_method(&self) -> bool {
        self.call.method.is_idempotent()
    }
}

/// What happened to one call inside the stack: attempts made, why the last
/// retry happened, whether an idempotent replay answered it.
#[derive(Debug, Default)]
pub struct CallStats {
    attempts: AtomicU32,
    /// Attempts that provably did not reach Imprint or that Imprint
    /// answered without processing (connect refused, 429, 503, shed).
    unprocessed: AtomicU32,
    last_cause: Mutex<Option<String>>,
    replayed: std::sync::atomic::AtomicBool,
    /// When the first request of this call went on the wire to Imprint.
    sent_at: Mutex<Option<Instant>>,
    /// What the response cache did (0: not a cacheable call).
    cache: std::sync::atomic::AtomicU8,
    /// The call's log span and trace context, for layers that run in
    /// another task (the response cache runs a miss in its own).
    trace: std::sync::OnceLock<(tracing::Span, opentelemetry::Context)>,
}

impl CallStats {
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub(crate) fn add_attempt(&self) -> u32 {
        self.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts an attempt that provably was not processed.
    pub(crate) fn add_unprocessed(&self) {
        self.unprocessed.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes how an attempt failed (whether it provably was not processed).
    pub(crate) fn note_failed_attempt(&self, err: &UpstreamError) {
        if err.not_processed() {
            self.add_unprocessed();
        }
    }

    /// Whether every attempt made so far provably was not processed (true
    /// when none was made): the call can be run again without risk.
    pub fn nothing_processed(&self) -> bool {
        self.unprocessed.load(Ordering::Relaxed) >= self.attempts()
    }

    /// Notes that a request is going on the wire to Imprint now.
    pub(crate) fn note_sent(&self) {
        self.sent_at.lock().get_or_insert_with(Instant::now);
    }

    /// How long ago the first request went on the wire, if one did.
    pub fn since_sent(&self) -> Option<Duration> {
        self.sent_at.lock().map(|t| t.elapsed())
    }

    /// Why the previous attempt was retried (e.g. `HTTP 503`).
    pub fn last_cause(&self) -> Option<String> {
        self.last_cause.lock().clone()
    }

    pub(crate) fn set_cause(&self, cause: String) {
        *self.last_cause.lock() = Some(cause);
    }

    pub fn replayed(&self) -> bool {
        self.replayed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_replayed(&self) {
        self.replayed.store(true, Ordering::Relaxed);
    }

    /// `x-cache`: set on calls to cacheable RPCs only.
    pub fn cache(&self) -> Option<CacheStatus> {
        match self.cache.load(Ordering::Relaxed) {
            1 => Some(CacheStatus::Hit),
            2 => Some(CacheStatus::Miss),
            3 => Some(CacheStatus::Bypass),
            _ => None,
        }
    }

    /// The call's log span and trace context, once the trace layer set them.
    pub fn trace(&self) -> Option<&(tracing::Span, opentelemetry::Context)> {
        self.trace.get()
    }

    pub(crate) fn set_trace(&self, span: tracing::Span, cx: opentelemetry::Context) {
        let _ = self.trace.set((span, cx));
    }

    pub(crate) fn set_cache(&self, status: CacheStatus) {
        let v = match status {
            CacheStatus::Hit => 1,
            CacheStatus::Miss => 2,
            CacheStatus::Bypass => 3,
        };
        self.cache.store(v, Ordering::Relaxed);
    }
}

/// A successful (2xx) answer from Imprint. Non-2xx answers are
/// [`UpstreamError::Status`], so every layer sees failures the same way.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// For an answer from the response cache: the entry's slot for the
    /// decoded message, so that hits after the first skip JSON decoding.
    pub decoded: Option<DecodedSlot>,
}

/// Where a cache entry keeps its body decoded (set by the first hit that
/// decodes it; read, by type, by every later one).
pub type DecodedSlot = Arc<std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>>;

/// The assembled stack, boxed at the boundary to keep types readable.
pub type UpstreamService = BoxCloneSyncService<UpstreamRequest, UpstreamResponse, UpstreamError>;

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A minimal request for layer tests.
    pub(crate) fn request() -> UpstreamRequest {
        UpstreamRequest {
            rpc: "imprint.v2.CustomerService/GetCustomer",
            template: "/v2/customers/{customer_id}",
            call: RestCall {
                method: http::Method::GET,
                path_and_query: "/v2/customers/c1".into(),
                body: None,
                sensitive: Vec::new(),
            },
            headers: HeaderMap::new(),
            deadline: None,
            request_id: "req-1".into(),
            caller: "tester".into(),
            idempotency_key: None,
            mutating: false,
            sensitive_fields: &[],
            secret_fields: &[],
            stats: Arc::default(),
            product: None,
            authenticate_with: None,
        }
    }
}

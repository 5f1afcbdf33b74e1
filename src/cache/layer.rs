//! The cache tower layer.

use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::{header::CACHE_CONTROL, HeaderMap, StatusCode};
use parking_lot::Mutex;
use tower::{Layer, Service, ServiceExt};

use super::{rules, CacheConfig, CacheStatus, Entry, Key, ResponseCache};
use crate::{
    credentials::CredentialStore,
    idempotency::IdempotencyError,
    upstream::{ApiError, DecodedSlot, UpstreamError, UpstreamRequest, UpstreamResponse},
};

/// Builds [`Cache`].
#[derive(Debug, Clone)]
pub struct CacheLayer {
    cache: Arc<ResponseCache>,
}

impl CacheLayer {
    /// A layer over a new cache; [`CacheLayer::cache`] is its handle.
    pub fn new(config: CacheConfig, credentials: Arc<CredentialStore>) -> Self {
        Self::over(ResponseCache::new(config, credentials))
    }

    /// A layer over an existing cache (shared with the admin service).
    pub fn over(cache: Arc<ResponseCache>) -> Self {
        Self { cache }
    }

    pub fn cache(&self) -> &Arc<ResponseCache> {
        &self.cache
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;
    fn layer(&self, inner: S) -> Cache<S> {
        Cache {
            inner: Arc::new(inner),
            cache: self.cache.clone(),
        }
    }
}

/// Answers cacheable reads from memory; invalidates on writes.
#[derive(Debug)]
pub struct Cache<S> {
    /// Shared, and cloned (a copy of every layer below) only for a call
    /// that goes below: a hit, and a clone of the stack above for a call,
    /// cost two reference counts here.
    inner: Arc<S>,
    cache: Arc<ResponseCache>,
}

impl<S> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<S> Service<UpstreamRequest> for Cache<S>
where
    S: Service<UpstreamRequest, Response = UpstreamResponse, Error = UpstreamError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = UpstreamResponse;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<UpstreamResponse, UpstreamError>>;

    /// Always ready: a hit needs nothing below, and a miss readies a clone
    /// of the inner service itself (`oneshot`).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: UpstreamRequest) -> Self::Future {
        Box::pin(serve(self.cache.clone(), self.inner.clone(), req))
    }
}

async fn serve<S>(
    cache: Arc<ResponseCache>,
    inner: Arc<S>,
    req: UpstreamRequest,
) -> Result<UpstreamResponse, UpstreamError>
where
    S: Service<UpstreamRequest, Response = UpstreamResponse, Error = UpstreamError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    if req.mutating {
        let tags = rules::lookup(rules::WRITES, req.rpc)
            .map(|t| rules::tag_strings(t, |name| field(&req, name), false));
        let result = S::clone(&inner).oneshot(req).await;
        if may_have_changed(&result) {
            match tags {
                Some(tags) => cache.invalidate_tags(tags),
                // A write nobody declared: drop everything rather than guess.
                None => cache.purge_all(),
            }
        }
        return result;
    }
    // A call with a key of its own (the rotation's verification read,
    // KeyService/DeleteKey) must reach Imprint with that key: entries and
    // flights are keyed by the product's active key, so neither may answer
    // it, and its answer (for another key) is not stored.
    if req.authenticate_with.is_some() {
        req.stats.set_cache(CacheStatus::Bypass);
        cache.stats.bypasses.fetch_add(1, Ordering::Relaxed);
        return S::clone(&inner).oneshot(req).await;
    }
    let Some(ttl) = cache.config.ttl_of(req.rpc) else {
        return S::clone(&inner).oneshot(req).await;
    };
    // Validation refuses these in `cache.ttl`; checked again per call
    // since this is the rule that keeps secrets out.
    if !req.secret_fields.is_empty() {
        return S::clone(&inner).oneshot(req).await;
    }
    let stats = req.stats.clone();
    // The call's own product: two products never share an entry.
    let product = req
        .product
        .as_deref()
        .unwrap_or(crate::credentials::DEFAULT_PRODUCT);
    let Some(credential) = cache.credentials.get(product) else {
        return S::clone(&inner).oneshot(req).await;
    };
    // A set sensitive field (SSN, PAN...) would be part of the key.
    if !req.call.sensitive.is_empty() || !cache.usable() {
        stats.set_cache(CacheStatus::Bypass);
        cache.stats.bypasses.fetch_add(1, Ordering::Relaxed);
        return S::clone(&inner).oneshot(req).await;
    }
    let key = Key {
        scope: credential.product_fingerprint().clone(),
        rpc: req.rpc,
        method: req.call.method.clone(),
        path_and_query: req.call.path_and_query.clone(),
        body: req.call.body.clone(),
    };
    let ttls = Ttls {
        ok: ttl,
        not_found: cache.config.not_found_ttl,
    };
    if no_cache(&req.headers) {
        // Skip the entry, and refresh it with this answer.
        stats.set_cache(CacheStatus::Bypass);
        cache.stats.bypasses.fetch_add(1, Ordering::Relaxed);
        let epoch = cache.epoch();
        let tags = read_tags(&req);
        let result = S::clone(&inner).oneshot(req).await;
        if let Some(entry) = storable(&result, tags, ttls) {
            if cache.epoch() == epoch && cache.usable() {
                cache.entries.insert(key, entry).await;
            }
        }
        return result;
    }
    if let Some(entry) = cache.entries.get(&key).await {
        stats.set_cache(CacheStatus::Hit);
        cache.stats.hits.fetch_add(1, Ordering::Relaxed);
        return answer(&entry);
    }

    // A miss: one upstream call per key however many callers wait on it.
    let ran = Arc::new(AtomicBool::new(false));
    let epoch = cache.epoch();
    let init = {
        let (cache, ran) = (cache.clone(), ran.clone());
        let tags = read_tags(&req);
        async move {
            ran.store(true, Ordering::SeqCst);
            // Its own task: if this caller goes away, the call still
            // finishes for those waiting on it. The task carries the
            // call's log span and trace context (kept in its stats by the
            // trace layer), so its attempts still get CLIENT spans, send
            // `traceparent` and log the call's trace id.
            let traced = req.stats.trace().cloned();
            let call = S::clone(&inner).oneshot(req);
            let task = match traced {
                Some((span, cx)) => {
                    use opentelemetry::trace::FutureExt as _;
                    use tracing::Instrument as _;
                    tokio::spawn(call.with_context(cx).instrument(span))
                }
                None => tokio::spawn(call),
            };
            let result = match task.await {
                Ok(r) => r,
                Err(_) => Err(UpstreamError::AttemptTimeout),
            };
            match storable(&result, tags, ttls) {
                Some(entry) if cache.epoch() == epoch && cache.usable() => Ok(entry),
                _ => Err(Flight::new(result)),
            }
        }
    };
    match cache.entries.try_get_with(key.clone(), init).await {
        Ok(entry) => {
            if ran.load(Ordering::SeqCst) {
                stats.set_cache(CacheStatus::Miss);
                cache.stats.misses.fetch_add(1, Ordering::Relaxed);
                // An invalidation between our check and moka's insert.
                if cache.epoch() != epoch {
                    cache.entries.invalidate(&key).await;
                }
            } else {
                stats.set_cache(CacheStatus::Hit);
                cache.stats.hits.fetch_add(1, Ordering::Relaxed);
            }
            answer(&entry)
        }
        Err(flight) => {
            stats.set_cache(CacheStatus::Miss);
            cache.stats.misses.fetch_add(1, Ordering::Relaxed);
            flight.take()
        }
    }
}

#[derive(Clone, Copy)]
struct Ttls {
    ok: Duration,
    not_found: Duration,
}

/// Whether a finished write may have changed something: everything but a
/// final refusal from Imprint or a call that provably never left.
fn may_have_changed(result: &Result<UpstreamResponse, UpstreamError>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) if e.never_sent() || e.refused_unprocessed() => false,
        Err(UpstreamError::Status { status, .. }) => !status.is_client_error(),
        Err(_) => true,
    }
}

fn no_cache(headers: &HeaderMap) -> bool {
    directive(headers, "no-cache")
}

fn directive(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case(name)))
    })
}

/// The entry to store for a result, if it may be stored.
fn storable(
    result: &Result<UpstreamResponse, UpstreamError>,
    tags: Arc<[String]>,
    ttls: Ttls,
) -> Option<Entry> {
    match result {
        Ok(resp) if resp.status.is_success() && !directive(&resp.headers, "no-store") => {
            Some(Entry {
                status: resp.status,
                // A copy: the answer's body is a slice of the connection's
                // read buffer (8 KiB and up), which a shared handle would
                // keep alive for as long as the entry, unseen by the weigher.
                body: bytes::Bytes::copy_from_slice(&resp.body),
                decoded: DecodedSlot::default(),
                not_found: None,
                tags,
                ttl: ttls.ok,
            })
        }
        Err(UpstreamError::Status { status, error, .. })
            if *status == StatusCode::NOT_FOUND && !ttls.not_found.is_zero() =>
        {
            Some(Entry {
                status: *status,
                body: bytes::Bytes::new(),
                decoded: DecodedSlot::default(),
                not_found: Some(Arc::new(ApiError::clone(error))),
                tags,
                ttl: ttls.not_found.min(ttls.ok),
            })
        }
        _ => None,
    }
}

fn answer(entry: &Entry) -> Result<UpstreamResponse, UpstreamError> {
    match &entry.not_found {
        Some(error) => Err(UpstreamError::Status {
            status: entry.status,
            error: Box::new(ApiError::clone(error)),
            retry_after: None,
        }),
        None => Ok(UpstreamResponse {
            status: entry.status,
            headers: HeaderMap::new(),
            body: entry.body.clone(),
            decoded: Some(entry.decoded.clone()),
        }),
    }
}

/// The tags an answer to `req` is stored with.
fn read_tags(req: &UpstreamRequest) -> Arc<[String]> {
    rules::lookup(rules::READS, req.rpc)
        .map(|t| rules::tag_strings(t, |name| field(req, name), true))
        .unwrap_or_default()
        .into()
}

/// A request field's value: from the path (by the route template), the
/// query string, or the top level of the JSON body.
fn field<'a>(req: &'a UpstreamRequest, name: &str) -> Option<Cow<'a, str>> {
    let (path, query) = req
        .call
        .path_and_query
        .split_once('?')
        .unwrap_or((&req.call.path_and_query, ""));
    // The template segment `{name}` holds the field: compared in place, no
    // allocation on the call path.
    for (t, v) in req.template.split('/').zip(path.split('/')) {
        if t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) == Some(name) {
            return Some(percent_encoding::percent_decode_str(v).decode_utf8_lossy());
        }
    }
    for pair in query.split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            if k == name {
                return Some(percent_encoding::percent_decode_str(v).decode_utf8_lossy());
            }
        }
    }
    let body = req.call.body.as_ref()?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get(name)? {
        serde_json::Value::String(s) => Some(Cow::Owned(s.clone())),
        _ => None,
    }
}

/// The outcome of a flight that was not stored: the caller that ran it
/// gets the original, its waiters a copy.
pub(crate) struct Flight {
    original: Mutex<Option<Result<UpstreamResponse, UpstreamError>>>,
    copy: Result<UpstreamResponse, SharedError>,
}

impl Flight {
    fn new(result: Result<UpstreamResponse, UpstreamError>) -> Self {
        let copy = match &result {
            Ok(r) => Ok(r.clone()),
            Err(e) => Err(SharedError::from(e)),
        };
        Self {
            original: Mutex::new(Some(result)),
            copy,
        }
    }

    fn take(&self) -> Result<UpstreamResponse, UpstreamError> {
        if let Some(original) = self.original.lock().take() {
            return original;
        }
        match &self.copy {
            Ok(r) => Ok(r.clone()),
            Err(e) => Err(e.to_error()),
        }
    }
}

/// An [`UpstreamError`] that can be handed to several callers. A transport
/// error (a transport error cannot be copied) reaches waiters as the
/// attempt timeout: the same status (UNAVAILABLE) and the same facts for a
/// read.
#[derive(Clone)]
enum SharedError {
    Status {
        status: StatusCode,
        error: Box<ApiError>,
        retry_after: Option<Duration>,
    },
    DeadlineExceeded,
    NoCredential,
    Decode(String),
    AttemptTimeout,
    CircuitOpen(Duration),
    Overloaded,
    Idempotency(IdempotencyError),
}

impl From<&UpstreamError> for SharedError {
    fn from(e: &UpstreamError) -> Self {
        match e {
            UpstreamError::Status {
                status,
                error,
                retry_after,
            } => SharedError::Status {
                status: *status,
                error: error.clone(),
                retry_after: *retry_after,
            },
            UpstreamError::Transport { .. } | UpstreamError::AttemptTimeout => {
                SharedError::AttemptTimeout
            }
            UpstreamError::DeadlineExceeded => SharedError::DeadlineExceeded,
            UpstreamError::NoCredential => SharedError::NoCredential,
            UpstreamError::Decode(e) => SharedError::Decode(e.to_string()),
            UpstreamError::CircuitOpen { retry_after } => SharedError::CircuitOpen(*retry_after),
            UpstreamError::Overloaded => SharedError::Overloaded,
            UpstreamError::Idempotency(e) => SharedError::Idempotency(e.clone()),
        }
    }
}

impl SharedError {
    fn to_error(&self) -> UpstreamError {
        match self {
            SharedError::Status {
                status,
                error,
                retry_after,
            } => UpstreamError::Status {
                status: *status,
                error: error.clone(),
                retry_after: *retry_after,
            },
            SharedError::DeadlineExceeded => UpstreamError::DeadlineExceeded,
            SharedError::NoCredential => UpstreamError::NoCredential,
            SharedError::Decode(m) => {
                UpstreamError::Decode(<serde_json::Error as serde::de::Error>::custom(m))
            }
            SharedError::AttemptTimeout => UpstreamError::AttemptTimeout,
            SharedError::CircuitOpen(d) => UpstreamError::CircuitOpen { retry_after: *d },
            SharedError::Overloaded => UpstreamError::Overloaded,
            SharedError::Idempotency(e) => UpstreamError::Idempotency(e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry holds its own copy of the body, not a share of the buffer
    /// the body was read into.
    #[test]
    fn a_stored_body_does_not_keep_the_read_buffer_alive() {
        let buffer = bytes::Bytes::from(vec![b'x'; 8192]);
        let body = buffer.slice(100..720);
        let ok = Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.clone(),
            decoded: None,
        });
        let ttls = Ttls {
            ok: Duration::from_secs(60),
            not_found: Duration::ZERO,
        };
        let entry = storable(&ok, Arc::from([]), ttls).expect("a 200 is stored");
        assert_eq!(entry.body, body);
        let within = buffer.as_ptr_range();
        assert!(!within.contains(&entry.body.as_ptr()));
    }
}

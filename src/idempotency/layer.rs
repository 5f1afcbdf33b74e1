//! The idempotency tower layer.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{IdempotencyConfig, IdempotencyError, IdempotencyStore, Record, RecordState};
use crate::upstream::{UpstreamError, UpstreamRequest, UpstreamResponse};

/// Builds [`Idempotency`].
#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Arc<dyn IdempotencyStore>,
    config: IdempotencyConfig,
}

impl IdempotencyLayer {
    pub fn new(store: Arc<dyn IdempotencyStore>, config: IdempotencyConfig) -> Self {
        Self { store, config }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Idempotency<S> {
        Idempotency {
            inner,
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

/// Runs a keyed mutation once; answers duplicates from the record.
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    store: Arc<dyn IdempotencyStore>,
    config: IdempotencyConfig,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// SHA-256 over what makes two calls "the same request".
fn fingerprint(req: &UpstreamRequest) -> String {
    let mut h = Sha256::new();
    h.update(req.rpc.as_bytes());
    h.update([0]);
    h.update(req.call.method.as_str().as_bytes());
    h.update([0]);
    h.update(req.call.path_and_query.as_bytes());
    h.update([0]);
    if let Some(body) = &req.call.body {
        h.update(body);
    }
    hex::encode(h.finalize())
}

/// What to do with the claim once the call ended.
enum Outcome {
    /// Imprint provably did not process it: let a retry run again.
    Release,
    Record(RecordState),
}

/// The body with every field named in `fields` removed at any depth (list
/// items included); `None` when secrets are declared but the body is not
/// JSON that could be cleaned, so nothing of it may be stored.
fn strip_secrets(body: &Bytes, fields: &[&'static str]) -> Option<String> {
    if fields.is_empty() {
        return Some(String::from_utf8_lossy(body).into_owned());
    }
    let mut value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    crate::json::remove_fields(&mut value, fields);
    Some(value.to_string())
}

/// Imprint's answers that are final for the request: the same request
/// would get the same answer, so a duplicate may be answered from the
/// record. 401/403 (the gateway's credential), 408 and 429 are not: they
/// say nothing about the request and it was not processed.
fn is_final_refusal(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 404 | 409 | 410 | 422)
}

/// What the claim becomes once the call ended. Only what is final is
/// recorded; what provably was not processed releases the key; what may
/// have been processed is recorded as unknown and never sent again.
fn outcome(req: &UpstreamRequest, result: &Result<UpstreamResponse, UpstreamError>) -> Outcome {
    match result {
        Ok(resp) => match strip_secrets(&resp.body, req.secret_fields) {
            Some(body) => Outcome::Record(RecordState::Succeeded {
                status: resp.status.as_u16(),
                body,
            }),
            None => Outcome::Record(RecordState::Unknown {
                reason: "Imprint processed it, but its answer holds secrets and was not kept"
                    .into(),
            }),
        },
        // Released only when no attempt may have executed: a retried PUT
        // whose first attempt timed out and whose last got a 503 may have run.
        Err(e) if e.not_processed() && req.stats.nothing_processed() => Outcome::Release,
        Err(UpstreamError::Status {
            status,
            error,
            retry_after,
        }) if is_final_refusal(*status) => Outcome::Record(RecordState::Failed {
            status: status.as_u16(),
            error: error.clone(),
            retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
        }),
        Err(UpstreamError::Status { status, .. })
            if status.is_client_error() && req.stats.nothing_processed() =>
        {
            Outcome::Release
        }
        // Cut by the deadline: unknown only if some attempt may have been
        // processed (not when it fired while backing off after a 503).
        Err(UpstreamError::DeadlineExceeded) if req.stats.nothing_processed() => Outcome::Release,
        Err(e) => Outcome::Record(RecordState::Unknown { reason: e.cause() }),
    }
}

/// Turns a recorded outcome into what the caller gets.
fn replay(
    record: &Record,
    req: &UpstreamRequest,
) -> Option<Result<UpstreamResponse, UpstreamError>> {
    match &record.state {
        RecordState::InFlight => None,
        RecordState::Succeeded { status, body } => {
            req.stats.set_replayed();
            Some(Ok(UpstreamResponse {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                headers: HeaderMap::new(),
                body: Bytes::from(body.clone()),
                decoded: None,
            }))
        }
        RecordState::Failed {
            status,
            error,
            retry_after_ms,
        } => {
            req.stats.set_replayed();
            Some(Err(UpstreamError::Status {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                error: error.clone(),
                retry_after: retry_after_ms.map(Duration::from_millis),
            }))
        }
        RecordState::Unknown { reason } => {
            Some(Err(IdempotencyError::OutcomeUnknown(reason.clone()).into()))
        }
    }
}

/// The record's key: caller, product (when the call names one) and the
/// idempotency key, each length-prefixed, so no choice of names (with `:`
/// in them) makes two different scopes one key.
fn scope_key(caller: &str, product: Option<&str>, idem_key: &str) -> String {
    let mut key = String::new();
    for part in std::iter::once(caller).chain(product).chain([idem_key]) {
        key.push_str(&format!("{}:{part}", part.len()));
    }
    key
}

fn mismatch(existing: &Record, req: &UpstreamRequest) -> IdempotencyError {
    if existing.rpc != req.rpc {
        IdempotencyError::Mismatch(format!("it was used for {}", existing.rpc))
    } else {
        IdempotencyError::Mismatch(format!(
            "it was used for {} with different parameters",
            existing.rpc
        ))
    }
}

impl<S> Service<UpstreamRequest> for Idempotency<S>
where
    S: Service<UpstreamRequest, Response = UpstreamResponse, Error = UpstreamError>
        + Clone
        + Send
        + 'static,
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
        let inner = crate::upstream::take_ready(&mut self.inner);
        let Some(idem_key) = req.idempotency_key.clone().filter(|_| req.mutating) else {
            let mut inner = inner;
            return Box::pin(inner.call(req));
        };
        let keyed = Keyed {
            // Scoped by caller and product: the same key used for two
            // products names two different calls.
            key: scope_key(&req.caller, req.product.as_deref(), &idem_key),
            claim: Record {
                fingerprint: fingerprint(&req),
                rpc: req.rpc.to_string(),
                token: uuid::Uuid::new_v4().to_string(),
                claimed_at_ms: now_ms(),
                state: RecordState::InFlight,
            },
            store: self.store.clone(),
            config: self.config.clone(),
        };
        // Claim and run in one task of its own: a caller that goes away
        // after the claim was stored cannot leave it in flight for good.
        let task = tokio::spawn(async move {
            match keyed.claim_or_wait(&req).await? {
                Claimed::Answered(answer) => answer,
                Claimed::Ours => keyed.run_to_the_end(inner, req).await,
            }
        });
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(
                    IdempotencyError::OutcomeUnknown(format!("the call was interrupted: {e}"))
                        .into(),
                )
            })
        })
    }
}

/// One keyed call: its key, the claim it makes, where records live.
struct Keyed {
    key: String,
    claim: Record,
    store: Arc<dyn IdempotencyStore>,
    config: IdempotencyConfig,
}

/// How claiming the key ended.
enum Claimed {
    /// The key is ours: run the call.
    Ours,
    /// Another call of this key answered (recorded, or refused).
    Answered(Result<UpstreamResponse, UpstreamError>),
}

// === impl Keyed ===

impl Keyed {
    /// Claims the key; if another call holds it, waits for that call's
    /// outcome (maybe on another replica) and answers with it. A claim
    /// released meanwhile (nothing was processed) is tried again.
    async fn claim_or_wait(&self, req: &UpstreamRequest) -> Result<Claimed, UpstreamError> {
        let mut poll = Duration::from_millis(5);
        loop {
            let claimed = self
                .store
                .claim(&self.key, &self.claim, self.config.retention)
                .await
                .map_err(IdempotencyError::from)?;
            let mut current = match claimed {
                None => return Ok(Claimed::Ours),
                Some(existing) => Some(existing),
            };
            while let Some(record) = current {
                if let Some(answer) = self.answer_from(&record, req) {
                    return Ok(Claimed::Answered(answer));
                }
                if req.deadline.is_some_and(|d| Instant::now() + poll >= d) {
                    return Ok(Claimed::Answered(Err(UpstreamError::DeadlineExceeded)));
                }
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(Duration::from_millis(50));
                current = self
                    .store
                    .get(&self.key)
                    .await
                    .map_err(IdempotencyError::from)?;
            }
        }
    }

    /// What a duplicate gets from the record another call left, or `None`
    /// while that call is still running.
    fn answer_from(
        &self,
        record: &Record,
        req: &UpstreamRequest,
    ) -> Option<Result<UpstreamResponse, UpstreamError>> {
        if record.fingerprint != self.claim.fingerprint {
            return Some(Err(mismatch(record, req).into()));
        }
        if let Some(answer) = replay(record, req) {
            return Some(answer);
        }
        let age = Duration::from_millis(now_ms().saturating_sub(record.claimed_at_ms));
        (age > self.config.in_flight_timeout).then(|| {
            Err(IdempotencyError::OutcomeUnknown(
                "the first call with this key never finished".into(),
            )
            .into())
        })
    }

    /// Runs the call (already in a task of its own, so its outcome is
    /// recorded even if the caller goes away), then records or releases it.
    async fn run_to_the_end<S>(
        self,
        inner: S,
        req: UpstreamRequest,
    ) -> Result<UpstreamResponse, UpstreamError>
    where
        S: Service<UpstreamRequest, Response = UpstreamResponse, Error = UpstreamError>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let result = inner.oneshot(req.clone()).await;
        self.settle(&req, result).await
    }

    /// Records what is final, releases what provably was not processed,
    /// and turns an unknown outcome into the error every duplicate gets.
    async fn settle(
        self,
        req: &UpstreamRequest,
        result: Result<UpstreamResponse, UpstreamError>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let token = self.claim.token.clone();
        let stored = match outcome(req, &result) {
            Outcome::Release => self.store.release(&self.key, &token).await,
            Outcome::Record(state) => {
                let unknown = match &state {
                    RecordState::Unknown { reason } => Some(reason.clone()),
                    _ => None,
                };
                let done = Record {
                    state,
                    ..self.claim
                };
                let stored = self
                    .store
                    .complete(&self.key, &token, &done, self.config.retention)
                    .await;
                if let (Some(reason), Err(_)) = (unknown, &result) {
                    // Even if storing failed: the raw error would read as
                    // UNAVAILABLE and invite a re-send.
                    if let Err(e) = stored {
                        tracing::error!(
                            rpc = req.rpc,
                            "could not record an idempotent outcome: {e}"
                        );
                    }
                    return Err(IdempotencyError::OutcomeUnknown(reason).into());
                }
                stored
            }
        };
        if let Err(e) = stored {
            tracing::error!(rpc = req.rpc, "could not record an idempotent outcome: {e}");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use http::Method;
    use tower::service_fn;

    use super::*;
    use crate::{
        idempotency::MemoryStore,
        upstream::{test_support::request, ApiError},
    };

    fn keyed(body: &'static str) -> UpstreamRequest {
        let mut r = request();
        r.call.method = Method::POST;
        r.call.body = Some(Bytes::from_static(body.as_bytes()));
        r.idempotency_key = Some("key-1".into());
        r.mutating = true;
        r.stats = Arc::default();
        r
    }

    fn layer() -> IdempotencyLayer {
        IdempotencyLayer::new(Arc::new(MemoryStore::new()), IdempotencyConfig::default())
    }

    fn counting(
        answer: fn(u32) -> Result<UpstreamResponse, UpstreamError>,
    ) -> (
        impl Service<
                UpstreamRequest,
                Response = UpstreamResponse,
                Error = UpstreamError,
                Future: Send,
            > + Clone
            + Send
            + 'static,
        Arc<AtomicU32>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let svc = service_fn(move |r: UpstreamRequest| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                r.stats.add_attempt();
                tokio::time::sleep(Duration::from_millis(50)).await;
                let result = answer(n);
                if let Err(e) = &result {
                    r.stats.note_failed_attempt(e);
                }
                result
            }
        });
        (svc, calls)
    }

    fn ok(n: u32) -> Result<UpstreamResponse, UpstreamError> {
        Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(format!("{{\"n\":{n},\"client_secret\":\"s3cr3t\"}}")),
            decoded: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_duplicates_share_one_call() {
        let (svc, calls) = counting(ok);
        let svc = layer().layer(svc);
        let answers =
            futures::future::join_all((0..20).map(|_| svc.clone().oneshot(keyed("{\"a\":1}"))))
                .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let first = answers[0].as_ref().unwrap().body.clone();
        for a in &answers {
            assert_eq!(a.as_ref().unwrap().body, first);
        }
        // Later: replayed without a call.
        let r = keyed("{\"a\":1}");
        let stats = r.stats.clone();
        svc.clone().oneshot(r).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(stats.replayed());
    }

    #[tokio::test(start_paused = true)]
    async fn secrets_are_not_stored() {
        let (svc, _) = counting(ok);
        let svc = layer().layer(svc);
        let mut r = keyed("{}");
        r.secret_fields = &["client_secret"];
        let first = svc.clone().oneshot(r.clone()).await.unwrap();
        assert!(
            String::from_utf8_lossy(&first.body).contains("s3cr3t"),
            "the first caller gets it"
        );
        let replay = svc.oneshot(r).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&replay.body), "{\"n\":1}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_different_request_with_the_same_key_is_refused() {
        let (svc, calls) = counting(ok);
        let svc = layer().layer(svc);
        svc.clone().oneshot(keyed("{\"a\":1}")).await.unwrap();
        let err = svc.clone().oneshot(keyed("{\"a\":2}")).await.unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Idempotency(IdempotencyError::Mismatch(_))
            ),
            "{err:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_outcomes_are_never_resent() {
        let (svc, calls) = counting(|_| {
            Err(UpstreamError::Status {
                status: StatusCode::GATEWAY_TIMEOUT,
                error: Box::new(ApiError::default()),
                retry_after: None,
            })
        });
        let svc = layer().layer(svc);
        for _ in 0..3 {
            let err = svc.clone().oneshot(keyed("{}")).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    UpstreamError::Idempotency(IdempotencyError::OutcomeUnknown(_))
                ),
                "{err:?}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unprocessed_calls_release_the_key() {
        let (svc, calls) = counting(|n| {
            if n == 1 {
                Err(UpstreamError::Status {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: Box::new(ApiError::default()),
                    retry_after: None,
                })
            } else {
                ok(n)
            }
        });
        let svc = layer().layer(svc);
        svc.clone().oneshot(keyed("{}")).await.unwrap_err();
        svc.clone().oneshot(keyed("{}")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn definitive_errors_are_replayed() {
        let (svc, calls) = counting(|_| {
            Err(UpstreamError::Status {
                status: StatusCode::BAD_REQUEST,
                error: Box::new(ApiError {
                    message: Some("bad".into()),
                    ..ApiError::default()
                }),
                retry_after: None,
            })
        });
        let svc = layer().layer(svc);
        for _ in 0..2 {
            let err = svc.clone().oneshot(keyed("{}")).await.unwrap_err();
            assert_eq!(err.http_status(), Some(StatusCode::BAD_REQUEST));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_and_unkeyed_calls_pass_through() {
        let (svc, calls) = counting(ok);
        let svc = layer().layer(svc);
        let mut get = keyed("");
        get.call.method = Method::GET;
        get.mutating = false;
        svc.clone().oneshot(get.clone()).await.unwrap();
        svc.clone().oneshot(get).await.unwrap();
        let mut unkeyed = keyed("{}");
        unkeyed.idempotency_key = None;
        svc.clone().oneshot(unkeyed.clone()).await.unwrap();
        svc.oneshot(unkeyed).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    fn status(code: StatusCode) -> UpstreamError {
        UpstreamError::Status {
            status: code,
            error: Box::new(ApiError::default()),
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_search_sent_as_post_is_never_stored() {
        let (svc, calls) = counting(ok);
        let svc = layer().layer(svc);
        let mut search = keyed("{\"ssn\":\"123456789\"}");
        search.mutating = false;
        svc.clone().oneshot(search.clone()).await.unwrap();
        let stats = search.stats.clone();
        svc.oneshot(search).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(!stats.replayed());
    }

    #[tokio::test(start_paused = true)]
    async fn only_final_answers_are_recorded() {
        // Not final: the key is released and the next call runs.
        for code in [401, 403, 408, 429] {
            let code = StatusCode::from_u16(code).unwrap();
            let calls = Arc::new(AtomicU32::new(0));
            let c = calls.clone();
            let svc = layer().layer(service_fn(move |r: UpstreamRequest| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move {
                    r.stats.add_attempt();
                    if n == 0 {
                        r.stats.note_failed_attempt(&status(code));
                        Err(status(code))
                    } else {
                        ok(n)
                    }
                }
            }));
            svc.clone().oneshot(keyed("{}")).await.unwrap_err();
            svc.oneshot(keyed("{}")).await.unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 2, "{code}");
        }
        // Final: replayed without a call.
        for code in [400, 404, 409, 422] {
            let code = StatusCode::from_u16(code).unwrap();
            let calls = Arc::new(AtomicU32::new(0));
            let c = calls.clone();
            let svc = layer().layer(service_fn(move |r: UpstreamRequest| {
                c.fetch_add(1, Ordering::SeqCst);
                async move {
                    r.stats.add_attempt();
                    Err::<UpstreamResponse, _>(status(code))
                }
            }));
            svc.clone().oneshot(keyed("{}")).await.unwrap_err();
            let err = svc.oneshot(keyed("{}")).await.unwrap_err();
            assert_eq!(err.http_status(), Some(code));
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn secrets_are_stripped_at_any_depth() {
        let svc = layer().layer(service_fn(|r: UpstreamRequest| async move {
            r.stats.add_attempt();
            Ok::<_, UpstreamError>(UpstreamResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from_static(
                    br#"{"data":[{"id":"pm1","pci_details":{"pan":"4111111111111111","cvv":"123"}}],"has_more":false}"#,
                ),
                decoded: None,
            })
        }));
        let mut r = keyed("{}");
        r.secret_fields = &["pci_details"];
        svc.clone().oneshot(r.clone()).await.unwrap();
        let replay = svc.oneshot(r).await.unwrap();
        let body = String::from_utf8_lossy(&replay.body);
        assert_eq!(body, r#"{"data":[{"id":"pm1"}],"has_more":false}"#);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_with_secrets_that_cannot_be_cleaned_is_not_kept() {
        let svc = layer().layer(service_fn(|r: UpstreamRequest| async move {
            r.stats.add_attempt();
            Ok::<_, UpstreamError>(UpstreamResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"client_secret=s3cr3t"),
                decoded: None,
            })
        }));
        let mut r = keyed("{}");
        r.secret_fields = &["client_secret"];
        svc.clone().oneshot(r.clone()).await.unwrap();
        let err = svc.oneshot(r).await.unwrap_err();
        assert!(
            matches!(
                &err,
                UpstreamError::Idempotency(IdempotencyError::OutcomeUnknown(m)) if !m.contains("s3cr3t")
            ),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_while_backing_off_after_a_503_releases_the_key() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        // The first call's only attempt got a 503, then it waits to retry
        // (what the retry layer does) until the caller's deadline cuts it.
        let inner = service_fn(move |r: UpstreamRequest| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                r.stats.add_attempt();
                if n == 0 {
                    r.stats.add_unprocessed();
                    std::future::pending::<()>().await;
                }
                ok(n)
            }
        });
        let svc = layer().layer(crate::upstream::DeadlineLayer::new().layer(inner));
        let mut first = keyed("{}");
        first.deadline = Some(Instant::now() + Duration::from_millis(100));
        let err = svc.clone().oneshot(first).await.unwrap_err();
        assert!(matches!(err, UpstreamError::DeadlineExceeded), "{err:?}");
        // Nothing was processed: the same key runs again.
        svc.oneshot(keyed("{}")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_during_an_attempt_is_unknown() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let inner = service_fn(move |r: UpstreamRequest| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                r.stats.add_attempt();
                std::future::pending::<()>().await;
                ok(0)
            }
        });
        let svc = layer().layer(crate::upstream::DeadlineLayer::new().layer(inner));
        let mut first = keyed("{}");
        first.deadline = Some(Instant::now() + Duration::from_millis(100));
        svc.clone().oneshot(first).await.unwrap_err();
        let err = svc.oneshot(keyed("{}")).await.unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Idempotency(IdempotencyError::OutcomeUnknown(_))
            ),
            "{err:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn scope_keys_of_different_scopes_never_collide() {
        let scopes = [
            ("a:b", Some("c"), "k"),
            ("a", Some("b:c"), "k"),
            ("a", Some("b"), "c:k"),
            ("a:b", None, "c:k"),
            ("a", None, "b:c:k"),
            ("a", Some(""), "b:c:k"),
        ];
        let keys: std::collections::BTreeSet<_> =
            scopes.iter().map(|(c, p, k)| scope_key(c, *p, k)).collect();
        assert_eq!(keys.len(), scopes.len(), "{keys:?}");
        assert_eq!(
            scope_key("ops", Some("default"), "k1"),
            "3:ops7:default2:k1"
        );
    }
}

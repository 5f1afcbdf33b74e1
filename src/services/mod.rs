//! The gRPC services of `imprint.v2`.
//!
//! Nothing here is per RPC: `build.rs` generates, from the proto's
//! annotations, one [`Endpoint`] impl per request message (its [`Route`](translate::Route))
//! and the `serve_reply` dispatch, each method calling the one pipeline,
//! [`Gateway::call_reply`] ([`reply`]). [`ROUTES`] lists every route.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;
use tonic::{metadata::MetadataMap, Request, Response, Status};
use tower::ServiceExt;

use secrecy::SecretString;

pub mod reply;

use reply::Reply;

use crate::{
    auth::Caller,
    credentials::{CredentialStore, DEFAULT_PRODUCT},
    errors,
    translate::{self, Endpoint},
    upstream::{CallStats, UpstreamError, UpstreamRequest, UpstreamService},
};

/// Serves every `imprint.v2` service by translating calls to REST.
///
/// Cloned several times per call (tonic's router, the method, its future):
/// one reference count, not a copy of the upstream stack each time.
#[derive(Clone)]
pub struct Gateway(Arc<Shared>);

struct Shared {
    upstream: UpstreamService,
    default_deadline: Duration,
    /// The configured products, which `x-imprint-product` picks from.
    credentials: Arc<CredentialStore>,
}

/// The metadata key naming the product (credential) a call uses.
pub const PRODUCT_HEADER: &str = "x-imprint-product";

/// Marks a call the gateway makes itself (a rotation's create, verify and
/// delete): it has no [`Caller`], so no product policy; this names it.
#[derive(Debug, Clone)]
pub struct InternalActor(pub Arc<str>);

impl Gateway {
    /// `default_deadline` bounds calls whose caller sent no `grpc-timeout`.
    pub fn new(
        upstream: UpstreamService,
        default_deadline: Duration,
        credentials: Arc<CredentialStore>,
    ) -> Self {
        Self(Arc::new(Shared {
            upstream,
            default_deadline,
            credentials,
        }))
    }

    /// The product a call uses: `x-imprint-product`, or the default one.
    /// Unknown: INVALID_ARGUMENT naming the metadata key (never its value,
    /// which a confused caller may have filled with a key); not in the
    /// caller's `products`: PERMISSION_DENIED. `None` is the default product.
    pub fn product(
        &self,
        metadata: &MetadataMap,
        caller: Option<&Caller>,
    ) -> Result<Option<Arc<str>>, Status> {
        let name = match metadata.get(PRODUCT_HEADER) {
            None => DEFAULT_PRODUCT,
            Some(v) => v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|n| self.0.credentials.knows(n))
                .ok_or_else(|| {
                    errors::invalid_request(&[translate::FieldViolation {
                        field: PRODUCT_HEADER.into(),
                        description: format!("{PRODUCT_HEADER} names no configured product"),
                    }])
                })?,
        };
        if let Some(caller) = caller {
            if !caller.may_use_product(name) {
                return Err(Status::permission_denied(format!(
                    "caller '{}' may not use this product ({PRODUCT_HEADER}); see `products` in the caller tokens file",
                    caller.name
                )));
            }
        }
        Ok((name != DEFAULT_PRODUCT).then(|| Arc::from(name)))
    }

    /// [`Gateway::call`] authenticated with `key` instead of the product's
    /// active credential (the Keys resource, and a rotation's own calls).
    pub async fn call_with<E: Endpoint>(
        &self,
        request: Request<E>,
        key: Option<SecretString>,
    ) -> Result<Response<E::Response>, Status> {
        message(self.call_inner(request, key, Form::Message).await)
    }

    /// Runs one RPC: validate and translate, call Imprint through the
    /// upstream stack, decode. Either way the caller gets `x-request-id`,
    /// and `x-upstream-attempts` (with `x-upstream-retry-cause` after a
    /// retry, `idempotent-replayed` for a recorded answer).
    pub async fn call<E: Endpoint>(
        &self,
        request: Request<E>,
    ) -> Result<Response<E::Response>, Status> {
        message(self.call_inner(request, None, Form::Message).await)
    }

    /// [`Gateway::call`] for the wire ([`reply`]): a cached answer comes as
    /// the bytes it was encoded to once, not as a clone to encode again.
    pub async fn call_reply<E: Endpoint>(
        &self,
        request: Request<E>,
    ) -> Result<Response<Reply<E::Response>>, Status> {
        self.call_inner(request, None, Form::Wire).await
    }

    async fn call_inner<E: Endpoint>(
        &self,
        request: Request<E>,
        authenticate_with: Option<SecretString>,
        form: Form,
    ) -> Result<Response<Reply<E::Response>>, Status> {
        let (request_id, request_id_value) = request_id(request.metadata());
        let budget = upstream_budget(caller_timeout(request.metadata()), self.0.default_deadline);
        let deadline = Instant::now() + budget;
        let known = request.extensions().get::<Arc<Caller>>();
        let caller: Arc<str> = match (known, request.extensions().get::<InternalActor>()) {
            (Some(c), _) => c.name.clone(),
            (None, Some(internal)) => internal.0.clone(),
            (None, None) => Arc::from("anonymous"),
        };
        let product = self.product(request.metadata(), known.map(|c| &**c));
        // No caller (the gateway's own verification read, a test calling a
        // service directly) is no PCI caller.
        let pci = known.is_some_and(|c| c.pci);
        let stats = Arc::new(CallStats::default());
        let result = match idempotency_key(request.metadata()).and_then(|k| Ok((k, product?))) {
            Ok((key, product)) => {
                let ctx = CallContext {
                    no_cache: no_cache(request.metadata()),
                    deadline,
                    request_id: request_id.clone(),
                    caller,
                    idempotency_key: key,
                    stats: stats.clone(),
                    product,
                    authenticate_with,
                    pci,
                };
                self.run(request.get_ref(), ctx, form).await
            }
            Err(status) => Err(status),
        };
        // Header names, not strings parsed on every call.
        let mut headers = HeaderMap::new();
        if let Some(mut id) = request_id_value {
            // New on every call: HPACK sends it as a literal that is never
            // indexed, instead of churning the connection's header table.
            id.set_sensitive(true);
            headers.insert(crate::request_id::HEADER_NAME, id);
        }
        if stats.attempts() > 0 {
            headers.insert(UPSTREAM_ATTEMPTS, HeaderValue::from(stats.attempts()));
        }
        if let Some(cause) = stats
            .last_cause()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(UPSTREAM_RETRY_CAUSE, cause);
        }
        if let Some(cache) = stats.cache() {
            headers.insert(X_CACHE, HeaderValue::from_static(cache.as_str()));
        }
        if stats.replayed() {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        match result {
            Ok((message, redacted)) => {
                if !redacted.is_empty() {
                    if let Ok(v) = HeaderValue::from_str(&redacted.join(",")) {
                        headers.insert(PCI_REDACTED, v);
                    }
                }
                let mut response = Response::new(message);
                *response.metadata_mut() = MetadataMap::from_headers(headers);
                Ok(response)
            }
            Err(mut status) => {
                let metadata = MetadataMap::from_headers(headers);
                for kv in metadata.iter() {
                    if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                        status.metadata_mut().insert(k.clone(), v.clone());
                    }
                }
                Err(status)
            }
        }
    }

    /// Runs the call; with the answer, the PCI fields stripped from it.
    async fn run<E: Endpoint>(
        &self,
        message: &E,
        ctx: CallContext,
        form: Form,
    ) -> Result<(Reply<E::Response>, Vec<&'static str>), Status> {
        let rpc = E::ROUTE.rpc;
        let call = translate::build(message).map_err(|v| errors::invalid_request(&v))?;
        // A non-idempotent mutation nobody can safely repeat.
        let resend_unsafe =
            E::ROUTE.mutating && !E::ROUTE.method.is_idempotent() && ctx.idempotency_key.is_none();
        let stats = ctx.stats.clone();
        let mut headers = HeaderMap::new();
        if ctx.no_cache {
            // The caller wants a fresh answer: the cache layer skips its
            // entry, and Imprint is told the same.
            headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
        }
        let request = UpstreamRequest {
            rpc,
            template: E::ROUTE.path,
            call,
            headers,
            deadline: Some(ctx.deadline),
            request_id: ctx.request_id,
            caller: ctx.caller,
            idempotency_key: ctx.idempotency_key,
            mutating: E::ROUTE.mutating,
            sensitive_fields: E::ROUTE.sensitive_request_fields,
            secret_fields: E::ROUTE.secret_response_fields,
            stats: ctx.stats,
            product: ctx.product,
            authenticate_with: ctx.authenticate_with,
        };
        let response = self
            .0
            .upstream
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| {
                let sent = stats.since_sent().is_some();
                errors::upstream_status(rpc, resend_unsafe, sent, &e)
            })?;
        let mut body = std::borrow::Cow::Borrowed(&response.body[..]);
        let mut redacted = Vec::new();
        if !ctx.pci {
            let fields: Vec<&'static str> = E::ROUTE
                .secret_response_fields
                .iter()
                .copied()
                .filter(|f| PCI_FIELDS.contains(f))
                .collect();
            if let Some(stripped) = crate::json::strip_fields(&body, &fields) {
                body = std::borrow::Cow::Owned(stripped.0);
                redacted = stripped.1;
            }
        }
        let decode = |body: &[u8]| {
            E::decode(body)
                .map_err(|e| errors::upstream_status(rpc, false, true, &UpstreamError::Decode(e)))
        };
        // A cached answer, as Imprint sent it: decoded and encoded once per
        // entry, by the first hit that needs it.
        if let (Some(slot), std::borrow::Cow::Borrowed(_)) = (&response.decoded, &body) {
            if let Some(memo) = slot
                .get()
                .and_then(|m| m.downcast_ref::<Memo<E::Response>>())
            {
                return Ok((memo.reply(form), redacted));
            }
            let message = decode(&body)?;
            let memo = Memo {
                encoded: prost::Message::encode_to_vec(&message).into(),
                message,
            };
            let reply = memo.reply(form);
            let _ = slot.set(Box::new(memo));
            return Ok((reply, redacted));
        }
        Ok((Reply::Message(decode(&body)?), redacted))
    }
}

/// The form an answer is wanted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A message (the gateway's own callers: keys, rotations).
    Message,
    /// Whatever is cheapest to send (a cached answer's shared bytes).
    Wire,
}

/// A cached answer's message and its encoding, kept with the cache entry.
struct Memo<M> {
    message: M,
    encoded: bytes::Bytes,
}

impl<M: Clone> Memo<M> {
    fn reply(&self, form: Form) -> Reply<M> {
        match form {
            Form::Message => Reply::Message(self.message.clone()),
            Form::Wire => Reply::Encoded(self.encoded.clone()),
        }
    }
}

/// The message of an answer (see [`Form::Message`]).
fn message<M: prost::Message + Default>(
    answer: Result<Response<Reply<M>>, Status>,
) -> Result<Response<M>, Status> {
    let (metadata, reply, extensions) = answer?.into_parts();
    Ok(Response::from_parts(
        metadata,
        reply.into_message()?,
        extensions,
    ))
}

/// Response fields under PCI scope: card data only callers with `pci =
/// true` in the caller policy receive. Each must be a response field
/// declared `(imprint.gateway.v1.sensitive)` in the proto (only those are
/// looked for, route by route); for everyone else the gateway strips it
/// here, the one place every `imprint.v2` answer passes, and says so in
/// [`PCI_REDACTED_HEADER`].
pub const PCI_FIELDS: &[&str] = &["pci_details"];

/// Response metadata naming the PCI fields stripped from the answer.
pub const PCI_REDACTED_HEADER: &str = "x-pci-redacted";

// The answer's metadata keys (see [`Gateway::call`]).
const PCI_REDACTED: HeaderName = HeaderName::from_static(PCI_REDACTED_HEADER);
const UPSTREAM_ATTEMPTS: HeaderName = HeaderName::from_static("x-upstream-attempts");
const UPSTREAM_RETRY_CAUSE: HeaderName = HeaderName::from_static("x-upstream-retry-cause");
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// What the edge learned about a call before it goes upstream.
struct CallContext {
    /// The caller may receive PCI fields.
    pci: bool,
    /// `cache-control: no-cache`: bypass (and refresh) the response cache.
    no_cache: bool,
    deadline: Instant,
    request_id: Arc<str>,
    caller: Arc<str>,
    idempotency_key: Option<Arc<str>>,
    stats: Arc<CallStats>,
    product: Option<Arc<str>>,
    authenticate_with: Option<SecretString>,
}

/// The caller's `idempotency-key`: 1 to 255 visible ASCII characters.
fn idempotency_key(metadata: &MetadataMap) -> Result<Option<Arc<str>>, Status> {
    let Some(value) = metadata.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
    match key {
        Some(k) => Ok(Some(Arc::from(k))),
        None => Err(errors::invalid_request(&[translate::FieldViolation {
            field: "idempotency-key".into(),
            description: "idempotency-key must be 1 to 255 visible ASCII characters".into(),
        }])),
    }
}

/// Whether the caller sent `cache-control: no-cache`.
fn no_cache(metadata: &MetadataMap) -> bool {
    metadata
        .get_all("cache-control")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
}

/// The call's request id, settled by [`crate::request_id`] at the edge
/// (settled here too for a call that did not pass the edge), and its
/// metadata value for the answer (the request's own, shared, when usable).
fn request_id(metadata: &MetadataMap) -> (Arc<str>, Option<HeaderValue>) {
    let given = metadata.as_ref().get(crate::request_id::HEADER_NAME);
    if let Some((value, id)) = given.and_then(|v| Some((v, v.to_str().ok()?))) {
        if crate::request_id::is_sane(id) {
            return (Arc::from(id), Some(value.clone()));
        }
    }
    let id = crate::request_id::settle(None);
    let value = HeaderValue::from_str(&id).ok();
    (id.into(), value)
}

/// How long the upstream call may take. A caller's deadline is shortened by
/// a small margin so that our DEADLINE_EXCEEDED (with its details and
/// request id) reaches the caller before the caller's own timer fires.
fn upstream_budget(caller: Option<Duration>, default: Duration) -> Duration {
    match caller {
        Some(t) => {
            t.saturating_sub((t / 20).clamp(Duration::from_millis(2), Duration::from_millis(50)))
        }
        None => default,
    }
}

/// The caller's deadline from `grpc-timeout` (`<= 8 digits><H|M|S|m|u|n>`).
pub(crate) fn caller_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Decodes a JSON answer into a proto message.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

/// For RPCs returning `google.protobuf.Empty`: whatever Imprint sent (204,
/// or a body) means success.
pub(crate) fn no_body(_: &[u8]) -> Result<(), serde_json::Error> {
    Ok(())
}

// The generated route table: `Endpoint` impls, the `serve_reply` dispatch,
// `ROUTES` and the `each_service!` macro (the one list of served services).
include!(concat!(env!("OUT_DIR"), "/routes.rs"));

/// Registers every `imprint.v2` service of `gateway` on a tonic router.
pub fn add_services<L>(
    router: tonic::transport::server::Router<L>,
    gateway: Gateway,
    limits: &MessageLimits,
) -> tonic::transport::server::Router<L> {
    use crate::pb::imprint::v2::*;
    let config = limits.grpc();
    // Every method goes through `reply::unary` (gzip both ways, the size
    // limits); the generated server types only lend their names.
    macro_rules! add {
        ($router:expr; $($module:ident::$server:ident),*) => {
            $router$(.add_service(
                reply::ReplyServer::<$module::$server<()>>::new(gateway.clone(), config),
            ))*
        };
    }
    each_service!(add!(router))
}

/// The fully-qualified names of the services [`add_services`] registers.
pub const SERVICE_NAMES: &[&str] = {
    use crate::pb::imprint::v2::*;
    use tonic::server::NamedService;
    macro_rules! names {
        (; $($module:ident::$server:ident),*) => {
            &[$(<$module::$server<()> as NamedService>::NAME),*]
        };
    }
    each_service!(names!())
};

/// gRPC message size limits.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    pub max_decoding: usize,
    pub max_encoding: usize,
}

impl MessageLimits {
    /// What [`reply::unary`] is held to.
    pub fn grpc(&self) -> reply::GrpcConfig {
        reply::GrpcConfig {
            max_decoding: self.max_decoding,
            max_encoding: self.max_encoding,
        }
    }
}

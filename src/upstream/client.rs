//! The innermost service: a hyper client of our own (rustls, pooled
//! keep-alive connections shared by every call, HTTP/2 when Imprint offers
//! it in ALPN, HTTP/1.1 otherwise) that puts an [`UpstreamRequest`] on the
//! wire and classifies the answer.
//!
//! hyper directly rather than through reqwest or `hyper_util`'s pooled
//! client (#13): a call's URI is the base's scheme and authority (parsed
//! once) with the call's path set, its headers are the request's own map
//! with static values added, nothing runs per call for redirects, proxies or
//! URL parsing, and an HTTP/1.1 connection is driven by the call that uses
//! it (no connection task to hand the request to and the answer back from).

use std::{
    collections::VecDeque,
    error::Error as StdError,
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{
    header,
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, HeaderName, HeaderValue, StatusCode, Uri,
};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    body::{Body as _, Incoming},
    client::conn::{http1, http2},
};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{
    client::legacy::connect::{Connection as _, HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tower::Service;

use super::{ApiError, TransportKind, UpstreamError, UpstreamRequest, UpstreamResponse};

/// Connection settings of the upstream client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Imprint's base URL, e.g. `https://dev.sbx.imprint.co` (no trailing slash).
    pub base_url: String,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub tcp_keepalive: Duration,
    /// Answers larger than this are refused rather than buffered.
    pub max_response_bytes: usize,
}

/// Why the client could not be built. Names the setting, never its value.
#[derive(Debug, thiserror::Error)]
#[error("upstream.base_url must be an absolute http or https URL")]
pub struct InvalidBaseUrl;

type Connector = ConnectTimeout<HttpsConnector<HttpConnector>>;
type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;
/// Boxed: about 1.8 KB, moved in and out of the pool on every call.
type H1Conn = Box<http1::Connection<Stream, Full<Bytes>>>;

/// Sends requests to Imprint. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct HttpClient {
    pool: Arc<Pool>,
    scheme: Scheme,
    authority: Authority,
    /// `host[:port]` as an HTTP/1.1 `Host` header, built once.
    host: HeaderValue,
    /// The base URL's own path (empty, or e.g. `/api` without a trailing
    /// slash), put before every call's path.
    prefix: Arc<str>,
    max_response_bytes: usize,
}

const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("imprint-gateway/", env!("CARGO_PKG_VERSION")));
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl HttpClient {
    pub fn new(config: &ClientConfig) -> Result<Self, InvalidBaseUrl> {
        // Parsed the way the configuration check parsed it (IDNA, default
        // ports), once; every call reuses the scheme and authority.
        let url = reqwest::Url::parse(config.base_url.trim_end_matches('/'))
            .map_err(|_| InvalidBaseUrl)?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(InvalidBaseUrl);
        }
        let uri: Uri = url.as_str().parse().map_err(|_| InvalidBaseUrl)?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(InvalidBaseUrl);
        };
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| InvalidBaseUrl)?;
        let prefix: Arc<str> = uri.path().trim_end_matches('/').into();

        let mut http = HttpConnector::new();
        // The scheme is checked by the TLS connector (http or https).
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(config.tcp_keepalive));
        // As reqwest 0.12 set them by default.
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let pool = Pool::new(
            ConnectTimeout {
                inner: https,
                timeout: config.connect_timeout,
            },
            Uri::from_parts({
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(scheme.clone());
                parts.authority = Some(authority.clone());
                parts.path_and_query = Some(PathAndQuery::from_static("/"));
                parts
            })
            .map_err(|_| InvalidBaseUrl)?,
            config.pool_idle_timeout,
            config.pool_max_idle_per_host,
        );
        Ok(Self {
            pool,
            scheme,
            authority,
            host,
            prefix,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// The path and query of a call, after the base's own path (if any).
    fn path(&self, path_and_query: String) -> Result<PathAndQuery, http::Error> {
        Ok(if self.prefix.is_empty() {
            PathAndQuery::from_maybe_shared(Bytes::from(path_and_query))?
        } else {
            PathAndQuery::from_maybe_shared(Bytes::from(format!(
                "{}{path_and_query}",
                self.prefix
            )))?
        })
    }

    /// Whether Imprint's host answers HTTP at all (any status counts), for
    /// readiness. Sends no credential.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let path = self.path("/".to_owned()).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, USER_AGENT);
        let request = self.request(http::Method::HEAD, path, headers, Full::default());
        let exchange = self.pool.clone().exchange(request, self.max_response_bytes);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(UpstreamError::Transport { source, .. })) => Err(error_chain(&*source)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// The request of a call in the form an HTTP/1.1 connection sends it
    /// (origin-form URI, `Host` header); [`Pool::exchange`] turns it into
    /// the absolute form when the connection is HTTP/2.
    fn request(
        &self,
        method: http::Method,
        path: PathAndQuery,
        mut headers: HeaderMap,
        body: Full<Bytes>,
    ) -> Outgoing {
        headers.insert(header::HOST, self.host.clone());
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = Uri::from(path);
        *request.headers_mut() = headers;
        Outgoing {
            request,
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
        }
    }
}

/// A request on its way: origin-form, with what the absolute form needs.
struct Outgoing {
    request: http::Request<Full<Bytes>>,
    scheme: Scheme,
    authority: Authority,
}

impl Outgoing {
    /// The absolute form HTTP/2 takes (`:scheme`, `:authority`; no `Host`).
    fn into_h2(self) -> http::Request<Full<Bytes>> {
        let mut request = self.request;
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme);
        parts.authority = Some(self.authority);
        parts.path_and_query = Some(path);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        request.headers_mut().remove(header::HOST);
        request
    }
}

/// What one exchange produced: the status, the headers and the body
/// (`None`: larger than the limit, not buffered).
type Answer = (StatusCode, HeaderMap, Option<Bytes>);

/// An idle HTTP/1.1 connection: the sender and the connection itself,
/// driven by whichever call uses it next.
struct Idle {
    send: http1::SendRequest<Full<Bytes>>,
    conn: H1Conn,
    since: Instant,
}

/// The connections to Imprint's one host: idle HTTP/1.1 connections (the
/// most recently used first, so that a quiet period lets the rest expire)
/// and, when Imprint negotiated HTTP/2, the one multiplexed connection.
struct Pool {
    connector: Connector,
    /// The base's `scheme://authority/`, what the connector dials.
    target: Uri,
    idle: Mutex<VecDeque<Idle>>,
    h2: Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
    idle_timeout: Duration,
    max_idle: usize,
}

/// A connection fresh from the connector.
enum Fresh {
    H1(http1::SendRequest<Full<Bytes>>, H1Conn),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Pool {
    fn new(
        connector: Connector,
        target: Uri,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            connector,
            target,
            idle: Mutex::new(VecDeque::new()),
            h2: Mutex::new(None),
            idle_timeout,
            max_idle,
        });
        // Closes connections idle past the timeout even when no call comes
        // to notice them; ends with the last clone of the client.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            let every = (idle_timeout / 2).max(Duration::from_millis(100));
            runtime.spawn(sweep(weak, every));
        }
        pool
    }

    /// An idle HTTP/1.1 connection that is still open, if any; expired and
    /// closed ones are dropped on the way.
    async fn checkout(&self) -> Option<Idle> {
        loop {
            let mut idle = self.idle.lock().pop_back()?;
            if idle.since.elapsed() > self.idle_timeout {
                continue;
            }
            // One poll: notices a close Imprint sent while it sat idle, and
            // lets the connection ask for its next request.
            let open = std::future::poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut idle.conn).poll(cx).is_pending())
            })
            .await;
            if open && idle.send.is_ready() {
                return Some(idle);
            }
        }
    }

    fn checkin(&self, send: http1::SendRequest<Full<Bytes>>, conn: H1Conn) {
        if self.max_idle == 0 || send.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        while idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle {
            send,
            conn,
            since: Instant::now(),
        });
    }

    fn sweep(&self) {
        let mut idle = self.idle.lock();
        while idle
            .front()
            .is_some_and(|i| i.since.elapsed() > self.idle_timeout)
        {
            idle.pop_front();
        }
    }

    fn h2(&self) -> Option<http2::SendRequest<Full<Bytes>>> {
        let mut h2 = self.h2.lock();
        if h2.as_ref().is_some_and(|s| s.is_closed()) {
            *h2 = None;
        }
        h2.clone()
    }

    /// A new connection: TCP, TLS with ALPN, then HTTP/2 or HTTP/1.1 as
    /// negotiated. Errors are connect errors: nothing was sent.
    async fn connect(&self) -> Result<Fresh, UpstreamError> {
        let stream = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(|e| transport(true, e))?;
        if stream.connected().is_negotiated_h2() {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(stream)
                .await
                .map_err(|e| transport(true, e.into()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *self.h2.lock() = Some(send.clone());
            return Ok(Fresh::H2(send));
        }
        let (send, conn) = http1::Builder::new()
            .handshake(stream)
            .await
            .map_err(|e| transport(true, e.into()))?;
        Ok(Fresh::H1(send, Box::new(conn)))
    }

    /// Sends the request and reads the answer (up to `limit` bytes): on
    /// the HTTP/2 connection when there is one, else on an idle HTTP/1.1
    /// connection or a new one. A request an idle connection could not
    /// take (closed meanwhile: nothing was written) goes to the next one.
    async fn exchange(
        self: Arc<Self>,
        mut out: Outgoing,
        limit: usize,
    ) -> Result<Answer, UpstreamError> {
        loop {
            if let Some(send) = self.h2() {
                return exchange_h2(send, out.into_h2(), limit).await;
            }
            let (mut send, mut conn, reused) = match self.checkout().await {
                Some(idle) => (idle.send, idle.conn, true),
                None => match self.connect().await? {
                    Fresh::H1(send, conn) => (send, conn, false),
                    Fresh::H2(send) => return exchange_h2(send, out.into_h2(), limit).await,
                },
            };
            let sent = send.try_send_request(out.request);
            let work = async move {
                let response = sent.await?;
                let (parts, body) = response.into_parts();
                let body = read_limited(body, &parts.headers, limit).await;
                Ok::<_, hyper::client::conn::TrySendError<_>>((parts, body))
            };
            let (result, open) = drive(&mut conn, work).await;
            match result {
                Ok((parts, body)) => {
                    let body = body?;
                    // A body read to its end leaves the connection ready for
                    // the next request; one cut short (too large) does not.
                    if open && body.is_some() {
                        self.checkin(send, conn);
                    }
                    return Ok((parts.status, parts.headers, body));
                }
                Err(mut e) => match e.take_message() {
                    Some(request) if reused => out.request = request,
                    _ => return Err(transport(false, e.into_error().into())),
                },
            }
        }
    }
}

async fn sweep(pool: Weak<Pool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep();
    }
}

async fn exchange_h2(
    mut send: http2::SendRequest<Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
    limit: usize,
) -> Result<Answer, UpstreamError> {
    let response = send
        .send_request(request)
        .await
        .map_err(|e| transport(false, e.into()))?;
    let (parts, body) = response.into_parts();
    let body = read_limited(body, &parts.headers, limit).await?;
    Ok((parts.status, parts.headers, body))
}

/// Runs `work` (a request and the reading of its answer) while driving the
/// HTTP/1.1 connection it uses, in the calling task. Returns its output and
/// whether the connection is still open.
async fn drive<F: Future>(
    conn: &mut http1::Connection<Stream, Full<Bytes>>,
    work: F,
) -> (F::Output, bool) {
    let mut work = std::pin::pin!(work);
    let mut open = true;
    let out = std::future::poll_fn(|cx| {
        // The connection first (writes the request, reads the answer into
        // the channels `work` reads), then `work`; twice, so that the
        // body's demand and its data meet in one wake-up.
        for _ in 0..2 {
            if open && Pin::new(&mut *conn).poll(cx).is_ready() {
                open = false;
            }
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
        }
        Poll::Pending
    })
    .await;
    (out, open)
}

/// rustls as reqwest's `rustls-tls` configured it: the ring provider (or
/// the process default, if one is installed), TLS 1.2 and 1.3, webpki roots,
/// SNI on. ALPN is set by the connector builder.
fn tls_config() -> rustls::ClientConfig {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Bounds a whole connect, TCP and TLS handshake, by the connect timeout
/// (the TCP connector bounds only its own part), as reqwest did.
#[derive(Clone)]
struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri, Response = MaybeHttpsStream<TokioIo<TcpStream>>>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connect = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connect).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )) as BoxError),
            }
        })
    }
}

impl Service<UpstreamRequest> for HttpClient {
    type Response = UpstreamResponse;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<UpstreamResponse, UpstreamError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        // The pool opens a connection when none is idle; the concurrency
        // limit layer bounds how many.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: UpstreamRequest) -> Self::Future {
        req.stats.note_sent();
        let UpstreamRequest {
            call,
            mut headers,
            request_id,
            ..
        } = req;
        let path = match self.path(call.path_and_query) {
            Ok(path) => path,
            // The translator percent-encodes every path it builds; a path
            // that still does not parse never reaches the wire.
            Err(e) => {
                return Box::pin(std::future::ready(Err(UpstreamError::Transport {
                    kind: TransportKind::Connect,
                    source: e.into(),
                })))
            }
        };
        headers.insert(header::USER_AGENT, USER_AGENT);
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            headers.insert(X_REQUEST_ID, id);
        }
        headers.insert(header::ACCEPT, JSON);
        let body = match call.body {
            Some(body) => {
                headers.insert(header::CONTENT_TYPE, JSON);
                Full::new(body)
            }
            None => Full::default(),
        };
        let request = self.request(call.method, path, headers, body);
        let limit = self.max_response_bytes;
        let exchange = self.pool.clone().exchange(request, limit);
        let sensitive = call.sensitive;
        Box::pin(async move {
            let (status, headers, body) = exchange.await?;
            let Some(body) = body else {
                // Too large. A failure keeps its status (a 5xx stays a 5xx
                // for retries, the breaker and the caller's code); only a
                // success we cannot hold is an error of its own.
                if status.is_success() {
                    return Err(UpstreamError::Decode(serde::de::Error::custom(
                        format_args!("Imprint's answer exceeds the {limit}-byte limit"),
                    )));
                }
                return Err(UpstreamError::Status {
                    status,
                    error: Box::default(),
                    retry_after: retry_after(&headers),
                });
            };
            if status.is_success() {
                return Ok(UpstreamResponse {
                    status,
                    headers,
                    body,
                    decoded: None,
                });
            }
            let mut error = ApiError::parse(&body);
            error.scrub(&sensitive);
            Err(UpstreamError::Status {
                status,
                error: Box::new(error),
                retry_after: retry_after(&headers),
            })
        })
    }
}

/// The body, or `None` when it is larger than `limit`: read frame by frame
/// so a body without a length cannot grow past the limit either.
async fn read_limited(
    mut body: Incoming,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Option<Bytes>, UpstreamError> {
    let length = body.size_hint().exact().or_else(|| {
        headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    });
    match length {
        Some(n) if n > limit as u64 => return Ok(None),
        // The usual answer, one chunk: taken as is, not copied.
        Some(n) if n > 0 => {
            if let Some(first) = next_chunk(&mut body).await? {
                if first.len() as u64 == n {
                    return Ok(Some(first));
                }
                let mut buf = bytes::BytesMut::with_capacity(n as usize);
                buf.extend_from_slice(&first);
                return read_rest(body, buf, limit).await;
            }
            return Ok(Some(Bytes::new()));
        }
        _ => {}
    }
    read_rest(body, bytes::BytesMut::with_capacity(8 * 1024), limit).await
}

async fn read_rest(
    mut body: Incoming,
    mut buf: bytes::BytesMut,
    limit: usize,
) -> Result<Option<Bytes>, UpstreamError> {
    while let Some(chunk) = next_chunk(&mut body).await? {
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

/// The next data chunk of the body (trailers are skipped), or `None` at
/// its end.
async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, UpstreamError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| transport(false, e.into()))?;
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
    Ok(None)
}

/// Classifies a transport failure: the connection was never made, or the
/// answer timed out, or the connection broke. hyper's errors carry no URL.
fn transport(connect: bool, source: BoxError) -> UpstreamError {
    let kind = if connect {
        TransportKind::Connect
    } else if timed_out(&*source) {
        TransportKind::Timeout
    } else {
        TransportKind::Interrupted
    };
    UpstreamError::Transport { kind, source }
}

fn timed_out(mut e: &(dyn StdError + 'static)) -> bool {
    loop {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        match e.source() {
            Some(next) => e = next,
            None => return false,
        }
    }
}

/// An error and its causes on one line, for readiness reports.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    // Bounded: a wait beyond a day is nonsense, and an unbounded one would
    // overflow the deadline arithmetic.
    const MAX: Duration = Duration::from_secs(24 * 3600);
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .min(MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A keep-alive HTTP/1.1 server on 127.0.0.1 answering every request
    /// with `answer`; after `close_after` answers on a connection it closes
    /// it. Counts the connections it accepted.
    async fn server(answer: &'static str, close_after: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..close_after {
                        // One request: headers only (the tests send no body).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    fn client(url: &str, max_response_bytes: usize) -> HttpClient {
        HttpClient::new(&ClientConfig {
            base_url: url.to_owned(),
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 8,
            tcp_keepalive: Duration::from_secs(60),
            max_response_bytes,
        })
        .unwrap()
    }

    /// A GET through the client as the stack calls it: the body, or the
    /// error.
    async fn get(client: &HttpClient) -> Result<Bytes, UpstreamError> {
        let call = client
            .clone()
            .call(crate::upstream::test_support::request());
        let response = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call finished")?;
        assert_eq!(response.status, StatusCode::OK);
        Ok(response.body)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn sequential_calls_reuse_one_connection() {
        let (url, accepted) = server(OK, usize::MAX).await;
        let client = client(&url, 1024);
        for _ in 0..5 {
            assert_eq!(&get(&client).await.unwrap()[..], b"{}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        let (url, accepted) = server(OK, 1).await;
        let client = client(&url, 1024);
        for _ in 0..3 {
            get(&client).await.unwrap();
            // Let the server's close arrive before the next call.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn chunked_answers_are_read_whole_and_bounded() {
        const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                               3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        let (url, accepted) = server(CHUNKED, usize::MAX).await;
        assert_eq!(&get(&client(&url, 6)).await.unwrap()[..], b"abcdef");
        let small = client(&url, 5);
        // Over the limit: refused, not buffered.
        assert!(matches!(get(&small).await, Err(UpstreamError::Decode(_))));
        // The connection cut short is not reused.
        assert!(matches!(get(&small).await, Err(UpstreamError::Decode(_))));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        match get(&client(&url, 1024)).await {
            Err(UpstreamError::Transport { kind, source }) => {
                assert_eq!(kind, TransportKind::Connect);
                assert!(!error_chain(&*source).contains("127.0.0.1"));
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}

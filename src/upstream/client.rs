//! The innermost service: one hyper client (rustls, pooled keep-alive
//! connections shared by every call, HTTP/2 when Imprint offers it in ALPN,
//! HTTP/1.1 otherwise) that puts an [`UpstreamRequest`] on the wire and
//! classifies the answer.
//!
//! hyper directly rather than through reqwest (#13): a call's URI is the
//! base's scheme and authority (parsed once) with the call's path set, its
//! headers are the request's own map with static values added, and nothing
//! runs per call for redirects or URL parsing.
//!
//! Proxies as reqwest took them: `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`
//! (either case) and `NO_PROXY`, read once at start-up (hyper-util's
//! matcher, the one reqwest uses). Through a proxy, a new connection is an
//! HTTP `CONNECT` tunnel (with the proxy URL's user and password as
//! `Proxy-Authorization: Basic`), TLS to Imprint inside it. Only `http://`
//! proxies: others are refused at start-up.

use std::{
    error::Error as StdError,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{
    header,
    uri::{Authority, PathAndQuery, Scheme},
    HeaderName, HeaderValue, Uri,
};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{
    client::{
        legacy::{
            connect::{proxy::Tunnel, HttpConnector},
            Client,
        },
        proxy::matcher::Matcher,
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
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
    /// CA certificates trusted besides the public web roots
    /// (`upstream.extra_ca_file`).
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// Why the client could not be built. Names the setting, never its value.
#[derive(Debug, thiserror::Error)]
pub enum InvalidClientConfig {
    #[error("upstream.base_url must be an absolute http or https URL")]
    BaseUrl,
    /// Only `http://` proxies are tunnelled through: an `https://` one would
    /// get its credentials in clear text, a SOCKS one an HTTP request.
    #[error("{0} must be an http:// proxy URL (https:// and SOCKS proxies are not supported)")]
    Proxy(&'static str),
    #[error("upstream.extra_ca_file holds a certificate that is not a usable CA certificate")]
    ExtraCa,
}

/// The proxy variables read, in either case (as hyper-util's matcher
/// reads them).
const PROXY_VARIABLES: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Refuses a proxy the tunnel cannot use safely: any scheme but `http`
/// (a bare `host:port` is taken as `http://`, as the matcher takes it).
fn check_proxies(get: impl Fn(&str) -> Option<String>) -> Result<(), InvalidClientConfig> {
    for name in PROXY_VARIABLES {
        let Some(value) = get(name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let value = value.trim();
        if value.contains("://") && !value.to_ascii_lowercase().starts_with("http://") {
            return Err(InvalidClientConfig::Proxy(name));
        }
    }
    Ok(())
}

type Connector = ConnectTimeout<HttpsConnector<Proxied>>;

/// Sends requests to Imprint. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    scheme: Scheme,
    authority: Authority,
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
    /// The client, with the proxies the environment names.
    pub fn new(config: &ClientConfig) -> Result<Self, InvalidClientConfig> {
        check_proxies(|name| std::env::var(name).ok())?;
        Self::with_proxies(config, Matcher::from_env())
    }

    fn with_proxies(config: &ClientConfig, proxies: Matcher) -> Result<Self, InvalidClientConfig> {
        // Parsed the way the configuration check parsed it (IDNA, default
        // ports), once; every call reuses the scheme and authority.
        let url = reqwest::Url::parse(config.base_url.trim_end_matches('/'))
            .map_err(|_| InvalidClientConfig::BaseUrl)?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(InvalidClientConfig::BaseUrl);
        }
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|_| InvalidClientConfig::BaseUrl)?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(InvalidClientConfig::BaseUrl);
        };
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
        let proxied = Proxied {
            direct: http,
            proxies: Arc::new(proxies),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&config.extra_roots)?)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(proxied);

        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build(ConnectTimeout {
                inner: https,
                timeout: config.connect_timeout,
            });
        Ok(Self {
            client,
            scheme,
            authority,
            prefix,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// The URI of a call: the base's scheme and authority, the base's path
    /// (if any) and the call's path and query.
    fn uri(&self, path_and_query: String) -> Result<Uri, http::Error> {
        let path_and_query = if self.prefix.is_empty() {
            PathAndQuery::from_maybe_shared(Bytes::from(path_and_query))?
        } else {
            PathAndQuery::from_maybe_shared(Bytes::from(format!(
                "{}{path_and_query}",
                self.prefix
            )))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// Whether Imprint's host answers HTTP at all (any status counts), for
    /// readiness. Sends no credential.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let uri = self.uri("/".to_owned()).map_err(|e| e.to_string())?;
        let mut request = http::Request::new(Full::default());
        *request.method_mut() = http::Method::HEAD;
        *request.uri_mut() = uri;
        request.headers_mut().insert(header::USER_AGENT, USER_AGENT);
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// rustls as reqwest's `rustls-tls` configured it: the ring provider (or
/// the process default, if one is installed), TLS 1.2 and 1.3, webpki roots
/// (and `extra` CAs), SNI on. ALPN is set by the connector builder.
fn tls_config(
    extra: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<rustls::ClientConfig, InvalidClientConfig> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|_| InvalidClientConfig::ExtraCa)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A TCP connection to Imprint: direct, or a `CONNECT` tunnel through the
/// proxy the environment names for its URL.
#[derive(Clone)]
struct Proxied {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl Service<Uri> for Proxied {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<TokioIo<TcpStream>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(proxy) = self.proxies.intercept(&dst) else {
            let connect = self.direct.call(dst);
            return Box::pin(async move { connect.await.map_err(Into::into) });
        };
        // Refused at start-up (`check_proxies`); never sent in clear.
        if proxy.uri().scheme_str() != Some("http") {
            return Box::pin(async { Err("only http:// proxies are supported".into()) });
        }
        // The tunnel's target with its port (it would assume 443).
        let dst = with_port(dst);
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Box::pin(async move {
            std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
            Ok(tunnel.call(dst).await?)
        })
    }
}

/// `dst` with its scheme's default port written out.
fn with_port(dst: Uri) -> Uri {
    if dst.port().is_some() {
        return dst;
    }
    let port = if dst.scheme() == Some(&Scheme::HTTP) {
        80
    } else {
        443
    };
    let Some(host) = dst.host() else { return dst };
    let mut parts = dst.clone().into_parts();
    match format!("{host}:{port}").parse() {
        Ok(authority) => {
            parts.authority = Some(authority);
            Uri::from_parts(parts).unwrap_or(dst)
        }
        Err(_) => dst,
    }
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
        // The pool queues internally; the concurrency limit layer bounds it.
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
        let uri = match self.uri(call.path_and_query) {
            Ok(uri) => uri,
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
        let mut request = http::Request::new(body);
        *request.method_mut() = call.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;

        let sent = self.client.request(request);
        let limit = self.max_response_bytes;
        let sensitive = call.sensitive;
        Box::pin(async move {
            let response = sent
                .await
                .map_err(|e| transport(e.is_connect(), e.into()))?;
            let (parts, body) = response.into_parts();
            let (status, headers) = (parts.status, parts.headers);
            let body = read_limited(body, limit).await?;
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
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Option<Bytes>, UpstreamError> {
    // hyper's own length (a chunked answer's `Content-Length` is ignored,
    // so it is not trusted here either).
    let length = body.size_hint().exact();
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
            extra_roots: Vec::new(),
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
        assert_eq!(response.status, http::StatusCode::OK);
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

    /// An HTTP `CONNECT` proxy on 127.0.0.1: answers 200 when `allow`, then
    /// pipes bytes; records each tunnel's request head.
    async fn proxy(allow: bool) -> (String, Arc<parking_lot::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let heads = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        match client.read(&mut byte).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => head.push(byte[0]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    heads.lock().push(head);
                    if !allow {
                        let _ = client
                            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        (url, seen)
    }

    fn proxied_client(upstream: &str, proxy: &str) -> HttpClient {
        let config = ClientConfig {
            base_url: upstream.to_owned(),
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 8,
            tcp_keepalive: Duration::from_secs(60),
            max_response_bytes: 1024,
            extra_roots: Vec::new(),
        };
        let proxies = Matcher::builder().all(proxy.to_owned()).build();
        HttpClient::with_proxies(&config, proxies).unwrap()
    }

    #[tokio::test]
    async fn a_proxy_is_tunnelled_through_with_its_credentials() {
        let (upstream, accepted) = server(OK, usize::MAX).await;
        let (proxy, heads) = proxy(true).await;
        let with_user = proxy.replace("http://", "http://gw:s3cret@");
        let client = proxied_client(&upstream, &with_user);
        for _ in 0..3 {
            assert_eq!(&get(&client).await.unwrap()[..], b"{}");
        }
        // One tunnel, kept alive like a direct connection.
        let heads = heads.lock().clone();
        assert_eq!(heads.len(), 1, "{heads:?}");
        let authority = upstream.trim_start_matches("http://");
        assert!(
            heads[0].starts_with(&format!("CONNECT {authority} HTTP/1.1\r\n")),
            "{heads:?}"
        );
        // `gw:s3cret`, as Basic credentials.
        assert!(heads[0].contains("Basic Z3c6czNjcmV0"), "{heads:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_tunnel_is_a_connect_error_naming_no_credentials() {
        let (upstream, accepted) = server(OK, usize::MAX).await;
        let (proxy, heads) = proxy(false).await;
        let client = proxied_client(&upstream, &proxy.replace("http://", "http://gw:s3cret@"));
        match get(&client).await {
            Err(UpstreamError::Transport { kind, source }) => {
                assert_eq!(kind, TransportKind::Connect);
                let text = format!(
                    "{} {}",
                    error_chain(&*source),
                    UpstreamError::Transport { kind, source }
                );
                assert!(!text.contains("s3cret") && !text.contains("Z3c6"), "{text}");
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
        assert_eq!(heads.lock().len(), 1);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "nothing reached Imprint"
        );
    }

    #[test]
    fn only_http_proxies_are_taken_and_the_error_names_the_variable() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(check_proxies(env(&[])).is_ok());
        assert!(check_proxies(env(&[("HTTPS_PROXY", "http://u:p@proxy:3128")])).is_ok());
        assert!(check_proxies(env(&[("http_proxy", "proxy:3128")])).is_ok());
        for (name, value) in [
            ("HTTPS_PROXY", "https://u:s3cret@proxy:443"),
            ("all_proxy", "socks5://proxy:1080"),
        ] {
            let vars: &'static [(&'static str, &'static str)] =
                Box::leak(vec![(name, value)].into_boxed_slice());
            let e = check_proxies(env(vars)).unwrap_err().to_string();
            assert!(e.starts_with(name), "{e}");
            assert!(!e.contains("s3cret") && !e.contains("proxy:"), "{e}");
        }
    }

    #[test]
    fn a_tunnel_target_names_its_port() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            with_port(uri("http://api.example/")),
            uri("http://api.example:80/")
        );
        assert_eq!(
            with_port(uri("https://api.example/x")),
            uri("https://api.example:443/x")
        );
        assert_eq!(
            with_port(uri("http://127.0.0.1:8080/")),
            uri("http://127.0.0.1:8080/")
        );
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

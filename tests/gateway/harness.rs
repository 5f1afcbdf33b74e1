//! Test harness: a scripted fake Imprint on one loopback port and the real
//! gateway on another, with a real tonic client.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use imprint_gateway::{config::Config, server};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tonic::{metadata::MetadataValue, transport::Channel};

pub const API_KEY: &str = "sk_test_gateway_key";
pub const MERCHANT_KEY: &str = "mk_test_merchant";
pub const TOKEN: &str = "caller-token-all";
pub const LIMITED_TOKEN: &str = "caller-token-customers";

/// What the fake upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// HTTP/1.1, or HTTP/2 when TLS negotiated it ([`FakeUpstream::start_tls`]).
    pub version: axum::http::Version,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    /// Query parameters in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let Some(q) = &self.query else {
            return Vec::new();
        };
        q.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            delay: Duration::ZERO,
        }
    }

    pub fn ok(body: impl Into<String>) -> Self {
        Self::json(200, body)
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct Script {
    /// (METHOD, path) → answers, used in order; the last one repeats.
    routes: HashMap<(Method, String), Vec<Reply>>,
    log: Vec<Recorded>,
}

/// A scripted fake Imprint on 127.0.0.1.
#[derive(Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    /// `http`, or `https` ([`FakeUpstream::start_tls`]).
    scheme: &'static str,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On a given loopback port (0: any free one).
    pub async fn start_on(port: u16) -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(script.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            script,
            scheme: "http",
        }
    }

    /// Over TLS with this certificate and key (PEM), offering HTTP/2 and
    /// HTTP/1.1 by ALPN, as Imprint's HTTPS endpoint does.
    pub async fn start_tls(cert: &str, key: &str) -> Self {
        use tokio_rustls::rustls::{
            self,
            pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        };
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(script.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            addr,
            script,
            scheme: "https",
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Scripts `method path` (path as received, percent-encoded, no query).
    pub fn on(&self, method: Method, path: &str, reply: Reply) -> &Self {
        self.script
            .lock()
            .routes
            .entry((method, path.to_string()))
            .or_default()
            .push(reply);
        self
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.script.lock().log.clone()
    }

    /// The single request received; panics unless exactly one arrived.
    pub fn only_request(&self) -> Recorded {
        let log = self.requests();
        assert_eq!(
            log.len(),
            1,
            "expected exactly one upstream request, got {log:#?}"
        );
        log.into_iter().next().unwrap()
    }
}

async fn handle(State(script): State<Arc<Mutex<Script>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let recorded = Recorded {
        method: parts.method.clone(),
        version: parts.version,
        path: path.clone(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body,
    };
    // The gateway's health probe (`HEAD /`, no credential, every few
    // seconds) is not an API call: not recorded, so tests count API calls.
    if parts.method == Method::HEAD && path == "/" {
        return StatusCode::NOT_FOUND.into_response();
    }
    record_for_spec_check(&recorded);
    let reply = {
        let mut s = script.lock();
        s.log.push(recorded);
        match s.routes.get_mut(&(parts.method.clone(), path.clone())) {
            Some(replies) if replies.len() > 1 => Some(replies.remove(0)),
            Some(replies) => replies.first().cloned(),
            None => None,
        }
    };
    let Some(reply) = reply else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            format!("fake upstream has no script for {} {path}", parts.method),
        )
            .into_response();
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

/// With `IMPRINT_GATEWAY_RECORD=<file>`, every request the gateway sends is
/// appended there as a JSON line, for `.ci/spec_check.py` to validate
/// against Imprint's OpenAPI description.
fn record_for_spec_check(r: &Recorded) {
    use std::io::Write as _;
    let Ok(path) = std::env::var("IMPRINT_GATEWAY_RECORD") else {
        return;
    };
    let auth_scheme = r
        .header("authorization")
        .and_then(|v| v.split_once(' '))
        .map(|(scheme, _)| scheme.to_string());
    let line = serde_json::json!({
        "method": r.method.as_str(),
        "path": r.path,
        "query": r.query_pairs(),
        "auth_scheme": auth_scheme,
        "content_type": r.header("content-type"),
        "body": if r.body.is_empty() { serde_json::Value::Null } else {
            serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::String("<not json>".into()))
        },
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    // One write per line: O_APPEND keeps parallel tests' lines whole.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// A running gateway in front of an upstream, with a channel to it.
pub struct TestGateway {
    pub running: Option<server::Running>,
    pub channel: Channel,
    _dir: tempdir::Dir,
}

pub mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("igw-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub const TOKENS_FILE: &str = r#"
[[callers]]
name = "tester"
token = "caller-token-all"
allow = ["*"]
pci = true

[[callers]]
name = "customers-only"
token = "caller-token-customers"
allow = ["imprint.v2.CustomerService/*"]
"#;

impl TestGateway {
    /// Gateway in front of `upstream_url`, with `env` applied over the
    /// harness defaults (key, merchant key, caller tokens).
    pub async fn start_with(upstream_url: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempdir::Dir::new();
        let tokens = dir.0.join("callers.toml");
        std::fs::write(&tokens, TOKENS_FILE).unwrap();
        let mut vars: Vec<(String, String)> = vec![
            ("IMPRINT_API_BASE_URL".into(), upstream_url.into()),
            ("IMPRINT_API_KEY".into(), API_KEY.into()),
            ("IMPRINT_MERCHANT_KEY".into(), MERCHANT_KEY.into()),
            (
                "GATEWAY_CALLER_TOKENS_FILE".into(),
                tokens.display().to_string(),
            ),
            // Off unless a test is about it: most tests count upstream calls.
            ("GATEWAY__CACHE__ENABLED".into(), "false".into()),
        ];
        for (k, v) in env {
            vars.retain(|(name, _)| name != k);
            vars.push((k.to_string(), v.to_string()));
        }
        let config = Config::load_with_env(None, vars).expect("test config");
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = server::start(config, grpc, http)
            .await
            .expect("gateway starts");
        let channel = Channel::from_shared(format!("http://{}", running.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .expect("connect to gateway");
        Self {
            running: Some(running),
            channel,
            _dir: dir,
        }
    }

    pub async fn start(upstream: &FakeUpstream) -> Self {
        Self::start_with(&upstream.url(), &[]).await
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.running.as_ref().unwrap().http_addr()
    }
}

/// A request carrying the all-access caller token.
pub fn req<T>(message: T) -> tonic::Request<T> {
    with_token(message, TOKEN)
}

pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

/// Asserts the credential headers the gateway must add to every call.
pub fn assert_authenticated(r: &Recorded) {
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{API_KEY}:"))
    );
    assert_eq!(r.header("authorization"), Some(expected.as_str()));
    assert_eq!(r.header("x-imprint-merchant-key"), Some(MERCHANT_KEY));
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
}

/// A real redis-server of the test's own, on a Unix socket in its own
/// directory: no port to find first and race for.
pub struct RedisServer {
    child: std::process::Child,
    pub url: String,
    _dir: tempdir::Dir,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra `redis-server` arguments (later ones win).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempdir::Dir::new();
        let socket = dir.0.join("redis.sock");
        Self::start_at_with(socket, dir, extra)
    }

    /// The URL a server started with [`RedisServer::start_at`] on `socket`
    /// will have, known before it runs.
    pub fn url_for(socket: &std::path::Path) -> String {
        format!("redis+unix://{}", socket.display())
    }

    /// On the Unix socket `socket` (its directory owned by `dir`).
    pub fn start_at(socket: std::path::PathBuf, dir: tempdir::Dir) -> Self {
        Self::start_at_with(socket, dir, &[])
    }

    fn start_at_with(socket: std::path::PathBuf, dir: tempdir::Dir, extra: &[&str]) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700"])
            .args(extra)
            .arg("--dir")
            .arg(&dir.0)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is required by this test (.ci/run installs it: apt-get install redis-server)");
        let start = std::time::Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not start on {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: Self::url_for(&socket),
            _dir: dir,
        }
    }
}

impl RedisServer {
    /// Stops the server (to test what happens when Redis goes away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway binary running `serve`, as a separate process.
pub struct GatewayProcess {
    child: std::process::Child,
    pub channel: Channel,
    pub http_port: u16,
    _dir: tempdir::Dir,
}

impl GatewayProcess {
    /// Starts `serve` on port 0 for both listeners and reads the addresses
    /// it bound from its start-up log line: nothing to find first and race for.
    pub async fn spawn(upstream_url: &str, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead as _;
        let dir = tempdir::Dir::new();
        let tokens = dir.0.join("callers.toml");
        std::fs::write(&tokens, TOKENS_FILE).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imprint-gateway"));
        cmd.arg("serve")
            .env("IMPRINT_API_BASE_URL", upstream_url)
            .env("IMPRINT_API_KEY", API_KEY)
            .env("IMPRINT_MERCHANT_KEY", MERCHANT_KEY)
            .env("GATEWAY_CALLER_TOKENS_FILE", &tokens)
            .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
            .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
            .env("GATEWAY_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,imprint_gateway::server=info")
            .env("GATEWAY__CACHE__ENABLED", "false")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the gateway binary");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining after the line we want, so the pipe never fills.
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(addrs) = listening_addrs(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addrs);
                    }
                }
            }
        });
        let (grpc, http) = tokio::task::spawn_blocking(move || {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("the gateway logs the addresses it listens on")
        })
        .await
        .unwrap();
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            child,
            channel,
            http_port: http.port(),
            _dir: dir,
        }
    }
}

/// The addresses a `serve` process bound, from its JSON log file `log`
/// (`imprint_gateway::server` at info or finer): start it on port 0, then
/// ask here. Nothing to find first and race for.
pub async fn listening_in(log: &std::path::Path) -> (SocketAddr, SocketAddr) {
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(log) {
            if let Some(addrs) = text.lines().find_map(listening_addrs) {
                return addrs;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the gateway logged no listening addresses in {}",
        log.display()
    );
}

/// `(grpc, http)` from the gateway's JSON "listening" log line.
fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let field = |name: &str| {
        v.get("fields")
            .and_then(|f| f.get(name))
            .or_else(|| v.get(name))
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse().ok())
    };
    Some((field("grpc_addr")?, field("http_addr")?))
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An upstream that reads each request whole, then resets the connection
/// (RST, no answer): the request was written, its outcome is unknown.
pub struct ResetUpstream {
    pub addr: SocketAddr,
    received: Arc<std::sync::atomic::AtomicUsize>,
}

impl ResetUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    // The gateway's health probe (`HEAD /`) is not counted.
                    if read_request(&mut stream).await == Some(false) {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Linger 0: close with a reset rather than a FIN.
                    #[allow(deprecated)] // blocking on drop is the point here: a reset, not a FIN
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    drop(stream);
                });
            }
        });
        Self { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests read whole before the reset.
    pub fn received(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body); whether
/// it was the health probe `HEAD /`, or `None` if none came whole.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<bool> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return None;
        };
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            return Some(head.starts_with("head / "));
        }
    }
}

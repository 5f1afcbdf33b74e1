//! Assembles and runs the gateway: the gRPC server (imprint.v2 services,
//! health, reflection) and the HTTP server (health and readiness probes).
//!
//! [`start`] binds nothing itself: callers hand it listeners, so tests bind
//! `127.0.0.1:0` first and never race a fixed port.

use std::{future::IntoFuture, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{extract::State, http::StatusCode, routing::get, Router};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::Server;

use crate::{
    audit::{AuditLayer, AuditLog},
    auth::{Anonymous, Caller, CallerAuthLayer, CallerRegistry, CallerTable},
    cache::{CacheBus, ResponseCache},
    config::{read_secret_file, Config},
    credentials::{Credential, CredentialStore},
    dispatch::DispatchLayer,
    events::{CacheInvalidator, Events, NoCache},
    idempotency::{IdempotencyStore, MemoryStore, RedisStore},
    keys::{self, KeyManagement, KeyService, KeySettings, Keys},
    pb,
    ratelimit::{RateLimitConfig, RateLimitLayer},
    request_id::RequestIdLayer,
    services::{self, Gateway, MessageLimits},
    stack::{self, StackConfig},
    telemetry::{RpcTelemetryLayer, Telemetry, TelemetrySettings},
    tls::{TlsFiles, TlsServer},
    upstream::{ClientConfig, HttpClient},
};
use secrecy::ExposeSecret as _;

/// The admin methods, named by the telemetry layer (bounded metric labels).
const ADMIN_METHODS: [&str; 6] = [
    "imprint.gateway.v1.AdminService/PurgeCache",
    "imprint.gateway.v1.AdminService/GetStats",
    "imprint.gateway.v1.AdminService/ListUpstreamCalls",
    "imprint.gateway.v1.AdminService/ListAuditEvents",
    "imprint.gateway.v1.KeyManagementService/ListCredentials",
    "imprint.gateway.v1.KeyManagementService/RotateCredential",
];

const KEY_SERVICE: &str = "imprint.v2.KeyService";
const KEY_MANAGEMENT_SERVICE: &str = "imprint.gateway.v1.KeyManagementService";

/// A running gateway.
pub struct Running {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    cache: Option<Arc<ResponseCache>>,
    telemetry: Arc<Telemetry>,
}

/// State reloaded on SIGHUP.
struct Shared {
    config: Config,
    callers: Arc<CallerRegistry>,
    client: HttpClient,
    idempotency: Arc<dyn IdempotencyStore>,
    /// Webhook ingestion and the event log (its state goes to `/healthz`).
    events: Events,
    /// True once shutdown began: readiness turns 503 so balancers drain us.
    stopping: watch::Receiver<bool>,
    /// The last dependency state, for `/healthz`.
    health: parking_lot::Mutex<Option<serde_json::Value>>,
    telemetry: Arc<Telemetry>,
    keys: Arc<Keys>,
    /// The gRPC listener's TLS configuration (None: plaintext).
    tls: Option<Arc<TlsServer>>,
    /// The response cache's metrics, published while the server runs.
    _cache_metrics: Option<crate::cache::CacheInstruments>,
}

/// Builds the credentials described by `config` (every product's).
pub fn credentials_from(config: &Config) -> anyhow::Result<Vec<Credential>> {
    keys::configured(config)
}

/// The caller table, and whether the tokens file named any caller. The
/// `sandbox` command's admin token (never from a file) is added to it.
fn callers_from(config: &Config) -> anyhow::Result<(CallerTable, bool)> {
    let mut text = match &config.auth.caller_tokens_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("caller tokens file: cannot read {}: {e}", path.display())
        })?,
        None => String::new(),
    };
    let at = config
        .auth
        .caller_tokens_file
        .as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default();
    let from_file = CallerTable::parse(&text)
        .map_err(|e| anyhow::anyhow!("caller tokens file: {at}{e}"))?
        .len();
    if let Some(token) = &config.auth.sandbox_admin_token {
        text.push_str(&format!(
            "\n[[callers]]\nname = \"sandbox-admin\"\ntoken_sha256 = \"{}\"\nadmin = true\nallow = [\"*\"]\nproducts = [\"*\"]\n",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.expose_secret().as_bytes()))
        ));
    }
    let table =
        CallerTable::parse(&text).map_err(|e| anyhow::anyhow!("caller tokens file: {at}{e}"))?;
    Ok((table, from_file > 0))
}

/// The HTTP client to Imprint `config` describes (`serve`, `rotate-key`).
pub fn upstream_client(config: &Config) -> anyhow::Result<HttpClient> {
    let u = &config.upstream;
    let extra_roots = match &u.extra_ca_file {
        Some(path) => crate::tls::read_certs(path, "upstream.extra_ca_file")?,
        None => Vec::new(),
    };
    HttpClient::new(&ClientConfig {
        base_url: u.base_url.clone(),
        connect_timeout: u.connect_timeout,
        pool_idle_timeout: u.pool_idle_timeout,
        pool_max_idle_per_host: u.pool_max_idle_per_host,
        tcp_keepalive: u.tcp_keepalive,
        max_response_bytes: u.max_response_bytes,
        extra_roots,
    })
    .context("building the upstream HTTP client")
}

/// The gRPC listener's TLS files, if TLS is configured.
pub fn tls_files(config: &Config) -> Option<TlsFiles> {
    let s = &config.server;
    Some(TlsFiles {
        cert: s.tls_cert_file.clone()?,
        key: s.tls_key_file.clone()?,
        client_ca: s.tls_client_ca_file.clone(),
        client_cert_required: s.tls_client_cert_required,
    })
}

/// Who may call without a credential: anyone with
/// `allow_unauthenticated`; loopback callers of `sandbox` while its policy
/// file names no caller (its generated admin token does not count) and it
/// listens on loopback itself; else nobody.
fn anonymous_access(config: &Config, no_callers: bool, loopback_listener: bool) -> Anonymous {
    if config.auth.allow_unauthenticated {
        Anonymous::Allowed
    } else if config.auth.allow_loopback_unauthenticated && no_callers && loopback_listener {
        Anonymous::LoopbackOnly
    } else {
        Anonymous::Denied
    }
}

/// Starts the gateway on the given listeners.
pub async fn start(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
) -> anyhow::Result<Running> {
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;

    let credentials = Arc::new(CredentialStore::with_products(credentials_from(&config)?));
    let audit = Arc::new(AuditLog::new(
        usize::try_from(config.audit.max_events).unwrap_or(usize::MAX),
    ));
    let (table, file_callers) = callers_from(&config)?;
    if config.auth.allow_unauthenticated {
        tracing::warn!("GATEWAY_ALLOW_UNAUTHENTICATED is on: callers without a token are let in. Development only!");
    } else if table.is_empty() && !config.auth.allow_loopback_unauthenticated {
        tracing::warn!("no caller tokens configured: every call will be refused (set GATEWAY_CALLER_TOKENS_FILE)");
    }
    // `sandbox` trusts anonymous loopback callers only while it listens
    // on loopback: on any other address it is reachable from elsewhere
    // (a proxy on this host would make every caller look local). Its own
    // admin token is not a policy: only callers from the file switch
    // anonymous access off.
    let loopback_listener = grpc_addr.ip().is_loopback();
    if config.auth.allow_loopback_unauthenticated && !file_callers && !loopback_listener {
        tracing::warn!(%grpc_addr, "not listening on loopback: callers need a token (set GATEWAY_CALLER_TOKENS_FILE)");
    }
    let anonymous = anonymous_access(&config, !file_callers, loopback_listener);
    let tls = match tls_files(&config) {
        Some(files) => Some(Arc::new(TlsServer::load(files)?)),
        None => None,
    };
    match &tls {
        Some(t) if t.mutual() => {
            let required = config.server.tls_client_cert_required;
            tracing::info!(
                client_certificate = if required { "required" } else { "optional" },
                "gRPC over TLS; client certificates from GATEWAY_TLS_CLIENT_CA_FILE identify callers"
            )
        }
        Some(_) => tracing::info!("gRPC over TLS"),
        None if !loopback_listener => {
            tracing::warn!(%grpc_addr, "gRPC in plaintext on a non-loopback address")
        }
        None => {}
    }
    let callers = Arc::new(CallerRegistry::new(table, anonymous));

    let u = &config.upstream;
    let client = upstream_client(&config)?;
    let idempotency: Arc<dyn IdempotencyStore> = match &config.state.redis_url {
        Some(url) => {
            let store = RedisStore::new(url.expose_secret()).context("GATEWAY_REDIS_URL")?;
            if !store.wait_connected(Duration::from_secs(2)).await {
                tracing::warn!("starting without Redis: keyed calls are refused until it answers");
            }
            Arc::new(store)
        }
        None => Arc::new(MemoryStore::with_limits(
            config.idempotency.memory_max_entries,
            config.idempotency.memory_max_bytes,
        )),
    };
    let telemetry = telemetry_from(&config)?;
    let mut stack_config = stack_config(&config);
    stack_config.telemetry = telemetry.clone();
    let cache = config
        .cache
        .enabled
        .then(|| ResponseCache::new(config.cache.clone(), credentials.clone()));
    if let (Some(cache), Some(url)) = (&cache, &config.state.redis_url) {
        CacheBus::start(url.expose_secret(), cache).context("GATEWAY_REDIS_URL")?;
    }
    stack_config.cache = cache.clone();
    let cache_metrics = cache.as_ref().map(|c| c.instruments(&telemetry.meter()));
    let gateway = Gateway::new(
        stack::stack(
            client.clone(),
            credentials.clone(),
            idempotency.clone(),
            &stack_config,
        ),
        u.default_deadline,
        credentials.clone(),
    );
    // Rotated keys: the vault's are applied before the first call.
    let keys = Keys::new(
        gateway.clone(),
        credentials.clone(),
        keys::vault_from(&config)?,
        audit.clone(),
        KeySettings::from_config(&config),
    );
    match keys.sync().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(products = n, "using rotated keys"),
        Err(e) => tracing::warn!(
            "cannot read rotated keys yet (retried every credentials.sync_interval): {e}"
        ),
    }

    // Webhooks → event log → EventService (see events/mod.rs).
    // Verified webhook events invalidate the cache entries they name.
    let invalidator: Arc<dyn CacheInvalidator> = match &cache {
        Some(cache) => cache.clone(),
        None => Arc::new(NoCache),
    };
    let events = Events::start(&config, invalidator)
        .await
        .context("opening the event log")?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    for name in services::SERVICE_NAMES.iter().chain([
        &Events::SERVICE_NAME,
        &KEY_SERVICE,
        &KEY_MANAGEMENT_SERVICE,
    ]) {
        health_reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let s = &config.server;
    let limits = MessageLimits {
        max_decoding: s.max_message_bytes,
        max_encoding: s.max_message_bytes,
    };
    let events_server = events
        .service
        .clone()
        .server()
        .max_decoding_message_size(limits.max_decoding)
        .max_encoding_message_size(limits.max_encoding);
    let router = Server::builder()
        // Dead client connections are found by PING, not by the OS after hours.
        .http2_keepalive_interval(Some(s.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(s.http2_keepalive_timeout))
        // Bound what one client connection can have in flight.
        .max_concurrent_streams(Some(s.max_concurrent_streams))
        // Settles the request id first, so every answer carries it, refusals included.
        .layer(RequestIdLayer)
        // Every call is authenticated and authorized before any service sees it.
        // Refused admin calls are recorded in the audit log there.
        .layer(CallerAuthLayer::new(callers.clone()).with_audit(audit.clone()))
        // Every allowed admin call, with its outcome, in the audit log.
        .layer(AuditLayer::new(
            audit.clone(),
            Caller::is_admin_method,
            |ext| ext.get::<Arc<Caller>>().map(|c| c.name.to_string()),
        ))
        // Span, x-trace-id, duration and the call's log line; inside auth so the caller is known.
        .layer(RpcTelemetryLayer::new(
            telemetry.clone(),
            services::ROUTES.iter().map(|r| r.rpc).chain(ADMIN_METHODS),
        ))
        // Then held to its caller's rate, so one noisy caller cannot starve others.
        .layer(RateLimitLayer::new(RateLimitConfig {
            per_second: config.limits.caller_rate_per_sec,
            burst: config.limits.caller_burst,
        }))
        // Innermost: our own methods reached by one match on the path, not
        // through the router's extra body wrappers (see dispatch.rs).
        .layer(DispatchLayer::new(
            gateway.clone(),
            limits.grpc(),
            events_server.clone(),
        ))
        .add_service(
            crate::admin::Admin::new(cache.clone(), telemetry.clone(), audit.clone()).into_server(),
        )
        // Held to the same message limits as the proxied services.
        .add_service(
            KeyService::new(keys.clone())
                .into_server()
                .max_decoding_message_size(limits.max_decoding)
                .max_encoding_message_size(limits.max_encoding),
        )
        .add_service(
            KeyManagement::new(keys.clone())
                .into_server()
                .max_decoding_message_size(limits.max_decoding)
                .max_encoding_message_size(limits.max_encoding),
        )
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // Registered with the router too: reflection and health list them, and
    // the router answers them for a server built without DispatchLayer.
    let router = services::add_services(router, gateway, &limits).add_service(events_server);

    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        config: config.clone(),
        callers,
        client,
        idempotency,
        events: events.clone(),
        stopping: stop_rx.clone(),
        health: parking_lot::Mutex::new(None),
        telemetry: telemetry.clone(),
        keys: keys.clone(),
        tls: tls.clone(),
        _cache_metrics: cache_metrics,
    });
    spawn_health_refresh(shared.clone());
    spawn_file_watch(shared.clone());
    keys.spawn_background(stop_rx.clone());
    let stop_events = events.clone();
    let http_app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared.clone())
        .merge(events.ingest.clone().router());

    let grace = s.shutdown_grace;
    let task = tokio::spawn(async move {
        let signal = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        };
        let grpc: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match tls {
            // Handshakes happen off the accept loop; the connection's
            // certificate identity reaches the auth layer with each call.
            Some(tls) => Box::pin(
                router.serve_with_incoming_shutdown(tls.incoming(grpc), signal(stop_rx.clone())),
            ),
            None => Box::pin(
                router.serve_with_incoming_shutdown(incoming(grpc), signal(stop_rx.clone())),
            ),
        };
        let http = axum::serve(http, http_app)
            .with_graceful_shutdown(signal(stop_rx.clone()))
            .into_future();
        let both = async {
            let (g, h) = tokio::join!(grpc, http);
            g.context("gRPC server")?;
            h.context("HTTP server")?;
            anyhow::Ok(())
        };
        tokio::pin!(both);
        // Once asked to stop, in-flight calls get `grace` to finish.
        let mut rx = stop_rx;
        tokio::select! {
            r = &mut both => return r,
            _ = rx.wait_for(|stopped| *stopped) => {}
        }
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        stop_events.service.stop();
        match tokio::time::timeout(grace, &mut both).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "shutdown grace period over; dropping remaining calls"
                );
                Ok(())
            }
        }
    });
    tracing::info!(%grpc_addr, %http_addr, "imprint-gateway listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        shared,
        stop,
        task,
        cache,
        telemetry,
    })
}

/// This instance's tracer and meter, from `[telemetry]` / `OTEL_*`.
fn telemetry_from(config: &Config) -> anyhow::Result<Arc<Telemetry>> {
    let t = &config.telemetry;
    Telemetry::new(&TelemetrySettings {
        otlp_endpoint: t.otlp_endpoint.clone(),
        service_name: t.service_name.clone(),
        metrics_interval: t.metrics_interval,
        upstream_host: http::Uri::try_from(config.upstream.base_url.as_str())
            .ok()
            .and_then(|u| u.host().map(str::to_owned))
            .unwrap_or_default(),
        request_log_entries: usize::try_from(t.request_log_entries).unwrap_or(usize::MAX),
        request_log_max_bytes: usize::try_from(t.request_log_max_bytes).unwrap_or(usize::MAX),
    })
}

/// The resilience layers' settings from the configuration.
pub fn stack_config(config: &Config) -> StackConfig {
    StackConfig {
        retry: config.retry.clone(),
        breaker: config.breaker.clone(),
        load_shed: config.limits.load_shed(),
        idempotency: config.idempotency.clone(),
        attempt_timeout: config.upstream.attempt_timeout,
        cache: None,
        telemetry: Telemetry::disabled(),
    }
}

/// Binds the configured gRPC and HTTP addresses, naming the setting on error.
pub async fn bind(config: &Config) -> anyhow::Result<(TcpListener, TcpListener)> {
    let grpc = TcpListener::bind(config.server.grpc_addr)
        .await
        .with_context(|| {
            format!(
                "binding gRPC address {} (GATEWAY_GRPC_ADDR)",
                config.server.grpc_addr
            )
        })?;
    let http = TcpListener::bind(config.server.http_addr)
        .await
        .with_context(|| {
            format!(
                "binding HTTP address {} (GATEWAY_HTTP_ADDR)",
                config.server.http_addr
            )
        })?;
    Ok((grpc, http))
}

/// Binds the configured addresses and starts.
pub async fn bind_and_start(config: Config) -> anyhow::Result<Running> {
    let (grpc, http) = bind(&config).await?;
    start(config, grpc, http).await
}

impl Running {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The response cache (None when `cache.enabled = false`): the hook for
    /// webhook invalidations, and for tests.
    pub fn cache(&self) -> Option<&Arc<ResponseCache>> {
        self.cache.as_ref()
    }

    /// Re-reads the API key file, the products' key files, the caller
    /// policy file and the TLS files (SIGHUP, or a change seen by the file
    /// watch), all or nothing: every source is read and validated first,
    /// then they are swapped together; a bad source changes nothing and
    /// says why. The key files are read by the same function as at start;
    /// a key file still holding the configured key keeps a rotated key. Calls in flight finish with what they
    /// started with; established TLS connections keep their handshake.
    pub fn reload(&self) -> anyhow::Result<()> {
        self.shared.reload()
    }

    /// Stops accepting, lets in-flight calls finish (up to the grace
    /// period), and returns when both servers are down.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let result = self.task.await.context("server task");
        // Calls are done: their spans and metrics go out before we exit.
        let flush = self.shared.config.telemetry.flush_timeout;
        self.telemetry.shutdown(flush).await;
        result?
    }

    /// This instance's telemetry (metrics text, tracer).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Waits until the servers stop on their own (an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task")?
    }
}

impl Shared {
    /// See [`Running::reload`].
    fn reload(&self) -> anyhow::Result<()> {
        let config = &self.config;
        // Read and validate every source first.
        let mut credentials = Vec::new();
        if let Some(path) = &config.upstream.api_key_file {
            let key = read_secret_file(path, "upstream.api_key_file")?;
            credentials.push(Credential::new(
                key,
                config.upstream.merchant_key.clone(),
                config.upstream.auth_scheme,
            )?);
        }
        for (i, name, file) in product_key_files(config) {
            let p = &config.credentials.products[i];
            let key = read_secret_file(&file, &format!("credentials.products[{i}]"))?;
            credentials.push(Credential::for_product(
                name,
                key,
                p.merchant_key.clone(),
                config.upstream.auth_scheme,
            )?);
        }
        let (table, _) = callers_from(config)?;
        let tls = match &self.tls {
            Some(tls) => Some((tls, tls.read()?)),
            None => None,
        };

        // Then swap them together.
        for credential in credentials {
            let product = credential.product().to_owned();
            // The same configured key again leaves a rotated key in place.
            if self.keys.reconfigured(credential) {
                tracing::info!(product, "Imprint credential reloaded");
            }
        }
        tracing::info!(callers = table.len(), "caller policy reloaded");
        self.callers.replace(table);
        if let Some((tls, server_config)) = tls {
            tls.install(server_config);
            tracing::info!("TLS certificate reloaded");
        }
        Ok(())
    }

    /// The files a reload reads.
    fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let c = &self.config;
        let mut files: Vec<std::path::PathBuf> = [
            c.upstream.api_key_file.clone(),
            c.auth.caller_tokens_file.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        files.extend(product_key_files(c).into_iter().map(|(_, _, f)| f));
        if let Some(tls) = &self.tls {
            let f = tls.files();
            files.extend([f.cert.clone(), f.key.clone()]);
            files.extend(f.client_ca.clone());
        }
        files
    }
}

/// The products whose API key is in a file (their own, or the secret
/// directory's): index, name and file. Those in the environment are read
/// once at start.
fn product_key_files(config: &Config) -> Vec<(usize, &str, std::path::PathBuf)> {
    let dir = &config.credentials.secrets_dir;
    config
        .credentials
        .products
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let file = match (&p.api_key_file, &p.api_key_env, dir) {
                (Some(f), _, _) => f.clone(),
                (None, None, Some(dir)) => dir.join(&p.name).join("api_key"),
                _ => return None,
            };
            Some((i, p.name.as_str(), file))
        })
        .collect()
}

/// What tells a file changed: size, modification time, inode (a file
/// replaced by rename has a new one).
fn file_stamp(path: &std::path::Path) -> Option<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// Reloads (as on SIGHUP) when one of the files a reload reads changes,
/// checked every `server.watch_interval` until shutdown. A reload that
/// fails (a half-written file) keeps the previous state and is tried again
/// at the next change.
fn spawn_file_watch(shared: Arc<Shared>) {
    let every = shared.config.server.watch_interval;
    let files = shared.watched_files();
    if every.is_zero() || files.is_empty() {
        return;
    }
    let mut stopping = shared.stopping.clone();
    tokio::spawn(async move {
        let stamps =
            |files: &[std::path::PathBuf]| files.iter().map(|f| file_stamp(f)).collect::<Vec<_>>();
        let mut last = stamps(&files);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let now = stamps(&files);
            if now == last {
                continue;
            }
            last = now;
            tracing::info!("a watched file changed: reloading");
            if let Err(e) = shared.reload() {
                tracing::error!("reload failed, keeping the previous state: {e:#}");
            }
        }
    });
}

/// Ready when this process can serve: configuration loaded and listeners
/// up (both true once it answers at all), and not shutting down. Never
/// whether Imprint or Redis are up: an outage shared by every replica must
/// not take them all out of the load balancer, leaving callers with
/// connection errors instead of precise statuses.
async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if *shared.stopping.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Every metric, in the Prometheus text format.
async fn metrics(State(shared): State<Arc<Shared>>) -> impl axum::response::IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.telemetry.prometheus_text(),
    )
}

/// Process up (always 200 while it answers); the body tells people and
/// dashboards how each dependency is doing. The state is refreshed in the
/// background, so a liveness probe of `/healthz` never waits on Imprint or
/// Redis (and nobody can make the gateway call Imprint by polling it).
async fn healthz(State(shared): State<Arc<Shared>>) -> axum::Json<serde_json::Value> {
    let cached = shared.health.lock().clone();
    let dependencies = match cached {
        Some(d) => d,
        None => refresh_health(&shared).await,
    };
    axum::Json(serde_json::json!({ "status": "up", "dependencies": dependencies }))
}

/// Probes every dependency once and keeps the result for `/healthz`.
async fn refresh_health(shared: &Shared) -> serde_json::Value {
    let (imprint, store, event_log) = tokio::join!(
        shared.client.probe(Duration::from_secs(2)),
        shared.idempotency.ping(),
        shared.events.health()
    );
    let state = |r: Result<(), String>| match r {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(e) => serde_json::json!({ "ok": false, "error": e }),
    };
    let dependencies = serde_json::json!({
        "imprint": state(imprint),
        "state_store": state(store.map_err(|e| e.to_string())),
        "event_log": event_log,
    });
    *shared.health.lock() = Some(dependencies.clone());
    dependencies
}

/// Refreshes `/healthz`'s dependency state every [`HEALTH_EVERY`] until
/// shutdown.
fn spawn_health_refresh(shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    tokio::spawn(async move {
        loop {
            refresh_health(&shared).await;
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_EVERY) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    });
}

/// How often `/healthz`'s dependency state is refreshed.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// Accepted gRPC connections with Nagle off. The builder's `tcp_nodelay`
/// applies only to listeners tonic binds itself, not to an incoming stream:
/// without this, a small answer can wait for the caller's delayed ACK (40 ms).
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<Unvectored<tokio::net::TcpStream>>> {
    use futures::StreamExt as _;
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|conn| {
            conn.map(|tcp| Unvectored {
                io: tcp,
                activity: Arc::default(),
            })
        })
}

/// A connection that says it has no vectored writes, so that HTTP/2 (h2)
/// copies frames under 1 KiB into its write buffer instead of chaining
/// each one to be written on its own: a unary answer's headers, message and
/// trailers then go out in one `write` instead of two `writev`, and the
/// frames of many event streams queued together go out together. Its reads
/// and writes mark the connection's [`crate::conn_activity::Activity`], and
/// its connect info is the same [`crate::tls::PeerInfo`] as a TLS
/// connection's, without a certificate.
pub struct Unvectored<T> {
    io: T,
    activity: Arc<crate::conn_activity::Activity>,
}

impl<T> tonic::transport::server::Connected for Unvectored<T>
where
    T: tonic::transport::server::Connected<ConnectInfo = tonic::transport::server::TcpConnectInfo>,
{
    type ConnectInfo = crate::tls::PeerInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        crate::tls::PeerInfo {
            remote_addr: self.io.connect_info().remote_addr(),
            certificate: None,
            activity: self.activity.clone(),
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.activity.touch();
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.activity.touch();
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plaintext connection's connect info is the peer's address and the
    /// activity its own reads and writes mark, as a TLS connection's is.
    #[tokio::test]
    async fn a_plaintext_connection_carries_its_peer_and_activity() {
        use tonic::transport::server::Connected as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let conn = Unvectored {
            io: tokio::net::TcpStream::from_std(accepted).unwrap(),
            activity: Arc::default(),
        };
        let info = conn.connect_info();
        assert_eq!(info.remote_addr, Some(client.local_addr().unwrap()));
        assert!(info.certificate.is_none());
        assert!(Arc::ptr_eq(&info.activity, &conn.activity));
    }

    #[test]
    fn sandbox_trusts_loopback_callers_only_on_a_loopback_listener_without_callers() {
        let mut sandbox = Config::default();
        sandbox.auth.allow_loopback_unauthenticated = true;
        assert_eq!(
            anonymous_access(&sandbox, true, true),
            Anonymous::LoopbackOnly
        );
        assert_eq!(anonymous_access(&sandbox, true, false), Anonymous::Denied);
        assert_eq!(anonymous_access(&sandbox, false, true), Anonymous::Denied);
        let serve = Config::default();
        assert_eq!(anonymous_access(&serve, true, true), Anonymous::Denied);
        let mut dev = Config::default();
        dev.auth.allow_unauthenticated = true;
        assert_eq!(anonymous_access(&dev, false, false), Anonymous::Allowed);
    }
}

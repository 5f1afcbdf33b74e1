//! Typed configuration, parsed once at start-up.
//!
//! Sources, later wins: built-in defaults, the TOML file (`--config`), the
//! contract's environment variables (`IMPRINT_API_KEY`, `GATEWAY_GRPC_ADDR`,
//! ...), then `GATEWAY__<SECTION>__<KEY>` for any other setting. Every error
//! names the setting and where its value came from.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub mod events;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::{
    cache::CacheConfig,
    credentials::{fingerprint, AuthScheme},
    idempotency::IdempotencyConfig,
    upstream::{BreakerConfig, LoadShedConfig, RetryConfig},
};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub upstream: UpstreamConfig,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub limits: LimitSettings,
    pub idempotency: IdempotencyConfig,
    pub state: StateSettings,
    pub log: LogConfig,
    pub events: events::EventsConfig,
    pub cache: CacheConfig,
    pub telemetry: TelemetryConfig,
    pub credentials: CredentialsConfig,
    pub audit: AuditConfig,
}

/// `[credentials]`: the products besides the default one, rotation, and
/// where rotated keys are kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// Products (API key and merchant key each), picked by callers with
    /// `x-imprint-product`. `IMPRINT_API_KEY`... is the product `default`.
    pub products: Vec<ProductConfig>,
    /// A mounted secret directory: a product naming no other source reads
    /// `<dir>/<product>/api_key` and, if present, `<dir>/<product>/merchant_key`.
    pub secrets_dir: Option<PathBuf>,
    /// `GATEWAY_MASTER_KEY_FILE`: 32 bytes (raw, 64 hex digits or base64)
    /// that encrypt rotated keys kept in Redis (AES-256-GCM). Unset: rotated
    /// keys are not shared through Redis, only kept under the data directory.
    pub master_key_file: Option<PathBuf>,
    /// Rotate every product's key when it is this many days old; 0: never.
    pub rotate_every_days: u32,
    /// How long a rotation waits for calls still using the old key before
    /// deleting it upstream.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often a gateway checks the shared store (Redis, or the data
    /// directory's file) for a key rotated elsewhere.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How often the deletion of a replaced key whose delete failed is retried.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            products: Vec::new(),
            secrets_dir: None,
            master_key_file: None,
            rotate_every_days: 0,
            drain_timeout: Duration::from_secs(30),
            sync_interval: Duration::from_secs(2),
            retry_interval: Duration::from_secs(60),
        }
    }
}

/// One product: where its API key and merchant key come from. Exactly one
/// source for the API key (file, environment variable, or `secrets_dir`).
#[derive(Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProductConfig {
    pub name: String,
    pub api_key_file: Option<PathBuf>,
    /// The name of an environment variable holding the key.
    pub api_key_env: Option<String>,
    pub merchant_key_file: Option<PathBuf>,
    pub merchant_key_env: Option<String>,
    /// Resolved from the sources above at load (shown masked).
    #[serde(skip_deserializing, serialize_with = "masked")]
    pub api_key: Option<SecretString>,
    #[serde(skip_deserializing, serialize_with = "masked")]
    pub merchant_key: Option<SecretString>,
}

impl fmt::Debug for ProductConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProductConfig")
            .field("name", &self.name)
            .field("api_key_file", &self.api_key_file)
            .field("api_key_env", &self.api_key_env)
            .field("api_key", &self.api_key.as_ref().map(mask))
            .field("merchant_key", &self.merchant_key.as_ref().map(mask))
            .finish_non_exhaustive()
    }
}

/// `[audit]`: the in-memory audit log behind `AdminService/ListAuditEvents`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Events kept in memory (oldest dropped first); the log lines stay.
    pub max_events: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { max_events: 10_000 }
    }
}

/// `[limits]`: protecting Imprint and the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub max_in_flight: usize,
    pub max_queue: usize,
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Per-caller sustained calls per second (0 = unlimited).
    pub caller_rate_per_sec: f64,
    pub caller_burst: f64,
}

impl LimitSettings {
    /// The load-shedding layer's part of these settings.
    pub fn load_shed(&self) -> LoadShedConfig {
        LoadShedConfig {
            max_in_flight: self.max_in_flight,
            max_queue: self.max_queue,
            queue_timeout: self.queue_timeout,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        let d = LoadShedConfig::default();
        Self {
            max_in_flight: d.max_in_flight,
            max_queue: d.max_queue,
            queue_timeout: d.queue_timeout,
            caller_rate_per_sec: 100.0,
            caller_burst: 200.0,
        }
    }
}

/// `[state]`: where state shared by replicas lives.
#[derive(Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// `redis://host:port/db`; unset keeps state in this process.
    #[serde(serialize_with = "masked")]
    pub redis_url: Option<SecretString>,
}

impl fmt::Debug for StateSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSettings")
            .field("redis_url", &self.redis_url.as_ref().map(mask))
            .finish()
    }
}

/// Listening sockets and gRPC server limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How long SIGTERM waits for in-flight calls before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// HTTP/2 streams one client connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// HTTP/2 PING interval that detects dead client connections.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// PEM certificate chain of the gRPC listener (`GATEWAY_TLS_CERT_FILE`);
    /// with `tls_key_file`, the listener speaks TLS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (`GATEWAY_TLS_KEY_FILE`).
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates
    /// (`GATEWAY_TLS_CLIENT_CA_FILE`): mTLS, the caller being the
    /// certificate's SPIFFE ID or DNS SAN.
    pub tls_client_ca_file: Option<PathBuf>,
    /// With a client CA: a client without a certificate fails the
    /// handshake (the default: the client CA *requires* certificates, as
    /// the runtime contract says). `false` lets callers without one use
    /// bearer tokens. No effect without a client CA.
    pub tls_client_cert_required: bool,
    /// Serve gRPC without TLS on a non-loopback address. Off: `serve`
    /// refuses to start plaintext anywhere but loopback.
    pub plaintext: bool,
    /// How often the TLS files, the caller policy file and the API key
    /// file are checked for changes (reloaded like on SIGHUP); 0 = only on
    /// SIGHUP.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: ([127, 0, 0, 1], 50051).into(),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            shutdown_grace: Duration::from_secs(30),
            max_concurrent_streams: 1024,
            max_message_bytes: 4 * 1024 * 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_client_cert_required: true,
            plaintext: false,
            watch_interval: Duration::from_secs(5),
        }
    }
}

/// Who may call the gateway.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Let callers in without a token (development only; logged loudly).
    pub allow_unauthenticated: bool,
    /// TOML file of caller tokens and what each may call.
    pub caller_tokens_file: Option<PathBuf>,
    /// Set by the `sandbox` command, never by a file: callers on loopback
    /// get in without a token unless caller tokens are configured.
    #[serde(skip_deserializing, skip_serializing_if = "std::ops::Not::not")]
    pub allow_loopback_unauthenticated: bool,
    /// Set by the `sandbox` command, never by a file: an admin caller
    /// token generated for the run (printed at start-up).
    #[serde(skip)]
    pub sandbox_admin_token: Option<SecretString>,
}

/// How to reach Imprint.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub base_url: String,
    /// `basic` (key as user name) or `bearer`.
    pub auth_scheme: AuthScheme,
    /// The API key itself; prefer `api_key_file` or `IMPRINT_API_KEY`.
    /// Set this or `api_key_file`, not both.
    #[serde(serialize_with = "masked")]
    pub api_key: Option<SecretString>,
    /// A file holding the API key (re-read on SIGHUP).
    pub api_key_file: Option<PathBuf>,
    /// Sent as `x-imprint-merchant-key` to pick a product.
    #[serde(serialize_with = "masked")]
    pub merchant_key: Option<SecretString>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bounds a call whose caller sent no `grpc-timeout`.
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    pub max_response_bytes: usize,
    /// Bounds one attempt; the caller's deadline bounds all of them.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// PEM CA certificate(s) trusted for Imprint's TLS certificate besides
    /// the public web roots: a TLS-inspecting egress proxy's CA, a private
    /// staging endpoint's (`GATEWAY__UPSTREAM__EXTRA_CA_FILE`).
    pub extra_ca_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: "https://dev.sbx.imprint.co".into(),
            auth_scheme: AuthScheme::Basic,
            api_key: None,
            api_key_file: None,
            merchant_key: None,
            connect_timeout: Duration::from_secs(2),
            default_deadline: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            tcp_keepalive: Duration::from_secs(60),
            max_response_bytes: 16 * 1024 * 1024,
            attempt_timeout: Duration::from_secs(5),
            extra_ca_file: None,
        }
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &self.base_url)
            .field("auth_scheme", &self.auth_scheme)
            .field("api_key", &self.api_key.as_ref().map(mask))
            .field("api_key_file", &self.api_key_file)
            .field("merchant_key", &self.merchant_key.as_ref().map(mask))
            .finish_non_exhaustive()
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// `[telemetry]`: trace and metric export, and the request log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector (`OTEL_EXPORTER_OTLP_ENDPOINT`); unset: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` (`OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// How often metrics are pushed over OTLP.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// How long shutdown waits for the last spans and metrics.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Upstream calls kept in the request log (0 turns it off)...
    pub request_log_entries: u64,
    /// ...and at most this many bytes of them.
    pub request_log_max_bytes: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "imprint-gateway".into(),
            metrics_interval: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(5),
            request_log_entries: 10_000,
            request_log_max_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

fn err(setting: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        problem: problem.into(),
    }
}

/// `[redacted sha256:…]`: enough to tell two secrets apart, nothing more.
pub fn mask(secret: &SecretString) -> String {
    format!("[redacted {}]", fingerprint(secret.expose_secret()))
}

/// Serializes a secret as its masked fingerprint: how `check-config`
/// shows it, derived from the settings types like every other field.
pub(crate) fn masked<S: Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_str(&mask(secret)),
        None => s.serialize_none(),
    }
}

/// Serializes a list of secrets as their masked fingerprints.
pub(crate) fn masked_all<S: Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(mask))
}

/// The contract's environment variables: (variable, section, key, kind).
const NAMED_ENV: &[(&str, &str, &str, Kind)] = &[
    ("IMPRINT_API_BASE_URL", "upstream", "base_url", Kind::Url),
    ("IMPRINT_API_KEY", "upstream", "api_key", Kind::Text),
    (
        "IMPRINT_API_KEY_FILE",
        "upstream",
        "api_key_file",
        Kind::Text,
    ),
    (
        "IMPRINT_MERCHANT_KEY",
        "upstream",
        "merchant_key",
        Kind::Text,
    ),
    ("GATEWAY_GRPC_ADDR", "server", "grpc_addr", Kind::Addr),
    ("GATEWAY_HTTP_ADDR", "server", "http_addr", Kind::Addr),
    (
        "GATEWAY_ALLOW_UNAUTHENTICATED",
        "auth",
        "allow_unauthenticated",
        Kind::Bool,
    ),
    (
        "GATEWAY_CALLER_TOKENS_FILE",
        "auth",
        "caller_tokens_file",
        Kind::Text,
    ),
    (
        "GATEWAY_TLS_CERT_FILE",
        "server",
        "tls_cert_file",
        Kind::Text,
    ),
    ("GATEWAY_TLS_KEY_FILE", "server", "tls_key_file", Kind::Text),
    (
        "GATEWAY_TLS_CLIENT_CA_FILE",
        "server",
        "tls_client_ca_file",
        Kind::Text,
    ),
    ("GATEWAY_REDIS_URL", "state", "redis_url", Kind::Text),
    (
        "GATEWAY_MASTER_KEY_FILE",
        "credentials",
        "master_key_file",
        Kind::Text,
    ),
    ("GATEWAY_LOG_FORMAT", "log", "format", Kind::Text),
    (
        "IMPRINT_WEBHOOK_SECRET",
        "events",
        "webhook_secret",
        Kind::Text,
    ),
    (
        "IMPRINT_WEBHOOK_SECRET_FILE",
        "events",
        "webhook_secret_file",
        Kind::Text,
    ),
    ("GATEWAY_DATA_DIR", "events", "data_dir", Kind::Text),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "telemetry",
        "otlp_endpoint",
        Kind::Url,
    ),
    ("OTEL_SERVICE_NAME", "telemetry", "service_name", Kind::Text),
];

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Url,
    Addr,
    Bool,
}

impl Config {
    /// Loads the file (if any) and applies the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut tree = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    err(
                        path.display().to_string(),
                        format!("cannot read config file: {e}"),
                    )
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    err(
                        path.display().to_string(),
                        format!("invalid TOML: {}", e.message()),
                    )
                })?
            }
            None => toml::Table::new(),
        };
        let source = file.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        let env: Vec<(String, String)> = env.into_iter().collect();

        for (var, section, key, kind) in NAMED_ENV {
            // An empty variable is unset (`FOO=` in a deploy file).
            let Some((_, raw)) = env.iter().find(|(k, v)| k == var && !v.is_empty()) else {
                continue;
            };
            let value = match kind {
                Kind::Text => toml::Value::String(raw.clone()),
                Kind::Url => {
                    check_url(raw).map_err(|p| err(*var, p))?;
                    toml::Value::String(raw.clone())
                }
                Kind::Addr => {
                    raw.parse::<SocketAddr>()
                        .map_err(|_| err(*var, "is not a socket address like 127.0.0.1:50051"))?;
                    toml::Value::String(raw.clone())
                }
                Kind::Bool => toml::Value::Boolean(
                    parse_bool(raw)
                        .ok_or_else(|| err(*var, "is not a boolean (true/false/1/0)"))?,
                ),
            };
            set(&mut tree, section, key, value);
        }
        // Any other setting: GATEWAY__SECTION__KEY=value, parsed as the
        // type the setting has (a digit-only secret stays a string).
        let defaults = toml::Value::try_from(Config::default()).ok();
        for (var, raw) in &env {
            let Some(rest) = var.strip_prefix("GATEWAY__") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                return Err(err(var, "expected GATEWAY__<SECTION>__<KEY>"));
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let default = defaults
                .as_ref()
                .and_then(|d| d.get(&section))
                .and_then(|t| t.get(&key));
            let value = typed_env_value(raw, default).map_err(|p| err(var, p))?;
            set(&mut tree, &section, &key, value);
        }

        let given = toml::Value::Table(tree);
        let mut config: Config = serde_path_to_error::deserialize(given.clone()).map_err(|e| {
            let setting = e.path().to_string();
            let value = lookup(&given, &setting);
            let problem = hide_value(e.into_inner().message(), value);
            err(
                format!("{setting} (from {source} or the environment)"),
                problem,
            )
        })?;
        config.validate()?;
        config.events.validate_and_load()?;
        if let Some(path) = &config.upstream.api_key_file {
            if config.upstream.api_key.is_none() {
                config.upstream.api_key = Some(read_secret_file(path, "upstream.api_key_file")?);
            }
        }
        config.resolve_products(&env)?;
        if let Some(path) = &config.credentials.master_key_file {
            read_master_key(path)?;
        }
        if config.credentials.rotate_every_days > 0
            && config.state.redis_url.is_some()
            && config.credentials.master_key_file.is_none()
        {
            return Err(err(
                "credentials.rotate_every_days",
                "needs GATEWAY_MASTER_KEY_FILE when GATEWAY_REDIS_URL is set (rotated keys are shared through Redis, sealed with the master key)",
            ));
        }
        Ok(config)
    }

    /// Every value `serve` could not run with is refused here, naming the
    /// setting: `check-config` accepting a file means `serve` starts.
    fn validate(&self) -> Result<(), ConfigError> {
        check_url(&self.upstream.base_url).map_err(|p| err("upstream.base_url", p))?;
        let (s, u, r, b, l, i) = (
            &self.server,
            &self.upstream,
            &self.retry,
            &self.breaker,
            &self.limits,
            &self.idempotency,
        );
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let durations = [
            (
                "server.shutdown_grace",
                s.shutdown_grace,
                Duration::ZERO,
                DAY,
            ),
            (
                "server.http2_keepalive_interval",
                s.http2_keepalive_interval,
                Duration::from_millis(100),
                DAY,
            ),
            (
                "server.http2_keepalive_timeout",
                s.http2_keepalive_timeout,
                Duration::from_millis(100),
                DAY,
            ),
            (
                "upstream.connect_timeout",
                u.connect_timeout,
                Duration::from_millis(1),
                DAY,
            ),
            (
                "upstream.default_deadline",
                u.default_deadline,
                Duration::from_millis(1),
                DAY,
            ),
            (
                "upstream.pool_idle_timeout",
                u.pool_idle_timeout,
                Duration::ZERO,
                DAY,
            ),
            (
                "upstream.tcp_keepalive",
                u.tcp_keepalive,
                Duration::from_secs(1),
                DAY,
            ),
            (
                "upstream.attempt_timeout",
                u.attempt_timeout,
                Duration::from_millis(1),
                DAY,
            ),
            ("retry.base_backoff", r.base_backoff, Duration::ZERO, DAY),
            ("retry.max_backoff", r.max_backoff, Duration::ZERO, DAY),
            // tower's retry budget accepts 1 to 60 seconds.
            (
                "retry.budget_window",
                r.budget_window,
                Duration::from_secs(1),
                Duration::from_secs(60),
            ),
            ("breaker.window", b.window, Duration::from_millis(10), DAY),
            (
                "breaker.open_for",
                b.open_for,
                Duration::from_millis(1),
                DAY,
            ),
            ("limits.queue_timeout", l.queue_timeout, Duration::ZERO, DAY),
            (
                "telemetry.metrics_interval",
                self.telemetry.metrics_interval,
                Duration::from_secs(1),
                DAY,
            ),
            (
                "telemetry.flush_timeout",
                self.telemetry.flush_timeout,
                Duration::ZERO,
                Duration::from_secs(60),
            ),
            (
                "idempotency.retention",
                i.retention,
                Duration::from_secs(1),
                30 * DAY,
            ),
            (
                "idempotency.in_flight_timeout",
                i.in_flight_timeout,
                Duration::from_secs(1),
                DAY,
            ),
            (
                "cache.not_found_ttl",
                self.cache.not_found_ttl,
                Duration::ZERO,
                DAY,
            ),
            (
                "credentials.drain_timeout",
                self.credentials.drain_timeout,
                Duration::ZERO,
                Duration::from_secs(600),
            ),
            (
                "credentials.sync_interval",
                self.credentials.sync_interval,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "credentials.retry_interval",
                self.credentials.retry_interval,
                Duration::from_secs(1),
                DAY,
            ),
        ];
        for (setting, value, min, max) in durations {
            if value < min || value > max {
                return Err(err(
                    setting,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        let counts: [(&str, u64, u64, u64); 9] = [
            (
                "server.max_concurrent_streams",
                u64::from(s.max_concurrent_streams),
                1,
                u64::from(u32::MAX),
            ),
            (
                "server.max_message_bytes",
                s.max_message_bytes as u64,
                1024,
                1 << 30,
            ),
            (
                "upstream.pool_max_idle_per_host",
                u.pool_max_idle_per_host as u64,
                0,
                1 << 20,
            ),
            (
                "upstream.max_response_bytes",
                u.max_response_bytes as u64,
                1024,
                1 << 30,
            ),
            ("retry.max_attempts", u64::from(r.max_attempts), 1, 10),
            (
                "retry.budget_min_per_sec",
                u64::from(r.budget_min_per_sec),
                0,
                i32::MAX as u64 - 1,
            ),
            ("breaker.min_requests", b.min_requests as u64, 1, 1 << 30),
            (
                "breaker.half_open_probes",
                b.half_open_probes as u64,
                1,
                1 << 20,
            ),
            ("limits.max_in_flight", l.max_in_flight as u64, 1, 1 << 20),
        ];
        for (setting, value, min, max) in counts.into_iter().chain([
            ("limits.max_queue", l.max_queue as u64, 0, 1 << 20),
            (
                "idempotency.memory_max_entries",
                i.memory_max_entries,
                1,
                1 << 32,
            ),
            (
                "idempotency.memory_max_bytes",
                i.memory_max_bytes,
                1024,
                1 << 40,
            ),
            ("cache.max_bytes", self.cache.max_bytes, 1024, 1 << 40),
            (
                "telemetry.request_log_entries",
                self.telemetry.request_log_entries,
                0,
                1 << 24,
            ),
            (
                "telemetry.request_log_max_bytes",
                self.telemetry.request_log_max_bytes,
                0,
                1 << 34,
            ),
            (
                "credentials.rotate_every_days",
                u64::from(self.credentials.rotate_every_days),
                0,
                3650,
            ),
            ("audit.max_events", self.audit.max_events, 1, 1 << 24),
        ]) {
            if value < min || value > max {
                return Err(err(setting, format!("must be between {min} and {max}")));
            }
        }
        self.cache.validate().map_err(|(s, p)| err(s, p))?;
        let watch = s.watch_interval;
        if !(watch.is_zero()
            || (Duration::from_millis(100)..=Duration::from_secs(24 * 3600)).contains(&watch))
        {
            return Err(err(
                "server.watch_interval",
                "must be 0s (reload on SIGHUP only) or between 100ms and 1day",
            ));
        }
        match (&s.tls_cert_file, &s.tls_key_file) {
            (Some(_), None) => {
                return Err(err(
                    "GATEWAY_TLS_KEY_FILE",
                    "is required with GATEWAY_TLS_CERT_FILE",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "GATEWAY_TLS_CERT_FILE",
                    "is required with GATEWAY_TLS_KEY_FILE",
                ))
            }
            _ => {}
        }
        if s.tls_client_ca_file.is_some() && s.tls_cert_file.is_none() {
            return Err(err(
                "GATEWAY_TLS_CLIENT_CA_FILE",
                "needs TLS: set GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE",
            ));
        }
        if r.max_backoff < r.base_backoff {
            return Err(err(
                "retry.max_backoff",
                "must not be less than retry.base_backoff",
            ));
        }
        if !(0.0..=1000.0).contains(&r.budget_percent) {
            return Err(err(
                "retry.budget_percent",
                "must be between 0 and 1000 (0.2 = 20%)",
            ));
        }
        if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
            return Err(err(
                "breaker.failure_rate",
                "must be greater than 0 and at most 1",
            ));
        }
        let rate = l.caller_rate_per_sec;
        if !(rate == 0.0 || (rate.is_finite() && (0.001..=1e9).contains(&rate))) {
            return Err(err(
                "limits.caller_rate_per_sec",
                "must be 0 (unlimited) or between 0.001 and 1000000000",
            ));
        }
        if l.caller_burst > 1e9 {
            return Err(err("limits.caller_burst", "must be at most 1000000000"));
        }
        if i.in_flight_timeout <= u.default_deadline {
            // A call still legitimately running must not be reported as
            // dead to its duplicates.
            return Err(err(
                "idempotency.in_flight_timeout",
                "must be longer than upstream.default_deadline",
            ));
        }
        if l.caller_rate_per_sec > 0.0 && !(l.caller_burst.is_finite() && l.caller_burst >= 1.0) {
            return Err(err("limits.caller_burst", "must be at least 1"));
        }
        if let Some(url) = &self.state.redis_url {
            // The URL may hold a password: name the problem, never the URL.
            let u = reqwest::Url::parse(url.expose_secret())
                .map_err(|_| err("GATEWAY_REDIS_URL", "is not a URL"))?;
            // What `serve` will do with it (no I/O): a URL it refuses is refused here.
            redis::Client::open(url.expose_secret())
                .map_err(|_| err("GATEWAY_REDIS_URL", "is not a Redis URL the client accepts"))?;
            if !matches!(u.scheme(), "redis" | "rediss" | "redis+unix") {
                return Err(err(
                    "GATEWAY_REDIS_URL",
                    "must be a redis:// or rediss:// URL",
                ));
            }
        }
        if self.upstream.api_key.is_some() && self.upstream.api_key_file.is_some() {
            // One source, so start and SIGHUP reload resolve the key alike.
            return Err(err(
                "upstream.api_key",
                "set either the key (IMPRINT_API_KEY) or a file holding it (IMPRINT_API_KEY_FILE), not both",
            ));
        }
        if let Some(k) = &self.upstream.api_key {
            if k.expose_secret().trim().is_empty() {
                return Err(err("upstream.api_key", "is empty"));
            }
        }
        Ok(())
    }

    /// Reads every product's keys from its source, and checks the names.
    fn resolve_products(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        let from_env = |var: &str, setting: &str| -> Result<SecretString, ConfigError> {
            env.iter()
                .find(|(k, v)| k == var && !v.trim().is_empty())
                .map(|(_, v)| SecretString::from(v.clone()))
                .ok_or_else(|| {
                    err(
                        setting,
                        format!("environment variable {var} is unset or empty"),
                    )
                })
        };
        let has_default = self.upstream.api_key.is_some();
        let secrets_dir = self.credentials.secrets_dir.clone();
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.credentials.products.iter_mut().enumerate() {
            let at = format!("credentials.products[{i}]");
            let valid = !p.name.is_empty()
                && p.name.len() <= 64
                && p.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid {
                return Err(err(
                    format!("{at}.name"),
                    "must be 1 to 64 of a-z, 0-9, '-' and '_'",
                ));
            }
            if !seen.insert(p.name.clone()) {
                return Err(err(format!("{at}.name"), "names a product twice"));
            }
            if p.name == crate::credentials::DEFAULT_PRODUCT && has_default {
                return Err(err(
                    format!("{at}.name"),
                    "the default product is already configured by IMPRINT_API_KEY / upstream.api_key",
                ));
            }
            let dir = secrets_dir.as_ref().map(|d| d.join(&p.name));
            let key_setting = format!("{at}.api_key_file");
            p.api_key = Some(match (&p.api_key_file, &p.api_key_env) {
                (Some(f), None) => read_secret_file(f, &key_setting)?,
                (None, Some(var)) => from_env(var, &format!("{at}.api_key_env"))?,
                (None, None) => match &dir {
                    Some(d) => read_secret_file(&d.join("api_key"), "credentials.secrets_dir")?,
                    None => {
                        return Err(err(
                            format!("{at}.api_key_file"),
                            "set api_key_file, api_key_env, or credentials.secrets_dir",
                        ))
                    }
                },
                (Some(_), Some(_)) => {
                    return Err(err(
                        format!("{at}.api_key_file"),
                        "set either api_key_file or api_key_env, not both",
                    ))
                }
            });
            let merchant_setting = format!("{at}.merchant_key_file");
            p.merchant_key = match (&p.merchant_key_file, &p.merchant_key_env) {
                (Some(f), None) => Some(read_secret_file(f, &merchant_setting)?),
                (None, Some(var)) => Some(from_env(var, &format!("{at}.merchant_key_env"))?),
                (None, None) => match dir.map(|d| d.join("merchant_key")) {
                    Some(f) if f.exists() => Some(read_secret_file(&f, "credentials.secrets_dir")?),
                    _ => None,
                },
                (Some(_), Some(_)) => {
                    return Err(err(
                        merchant_setting,
                        "set either merchant_key_file or merchant_key_env, not both",
                    ))
                }
            };
        }
        Ok(())
    }

    /// Whether a default product is configured (`serve` needs one).
    pub fn has_default_credential(&self) -> bool {
        self.upstream.api_key.is_some()
            || self
                .credentials
                .products
                .iter()
                .any(|p| p.name == crate::credentials::DEFAULT_PRODUCT)
    }

    /// Whether the gRPC listener may run as configured: TLS, or plaintext
    /// on a loopback address, or plaintext explicitly allowed
    /// (`server.plaintext`). `serve` and `check-config` refuse the rest;
    /// `sandbox`, a development tool, does not ask.
    pub fn check_transport(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.tls_cert_file.is_some() || s.plaintext || s.grpc_addr.ip().is_loopback() {
            return Ok(());
        }
        Err(err(
            "server.plaintext",
            format!(
                "the gRPC address {} (GATEWAY_GRPC_ADDR) is not loopback and has no TLS: set GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE, or allow plaintext explicitly with server.plaintext = true (GATEWAY__SERVER__PLAINTEXT=true)",
                s.grpc_addr
            ),
        ))
    }

    /// The settings in effect, secrets masked, as TOML: the settings
    /// types serialize themselves (secrets through [`mask`]), so nothing
    /// here can drift from what `serve` reads.
    pub fn render_masked(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render the settings: {e}\n"))
    }
}

/// Reads a secret from a file, dropping a trailing newline.
pub fn read_secret_file(path: &Path, setting: &str) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(setting, format!("cannot read {}: {e}", path.display())))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.trim().is_empty() {
        return Err(err(setting, format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(value.to_owned()))
}

/// Reads the master key file: exactly 32 bytes, given raw, as 64 hex
/// digits, or in base64. Errors name the setting, never the content.
pub fn read_master_key(path: &Path) -> Result<[u8; 32], ConfigError> {
    use base64::Engine as _;
    const SETTING: &str = "GATEWAY_MASTER_KEY_FILE";
    let bytes = std::fs::read(path)
        .map_err(|e| err(SETTING, format!("cannot read {}: {e}", path.display())))?;
    if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(raw);
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let decoded = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok());
    decoded
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or_else(|| {
            err(
                SETTING,
                format!(
                    "{} must hold 32 bytes: raw, 64 hex digits or base64",
                    path.display()
                ),
            )
        })
}

fn set(tree: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = tree
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

/// An environment value as the TOML type of the setting's default (a
/// setting whose default is unset is text).
fn typed_env_value(raw: &str, default: Option<&toml::Value>) -> Result<toml::Value, String> {
    let trimmed = raw.trim();
    Ok(match default {
        // Text as is; a TOML-quoted string ("5s") is unquoted.
        None | Some(toml::Value::String(_)) => match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) if raw.trim_start().starts_with('"') => t
                .remove("v")
                .filter(toml::Value::is_str)
                .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
            _ => toml::Value::String(raw.to_owned()),
        },
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            trimmed
                .parse()
                .map_err(|_| "expects a whole number".to_string())?,
        ),
        Some(toml::Value::Float(_)) => toml::Value::Float(
            trimmed
                .parse()
                .map_err(|_| "expects a number".to_string())?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            parse_bool(trimmed).ok_or_else(|| "expects true or false".to_string())?,
        ),
        Some(_) => format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| "expects a TOML value".to_string())?,
    })
}

/// The value at a `section.key` path of the given settings, if any.
fn lookup<'a>(tree: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    path.split('.').try_fold(tree, |node, part| node.get(part))
}

/// A deserializer's message without the offending value: serde quotes it
/// (`invalid type: integer `12345`, expected ...`), and the value may be a
/// secret. The setting is named by the caller; the value never is.
fn hide_value(message: &str, value: Option<&toml::Value>) -> String {
    let mut out = message.to_owned();
    let shown = match value {
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => {
            Some(v.to_string())
        }
        _ => None,
    };
    if let Some(v) = shown.filter(|v| !v.is_empty()) {
        out = out.replace(&v, "…");
    }
    // Whatever the deserializer quoted as the value it got.
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        if let Some(rest) = out.strip_prefix(prefix) {
            if let Some(hidden) = without_first_quoted(rest) {
                out = format!("{prefix}{hidden}");
            }
        }
    }
    out
}

/// `rest` with its first `…` or "…" quoted part removed.
fn without_first_quoted(rest: &str) -> Option<String> {
    let open = rest.find(['`', '"'])?;
    let quote = rest[open..].chars().next()?;
    let close = open + 1 + rest[open + 1..].find(quote)?;
    Some(format!(
        "{}{}",
        &rest[..open],
        rest[close + 1..].trim_start_matches(' ')
    ))
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn check_url(raw: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err("must not carry a query, fragment or credentials".into());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.server.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.server.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.upstream.base_url, "https://dev.sbx.imprint.co");
        assert!(!c.auth.allow_unauthenticated);
        assert!(c.upstream.api_key.is_none());
    }

    #[test]
    fn environment_overrides_and_masking() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("IMPRINT_API_KEY", "sk_live_supersecret"),
                ("IMPRINT_MERCHANT_KEY", "mk_secret"),
                ("GATEWAY_GRPC_ADDR", "127.0.0.1:6000"),
                ("GATEWAY_ALLOW_UNAUTHENTICATED", "true"),
                ("GATEWAY__UPSTREAM__DEFAULT_DEADLINE", "3s"),
                ("GATEWAY__UPSTREAM__AUTH_SCHEME", "bearer"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.grpc_addr.port(), 6000);
        assert!(c.auth.allow_unauthenticated);
        assert_eq!(c.upstream.default_deadline, Duration::from_secs(3));
        assert_eq!(c.upstream.auth_scheme, AuthScheme::Bearer);
        let shown = c.render_masked() + &format!("{c:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(!shown.contains("mk_secret"), "{shown}");
        assert!(shown.contains("[redacted sha256:"));
    }

    #[test]
    fn scheduled_rotation_with_redis_needs_the_master_key() {
        let redis = ("GATEWAY_REDIS_URL", "redis://127.0.0.1:6379");
        let every = ("GATEWAY__CREDENTIALS__ROTATE_EVERY_DAYS", "30");
        let e = Config::load_with_env(None, env(&[redis, every])).unwrap_err();
        assert_eq!(e.setting, "credentials.rotate_every_days");
        assert!(e.problem.contains("GATEWAY_MASTER_KEY_FILE"), "{e}");
        // Either alone is fine.
        Config::load_with_env(None, env(&[redis])).unwrap();
        Config::load_with_env(None, env(&[every])).unwrap();
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = Config::load_with_env(None, env(&[("GATEWAY_GRPC_ADDR", "nowhere")])).unwrap_err();
        assert_eq!(e.setting, "GATEWAY_GRPC_ADDR");
        let e =
            Config::load_with_env(None, env(&[("IMPRINT_API_BASE_URL", "ftp://x")])).unwrap_err();
        assert_eq!(e.setting, "IMPRINT_API_BASE_URL");
        let e = Config::load_with_env(None, env(&[("GATEWAY_ALLOW_UNAUTHENTICATED", "maybe")]))
            .unwrap_err();
        assert!(e.to_string().contains("not a boolean"));
        let e =
            Config::load_with_env(None, env(&[("GATEWAY__UPSTREAM__NO_SUCH", "1")])).unwrap_err();
        assert!(e.problem.contains("no_such"), "{e}");
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("igw-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, "sk_from_file\n").unwrap();
        let c = Config::load_with_env(
            None,
            env(&[("IMPRINT_API_KEY_FILE", key.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(c.upstream.api_key.unwrap().expose_secret(), "sk_from_file");
        std::fs::write(&key, "\n").unwrap();
        let e = Config::load_with_env(
            None,
            env(&[("IMPRINT_API_KEY_FILE", key.to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(e.problem.contains("empty"));
    }

    #[test]
    fn environment_values_take_the_settings_type_and_errors_never_show_values() {
        // A digit-only secret stays text; numbers are numbers.
        let c = Config::load_with_env(
            None,
            env(&[
                ("GATEWAY__UPSTREAM__API_KEY", "0123456789"),
                ("GATEWAY__UPSTREAM__MAX_RESPONSE_BYTES", "65536"),
                ("GATEWAY__BREAKER__FAILURE_RATE", "1"),
                ("GATEWAY__LOG__FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(c.upstream.api_key.unwrap().expose_secret(), "0123456789");
        assert_eq!(c.upstream.max_response_bytes, 65536);
        assert_eq!(c.breaker.failure_rate, 1.0);

        for (var, value) in [
            ("GATEWAY__UPSTREAM__MAX_RESPONSE_BYTES", "sk_live_9q8w7e"),
            ("GATEWAY__UPSTREAM__AUTH_SCHEME", "sk_live_9q8w7e"),
            ("GATEWAY__STATE__REDIS_URL", "sk_live_9q8w7e"),
            ("GATEWAY__UPSTREAM__DEFAULT_DEADLINE", "sk_live_9q8w7e"),
            ("IMPRINT_API_BASE_URL", "sk_live_9q8w7e"),
            ("GATEWAY_GRPC_ADDR", "sk_live_9q8w7e"),
        ] {
            let e = Config::load_with_env(None, env(&[(var, value)])).unwrap_err();
            let shown = e.to_string();
            assert!(!shown.contains("9q8w7e"), "{var}: {shown}");
            let named = var
                .trim_start_matches("GATEWAY__")
                .to_ascii_lowercase()
                .replace("__", ".");
            assert!(
                shown.contains(var) || shown.contains(&named) || shown.contains("REDIS_URL"),
                "{var}: {shown}"
            );
        }
    }

    #[test]
    fn a_file_value_of_the_wrong_type_is_named_not_shown() {
        let dir = std::env::temp_dir().join(format!("igw-cfg-type-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[upstream]\napi_key = 987654321\n").unwrap();
        let e = Config::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(e.setting.starts_with("upstream.api_key"), "{e}");
        assert!(!e.to_string().contains("987654321"), "{e}");
        std::fs::write(&file, "[upstream]\nauth_scheme = \"hunter2\"\n").unwrap();
        let e = Config::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(
            e.to_string().contains("basic"),
            "the allowed values are still said: {e}"
        );
    }

    #[test]
    fn a_key_has_one_source() {
        let dir = std::env::temp_dir().join(format!("igw-cfg-both-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, "sk_from_file\n").unwrap();
        let e = Config::load_with_env(
            None,
            env(&[
                ("IMPRINT_API_KEY", "sk_from_env"),
                ("IMPRINT_API_KEY_FILE", key.to_str().unwrap()),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.setting, "upstream.api_key");
        assert!(!e.to_string().contains("sk_from"), "{e}");
    }

    #[test]
    fn the_masked_rendering_is_derived_from_the_settings() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("IMPRINT_API_KEY", "sk_live_supersecret"),
                ("GATEWAY_REDIS_URL", "redis://:pw_secret@127.0.0.1:6379/0"),
            ]),
        )
        .unwrap();
        let shown = c.render_masked();
        // Every section and setting appears, secrets only as fingerprints.
        let back: toml::Table = shown.parse().unwrap();
        for section in [
            "server",
            "auth",
            "upstream",
            "retry",
            "breaker",
            "limits",
            "idempotency",
            "state",
            "log",
        ] {
            assert!(back.contains_key(section), "{section} missing: {shown}");
        }
        assert!(back["idempotency"].get("memory_max_entries").is_some());
        assert!(
            !shown.contains("supersecret") && !shown.contains("pw_secret"),
            "{shown}"
        );
        assert!(back["upstream"]["api_key"]
            .as_str()
            .unwrap()
            .starts_with("[redacted sha256:"));
    }

    #[test]
    fn products_read_their_keys_from_one_source_and_show_only_fingerprints() {
        let dir = std::env::temp_dir().join(format!("igw-cfg-products-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("secrets").join("from-dir")).unwrap();
        std::fs::write(dir.join("secrets/from-dir/api_key"), "sk_dir_secret\n").unwrap();
        std::fs::write(dir.join("secrets/from-dir/merchant_key"), "mk_dir_secret").unwrap();
        std::fs::write(dir.join("file.key"), "sk_file_secret\n").unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            format!(
                "[credentials]\nsecrets_dir = \"{0}/secrets\"\n\
                 [[credentials.products]]\nname = \"from-dir\"\n\
                 [[credentials.products]]\nname = \"from-file\"\napi_key_file = \"{0}/file.key\"\n\
                 [[credentials.products]]\nname = \"from-env\"\napi_key_env = \"B_KEY\"\nmerchant_key_env = \"B_MK\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&file),
            env(&[
                ("B_KEY", "sk_env_secret"),
                ("B_MK", "mk_env_secret"),
                ("IMPRINT_API_KEY", "sk_default_secret"),
            ]),
        )
        .unwrap();
        let p = &c.credentials.products;
        assert_eq!(
            p[0].api_key.as_ref().unwrap().expose_secret(),
            "sk_dir_secret"
        );
        assert_eq!(
            p[0].merchant_key.as_ref().unwrap().expose_secret(),
            "mk_dir_secret"
        );
        assert_eq!(
            p[1].api_key.as_ref().unwrap().expose_secret(),
            "sk_file_secret"
        );
        assert!(p[1].merchant_key.is_none());
        assert_eq!(
            p[2].merchant_key.as_ref().unwrap().expose_secret(),
            "mk_env_secret"
        );
        assert!(c.has_default_credential());
        let shown = c.render_masked() + &format!("{c:?}");
        for secret in [
            "sk_dir_secret",
            "mk_dir_secret",
            "sk_file_secret",
            "sk_env_secret",
            "mk_env_secret",
            "sk_default_secret",
        ] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        assert!(shown.contains("from-env"));

        // Errors name the setting, never a value.
        let e = Config::load_with_env(Some(&file), env(&[("B_MK", "mk_env_secret")])).unwrap_err();
        assert_eq!(e.setting, "credentials.products[2].api_key_env");
        assert!(!e.to_string().contains("secret"), "{e}");
        std::fs::write(
            &file,
            "[[credentials.products]]\nname = \"default\"\napi_key_env = \"B_KEY\"\n",
        )
        .unwrap();
        let e = Config::load_with_env(
            Some(&file),
            env(&[("B_KEY", "sk_x"), ("IMPRINT_API_KEY", "sk_y")]),
        )
        .unwrap_err();
        assert_eq!(e.setting, "credentials.products[0].name");
        std::fs::write(&file, "[[credentials.products]]\nname = \"Bad Name\"\n").unwrap();
        let e = Config::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert_eq!(e.setting, "credentials.products[0].name");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_master_key_is_32_bytes_in_any_of_three_spellings() {
        let dir = std::env::temp_dir().join(format!("igw-cfg-master-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master");
        for content in [vec![7u8; 32], hex::encode([7u8; 32]).into_bytes(), {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .encode([7u8; 32])
                .into_bytes()
        }] {
            std::fs::write(&path, &content).unwrap();
            assert_eq!(read_master_key(&path).unwrap(), [7u8; 32]);
        }
        std::fs::write(&path, "too-short-master-key").unwrap();
        let e = read_master_key(&path).unwrap_err();
        assert_eq!(e.setting, "GATEWAY_MASTER_KEY_FILE");
        assert!(!e.to_string().contains("too-short"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

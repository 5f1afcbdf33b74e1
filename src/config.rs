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

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    credentials::{fingerprint, AuthScheme},
    idempotency::IdempotencyConfig,
    upstream::{BreakerConfig, LoadShedConfig, RetryConfig},
};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
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
    pub events: crate::events::EventsConfig,
}

/// `[limits]`: protecting Imprint and the gateway.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// `redis://host:port/db`; unset keeps state in this process.
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
#[derive(Debug, Clone, Deserialize)]
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
        }
    }
}

/// Who may call the gateway.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Let callers in without a token (development only; logged loudly).
    pub allow_unauthenticated: bool,
    /// TOML file of caller tokens and what each may call.
    pub caller_tokens_file: Option<PathBuf>,
    /// Set by the `sandbox` command, never by a file: callers on loopback
    /// get in without a token unless caller tokens are configured.
    #[serde(skip)]
    pub allow_loopback_unauthenticated: bool,
}

/// How to reach Imprint.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub base_url: String,
    /// `basic` (key as user name) or `bearer`.
    pub auth_scheme: AuthScheme,
    /// The API key itself; prefer `api_key_file` or `IMPRINT_API_KEY`.
    pub api_key: Option<SecretString>,
    /// A file holding the API key (re-read on SIGHUP).
    pub api_key_file: Option<PathBuf>,
    /// Sent as `x-imprint-merchant-key` to pick a product.
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
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
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
    ("GATEWAY_REDIS_URL", "state", "redis_url", Kind::Text),
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
                    raw.parse::<SocketAddr>().map_err(|_| {
                        err(
                            *var,
                            format!("'{raw}' is not a socket address like 127.0.0.1:50051"),
                        )
                    })?;
                    toml::Value::String(raw.clone())
                }
                Kind::Bool => toml::Value::Boolean(parse_bool(raw).ok_or_else(|| {
                    err(*var, format!("'{raw}' is not a boolean (true/false/1/0)"))
                })?),
            };
            set(&mut tree, section, key, value);
        }
        // Any other setting: GATEWAY__SECTION__KEY=value.
        for (var, raw) in &env {
            let Some(rest) = var.strip_prefix("GATEWAY__") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                return Err(err(var, "expected GATEWAY__<SECTION>__<KEY>"));
            };
            let value = format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            set(
                &mut tree,
                &section.to_ascii_lowercase(),
                &key.to_ascii_lowercase(),
                value,
            );
        }

        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(tree))
            .map_err(|e| {
                let setting = e.path().to_string();
                let problem = e.into_inner().message().to_string();
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
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_url(&self.upstream.base_url).map_err(|p| err("upstream.base_url", p))?;
        if self.upstream.default_deadline.is_zero() {
            return Err(err(
                "upstream.default_deadline",
                "must be greater than zero",
            ));
        }
        if self.server.max_message_bytes < 1024 {
            return Err(err("server.max_message_bytes", "must be at least 1024"));
        }
        if self.retry.max_attempts == 0 {
            return Err(err("retry.max_attempts", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.breaker.failure_rate) {
            return Err(err("breaker.failure_rate", "must be between 0 and 1"));
        }
        if self.limits.max_in_flight == 0 {
            return Err(err("limits.max_in_flight", "must be at least 1"));
        }
        if self.upstream.attempt_timeout.is_zero() {
            return Err(err("upstream.attempt_timeout", "must be greater than zero"));
        }
        if let Some(url) = &self.state.redis_url {
            let u = reqwest::Url::parse(url.expose_secret())
                .map_err(|e| err("GATEWAY_REDIS_URL", format!("not a URL: {e}")))?;
            if !matches!(u.scheme(), "redis" | "rediss" | "redis+unix") {
                return Err(err(
                    "GATEWAY_REDIS_URL",
                    "must be a redis:// or rediss:// URL",
                ));
            }
        }
        if self.server.max_concurrent_streams == 0 {
            return Err(err("server.max_concurrent_streams", "must be at least 1"));
        }
        if let Some(k) = &self.upstream.api_key {
            if k.expose_secret().trim().is_empty() {
                return Err(err("upstream.api_key", "is empty"));
            }
        }
        Ok(())
    }

    /// The settings in effect, secrets masked, as TOML-like text.
    pub fn render_masked(&self) -> String {
        let s = &self.server;
        let a = &self.auth;
        let u = &self.upstream;
        let opt_path = |p: &Option<PathBuf>| {
            p.as_ref().map_or("(unset)".to_string(), |p| {
                format!("{:?}", p.display().to_string())
            })
        };
        let opt_secret = |k: &Option<SecretString>| k.as_ref().map_or("(unset)".to_string(), mask);
        format!(
            "[server]\ngrpc_addr = \"{}\"\nhttp_addr = \"{}\"\nshutdown_grace = \"{}\"\nmax_concurrent_streams = {}\nmax_message_bytes = {}\nhttp2_keepalive_interval = \"{}\"\nhttp2_keepalive_timeout = \"{}\"\n\n\
             [auth]\nallow_unauthenticated = {}\ncaller_tokens_file = {}\n\n\
             [upstream]\nbase_url = \"{}\"\nauth_scheme = \"{}\"\napi_key = {}\napi_key_file = {}\nmerchant_key = {}\nconnect_timeout = \"{}\"\ndefault_deadline = \"{}\"\npool_idle_timeout = \"{}\"\npool_max_idle_per_host = {}\ntcp_keepalive = \"{}\"\nmax_response_bytes = {}\nattempt_timeout = \"{}\"\n\n\
             [log]\nformat = \"{}\"\n",
            s.grpc_addr,
            s.http_addr,
            humantime::format_duration(s.shutdown_grace),
            s.max_concurrent_streams,
            s.max_message_bytes,
            humantime::format_duration(s.http2_keepalive_interval),
            humantime::format_duration(s.http2_keepalive_timeout),
            a.allow_unauthenticated,
            opt_path(&a.caller_tokens_file),
            u.base_url,
            match u.auth_scheme {
                AuthScheme::Basic => "basic",
                AuthScheme::Bearer => "bearer",
            },
            opt_secret(&u.api_key),
            opt_path(&u.api_key_file),
            opt_secret(&u.merchant_key),
            humantime::format_duration(u.connect_timeout),
            humantime::format_duration(u.default_deadline),
            humantime::format_duration(u.pool_idle_timeout),
            u.pool_max_idle_per_host,
            humantime::format_duration(u.tcp_keepalive),
            u.max_response_bytes,
            humantime::format_duration(u.attempt_timeout),
            match self.log.format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        ) + &self.render_resilience()
            + &self.events.render_masked()
    }

    fn render_resilience(&self) -> String {
        let (r, b, l, i) = (&self.retry, &self.breaker, &self.limits, &self.idempotency);
        let d = humantime::format_duration;
        format!(
            "\n[retry]\nmax_attempts = {}\nbase_backoff = \"{}\"\nmax_backoff = \"{}\"\nretry_500 = {}\nbudget_percent = {}\nbudget_min_per_sec = {}\nbudget_window = \"{}\"\n\
             \n[breaker]\nwindow = \"{}\"\nmin_requests = {}\nfailure_rate = {}\nopen_for = \"{}\"\nhalf_open_probes = {}\n\
             \n[limits]\nmax_in_flight = {}\nmax_queue = {}\nqueue_timeout = \"{}\"\ncaller_rate_per_sec = {}\ncaller_burst = {}\n\
             \n[idempotency]\nretention = \"{}\"\nin_flight_timeout = \"{}\"\n\
             \n[state]\nredis_url = {}\n",
            r.max_attempts,
            d(r.base_backoff),
            d(r.max_backoff),
            r.retry_500,
            r.budget_percent,
            r.budget_min_per_sec,
            d(r.budget_window),
            d(b.window),
            b.min_requests,
            b.failure_rate,
            d(b.open_for),
            b.half_open_probes,
            l.max_in_flight,
            l.max_queue,
            d(l.queue_timeout),
            l.caller_rate_per_sec,
            l.caller_burst,
            d(i.retention),
            d(i.in_flight_timeout),
            self.state.redis_url.as_ref().map_or("(unset: state in this process)".to_string(), mask),
        )
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

fn set(tree: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = tree
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn check_url(raw: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("'{raw}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{raw}' must be an http or https URL"));
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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
}

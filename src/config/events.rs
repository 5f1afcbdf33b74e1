//! `[events]`: webhook ingestion and the event log.

use std::{fmt, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::{mask, read_secret_file, ConfigError};

/// `[events]` settings. Secrets come from `webhook_secret`
/// (`IMPRINT_WEBHOOK_SECRET`), `webhook_secret_file`
/// (`IMPRINT_WEBHOOK_SECRET_FILE`, one secret per line) and
/// `webhook_secrets`; every one is accepted, which is how a secret rotates.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    #[serde(serialize_with = "super::masked")]
    pub webhook_secret: Option<SecretString>,
    pub webhook_secret_file: Option<PathBuf>,
    #[serde(serialize_with = "super::masked_all")]
    pub webhook_secrets: Vec<SecretString>,
    /// How far `t` may be from now, either way.
    #[serde(with = "humantime_serde")]
    pub tolerance: Duration,
    /// Larger webhook bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Events older than this are removed (and may be stored again).
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,
    /// At most this many events are kept; the oldest go first.
    pub retention_max_events: u64,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Durable local state (`GATEWAY_DATA_DIR`): the redb event log.
    pub data_dir: PathBuf,
    /// How many events a subscriber may fall behind the live feed before it
    /// is ended as too slow; at least [`MIN_SUBSCRIBER_BUFFER`].
    pub subscriber_buffer: usize,
    /// With Redis: wait until the append is fsync'd to the AOF (WAITAOF 1 0);
    /// needs `appendonly yes` on the server.
    pub redis_wait_aof: bool,
}

/// The largest burst events are published in: one redb commit of
/// concurrent webhooks, or one read of the Redis stream (both 512). A
/// caught-up subscriber is that far behind the live feed as a burst
/// arrives, so a smaller buffer would end subscribers that keep up.
pub const MIN_SUBSCRIBER_BUFFER: usize = 512;

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            webhook_secret: None,
            webhook_secret_file: None,
            webhook_secrets: Vec::new(),
            tolerance: Duration::from_secs(300),
            max_body_bytes: 1024 * 1024,
            retention_age: Duration::from_secs(7 * 24 * 3600),
            retention_max_events: 1_000_000,
            retention_interval: Duration::from_secs(60),
            data_dir: PathBuf::from("./data"),
            subscriber_buffer: 1024,
            redis_wait_aof: false,
        }
    }
}

impl fmt::Debug for EventsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsConfig")
            .field("webhook_secret", &self.webhook_secret.as_ref().map(mask))
            .field("webhook_secret_file", &self.webhook_secret_file)
            .field(
                "webhook_secrets",
                &self.webhook_secrets.iter().map(mask).collect::<Vec<_>>(),
            )
            .field("tolerance", &self.tolerance)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("retention_age", &self.retention_age)
            .field("retention_max_events", &self.retention_max_events)
            .field("data_dir", &self.data_dir)
            .field("subscriber_buffer", &self.subscriber_buffer)
            .finish_non_exhaustive()
    }
}

fn err(setting: &str, problem: &str) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        problem: problem.into(),
    }
}

/// How long events are kept: by age and by count.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_events: u64,
}

impl EventsConfig {
    /// Checks values and reads `webhook_secret_file` into `webhook_secrets`.
    pub fn validate_and_load(&mut self) -> Result<(), ConfigError> {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        for (setting, value, max) in [
            ("events.tolerance", self.tolerance, DAY),
            ("events.retention_age", self.retention_age, 365 * DAY),
            ("events.retention_interval", self.retention_interval, DAY),
        ] {
            if value.is_zero() || value > max {
                return Err(err(
                    setting,
                    &format!(
                        "must be greater than zero and at most {}",
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        if self.max_body_bytes > 1 << 30 {
            return Err(err("events.max_body_bytes", "must be at most 1073741824"));
        }
        if self.subscriber_buffer > 1 << 20 || self.retention_max_events > 1 << 40 {
            return Err(err(
                "events.subscriber_buffer",
                "must be at most 1048576 (and events.retention_max_events at most 2^40)",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(err("events.max_body_bytes", "must be at least 1024"));
        }
        if self.retention_age.is_zero() {
            return Err(err("events.retention_age", "must be greater than zero"));
        }
        if self.retention_interval.is_zero() {
            return Err(err(
                "events.retention_interval",
                "must be greater than zero",
            ));
        }
        if self.retention_max_events == 0 {
            return Err(err("events.retention_max_events", "must be at least 1"));
        }
        if self.subscriber_buffer < MIN_SUBSCRIBER_BUFFER {
            return Err(err(
                "events.subscriber_buffer",
                "must be at least 512, the largest burst events are published in (a smaller value ends subscribers that keep up)",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(err("GATEWAY_DATA_DIR", "is empty"));
        }
        if self
            .webhook_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().trim().is_empty())
        {
            return Err(err("IMPRINT_WEBHOOK_SECRET", "is empty"));
        }
        if self
            .webhook_secrets
            .iter()
            .any(|s| s.expose_secret().trim().is_empty())
        {
            return Err(err("events.webhook_secrets", "holds an empty secret"));
        }
        if let Some(path) = &self.webhook_secret_file {
            let all = read_secret_file(path, "IMPRINT_WEBHOOK_SECRET_FILE")?;
            for line in all.expose_secret().lines() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    self.webhook_secrets
                        .push(SecretString::from(line.to_owned()));
                }
            }
            self.webhook_secret_file = None;
        }
        Ok(())
    }

    /// Every secret accepted, in no particular order.
    pub fn secrets(&self) -> Vec<SecretString> {
        self.webhook_secret
            .iter()
            .chain(&self.webhook_secrets)
            .cloned()
            .collect()
    }

    pub fn retention(&self) -> Retention {
        Retention {
            max_age: self.retention_age,
            max_events: self.retention_max_events,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{tests::env, Config};

    #[test]
    fn contract_variables_and_masking() {
        let dir = std::env::temp_dir().join(format!("igw-evcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets");
        std::fs::write(&file, "whsec_file_one\n# old one below\nwhsec_file_two\n").unwrap();
        let c = Config::load_with_env(
            None,
            env(&[
                ("IMPRINT_WEBHOOK_SECRET", "whsec_env_secret"),
                ("IMPRINT_WEBHOOK_SECRET_FILE", file.to_str().unwrap()),
                ("GATEWAY_DATA_DIR", "/var/lib/igw"),
                ("GATEWAY__EVENTS__TOLERANCE", "2m"),
            ]),
        )
        .unwrap();
        assert_eq!(c.events.secrets().len(), 3);
        assert_eq!(c.events.data_dir, std::path::PathBuf::from("/var/lib/igw"));
        assert_eq!(c.events.tolerance, std::time::Duration::from_secs(120));
        let shown = c.render_masked() + &format!("{c:?}");
        assert!(!shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("[events]"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_values_name_the_setting_not_the_value() {
        for (var, value, setting) in [
            ("GATEWAY__EVENTS__TOLERANCE", "0s", "events.tolerance"),
            (
                "GATEWAY__EVENTS__MAX_BODY_BYTES",
                "10",
                "events.max_body_bytes",
            ),
            (
                "GATEWAY__EVENTS__SUBSCRIBER_BUFFER",
                "0",
                "events.subscriber_buffer",
            ),
            (
                "GATEWAY__EVENTS__RETENTION_MAX_EVENTS",
                "0",
                "events.retention_max_events",
            ),
            ("IMPRINT_WEBHOOK_SECRET", "   ", "IMPRINT_WEBHOOK_SECRET"),
        ] {
            let e = Config::load_with_env(None, env(&[(var, value)])).unwrap_err();
            assert_eq!(e.setting, setting, "{e}");
        }
    }
}

//! Records in Redis, shared by every replica.
//!
//! A claim is `SET key record NX PX ttl`: atomic across replicas. Completing
//! and releasing run a Lua script that first checks the claim's token, so a
//! replica never overwrites a claim it does not own.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    AsyncCommands as _, Script,
};

use super::{IdempotencyStore, Record, StoreError};

const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).token == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).token == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Records under `<prefix><key>` in Redis.
#[derive(Clone)]
pub struct RedisStore {
    /// Set once the first connection succeeds; the manager reconnects on
    /// its own after that.
    conn: Arc<OnceLock<ConnectionManager>>,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("connected", &self.conn.get().is_some())
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedisStore {
    /// A store for `url` (`redis://host:port/db`). Only the URL is checked
    /// here: the gateway starts whether or not Redis is up, connects in the
    /// background (retrying with back-off), and keyed calls fail fast with
    /// STATE_STORE_UNAVAILABLE until it is. An outage of Redis, shared by
    /// every replica, must not keep any replica from starting.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(err)?;
        let conn = Arc::new(OnceLock::new());
        tokio::spawn(connect_in_background(client, Arc::downgrade(&conn)));
        Ok(Self {
            conn,
            prefix: "imprint-gateway:idempotency:".into(),
        })
    }

    /// Waits up to `timeout` for the first connection; whether it is up.
    /// Start-up gives Redis this long so that a healthy deployment never
    /// refuses its first keyed calls, then serves either way.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while self.conn.get().is_none() {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.conn
            .get()
            .cloned()
            .ok_or_else(|| StoreError("not connected to Redis yet".into()))
    }
}

/// Tries to connect until it succeeds, backing off up to 5 s between tries.
/// Stops once the store it connects for is gone.
pub(crate) async fn connect_in_background(
    client: redis::Client,
    slot: std::sync::Weak<OnceLock<ConnectionManager>>,
) {
    // Fail fast when Redis is away: a call waiting on the store is a
    // call waiting on nothing; the caller gets STATE_STORE_UNAVAILABLE.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(OP_TIMEOUT)
        .set_response_timeout(OP_TIMEOUT)
        .set_number_of_retries(2)
        .set_max_delay(200);
    let mut wait = Duration::from_millis(100);
    let mut logged = false;
    loop {
        match bounded(client.get_connection_manager_with_config(config.clone())).await {
            Ok(conn) => {
                if logged {
                    tracing::info!("connected to Redis");
                }
                if let Some(slot) = slot.upgrade() {
                    let _ = slot.set(conn);
                }
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!("Redis unreachable, retrying in the background: {e}");
                    logged = true;
                }
                tokio::time::sleep(wait).await;
                if slot.strong_count() == 0 {
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Bound on any one Redis operation.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs a Redis operation within [`OP_TIMEOUT`].
pub(crate) async fn bounded<T, E: std::fmt::Display>(
    op: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(result) => result.map_err(err),
        Err(_) => Err(StoreError("Redis did not answer in time".into())),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        key: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<Option<Record>, StoreError> {
        let value = serde_json::to_string(record).map_err(err)?;
        let mut conn = self.conn()?;
        // A record may expire between SET NX and GET: try twice.
        for _ in 0..2 {
            let set: Option<String> = bounded(
                redis::cmd("SET")
                    .arg(self.key(key))
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms(ttl))
                    .query_async(&mut conn),
            )
            .await?;
            if set.is_some() {
                return Ok(None);
            }
            let existing: Option<String> = bounded(conn.get(self.key(key))).await?;
            if let Some(v) = existing {
                return serde_json::from_str(&v).map(Some).map_err(err);
            }
        }
        Err(StoreError("could not claim the key".into()))
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let mut conn = self.conn()?;
        let v: Option<String> = bounded(conn.get(self.key(key))).await?;
        v.map(|v| serde_json::from_str(&v).map_err(err)).transpose()
    }

    async fn complete(
        &self,
        key: &str,
        token: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_string(record).map_err(err)?;
        let mut conn = self.conn()?;
        let _: i64 = bounded(
            Script::new(COMPLETE)
                .key(self.key(key))
                .arg(token)
                .arg(value)
                .arg(ms(ttl))
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let _: i64 = bounded(
            Script::new(RELEASE)
                .key(self.key(key))
                .arg(token)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let pong: String = bounded(redis::cmd("PING").query_async(&mut conn)).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError(format!("unexpected PING answer {pong:?}")))
        }
    }
}

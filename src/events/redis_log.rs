//! The shared event log: one Redis stream every replica appends to and reads.
//!
//! An append is one Lua script (atomic on the server): if the `event_id`
//! key exists it is a duplicate; else `INCR` the sequence, `XADD` the event
//! with stream id `<seq>-0` and set the `event_id` key with the retention
//! age as TTL. Dedupe therefore holds across replicas. Each replica tails
//! the stream (`XREAD BLOCK`) into its live feed, so a subscriber on B sees
//! what A ingested, in cursor order.
//!
//! Durability is Redis': run it with `appendonly yes` and
//! `appendfsync always`, or set `events.redis_wait_aof = true` so each
//! append waits for `WAITAOF 1 0` (the local AOF fsync) before the 2xx.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Script,
};
use tokio::sync::broadcast;

use super::log::{now_ms, Appended, Bounds, EventLog, LogError, NewEvent, Retention, StoredEvent};

const STREAM: &str = "{imprint-gateway:events}:log";
const SEQ: &str = "{imprint-gateway:events}:seq";
const TRIMMED: &str = "{imprint-gateway:events}:trimmed";
const ID_PREFIX: &str = "{imprint-gateway:events}:id:";
/// Bound on any one Redis operation.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one XREAD waits for news.
const BLOCK_MS: u64 = 1000;

const APPEND: &str = r"
local existing = redis.call('GET', KEYS[2])
if existing then return {0, tonumber(existing)} end
local seq = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[1], seq .. '-0', 'e', ARGV[1])
redis.call('SET', KEYS[2], seq, 'EX', ARGV[2])
return {1, seq}";

const RAISE_TRIMMED: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1";

/// See the module docs.
pub struct RedisLog {
    conn: ConnectionManager,
    live: broadcast::Sender<Arc<StoredEvent>>,
    dedupe_ttl_secs: u64,
    wait_aof: bool,
    /// The tail task stops once this is dropped.
    _alive: Arc<()>,
}

fn err(e: impl std::fmt::Display) -> LogError {
    LogError(format!("Redis: {e}"))
}

async fn bounded<T, E: std::fmt::Display>(
    op: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, LogError> {
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(LogError("Redis did not answer in time".into())),
    }
}

/// `"<seq>-0"` → seq.
fn seq_of(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

fn decode_entries(entries: Entries) -> Result<Vec<Arc<StoredEvent>>, LogError> {
    let mut out = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let seq = seq_of(&id).ok_or_else(|| LogError(format!("unexpected stream id {id}")))?;
        let bytes = fields
            .into_iter()
            .find(|(f, _)| f == "e")
            .map(|(_, v)| v)
            .ok_or_else(|| LogError(format!("stream entry {id} has no event")))?;
        out.push(Arc::new(StoredEvent::decode(seq, &bytes)?));
    }
    Ok(out)
}

impl RedisLog {
    /// Connects and starts tailing the stream into the live feed.
    pub async fn connect(
        url: &str,
        retention: Retention,
        wait_aof: bool,
        live_capacity: usize,
    ) -> Result<Self, LogError> {
        let client = redis::Client::open(url).map_err(err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(200);
        let conn = bounded(client.get_connection_manager_with_config(config)).await?;
        if wait_aof {
            // WAITAOF is Redis 7.2+: refuse to start rather than 503 every webhook.
            let mut c = conn.clone();
            let info: redis::Value = bounded(
                redis::cmd("COMMAND")
                    .arg("INFO")
                    .arg("WAITAOF")
                    .query_async(&mut c),
            )
            .await?;
            let known = matches!(&info, redis::Value::Array(v) if v.iter().any(|x| !matches!(x, redis::Value::Nil)));
            if !known {
                return Err(LogError(
                    "events.redis_wait_aof needs Redis 7.2 or later (WAITAOF); use appendfsync always instead".into(),
                ));
            }
        }
        let (live, _) = broadcast::channel(live_capacity.max(16));
        let alive = Arc::new(());
        let log = Self {
            conn,
            live: live.clone(),
            dedupe_ttl_secs: retention.max_age.as_secs().max(1),
            wait_aof,
            _alive: alive.clone(),
        };
        let head = log.bounds().await?.head;
        tokio::spawn(tail(client, live, head, Arc::downgrade(&alive)));
        Ok(log)
    }
}

/// Publishes every stream entry after `last` into `live`, for as long as
/// anyone may subscribe. A dedicated connection: XREAD BLOCK holds it.
async fn tail(
    client: redis::Client,
    live: broadcast::Sender<Arc<StoredEvent>>,
    mut last: u64,
    alive: std::sync::Weak<()>,
) {
    let mut conn = None;
    while alive.strong_count() > 0 {
        if conn.is_none() {
            match bounded(client.get_multiplexed_async_connection()).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "event log tail: cannot connect; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let read: Result<Option<Vec<(String, Entries)>>, _> = tokio::time::timeout(
            Duration::from_millis(BLOCK_MS) + OP_TIMEOUT,
            redis::cmd("XREAD")
                .arg("COUNT")
                // One read is one burst for the subscribers (see the minimum).
                .arg(crate::config::events::MIN_SUBSCRIBER_BUFFER)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(STREAM)
                .arg(format!("{last}-0"))
                .query_async(c),
        )
        .await
        .map_err(|_| LogError("XREAD timed out".into()))
        .and_then(|r| r.map_err(err));
        match read {
            Ok(streams) => {
                for (_, entries) in streams.unwrap_or_default() {
                    match decode_entries(entries) {
                        Ok(events) => {
                            for e in events {
                                last = e.cursor;
                                // Encoded once here, for every subscriber.
                                e.framed();
                                let _ = live.send(e);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "event log tail"),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "event log tail: read failed; reconnecting");
                conn = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[async_trait]
impl EventLog for RedisLog {
    async fn append(&self, event: NewEvent) -> Result<Appended, LogError> {
        let mut conn = self.conn.clone();
        let id_key = format!("{ID_PREFIX}{}", event.event.event_id);
        let (fresh, seq): (i64, u64) = bounded(
            Script::new(APPEND)
                .key(STREAM)
                .key(&id_key)
                .key(SEQ)
                .arg(event.encode())
                .arg(self.dedupe_ttl_secs)
                .invoke_async(&mut conn),
        )
        .await?;
        if fresh == 0 {
            return Ok(Appended::Duplicate(seq));
        }
        if self.wait_aof {
            let (local, _replicas): (i64, i64) = bounded(
                redis::cmd("WAITAOF")
                    .arg(1)
                    .arg(0)
                    .arg(OP_TIMEOUT.as_millis() as u64)
                    .query_async(&mut conn),
            )
            .await?;
            if local < 1 {
                return Err(LogError("Redis did not fsync the AOF in time".into()));
            }
        }
        Ok(Appended::New(Arc::new(StoredEvent::new(seq, event.event))))
    }

    async fn read_after(&self, after: u64, max: usize) -> Result<Vec<Arc<StoredEvent>>, LogError> {
        let mut conn = self.conn.clone();
        let entries: Entries = bounded(
            redis::cmd("XRANGE")
                .arg(STREAM)
                .arg(format!("{}-0", after.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(max)
                .query_async(&mut conn),
        )
        .await?;
        decode_entries(entries)
    }

    async fn bounds(&self) -> Result<Bounds, LogError> {
        let mut conn = self.conn.clone();
        let (head, trimmed): (Option<u64>, Option<u64>) = bounded(
            redis::cmd("MGET")
                .arg(SEQ)
                .arg(TRIMMED)
                .query_async(&mut conn),
        )
        .await?;
        Ok(Bounds {
            trimmed_through: trimmed.unwrap_or(0),
            head: head.unwrap_or(0),
        })
    }

    async fn trim(&self, retention: Retention) -> Result<u64, LogError> {
        let mut conn = self.conn.clone();
        let cutoff = now_ms()
            .saturating_sub(i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX));
        let len: u64 = bounded(redis::cmd("XLEN").arg(STREAM).query_async(&mut conn)).await?;
        let mut excess = len.saturating_sub(retention.max_events);
        let mut last_removed = None;
        let mut after = 0u64;
        // Bounded: at most `len` entries are looked at.
        'scan: for _ in 0..=(len / 256) {
            let page = self.read_after(after, 256).await?;
            if page.is_empty() {
                break;
            }
            for e in page {
                if excess == 0 && e.received_at_ms() >= cutoff {
                    break 'scan;
                }
                excess = excess.saturating_sub(1);
                last_removed = Some(e.cursor);
                after = e.cursor;
            }
        }
        let Some(last) = last_removed else {
            return Ok(0);
        };
        let removed: u64 = bounded(
            redis::cmd("XTRIM")
                .arg(STREAM)
                .arg("MINID")
                .arg(format!("{}-0", last + 1))
                .query_async(&mut conn),
        )
        .await?;
        let _: i64 = bounded(
            Script::new(RAISE_TRIMMED)
                .key(TRIMMED)
                .arg(last)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(removed)
    }

    fn live(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.live.subscribe()
    }

    fn describe(&self) -> String {
        format!(
            "redis stream {STREAM}{}",
            if self.wait_aof { " (WAITAOF)" } else { "" }
        )
    }
}

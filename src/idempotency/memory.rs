//! In-process records: the default for a single replica.
//!
//! Held in a moka cache, so the store is bounded by entries and by bytes,
//! expires each record at its own TTL, and never holds a lock across the
//! runtime: claims, completions and releases are moka's per-key atomic
//! compute operations. When the bounds force a record out before its TTL
//! the eviction is counted and logged — a duplicate of that key would then
//! run again, so the bounds should be sized for the retention window.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use moka::{future::Cache, notification::RemovalCause, ops::compute::Op, Expiry};

use super::{IdempotencyStore, Record, StoreError};

/// One stored record and how long it lives.
#[derive(Debug, Clone)]
struct Entry {
    record: Arc<Record>,
    ttl: Duration,
}

/// Each entry expires at its own TTL.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Records in a bounded, expiring in-process cache.
pub struct MemoryStore {
    records: Cache<String, Entry>,
    evictions: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.records.entry_count())
            .field("bytes", &self.records.weighted_size())
            .field("evictions", &self.evictions())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        let d = super::IdempotencyConfig::default();
        Self::with_limits(d.memory_max_entries, d.memory_max_bytes)
    }
}

/// Approximate bytes one record takes: its strings plus bookkeeping.
fn weight(key: &str, record: &Record) -> u64 {
    let body = match &record.state {
        super::RecordState::Succeeded { body, .. } => body.len(),
        super::RecordState::Failed { error, .. } => {
            error.message.as_ref().map_or(0, String::len)
                + error.details.iter().map(String::len).sum::<usize>()
                + 256
        }
        super::RecordState::Unknown { reason } => reason.len(),
        super::RecordState::InFlight => 0,
    };
    (key.len() + record.fingerprint.len() + record.rpc.len() + record.token.len() + body + 128)
        as u64
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding at most `max_entries` records and about `max_bytes`.
    pub fn with_limits(max_entries: u64, max_bytes: u64) -> Self {
        let max_entries = max_entries.max(1);
        // Every entry weighs at least this much, so `max_bytes` also caps
        // the number of entries at `max_entries`.
        let floor = (max_bytes / max_entries).max(1);
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let records = Cache::builder()
            // LRU, not moka's default TinyLFU: TinyLFU may refuse a new
            // entry right after inserting it, which would drop a fresh
            // claim and let a duplicate run the mutation again.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(max_bytes.max(1))
            .weigher(move |key: &String, entry: &Entry| {
                u32::try_from(weight(key, &entry.record).max(floor)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_key, _entry, cause| {
                if cause == RemovalCause::Size {
                    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    // Loud once, then every 1000th: a sign the bounds are
                    // too small for the retention window.
                    if n == 1 || n.is_multiple_of(1000) {
                        tracing::warn!(
                            evictions = n,
                            "idempotency records evicted before their retention ended \
                             (raise idempotency.memory_max_entries / memory_max_bytes)"
                        );
                    }
                }
            })
            .build();
        Self { records, evictions }
    }

    /// Records forced out by the bounds before their TTL.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Records held now (after pending maintenance).
    pub async fn len(&self) -> u64 {
        self.records.run_pending_tasks().await;
        self.records.entry_count()
    }

    /// Whether no record is held.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        key: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<Option<Record>, StoreError> {
        let entry = self
            .records
            .entry_by_ref(key)
            .or_insert_with(async {
                Entry {
                    record: Arc::new(record.clone()),
                    ttl,
                }
            })
            .await;
        if entry.is_fresh() {
            Ok(None)
        } else {
            Ok(Some(Record::clone(&entry.into_value().record)))
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self
            .records
            .get(key)
            .await
            .map(|e| Record::clone(&e.record)))
    }

    async fn complete(
        &self,
        key: &str,
        token: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut lost = false;
        self.records
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current {
                    // Ours, or evicted meanwhile: the outcome is ours to keep.
                    Some(ref e) if e.value().record.token != token => {
                        lost = true;
                        Op::Nop
                    }
                    _ => Op::Put(Entry {
                        record: Arc::new(record.clone()),
                        ttl,
                    }),
                };
                std::future::ready(op)
            })
            .await;
        if lost {
            return Err(StoreError(
                "the claim was taken over by another call before its outcome was stored".into(),
            ));
        }
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.records
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if e.value().record.token == token => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::RecordState;

    fn record(token: &str, body: usize) -> Record {
        Record {
            fingerprint: "f".into(),
            rpc: "r".into(),
            token: token.into(),
            claimed_at_ms: 0,
            state: RecordState::Succeeded {
                status: 200,
                body: "x".repeat(body),
            },
        }
    }

    #[tokio::test]
    async fn bounded_by_entries_with_evictions_counted() {
        let store = MemoryStore::with_limits(100, 1 << 30);
        for i in 0..1000 {
            store
                .claim(
                    &format!("k{i}"),
                    &record("t", 10),
                    Duration::from_secs(3600),
                )
                .await
                .unwrap();
        }
        let held = store.len().await;
        assert!(held <= 100, "{held} records held");
        assert!(store.evictions() >= 900, "{} evictions", store.evictions());
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        let store = MemoryStore::with_limits(1_000_000, 64 * 1024);
        for i in 0..200 {
            store
                .claim(
                    &format!("k{i}"),
                    &record("t", 4096),
                    Duration::from_secs(3600),
                )
                .await
                .unwrap();
        }
        store.records.run_pending_tasks().await;
        assert!(store.records.weighted_size() <= 64 * 1024);
        assert!(store.evictions() > 0);
    }

    #[tokio::test]
    async fn records_expire_at_their_ttl() {
        let store = MemoryStore::new();
        store
            .claim("k", &record("t", 1), Duration::from_millis(50))
            .await
            .unwrap();
        assert!(store.get("k").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store.get("k").await.unwrap().is_none());
        // Expired: claimable again.
        assert!(store
            .claim("k", &record("u", 1), Duration::from_secs(1))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn only_the_claimant_completes_or_releases() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(60);
        assert!(store
            .claim("k", &record("a", 1), ttl)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .claim("k", &record("b", 1), ttl)
            .await
            .unwrap()
            .is_some());
        store.release("k", "b").await.unwrap();
        assert!(store.get("k").await.unwrap().is_some());
        assert!(store
            .complete("k", "b", &record("b", 5), ttl)
            .await
            .is_err());
        assert_eq!(store.get("k").await.unwrap().unwrap().token, "a");
        store
            .complete("k", "a", &record("a", 5), ttl)
            .await
            .unwrap();
        store.release("k", "a").await.unwrap();
        assert!(store.get("k").await.unwrap().is_none());
    }
}

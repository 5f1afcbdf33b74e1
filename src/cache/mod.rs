//! The response cache: read RPCs answered from memory, never a secret and
//! never a stale write.
//!
//! ```text
//! trace → cache → idempotency → deadline → breaker → retry → shed → … → the HTTP client (hyper)
//! ```
//!
//! - **Policy** (`[cache]`): which read RPCs are cached and for how long
//!   (`cache.ttl`), bounded by bytes (`cache.max_bytes`); `cache.enabled =
//!   false` turns it all off.
//! - **Key**: the credential's fingerprint and the merchant key's (the
//!   product), the RPC, and the REST call (method, path and query, body).
//!   The REST call is canonical already: the serializer emits fields in
//!   proto order and omits unset ones, so field order or unset-vs-default in
//!   the caller's message can neither split nor merge keys.
//! - **Never cached**: routes whose answers can hold a secret field
//!   (`secret_response_fields`: a session's `client_secret`, `pci_details`),
//!   any request with a sensitive field set (a search by SSN, date of birth
//!   or PAN), mutating RPCs, errors (except, when `cache.not_found_ttl` is
//!   set, 404s), and answers Imprint marks `Cache-Control: no-store`.
//! - **Single flight**: identical concurrent misses make one upstream call
//!   (run in its own task, so a cancelled caller strands nobody); its error
//!   is shared with the flight's waiters and never stored.
//! - **Invalidation**: entries carry resource tags (see [`rules`]); a
//!   write invalidates what it changes, [`ResponseCache::invalidate`] is the
//!   hook for webhook events, and with Redis every invalidation is
//!   broadcast to every replica ([`bus`]).
//! - **Caller control**: `cache-control: no-cache` skips the entry and
//!   refreshes it; answers to cacheable RPCs say `x-cache: hit|miss|bypass`.

mod bus;
mod layer;
pub(crate) mod rules;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, StatusCode};
use moka::{future::Cache as Moka, notification::RemovalCause, Expiry};
use serde::{Deserialize, Serialize};

pub use bus::CacheBus;
pub use layer::{Cache, CacheLayer};

use crate::{credentials::CredentialStore, upstream::ApiError};

/// `[cache]` in the configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Off: every call goes upstream and nothing is held.
    pub enabled: bool,
    /// Upper bound on the bytes held (keys, bodies, tags).
    pub max_bytes: u64,
    /// How long a 404 is remembered (`0s`: never, the default).
    #[serde(with = "humantime_serde")]
    pub not_found_ttl: Duration,
    /// Cached read RPCs (by method name) and their TTL; `0s` or absent: not
    /// cached. RPCs whose answers can hold a secret cannot be listed.
    #[serde(with = "ttl_map")]
    pub ttl: BTreeMap<String, Duration>,
}

mod ttl_map {
    use std::{collections::BTreeMap, time::Duration};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k.clone(), humantime::format_duration(*v).to_string()))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                humantime::parse_duration(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("ttl.{k}: {e}")))
            })
            .collect()
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        let ttl = [
            // Offers and balances move with every purchase: short.
            ("GetOffer", s(5)),
            ("GetRewardsBalance", s(5)),
            // Customers change rarely, and every change we make invalidates.
            ("GetCustomer", s(60)),
            ("GetTransactionIntent", s(10)),
            ("GetTransaction", s(10)),
            ("GetReward", s(10)),
            // Lists: short (any new item changes them).
            ("SearchCustomers", s(2)),
            ("ListCustomerTransactionIntents", s(2)),
            ("ListCustomerTransactions", s(2)),
            ("ListCustomerRewards", s(2)),
            ("ListTransactionIntents", s(2)),
            ("SearchRewards", s(2)),
            ("ListOrders", s(2)),
            ("ListOrderEvents", s(2)),
        ];
        Self {
            enabled: true,
            max_bytes: 64 * 1024 * 1024,
            not_found_ttl: Duration::ZERO,
            ttl: ttl.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }
}

impl CacheConfig {
    /// Refuses RPCs that are not cacheable reads, naming the setting.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (name, ttl) in &self.ttl {
            let setting = format!("cache.ttl.{name}");
            let Some(route) = crate::services::ROUTES
                .iter()
                .find(|r| rules::short(r.rpc) == name)
            else {
                return Err((setting, "is not an imprint.v2 RPC".into()));
            };
            if route.mutating {
                return Err((setting, "changes state: it cannot be cached".into()));
            }
            if !route.secret_response_fields.is_empty() {
                return Err((
                    setting,
                    "its answers can hold a secret: it is never cached".into(),
                ));
            }
            if *ttl > Duration::from_secs(24 * 3600) {
                return Err((setting, "must be at most 1day".into()));
            }
        }
        Ok(())
    }

    /// The TTL of `rpc` (full name), when it is cached.
    pub fn ttl_of(&self, rpc: &str) -> Option<Duration> {
        self.ttl
            .get(rules::short(rpc))
            .copied()
            .filter(|t| !t.is_zero())
    }
}

/// The kinds of resource entries are tagged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Customer,
    TransactionIntent,
    Transaction,
    Reward,
    Offer,
    Order,
    OrderEvent,
    PaymentMethod,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Customer => "customer",
            ResourceKind::TransactionIntent => "transaction_intent",
            ResourceKind::Transaction => "transaction",
            ResourceKind::Reward => "reward",
            ResourceKind::Offer => "offer",
            ResourceKind::Order => "order",
            ResourceKind::OrderEvent => "order_event",
            ResourceKind::PaymentMethod => "payment_method",
        }
    }

    /// `customer` → `Customer` (PurgeCache's `resource_kind`).
    pub fn parse(s: &str) -> Option<Self> {
        use ResourceKind::*;
        [
            Customer,
            TransactionIntent,
            Transaction,
            Reward,
            Offer,
            Order,
            OrderEvent,
            PaymentMethod,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

pub use crate::upstream::CacheStatus;

/// Counters of the cache, readable by metrics and `GetStats`.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bypasses: AtomicU64,
    /// Entries forced out by the byte bound.
    pub evictions: AtomicU64,
    /// Invalidations applied (local writes, hooks, broadcasts, purges).
    pub invalidations: AtomicU64,
    /// Whole-cache drops because the invalidation feed was lost.
    pub feed_losses: AtomicU64,
}

/// Values of a counter, each with its `result` label if it has one.
type Readings = Vec<(u64, Option<&'static str>)>;

/// The cache's instruments on a meter (kept alive with the cache's owner):
/// `gateway.cache.lookups` {result = hit | miss | bypass},
/// `gateway.cache.evictions`, `gateway.cache.invalidations`,
/// `gateway.cache.feed_losses` (counters), `gateway.cache.entries` and
/// `gateway.cache.size` in bytes (gauges, as of moka's last housekeeping:
/// they may trail the counters by a moment).
pub struct CacheInstruments {
    _counters: Vec<opentelemetry::metrics::ObservableCounter<u64>>,
    _gauges: Vec<opentelemetry::metrics::ObservableGauge<u64>>,
}

impl std::fmt::Debug for CacheInstruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheInstruments")
    }
}

/// A snapshot of [`CacheStats`] plus the cache's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub hits: u64,
    pub misses: u64,
    pub bypasses: u64,
    pub evictions: u64,
    pub invalidations: u64,
    pub feed_losses: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// What a cached call is known by. Holds no secret: requests with a
/// sensitive field set are never cached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// `<credential fingerprint>/<merchant key fingerprint>`.
    pub(crate) scope: Arc<str>,
    pub(crate) rpc: &'static str,
    pub(crate) method: Method,
    pub(crate) path_and_query: String,
    pub(crate) body: Option<Bytes>,
}

/// One stored answer.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// The body decoded into its proto message, and that message encoded,
    /// by the first hit that needed them (weighed as two more copies of the
    /// body: the encoding is smaller than the JSON).
    pub(crate) decoded: crate::upstream::DecodedSlot,
    /// A remembered 404 (`cache.not_found_ttl`).
    pub(crate) not_found: Option<Arc<ApiError>>,
    pub(crate) tags: Arc<[String]>,
    pub(crate) ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<Key, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &Key, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The shared state of the cache: entries, counters, invalidation. One per
/// process; the layer, the admin service and the webhook handler hold it.
pub struct ResponseCache {
    pub(crate) config: CacheConfig,
    pub(crate) entries: Moka<Key, Entry>,
    pub(crate) stats: Arc<CacheStats>,
    pub(crate) credentials: Arc<CredentialStore>,
    /// Bumped by every invalidation: a load that started before one is
    /// not stored (it may hold what the write changed).
    epoch: AtomicU64,
    /// False while a configured invalidation feed (Redis) is down: the
    /// cache is then bypassed, never served.
    feed_up: AtomicBool,
    bus: parking_lot::Mutex<Option<Arc<CacheBus>>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish_non_exhaustive()
    }
}

fn weight(key: &Key, entry: &Entry) -> u32 {
    let n = key.path_and_query.len()
        + key.body.as_ref().map_or(0, Bytes::len)
        + key.scope.len()
        // The body, and its decoded message and that message's encoding
        // once a hit has made them (a proto message takes about what its
        // JSON takes; its encoding less).
        + 3 * entry.body.len()
        + entry.tags.iter().map(String::len).sum::<usize>()
        + 160;
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl ResponseCache {
    pub fn new(config: CacheConfig, credentials: Arc<CredentialStore>) -> Arc<Self> {
        let stats = Arc::new(CacheStats::default());
        let counter = stats.clone();
        let entries = Moka::builder()
            .max_capacity(config.max_bytes.max(1))
            .weigher(weight)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    counter.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Arc::new(Self {
            config,
            entries,
            stats,
            credentials,
            epoch: AtomicU64::new(0),
            feed_up: AtomicBool::new(true),
            bus: parking_lot::Mutex::new(None),
        })
    }

    /// Broadcasts invalidations through `bus`, and bypasses the cache
    /// whenever the bus's feed is down.
    pub fn attach_bus(&self, bus: Arc<CacheBus>) {
        self.feed_up.store(false, Ordering::SeqCst);
        *self.bus.lock() = Some(bus);
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// Publishes the cache's counters and size on `meter`. The callbacks
    /// hold the cache weakly: a dropped cache reports nothing.
    pub fn instruments(
        self: &Arc<Self>,
        meter: &opentelemetry::metrics::Meter,
    ) -> CacheInstruments {
        use opentelemetry::KeyValue;
        let weak = Arc::downgrade(self);
        let counter =
            |name: &'static str, description: &'static str, read: fn(&CacheStats) -> Readings| {
                let weak = weak.clone();
                meter
                    .u64_observable_counter(name)
                    .with_description(description)
                    .with_callback(move |o| {
                        if let Some(cache) = weak.upgrade() {
                            for (value, result) in read(&cache.stats) {
                                match result {
                                    Some(r) => o.observe(value, &[KeyValue::new("result", r)]),
                                    None => o.observe(value, &[]),
                                }
                            }
                        }
                    })
                    .build()
            };
        let counters = vec![
            counter(
                "gateway.cache.lookups",
                "Cacheable reads by outcome: hit, miss (went to Imprint), bypass (not served from the cache)",
                |s| {
                    vec![
                        (s.hits.load(Ordering::Relaxed), Some("hit")),
                        (s.misses.load(Ordering::Relaxed), Some("miss")),
                        (s.bypasses.load(Ordering::Relaxed), Some("bypass")),
                    ]
                },
            ),
            counter(
                "gateway.cache.evictions",
                "Entries forced out by the byte bound",
                |s| vec![(s.evictions.load(Ordering::Relaxed), None)],
            ),
            counter(
                "gateway.cache.invalidations",
                "Invalidations applied: writes, webhook events, broadcasts, purges",
                |s| vec![(s.invalidations.load(Ordering::Relaxed), None)],
            ),
            counter(
                "gateway.cache.feed_losses",
                "Whole-cache drops because the shared invalidation feed was lost",
                |s| vec![(s.feed_losses.load(Ordering::Relaxed), None)],
            ),
        ];
        let gauge = |name: &'static str,
                     unit: &'static str,
                     description: &'static str,
                     read: fn(&ResponseCache) -> u64| {
            let weak = weak.clone();
            meter
                .u64_observable_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |o| {
                    if let Some(cache) = weak.upgrade() {
                        o.observe(read(&cache), &[]);
                    }
                })
                .build()
        };
        let gauges = vec![
            gauge("gateway.cache.entries", "{entry}", "Entries held", |c| {
                c.entries.entry_count()
            }),
            gauge(
                "gateway.cache.size",
                "By",
                "Bytes held (keys, bodies, tags), as weighed against cache.max_bytes",
                |c| c.entries.weighted_size(),
            ),
        ];
        CacheInstruments {
            _counters: counters,
            _gauges: gauges,
        }
    }

    /// Counters and size now.
    pub async fn snapshot(&self) -> StatsSnapshot {
        self.entries.run_pending_tasks().await;
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            hits: l(&s.hits),
            misses: l(&s.misses),
            bypasses: l(&s.bypasses),
            evictions: l(&s.evictions),
            invalidations: l(&s.invalidations),
            feed_losses: l(&s.feed_losses),
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
        }
    }

    /// Whether entries may be served and stored now.
    pub(crate) fn usable(&self) -> bool {
        self.feed_up.load(Ordering::SeqCst)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The webhook hook: resource `id` of `kind` changed. Invalidates what
    /// was read by that id and the lists that can return it, here and (with
    /// Redis) on every replica.
    pub fn invalidate(&self, kind: ResourceKind, id: &str) {
        self.invalidate_tags(vec![rules::id_tag(kind, id), rules::list_tag(kind)]);
    }

    /// Invalidates every entry touching `kind`.
    pub fn invalidate_kind(&self, kind: ResourceKind) {
        self.invalidate_tags(vec![kind.as_str().to_owned()]);
    }

    /// Invalidates entries sharing a tag with `tags`, here and everywhere.
    pub(crate) fn invalidate_tags(&self, tags: Vec<String>) {
        if tags.is_empty() {
            return;
        }
        self.apply(Invalidation::Tags(tags.clone()));
        self.broadcast(Invalidation::Tags(tags));
    }

    /// Drops the entries of one RPC (`GetCustomer` or the full name).
    pub fn purge_rpc(&self, rpc: &str) {
        let name = rules::short(rpc).to_owned();
        self.apply(Invalidation::Rpc(name.clone()));
        self.broadcast(Invalidation::Rpc(name));
    }

    /// Drops everything.
    pub fn purge_all(&self) {
        self.apply(Invalidation::All);
        self.broadcast(Invalidation::All);
    }

    fn broadcast(&self, what: Invalidation) {
        let bus = self.bus.lock().clone();
        if let Some(bus) = bus {
            bus.publish(what);
        }
    }

    /// Applies an invalidation to this replica only.
    pub(crate) fn apply(&self, what: Invalidation) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        let result = match what {
            Invalidation::All => {
                self.entries.invalidate_all();
                Ok(())
            }
            Invalidation::Rpc(name) => self
                .entries
                .invalidate_entries_if(move |k, _| rules::short(k.rpc) == name)
                .map(|_| ()),
            Invalidation::Tags(tags) => self
                .entries
                .invalidate_entries_if(move |_, v| v.tags.iter().any(|t| tags.contains(t)))
                .map(|_| ()),
        };
        if let Err(e) = result {
            // Cannot happen (closures are enabled at build); be safe anyway.
            tracing::error!("cache invalidation failed ({e}); dropping every entry");
            self.entries.invalidate_all();
        }
    }

    /// The invalidation feed went down (or came up): down drops every
    /// entry, since invalidations may be missed while it is.
    pub(crate) fn set_feed(&self, up: bool) {
        if !up {
            self.stats.feed_losses.fetch_add(1, Ordering::Relaxed);
        }
        self.feed_up.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
        if up {
            self.feed_up.store(true, Ordering::SeqCst);
        }
    }

    /// Test hook: every key and value held, as text.
    pub async fn dump(&self) -> Vec<String> {
        self.entries.run_pending_tasks().await;
        self.entries
            .iter()
            .map(|(k, v)| {
                format!(
                    "{} {} {} {} {:?} => {} {} {:?}",
                    k.scope,
                    k.rpc,
                    k.method,
                    k.path_and_query,
                    k.body.as_deref().map(String::from_utf8_lossy),
                    v.status,
                    String::from_utf8_lossy(&v.body),
                    v.tags
                )
            })
            .collect()
    }
}

/// What to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalidation {
    All,
    Rpc(String),
    Tags(Vec<String>),
}

// === impl CacheInvalidator for ResponseCache ===

/// Verified webhook events invalidate what they name: every replica reads
/// every event (through the shared log with Redis), so each drops its own
/// entries; a lagging feed drops everything.
impl crate::events::CacheInvalidator for ResponseCache {
    fn invalidate(&self, resources: &[crate::events::ResourceRef]) {
        let tags: Vec<String> = resources
            .iter()
            .filter_map(|r| Some((ResourceKind::parse(r.kind)?, r.id.as_str())))
            .flat_map(|(kind, id)| [rules::id_tag(kind, id), rules::list_tag(kind)])
            .collect();
        if !tags.is_empty() {
            // Local only: each replica reads the event itself.
            self.apply(Invalidation::Tags(tags));
        }
    }

    fn invalidate_all(&self) {
        self.apply(Invalidation::All);
    }
}

//! Idempotency keys: a mutating call carrying `idempotency-key` metadata
//! runs once per (caller, key). Imprint itself offers no such thing.
//!
//! - The first call claims the key atomically and runs; its outcome is
//!   recorded for the retention window (24 h by default).
//! - A concurrent duplicate waits for the first and gets its result; a later
//!   duplicate gets the recorded result without calling Imprint.
//! - The same key with a different request is refused (FAILED_PRECONDITION).
//! - Only what is final is recorded: a 2xx, or a refusal the same request
//!   would get again (400, 404, 409, 410, 422).
//! - When the outcome is unknown (the request may or may not have reached
//!   Imprint: a timeout, a reset, a 500/502/504) it is recorded as such and
//!   reported (ABORTED) instead of being silently sent again.
//! - When Imprint provably did not process the call (connection refused,
//!   401/403 for the gateway's key, 408, 429, 503, shed or breaker-refused,
//!   or a deadline that fired while waiting to retry such an answer) the
//!   claim is released, so a retry with the same key runs again.
//! - Keys apply to mutating RPCs (a property of the route): a search sent
//!   as POST to keep an SSN out of the URL is never stored.
//!
//! Records live behind [`IdempotencyStore`]: in-process by default, Redis
//! (`GATEWAY_REDIS_URL`) so that replicas share them. Secret response
//! fields (a session's `client_secret`, `pci_details` at any depth) are
//! stripped before a result is stored: a replay returns the rest; an answer
//! that cannot be cleaned is not stored at all.

mod layer;
mod memory;
pub(crate) mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::redis::RedisStore;
pub use layer::{Idempotency, IdempotencyLayer};
pub use memory::MemoryStore;

use crate::upstream::ApiError;
pub use crate::upstream::{IdempotencyError, StoreError};

/// Settings of the idempotency layer (`[idempotency]` in the configuration file).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long a recorded outcome answers duplicates.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// A claim older than this without an outcome is reported as unknown
    /// (the replica running it died).
    #[serde(with = "humantime_serde")]
    pub in_flight_timeout: Duration,
    /// In-process store (no Redis): at most this many records...
    pub memory_max_entries: u64,
    /// ...and about this many bytes; older records are evicted (and
    /// counted) beyond either.
    pub memory_max_bytes: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            in_flight_timeout: Duration::from_secs(120),
            memory_max_entries: 100_000,
            memory_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One key's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// SHA-256 of the RPC, method, path and body.
    pub fingerprint: String,
    /// The RPC the key was first used for (named in mismatch errors).
    pub rpc: String,
    /// Identifies the claimant, so only it completes or releases the claim.
    pub token: String,
    /// Unix milliseconds of the claim.
    pub claimed_at_ms: u64,
    pub state: RecordState,
}

/// Where the keyed call stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RecordState {
    InFlight,
    /// Imprint answered 2xx; the body (secret fields removed).
    Succeeded {
        status: u16,
        body: String,
    },
    /// Imprint answered a final refusal (400, 404, 409, 410, 422).
    Failed {
        status: u16,
        error: Box<ApiError>,
        retry_after_ms: Option<u64>,
    },
    /// It may or may not have reached Imprint.
    Unknown {
        reason: String,
    },
}

/// Where records live; shared by replicas when backed by Redis.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Creates `record` under `key` unless one exists: `None` when claimed,
    /// else the existing record.
    async fn claim(
        &self,
        key: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<Option<Record>, StoreError>;
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;
    /// Replaces the claim made with `token` by `record`.
    async fn complete(
        &self,
        key: &str,
        token: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Deletes the claim made with `token`.
    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError>;
    /// Whether the store is reachable (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

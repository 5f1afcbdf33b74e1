//! The event log: append-only, durable before an append returns, deduplicated.
//!
//! Two implementations: [`super::RedbLog`] (one node, a redb file under
//! `GATEWAY_DATA_DIR`, group commit) and [`super::RedisLog`] (a Redis stream
//! shared by every replica). Cursors are dense `u64`s handed out by the log.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::broadcast;

use super::{decode, pb};

/// One stored event, shared between subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub cursor: u64,
    /// The event as delivered (its `cursor` field set).
    pub event: pb::Event,
    /// The customer it names ("" if none), for filtering.
    pub customer_id: String,
    /// `event` encoded and framed for gRPC, once, for every subscriber it
    /// goes to.
    framed: OnceLock<Bytes>,
}

impl StoredEvent {
    /// From the stored bytes (an encoded [`pb::Event`] without cursor).
    pub fn decode(cursor: u64, bytes: &[u8]) -> Result<Self, LogError> {
        let mut event = pb::Event::decode(bytes)
            .map_err(|e| LogError(format!("stored event {cursor} is corrupt: {e}")))?;
        event.cursor = cursor.to_string();
        Ok(Self::new(cursor, event))
    }

    pub fn new(cursor: u64, mut event: pb::Event) -> Self {
        event.cursor = cursor.to_string();
        let customer_id = decode::customer_id(&event);
        Self {
            cursor,
            event,
            customer_id,
            framed: OnceLock::new(),
        }
    }

    /// [`Self::event`] as one gRPC message (`events::codec::frame`), made
    /// on first use and then shared: a thousand subscribers cost one
    /// encoding and no buffer each, not a thousand clones and encodings.
    pub fn framed(&self) -> Bytes {
        self.framed
            .get_or_init(|| super::codec::frame(&self.event))
            .clone()
    }

    /// Milliseconds since the epoch at which the gateway stored it.
    pub fn received_at_ms(&self) -> i64 {
        self.event
            .received_at
            .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
    }
}

/// An event to append: `event` has `received_at` set, no cursor.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: pb::Event,
}

impl NewEvent {
    /// The bytes stored (cursor left out: the log assigns it).
    pub fn encode(&self) -> Vec<u8> {
        self.event.encode_to_vec()
    }
}

/// What an append did.
#[derive(Debug, Clone)]
pub enum Appended {
    /// Stored now, at this cursor.
    New(Arc<StoredEvent>),
    /// Its event_id was already stored (within retention) at this cursor.
    Duplicate(u64),
}

/// Where the log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// Every cursor up to this one has been removed by retention (0: none).
    pub trimmed_through: u64,
    /// The newest cursor handed out (0: none yet).
    pub head: u64,
}

pub use crate::config::events::Retention;

/// A log failure; never holds secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("event log: {0}")]
pub struct LogError(pub String);

/// The append-only event log behind `POST /webhooks/imprint` and EventService.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Stores `event` unless its `event_id` is already stored; durable
    /// (fsync'd, or Redis' configured equivalent) when it returns.
    async fn append(&self, event: NewEvent) -> Result<Appended, LogError>;
    /// Up to `max` events with cursor > `after`, in cursor order.
    async fn read_after(&self, after: u64, max: usize) -> Result<Vec<Arc<StoredEvent>>, LogError>;
    async fn bounds(&self) -> Result<Bounds, LogError>;
    /// Removes what retention no longer keeps; returns how many.
    async fn trim(&self, retention: Retention) -> Result<u64, LogError>;
    /// Every event appended from now on, in cursor order (by any replica
    /// sharing this log). Lagging receivers catch up with [`Self::read_after`].
    fn live(&self) -> broadcast::Receiver<Arc<StoredEvent>>;
    /// For /healthz: "redb <path>", "redis stream", ...
    fn describe(&self) -> String;
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

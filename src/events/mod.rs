//! Imprint's webhooks as a durable, verified, typed gRPC event stream.
//!
//! The path of a webhook: [`ingest`] (`POST /webhooks/imprint`: size, content
//! type, [`signature`], duplicate keys) → [`decode`] (the typed
//! `*Notification`) → an [`EventLog`] append (deduplicated by `event_id`,
//! durable before the 2xx) → the log's live feed → [`service`]
//! (`imprint.gateway.v1.EventService`: Subscribe and ListEvents) and the
//! [`invalidate`] hook.
//!
//! Logs: [`RedbLog`] (embedded, under `GATEWAY_DATA_DIR`) and [`RedisLog`]
//! (a Redis stream every replica shares, with `GATEWAY_REDIS_URL`).

pub mod codec;
pub mod decode;
pub mod ingest;
pub mod invalidate;
pub mod log;
pub mod pb;
pub mod redb_log;
pub mod redis_log;
pub mod service;
pub mod signature;
mod subscribe;

pub use crate::config::events::EventsConfig;
pub use ingest::Ingest;
pub use invalidate::{CacheInvalidator, NoCache, ResourceRef};
pub use log::{Appended, Bounds, EventLog, LogError, NewEvent, Retention, StoredEvent};
pub use redb_log::RedbLog;
pub use redis_log::RedisLog;
pub use service::{EventsServer, EventsService};

use std::sync::Arc;

use secrecy::ExposeSecret as _;

/// The event machinery of one gateway process.
#[derive(Clone)]
pub struct Events {
    pub log: Arc<dyn EventLog>,
    pub ingest: Arc<Ingest>,
    pub service: EventsService,
}

impl Events {
    /// The fully-qualified gRPC service name (for health).
    pub const SERVICE_NAME: &'static str = "imprint.gateway.v1.EventService";

    /// Opens the log the configuration asks for — Redis when
    /// `GATEWAY_REDIS_URL` is set, else redb under `GATEWAY_DATA_DIR`, or in
    /// memory when no webhook secret is configured (nothing can be ingested,
    /// and tests and tools need no data directory) — and starts retention
    /// and the cache-invalidation hook.
    pub async fn start(
        config: &crate::config::Config,
        cache: Arc<dyn CacheInvalidator>,
    ) -> Result<Self, LogError> {
        let e = &config.events;
        let live_capacity = (e.subscriber_buffer * 4).max(4096);
        let log: Arc<dyn EventLog> = if e.secrets().is_empty() {
            Arc::new(RedbLog::in_memory(live_capacity)?)
        } else if let Some(url) = &config.state.redis_url {
            Arc::new(
                RedisLog::connect(
                    url.expose_secret(),
                    e.retention(),
                    e.redis_wait_aof,
                    live_capacity,
                )
                .await?,
            )
        } else {
            Arc::new(RedbLog::open(&e.data_dir, live_capacity)?)
        };
        service::spawn_retention(&log, e.retention(), e.retention_interval);
        service::spawn_invalidation(&log, cache);
        Ok(Self {
            ingest: Arc::new(Ingest::new(e, log.clone())),
            service: EventsService::new(log.clone(), e.subscriber_buffer),
            log,
        })
    }

    /// The event log's state, for `/healthz`.
    pub async fn health(&self) -> serde_json::Value {
        match self.log.bounds().await {
            Ok(b) => serde_json::json!({
                "ok": true,
                "backend": self.log.describe(),
                "head": b.head,
                "trimmed_through": b.trimmed_through,
            }),
            Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
        }
    }
}

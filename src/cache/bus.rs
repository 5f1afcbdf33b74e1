//! Invalidations shared by replicas over Redis pub/sub.
//!
//! Every invalidation is published on one channel; every replica applies
//! what the others publish. Publishing uses a connection made lazily, like
//! the idempotency store's; subscribing holds a dedicated connection. A
//! replica without a live subscription may miss invalidations, so it
//! drops its whole cache and bypasses it until subscribed again.

use std::{
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use futures::StreamExt as _;
use redis::aio::ConnectionManager;

use super::{Invalidation, ResponseCache};
use crate::idempotency::redis::{bounded, connect_in_background};

const CHANNEL: &str = "imprint-gateway:cache:invalidate";

/// The Redis side of invalidation: publish ours, apply theirs.
pub struct CacheBus {
    /// Tells our own messages apart from the other replicas'.
    replica: String,
    conn: Arc<OnceLock<ConnectionManager>>,
}

impl std::fmt::Debug for CacheBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBus")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl CacheBus {
    /// Connects in the background and attaches to `cache`; until the
    /// subscription is up the cache is bypassed. Only the URL is checked
    /// here: Redis being down must not keep a replica from starting.
    pub fn start(url: &str, cache: &Arc<ResponseCache>) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = Arc::new(OnceLock::new());
        tokio::spawn(connect_in_background(client.clone(), Arc::downgrade(&conn)));
        let bus = Arc::new(Self {
            replica: uuid::Uuid::new_v4().to_string(),
            conn,
        });
        cache.attach_bus(bus.clone());
        tokio::spawn(subscribe(
            client,
            Arc::downgrade(cache),
            bus.replica.clone(),
        ));
        Ok(bus)
    }

    /// Publishes `what` to the other replicas, without waiting.
    pub(crate) fn publish(&self, what: Invalidation) {
        let Some(mut conn) = self.conn.get().cloned() else {
            tracing::warn!("cache invalidation not broadcast: not connected to Redis yet");
            return;
        };
        let message = format!("{} {}", self.replica, encode(&what));
        tokio::spawn(async move {
            let sent: Result<i64, _> = bounded(
                redis::cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(message)
                    .query_async(&mut conn),
            )
            .await;
            if let Err(e) = sent {
                tracing::warn!("cache invalidation not broadcast: {e}");
            }
        });
    }
}

/// `all`, `rpc <name>`, or `tags <tag>\t<tag>...` (tags hold no tabs).
fn encode(what: &Invalidation) -> String {
    match what {
        Invalidation::All => "all".into(),
        Invalidation::Rpc(name) => format!("rpc {name}"),
        Invalidation::Tags(tags) => format!("tags {}", tags.join("\t")),
    }
}

fn decode(text: &str) -> Option<Invalidation> {
    let (op, rest) = text.split_once(' ').unwrap_or((text, ""));
    match op {
        "all" => Some(Invalidation::All),
        "rpc" => Some(Invalidation::Rpc(rest.to_owned())),
        "tags" => Some(Invalidation::Tags(
            rest.split('\t').map(str::to_owned).collect(),
        )),
        _ => None,
    }
}

/// Holds the subscription for as long as the cache lives, reconnecting
/// with back-off; each loss drops the whole cache.
async fn subscribe(client: redis::Client, cache: Weak<ResponseCache>, replica: String) {
    let mut wait = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let mut pubsub = bounded(client.get_async_pubsub()).await?;
            bounded(pubsub.subscribe(CHANNEL)).await?;
            Ok::<_, crate::idempotency::StoreError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                let Some(c) = cache.upgrade() else { return };
                c.set_feed(true);
                drop(c);
                tracing::info!("cache invalidation feed subscribed");
                wait = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Some(c) = cache.upgrade() else { return };
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    let Some((from, body)) = text.split_once(' ') else {
                        continue;
                    };
                    if from == replica {
                        continue;
                    }
                    match decode(body) {
                        Some(what) => c.apply(what),
                        None => tracing::warn!("unknown cache invalidation message ignored"),
                    }
                }
                let Some(c) = cache.upgrade() else { return };
                tracing::warn!(
                    "cache invalidation feed lost: dropping the cache until resubscribed"
                );
                c.set_feed(false);
            }
            Err(e) => {
                if cache.strong_count() == 0 {
                    return;
                }
                tracing::debug!("cache invalidation feed: {e}");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for what in [
            Invalidation::All,
            Invalidation::Rpc("GetCustomer".into()),
            Invalidation::Tags(vec!["customer:C1".into(), "customer:[list]".into()]),
        ] {
            assert_eq!(decode(&encode(&what)), Some(what));
        }
    }
}

//! The hook a response cache will hang on: every stored event names the
//! resources it changed, and a [`CacheInvalidator`] is told about them.
//!
//! There is no cache yet; [`NoCache`] is the default. A cache implements
//! this trait and is passed to `server::start`'s event wiring (see
//! `events::service::spawn_invalidation`); with Redis, every replica sees
//! every event through the shared log, so each invalidates its own cache.

use super::{log::StoredEvent, pb::event::Payload};

/// A resource an event says has changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    /// `customer`, `transaction`, `payment_method`, `reward`.
    pub kind: &'static str,
    pub id: String,
}

/// Told about every stored event, in cursor order, on every replica.
pub trait CacheInvalidator: Send + Sync + 'static {
    fn invalidate(&self, resources: &[ResourceRef]);
    /// Events may have been missed (the feed lagged): drop everything.
    fn invalidate_all(&self);
}

/// No cache: nothing to invalidate.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCache;

impl CacheInvalidator for NoCache {
    fn invalidate(&self, _: &[ResourceRef]) {}
    fn invalidate_all(&self) {}
}

/// The resources `event` names.
pub fn resources(event: &StoredEvent) -> Vec<ResourceRef> {
    let mut out = Vec::new();
    let mut push = |kind, id: &str| {
        if !id.is_empty() {
            out.push(ResourceRef {
                kind,
                id: id.to_string(),
            });
        }
    };
    push("customer", &event.customer_id);
    match &event.event.payload {
        Some(Payload::Transaction(t)) => {
            push("transaction", &t.transaction_id);
            push("payment_method", &t.payment_method_id);
        }
        Some(Payload::PaymentMethod(p)) => push("payment_method", &p.payment_method_id),
        Some(Payload::Reward(r)) => {
            push("reward", &r.reward_id);
            if let Some(t) = &r.transaction_id {
                push("transaction", t);
            }
        }
        _ => {}
    }
    out
}

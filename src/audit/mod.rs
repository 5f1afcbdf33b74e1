//! The audit log: every admin call (allowed or refused) and every credential
//! change — who, what, when, outcome. Structured and secret-free by
//! construction: events carry names, methods and fingerprints, never a key.
//!
//! Each event is written to the log under the tracing target
//! [`TARGET`] and kept in memory, bounded (`audit.max_events`, oldest
//! dropped first), for `AdminService/ListAuditEvents`. The in-memory copy is
//! per process and lost on restart; the log lines are the durable record.

mod layer;

use std::{collections::VecDeque, time::SystemTime};

use parking_lot::Mutex;

pub use layer::{AuditLayer, Audited};

/// The tracing target of audit lines (`RUST_LOG=imprint_gateway::audit=info`).
pub const TARGET: &str = "imprint_gateway::audit";

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// One audited action.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub sequence: u64,
    pub at: SystemTime,
    /// A caller name, or the gateway's own actor (`rotation-scheduler`...).
    pub actor: String,
    /// The gRPC method, or `credential.<verb>`.
    pub action: String,
    /// What it was done to (a product, a fingerprint); may be empty.
    pub target: String,
    pub outcome: Outcome,
    /// More about the outcome; never a secret.
    pub detail: String,
    pub request_id: String,
}

/// Which events to list, newest first.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<SystemTime>,
    /// Only events with a smaller sequence (the previous page's cursor).
    pub before: Option<u64>,
    pub limit: usize,
}

/// The bounded in-memory audit log.
#[derive(Debug)]
pub struct AuditLog {
    inner: Mutex<Inner>,
    max_events: usize,
}

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<AuditEvent>,
    next: u64,
}

impl AuditLog {
    /// Keeps at most `max_events` events (at least 1).
    pub fn new(max_events: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next: 1,
            }),
            max_events: max_events.max(1),
        }
    }

    /// Records an event: one log line at [`TARGET`], and the in-memory copy.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: Outcome,
        detail: &str,
        request_id: &str,
    ) {
        let mut inner = self.inner.lock();
        let sequence = inner.next;
        inner.next += 1;
        let event = AuditEvent {
            sequence,
            at: SystemTime::now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome,
            detail: detail.to_owned(),
            request_id: request_id.to_owned(),
        };
        tracing::info!(
            target: TARGET,
            sequence,
            actor,
            action,
            target = event.target.as_str(),
            outcome = outcome.as_str(),
            detail,
            request_id,
            "audit"
        );
        if inner.events.len() >= self.max_events {
            inner.events.pop_front();
        }
        inner.events.push_back(event);
    }

    /// A refused call to an admin-only method.
    pub fn denied(&self, actor: &str, method: &str, why: &str, request_id: &str) {
        self.record(actor, method, "", Outcome::Denied, why, request_id);
    }

    /// One page of events, newest first, and the cursor of the next page.
    pub fn list(&self, q: &Query) -> (Vec<AuditEvent>, Option<u64>) {
        let inner = self.inner.lock();
        let limit = q.limit.clamp(1, 1000);
        let mut out = Vec::new();
        let mut more = None;
        for e in inner.events.iter().rev() {
            if q.before.is_some_and(|b| e.sequence >= b)
                || q.actor.as_ref().is_some_and(|a| *a != e.actor)
                || q.action.as_ref().is_some_and(|a| *a != e.action)
                || q.outcome.as_ref().is_some_and(|o| o != e.outcome.as_str())
                || q.since.is_some_and(|s| e.at < s)
            {
                continue;
            }
            if out.len() == limit {
                more = out.last().map(|l: &AuditEvent| l.sequence);
                break;
            }
            out.push(e.clone());
        }
        (out, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_first_with_filters_and_cursor() {
        let log = AuditLog::new(3);
        for i in 0..5 {
            let outcome = if i % 2 == 0 {
                Outcome::Ok
            } else {
                Outcome::Denied
            };
            log.record("ops", &format!("m{i}"), "", outcome, "", "r");
        }
        let (all, more) = log.list(&Query {
            limit: 10,
            ..Query::default()
        });
        assert_eq!(
            all.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["m4", "m3", "m2"]
        );
        assert!(more.is_none());
        let (page, more) = log.list(&Query {
            limit: 2,
            ..Query::default()
        });
        assert_eq!(page.len(), 2);
        let (rest, _) = log.list(&Query {
            limit: 2,
            before: more,
            ..Query::default()
        });
        assert_eq!(rest[0].action, "m2");
        let (denied, _) = log.list(&Query {
            limit: 10,
            outcome: Some("denied".into()),
            ..Query::default()
        });
        assert_eq!(denied.len(), 1);
    }
}

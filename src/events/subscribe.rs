//! One subscriber: history from the log, then the live feed, in cursor order.
//!
//! The live receiver is taken *before* the history is read, so an event
//! committed meanwhile is in one or both; anything at or below the last
//! cursor handled is skipped, so the seam has no gap and no duplicate.
//! Live events go to the client's bounded queue with `try_send`: a full
//! queue means the client is not keeping up, and it is ended with
//! RESOURCE_EXHAUSTED naming its last delivered cursor (others never wait
//! for it, and it never holds more than its queue). If this task itself
//! falls behind the live feed (lagged), it catches up from the log.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::log::{EventLog, StoredEvent};

/// Events read from the log per step of a catch-up.
const PAGE: usize = 256;
/// How long a slow subscriber's final status may wait for queue room.
const FINAL_SEND: Duration = Duration::from_secs(30);

/// The client's queue holds shared events; each is cloned into its proto
/// only when tonic takes it to encode, so a full queue costs pointers.
pub(super) type Out = mpsc::Sender<Result<Arc<StoredEvent>, Status>>;

/// Which events a caller wants.
#[derive(Debug, Clone, Default)]
pub(super) struct Filter {
    kinds: HashSet<i32>,
    customer_id: Option<String>,
}

impl Filter {
    pub(super) fn new(kinds: &[i32], customer_id: Option<String>) -> Self {
        Self {
            kinds: kinds.iter().copied().collect(),
            customer_id: customer_id.filter(|c| !c.is_empty()),
        }
    }

    pub(super) fn matches(&self, e: &StoredEvent) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.event.kind))
            && self
                .customer_id
                .as_ref()
                .is_none_or(|c| *c == e.customer_id)
    }
}

/// Feeds `out` from cursor `after` on until the client goes away.
pub(super) async fn run(
    log: Arc<dyn EventLog>,
    mut live: broadcast::Receiver<Arc<StoredEvent>>,
    filter: Filter,
    mut after: u64,
    out: Out,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    // The last cursor put in the client's queue (what it will have received).
    let mut delivered = after;
    loop {
        // History, until the log has nothing newer.
        loop {
            let page = match log.read_after(after, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "subscriber: reading the log failed");
                    let _ = out
                        .send(Err(Status::unavailable(format!(
                            "{e}; resume after cursor {delivered}"
                        ))))
                        .await;
                    return;
                }
            };
            let n = page.len();
            for e in page {
                after = e.cursor;
                if filter.matches(&e) {
                    if out.send(Ok(e.clone())).await.is_err() {
                        return;
                    }
                    delivered = e.cursor;
                }
            }
            if n < PAGE {
                break;
            }
        }
        // Live. The two futures that end it are made once, not per event:
        // with a thousand subscribers, every event wakes a thousand loops.
        let closed = out.closed();
        tokio::pin!(closed);
        let stop = stopping.wait_for(|s| *s);
        tokio::pin!(stop);
        loop {
            let e = tokio::select! {
                () = &mut closed => return,
                _ = &mut stop => {
                    let _ = out.try_send(Err(Status::unavailable(format!(
                        "gateway shutting down; resume after cursor {delivered}"
                    ))));
                    return;
                }
                r = live.recv() => r,
            };
            match e {
                Ok(e) if e.cursor <= after => continue,
                Ok(e) => {
                    after = e.cursor;
                    if !filter.matches(&e) {
                        continue;
                    }
                    match out.try_send(Ok(e.clone())) {
                        Ok(()) => delivered = e.cursor,
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            drop(live);
                            tracing::info!(delivered, "subscriber too slow; ending it");
                            let status = Status::resource_exhausted(format!(
                                "subscriber too slow: its queue is full; last delivered cursor {delivered} (resume with after_cursor)"
                            ));
                            let _ = tokio::time::timeout(FINAL_SEND, out.send(Err(status))).await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(
                        missed = n,
                        "subscriber lagged the live feed; catching up from the log"
                    );
                    live = live.resubscribe();
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = out
                        .send(Err(Status::unavailable(format!(
                            "event feed closed; resume after cursor {delivered}"
                        ))))
                        .await;
                    return;
                }
            }
        }
    }
}

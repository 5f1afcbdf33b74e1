//! One subscriber: history from the log, then the live feed, in cursor order.
//!
//! [`Subscription`] is the Subscribe response stream itself, polled by the
//! subscriber's HTTP/2 stream: a live event reaches the connection with one
//! task wake-up and no queue or task of its own per subscriber.
//!
//! The live receiver is taken *before* the history is read, so an event
//! committed meanwhile is in one or both; anything at or below the last
//! cursor handled is skipped, so the seam has no gap and no duplicate.
//!
//! The subscriber's queue is its place in the log's live ring (shared by
//! every subscriber, of a fixed size): the stream is polled only as fast as
//! the client takes data, so a client that does not keep up falls behind
//! the live feed. When it is found more than `buffer` events behind it (or
//! overrun by the ring) it is ended with RESOURCE_EXHAUSTED naming its last
//! delivered cursor: it never holds more than its place in the ring, and
//! nobody waits for it. Reading history is at the client's pace and is not
//! being slow: if the history ends with the live feed more than `buffer`
//! events ahead, the stream takes the live feed afresh and reads the log on
//! from where it is.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll, Waker},
};

use futures::future::BoxFuture;
use tokio::sync::{broadcast, watch};
use tokio_stream::Stream;
use tokio_util::sync::ReusableBoxFuture;
use tonic::Status;

use super::log::{EventLog, LogError, StoredEvent};
use crate::conn_activity::Activity;

/// Events read from the log per step of a catch-up.
const PAGE: usize = 256;

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

type Feed = broadcast::Receiver<Arc<StoredEvent>>;
type Received = (Result<Arc<StoredEvent>, broadcast::error::RecvError>, Feed);

/// Unconstrained by tokio's task budget, so `Pending` means the feed has
/// nothing newer for this subscriber: it is caught up.
async fn receive(mut feed: Feed) -> Received {
    let r = tokio::task::unconstrained(feed.recv()).await;
    (r, feed)
}

/// Spends what is left of the polling task's tokio budget after a live
/// event, so that the task its frame wakes (the HTTP/2 connection's) goes
/// to the back of the worker's run queue, behind the other subscribers'
/// streams the same event woke, instead of running next (tokio's LIFO
/// slot): the connection then writes once for all the frames queued by
/// then rather than once per frame. The live receiver is unconstrained, so
/// this stream itself is not held back.
///
/// Only a frame that wakes the connection task needs it, and that is the
/// first one queued after the task last ran; later frames find it already
/// woken. So a stream spends only if its connection has touched its socket
/// since one of the connection's streams last looked
/// ([`crate::conn_activity`]): about once per write of the connection, not
/// once per event per stream. Without the connection's activity (a server
/// that does not track it), every stream spends.
fn push_back_the_connection(activity: Option<&Activity>, cx: &mut Context<'_>) {
    if activity.is_none_or(Activity::take) {
        spend_budget(cx);
    }
}

/// Spends what is left of the polling task's tokio budget.
fn spend_budget(cx: &mut Context<'_>) {
    // Bounded: under `unconstrained` there is always budget left.
    for _ in 0..128 {
        if !tokio::task::coop::has_budget_remaining()
            || std::pin::pin!(tokio::task::coop::consume_budget())
                .poll(cx)
                .is_pending()
        {
            return;
        }
    }
}

/// The live feed, waited on without an allocation per event.
struct Live(ReusableBoxFuture<'static, Received>);

/// A live event, or how it went wrong.
enum Next {
    /// An event and how many newer ones were already published.
    Event(Arc<StoredEvent>, usize),
    /// Overrun by the ring.
    Lagged,
    Closed,
}

impl Live {
    fn new(feed: Feed) -> Self {
        Self(ReusableBoxFuture::new(receive(feed)))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let (r, feed) = ready!(self.0.poll(cx));
        let next = match r {
            Ok(e) => Next::Event(e, feed.len()),
            Err(broadcast::error::RecvError::Lagged(_)) => Next::Lagged,
            Err(broadcast::error::RecvError::Closed) => Next::Closed,
        };
        self.0.set(receive(feed));
        Poll::Ready(next)
    }

    /// Starts again from what is published from now on.
    fn restart(&mut self, feed: Feed) {
        self.0.set(receive(feed));
    }
}

enum Phase {
    /// Reading the log after `after`: the page being read, or the rest of
    /// the last one read and whether it was full.
    History {
        reading: Option<BoxFuture<'static, Result<Vec<Arc<StoredEvent>>, LogError>>>,
        page: std::vec::IntoIter<Arc<StoredEvent>>,
        full: bool,
    },
    /// On the live feed; `caught_up` once it has been within `buffer` of it.
    Live {
        caught_up: bool,
    },
    Done,
}

impl Phase {
    fn history() -> Self {
        Self::History {
            reading: None,
            page: Vec::new().into_iter(),
            full: true,
        }
    }
}

/// One Subscribe call's stream of events; see the module docs.
pub(super) struct Subscription {
    log: Arc<dyn EventLog>,
    filter: Filter,
    /// The last cursor handled (delivered or filtered out).
    after: u64,
    /// The last cursor handed to the client.
    delivered: u64,
    /// How far the client may fall behind the live feed.
    buffer: usize,
    live: Live,
    phase: Phase,
    /// Events known to be ready behind the last one handed out (the rest of
    /// a history page, or newer ones on the live feed when it was read):
    /// the lower bound of [`Stream::size_hint`].
    ready_behind: usize,
    /// Set when the gateway stops (checked without a lock on every poll).
    stopping: watch::Receiver<bool>,
    /// Wakes the stream when the gateway stops; polled again only when the
    /// stream is polled by another task than the one it registered.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    stop_waker: Option<Waker>,
    /// The connection's socket activity, if the server tracks it.
    activity: Option<Arc<Activity>>,
}

impl Subscription {
    /// From cursor `after` on; `live` must have been taken before `after`
    /// was read from the log.
    pub(super) fn new(
        log: Arc<dyn EventLog>,
        live: Feed,
        filter: Filter,
        after: u64,
        buffer: usize,
        stopping: watch::Receiver<bool>,
        activity: Option<Arc<Activity>>,
    ) -> Self {
        let mut on_stop = stopping.clone();
        Self {
            log,
            filter,
            after,
            delivered: after,
            buffer,
            live: Live::new(live),
            phase: Phase::history(),
            ready_behind: 0,
            stopping,
            // Unconstrained: out of budget, `wait_for` would return Pending
            // without registering, and this waker is not polled again.
            stop: Box::pin(tokio::task::unconstrained(async move {
                let _ = on_stop.wait_for(|s| *s).await;
            })),
            stop_waker: None,
            activity,
        }
    }

    fn stopped(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stopping.has_changed().unwrap_or(true) {
            return true;
        }
        if self
            .stop_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return false;
        }
        self.stop_waker = Some(cx.waker().clone());
        self.stop.as_mut().poll(cx).is_ready()
    }

    /// Ends the stream with `status`.
    fn end(&mut self, status: Status) -> Poll<Option<Result<Arc<StoredEvent>, Status>>> {
        self.phase = Phase::Done;
        Poll::Ready(Some(Err(status)))
    }

    /// `e` if the client gets it: newer than what was handled, and wanted.
    fn take(&mut self, e: Arc<StoredEvent>) -> Option<Arc<StoredEvent>> {
        if e.cursor <= self.after {
            return None;
        }
        self.after = e.cursor;
        if !self.filter.matches(&e) {
            return None;
        }
        self.delivered = e.cursor;
        Some(e)
    }
}

impl Stream for Subscription {
    type Item = Result<Arc<StoredEvent>, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Known again only with the next event handed out.
        this.ready_behind = 0;
        if matches!(this.phase, Phase::Done) {
            return Poll::Ready(None);
        }
        if this.stopped(cx) {
            let status = Status::unavailable(format!(
                "gateway shutting down; resume after cursor {}",
                this.delivered
            ));
            return this.end(status);
        }
        loop {
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::History {
                    reading,
                    page,
                    full,
                } => {
                    if let Some(e) = page.next() {
                        this.ready_behind = page.len();
                        if let Some(e) = this.take(e) {
                            return Poll::Ready(Some(Ok(e)));
                        }
                        continue;
                    }
                    if !*full {
                        this.phase = Phase::Live { caught_up: false };
                        continue;
                    }
                    let read = reading.get_or_insert_with(|| {
                        let (log, after) = (this.log.clone(), this.after);
                        Box::pin(async move { log.read_after(after, PAGE).await })
                    });
                    match ready!(read.as_mut().poll(cx)) {
                        Ok(p) => {
                            *reading = None;
                            *full = p.len() == PAGE;
                            *page = p.into_iter();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "subscriber: reading the log failed");
                            let status = Status::unavailable(format!(
                                "{e}; resume after cursor {}",
                                this.delivered
                            ));
                            return this.end(status);
                        }
                    }
                }
                Phase::Live { caught_up } => {
                    let next = match this.live.poll(cx) {
                        Poll::Ready(n) => n,
                        Poll::Pending => {
                            *caught_up = true;
                            return Poll::Pending;
                        }
                    };
                    let e = match next {
                        Next::Event(e, newer) if newer <= this.buffer => {
                            this.ready_behind = newer;
                            e
                        }
                        Next::Event(..) | Next::Lagged if !*caught_up => {
                            // Still coming from history: read the log on
                            // from here rather than the ring.
                            tracing::debug!(
                                "subscriber behind the live feed; catching up from the log"
                            );
                            this.live.restart(this.log.live());
                            this.phase = Phase::history();
                            continue;
                        }
                        Next::Event(..) | Next::Lagged => {
                            tracing::info!(
                                delivered = this.delivered,
                                "subscriber too slow; ending it"
                            );
                            let status = Status::resource_exhausted(format!(
                                "subscriber too slow: more than {} events behind the live feed; last delivered cursor {} (resume with after_cursor)",
                                this.buffer, this.delivered
                            ));
                            return this.end(status);
                        }
                        Next::Closed => {
                            let status = Status::unavailable(format!(
                                "event feed closed; resume after cursor {}",
                                this.delivered
                            ));
                            return this.end(status);
                        }
                    };
                    *caught_up = true;
                    if let Some(e) = this.take(e) {
                        push_back_the_connection(this.activity.as_deref(), cx);
                        return Poll::Ready(Some(Ok(e)));
                    }
                }
            }
        }
    }

    /// At least the events known to be ready now: a body that gathers
    /// ready events polls again only when there are some, instead of
    /// polling the live feed once more per event only to find it pending.
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.phase {
            Phase::Done => (0, Some(0)),
            _ => (self.ready_behind, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt as _;

    use super::*;
    use crate::events::{log::NewEvent, pb, RedbLog};

    const WAIT: Duration = Duration::from_secs(10);

    async fn append(log: &Arc<dyn EventLog>, ids: std::ops::Range<u32>) {
        for i in ids {
            let event = pb::Event {
                event_id: format!("e{i}"),
                kind: pb::EventKind::Transaction as i32,
                ..Default::default()
            };
            log.append(NewEvent { event }).await.unwrap();
        }
    }

    fn subscribe(
        log: &Arc<dyn EventLog>,
        after: u64,
        buffer: usize,
    ) -> (Subscription, watch::Sender<bool>) {
        let (stop, stopping) = watch::channel(false);
        let live = log.live();
        let s = Subscription::new(
            log.clone(),
            live,
            Filter::default(),
            after,
            buffer,
            stopping,
            None,
        );
        (s, stop)
    }

    async fn next(s: &mut Subscription) -> Result<u64, Status> {
        tokio::time::timeout(WAIT, s.next())
            .await
            .expect("within the wait")
            .expect("not ended")
            .map(|e| e.cursor)
    }

    #[tokio::test]
    async fn history_then_live_in_order_without_gap_or_duplicate() {
        let log: Arc<dyn EventLog> = Arc::new(RedbLog::in_memory(4096).unwrap());
        append(&log, 0..300).await;
        let (mut s, _stop) = subscribe(&log, 0, 1024);
        // Stored after the live feed was taken: in the history and the feed.
        append(&log, 300..310).await;
        for c in 1..=310 {
            assert_eq!(next(&mut s).await.unwrap(), c);
        }
        append(&log, 310..311).await;
        assert_eq!(next(&mut s).await.unwrap(), 311);
    }

    #[tokio::test]
    async fn behind_the_feed_at_the_end_of_history_reads_the_log_again() {
        let log: Arc<dyn EventLog> = Arc::new(RedbLog::in_memory(16).unwrap());
        let (mut s, _stop) = subscribe(&log, 0, 4);
        // More than the buffer, and more than the ring, before the first read.
        append(&log, 0..40).await;
        for c in 1..=40 {
            assert_eq!(next(&mut s).await.unwrap(), c);
        }
        append(&log, 40..41).await;
        assert_eq!(next(&mut s).await.unwrap(), 41);
    }

    #[tokio::test]
    async fn too_far_behind_the_live_feed_is_resource_exhausted() {
        let log: Arc<dyn EventLog> = Arc::new(RedbLog::in_memory(4096).unwrap());
        let (mut s, _stop) = subscribe(&log, 0, 4);
        // Caught up with the live feed (nothing to read yet).
        assert!(tokio::time::timeout(Duration::from_millis(100), s.next())
            .await
            .is_err());
        append(&log, 0..1).await;
        assert_eq!(next(&mut s).await.unwrap(), 1);
        // Within the buffer: still delivered.
        append(&log, 1..5).await;
        assert_eq!(next(&mut s).await.unwrap(), 2);
        // Then the client does not read while ten more are published.
        append(&log, 5..15).await;
        let status = next(&mut s).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("last delivered cursor 2 "),
            "{status:?}"
        );
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn stopping_ends_a_waiting_stream_with_unavailable() {
        let log: Arc<dyn EventLog> = Arc::new(RedbLog::in_memory(64).unwrap());
        append(&log, 0..2).await;
        let (mut s, stop) = subscribe(&log, 1, 16);
        assert_eq!(next(&mut s).await.unwrap(), 2);
        let waiting = tokio::spawn(async move { s.next().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send_replace(true);
        let status = tokio::time::timeout(WAIT, waiting)
            .await
            .expect("woken by the stop")
            .unwrap()
            .expect("a status")
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("resume after cursor 2"),
            "{status:?}"
        );
    }
}

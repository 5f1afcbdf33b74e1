//! The embedded event log: one redb file, one writer thread, group commit.
//!
//! Appends queue to the writer thread, which takes every append waiting,
//! writes them in one transaction and commits once (redb's default
//! `Durability::Immediate`: fsync before `commit` returns). Each append's
//! caller is answered only after that commit, so concurrent webhooks share
//! one fsync and none is acknowledged before it is on disk.
//!
//! An append touches two tables, the events and the dedupe index: the head
//! cursor is the last event's key (or, once retention has removed every
//! event, the trimmed-through mark), kept in memory by the writer rather
//! than written with every commit. A batch of duplicates only is not
//! committed at all: what it found is already durable.

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use redb::{
    Database, ReadableTable as _, ReadableTableMetadata as _, TableDefinition, WriteTransaction,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::log::{now_ms, Appended, Bounds, EventLog, LogError, NewEvent, Retention, StoredEvent};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const DEDUPE: TableDefinition<&str, u64> = TableDefinition::new("dedupe");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The head cursor, as earlier builds wrote it with every append and read
/// it for the next cursor: read so that a log they wrote opens at its head,
/// and written only by retention and on a clean stop, so that an earlier
/// build can open a log this one wrote after such a stop (not after a
/// crash: it would hand out cursors again).
const LEGACY_HEAD: &str = "head";
const TRIMMED: &str = "trimmed_through";
/// Appends committed together at most (bounds one transaction's size); one
/// commit is one burst for the subscribers, whose buffer is at least this.
const MAX_BATCH: usize = crate::config::events::MIN_SUBSCRIBER_BUFFER;

enum Op {
    Append(Box<NewEvent>, oneshot::Sender<Result<Appended, LogError>>),
    Trim(Retention, oneshot::Sender<Result<u64, LogError>>),
}

/// See the module docs.
pub struct RedbLog {
    db: Arc<Database>,
    ops: mpsc::Sender<Op>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    what: String,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbLog {
    /// Closes the queue and waits for the writer to finish its last commit,
    /// so the file is released (and can be reopened) when this returns.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.ops, closed));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn err(e: impl std::fmt::Display) -> LogError {
    LogError(e.to_string())
}

impl RedbLog {
    /// Opens (or creates) `<dir>/events.redb`.
    pub fn open(dir: &Path, live_capacity: usize) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("events.redb");
        let db = Database::create(&path)
            .map_err(|e| LogError(format!("opening {}: {e}", path.display())))?;
        Self::start(db, live_capacity, format!("redb {}", path.display()))
    }

    /// A log in memory (no webhook secret configured: nothing can be
    /// ingested, but EventService still answers).
    pub fn in_memory(live_capacity: usize) -> Result<Self, LogError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(err)?;
        Self::start(db, live_capacity, "in memory (no webhook secret)".into())
    }

    fn start(db: Database, live_capacity: usize, what: String) -> Result<Self, LogError> {
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(EVENTS).map_err(err)?;
        txn.open_table(DEDUPE).map_err(err)?;
        txn.open_table(META).map_err(err)?;
        txn.commit().map_err(err)?;
        let head = read_bounds(&db)?.head;
        let db = Arc::new(db);
        let (ops, rx) = mpsc::channel(MAX_BATCH * 4);
        let (live, _) = broadcast::channel(live_capacity.max(16));
        let writer = Writer {
            db: db.clone(),
            head,
            publish: Publisher::start(live.clone()),
        };
        let writer = std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            db,
            ops,
            live,
            what,
            writer: Some(writer),
        })
    }
}

#[async_trait]
impl EventLog for RedbLog {
    async fn append(&self, event: NewEvent) -> Result<Appended, LogError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Append(Box::new(event), tx))
            .await
            .map_err(|_| LogError("writer stopped".into()))?;
        rx.await.map_err(|_| LogError("writer stopped".into()))?
    }

    async fn read_after(&self, after: u64, max: usize) -> Result<Vec<Arc<StoredEvent>>, LogError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let r = db.begin_read().map_err(err)?;
            let t = r.open_table(EVENTS).map_err(err)?;
            let mut out = Vec::with_capacity(max.min(1024));
            for item in t.range(after.saturating_add(1)..).map_err(err)?.take(max) {
                let (k, v) = item.map_err(err)?;
                out.push(Arc::new(StoredEvent::decode(k.value(), v.value())?));
            }
            Ok(out)
        })
        .await
        .map_err(err)?
    }

    async fn bounds(&self) -> Result<Bounds, LogError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || read_bounds(&db))
            .await
            .map_err(err)?
    }

    async fn trim(&self, retention: Retention) -> Result<u64, LogError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Trim(retention, tx))
            .await
            .map_err(|_| LogError("writer stopped".into()))?;
        rx.await.map_err(|_| LogError("writer stopped".into()))?
    }

    fn live(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.live.subscribe()
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// Where the log stands, from one read transaction: the head is the last
/// event's cursor, else what retention trimmed through (everything), and
/// never below a head an older version wrote.
fn read_bounds(db: &Database) -> Result<Bounds, LogError> {
    let r = db.begin_read().map_err(err)?;
    let m = r.open_table(META).map_err(err)?;
    let get = |k| -> Result<u64, LogError> { Ok(m.get(k).map_err(err)?.map_or(0, |v| v.value())) };
    let trimmed_through = get(TRIMMED)?;
    let last = r
        .open_table(EVENTS)
        .map_err(err)?
        .last()
        .map_err(err)?
        .map_or(0, |(k, _)| k.value());
    Ok(Bounds {
        trimmed_through,
        head: last.max(trimmed_through).max(get(LEGACY_HEAD)?),
    })
}

// === impl Writer ===

struct Writer {
    db: Arc<Database>,
    /// The newest cursor committed; only this thread appends.
    head: u64,
    publish: Publisher,
}

/// Where committed events go live: from a task on the runtime when there
/// is one, so that the subscribers' streams it wakes are queued on that
/// worker (see [`super::subscribe`] on batching their frames), else from
/// the writer thread itself.
enum Publisher {
    /// The task's queue, and the feed itself for when the task is gone
    /// (its runtime stopped): committed events still go live.
    Task(
        tokio::sync::mpsc::UnboundedSender<Vec<Arc<StoredEvent>>>,
        broadcast::Sender<Arc<StoredEvent>>,
    ),
    Direct(broadcast::Sender<Arc<StoredEvent>>),
}

impl Publisher {
    fn start(live: broadcast::Sender<Arc<StoredEvent>>) -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Publisher::Direct(live);
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Arc<StoredEvent>>>();
        let feed = live.clone();
        runtime.spawn(async move {
            while let Some(events) = rx.recv().await {
                for ev in events {
                    let _ = feed.send(ev);
                }
                // One commit's burst at a time: the streams it woke run
                // before the next burst lands (see `MIN_SUBSCRIBER_BUFFER`).
                tokio::task::yield_now().await;
            }
        });
        Publisher::Task(tx, live)
    }

    fn publish(&self, events: Vec<Arc<StoredEvent>>) {
        let (events, live) = match self {
            Publisher::Task(tx, live) => match tx.send(events) {
                Ok(()) => return,
                // The task is gone: from here, then.
                Err(unsent) => (unsent.0, live),
            },
            Publisher::Direct(live) => (events, live),
        };
        for ev in events {
            let _ = live.send(ev);
        }
    }
}

type Waiter = oneshot::Sender<Result<Appended, LogError>>;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(first) = rx.blocking_recv() {
            let mut appends: Vec<(Box<NewEvent>, Waiter)> = Vec::new();
            let mut pending = Some(first);
            // Everything already waiting joins this commit.
            while let Some(op) = pending.take() {
                match op {
                    Op::Append(e, w) => appends.push((e, w)),
                    Op::Trim(r, w) => {
                        self.commit(&mut appends);
                        let _ = w.send(self.trim(r));
                    }
                }
                if appends.len() < MAX_BATCH {
                    pending = rx.try_recv().ok();
                }
            }
            self.commit(&mut appends);
        }
        // A clean stop records the head where earlier builds read it, so
        // that one of them can open the log after this one.
        if let Err(e) = self.write_legacy_head() {
            tracing::warn!(error = %e, "event log: recording the head on stop failed");
        }
    }

    fn write_legacy_head(&self) -> Result<(), LogError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(META)
            .map_err(err)?
            .insert(LEGACY_HEAD, self.head)
            .map_err(err)?;
        txn.commit().map_err(err)
    }

    /// One transaction, one fsync, for every append in `batch` (none if
    /// they are all duplicates).
    fn commit(&mut self, batch: &mut Vec<(Box<NewEvent>, Waiter)>) {
        if batch.is_empty() {
            return;
        }
        let result = self.db.begin_write().map_err(err).and_then(|txn| {
            let (results, head) = write_all(&txn, batch, self.head)?;
            if head == self.head {
                // Nothing written; the answers stand whatever the abort says.
                let _ = txn.abort();
            } else {
                txn.commit().map_err(err)?;
            }
            Ok((results, head))
        });
        match result {
            Ok((results, head)) => {
                self.head = head;
                let mut stored = Vec::with_capacity(results.len());
                for ((_, waiter), r) in batch.drain(..).zip(results) {
                    if let Appended::New(ev) = &r {
                        // Encoded once, here off the runtime, for every subscriber.
                        ev.framed();
                        stored.push(ev.clone());
                    }
                    let _ = waiter.send(Ok(r));
                }
                // Published after the commit (a subscriber never sees an
                // event the log could still lose) and after the callers are
                // answered: waking every subscriber must not hold up the 2xx.
                self.publish.publish(stored);
            }
            Err(e) => {
                tracing::error!(error = %e, "event log commit failed");
                for (_, waiter) in batch.drain(..) {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }

    fn trim(&self, retention: Retention) -> Result<u64, LogError> {
        let cutoff = now_ms()
            .saturating_sub(i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX));
        let txn = self.db.begin_write().map_err(err)?;
        let mut removed = 0u64;
        {
            let mut events = txn.open_table(EVENTS).map_err(err)?;
            let mut dedupe = txn.open_table(DEDUPE).map_err(err)?;
            let mut meta = txn.open_table(META).map_err(err)?;
            let mut len = events.len().map_err(err)?;
            let mut last_removed = None;
            loop {
                let Some((cursor, ev)) = (match events.first().map_err(err)? {
                    Some((k, v)) => Some((k.value(), StoredEvent::decode(k.value(), v.value())?)),
                    None => None,
                }) else {
                    break;
                };
                if len <= retention.max_events && ev.received_at_ms() >= cutoff {
                    break;
                }
                events.remove(cursor).map_err(err)?;
                dedupe.remove(ev.event.event_id.as_str()).map_err(err)?;
                last_removed = Some(cursor);
                len -= 1;
                removed += 1;
            }
            if let Some(c) = last_removed {
                meta.insert(TRIMMED, c).map_err(err)?;
                // Where earlier builds read the head (see `write_legacy_head`).
                meta.insert(LEGACY_HEAD, self.head).map_err(err)?;
            }
        }
        txn.commit().map_err(err)?;
        Ok(removed)
    }
}

/// Writes `batch` after cursor `head`: what each append did, and the new
/// head (`head` itself if every one was a duplicate). The events are moved
/// out of `batch` into the results.
fn write_all(
    txn: &WriteTransaction,
    batch: &mut [(Box<NewEvent>, Waiter)],
    mut head: u64,
) -> Result<(Vec<Appended>, u64), LogError> {
    let mut events = txn.open_table(EVENTS).map_err(err)?;
    let mut dedupe = txn.open_table(DEDUPE).map_err(err)?;
    let mut out = Vec::with_capacity(batch.len());
    for (new, _) in batch.iter_mut() {
        let id = new.event.event_id.as_str();
        if let Some(existing) = dedupe.get(id).map_err(err)? {
            out.push(Appended::Duplicate(existing.value()));
            continue;
        }
        head += 1;
        events.insert(head, new.encode().as_slice()).map_err(err)?;
        dedupe.insert(id, head).map_err(err)?;
        out.push(Appended::New(Arc::new(StoredEvent::new(
            head,
            std::mem::take(&mut new.event),
        ))));
    }
    Ok((out, head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::pb;

    fn new(id: &str) -> NewEvent {
        NewEvent {
            event: pb::Event {
                event_id: id.into(),
                kind: pb::EventKind::Transaction as i32,
                received_at: Some(prost_types::Timestamp {
                    seconds: now_ms() / 1000,
                    nanos: 0,
                }),
                raw_json: format!("{{\"id\":\"{id}\"}}"),
                ..Default::default()
            },
        }
    }

    /// Opened on a runtime that has since stopped (its publishing task with
    /// it): a committed event still goes live, from the writer.
    #[test]
    fn events_go_live_after_the_publishing_runtime_stopped() {
        let first = tokio::runtime::Runtime::new().unwrap();
        let log = first.block_on(async { RedbLog::in_memory(64).unwrap() });
        drop(first);
        let second = tokio::runtime::Runtime::new().unwrap();
        second.block_on(async {
            let mut live = log.live();
            assert!(matches!(
                log.append(new("late")).await.unwrap(),
                Appended::New(_)
            ));
            let e = tokio::time::timeout(std::time::Duration::from_secs(10), live.recv())
                .await
                .expect("delivered live")
                .unwrap();
            assert_eq!(e.event.event_id, "late");
        });
    }

    /// The head is not stored with each append: after retention removed
    /// every event, and across a reopen, cursors still go on from it; a
    /// clean stop records it for earlier builds, and a head an earlier
    /// build stored is honoured.
    #[tokio::test]
    async fn the_head_survives_trimming_everything_and_a_reopen() {
        let dir = std::env::temp_dir().join(format!("igw-redb-head-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let everything = Retention {
            max_age: std::time::Duration::ZERO,
            max_events: 0,
        };
        {
            let log = RedbLog::open(&dir, 64).unwrap();
            for id in ["a", "b", "c"] {
                log.append(new(id)).await.unwrap();
            }
            // Duplicates only: answered from the index, nothing committed.
            assert!(matches!(
                log.append(new("b")).await.unwrap(),
                Appended::Duplicate(2)
            ));
            assert_eq!(log.trim(everything).await.unwrap(), 3);
            let b = log.bounds().await.unwrap();
            assert_eq!((b.trimmed_through, b.head), (3, 3));
            // Retention records the head where earlier builds read it.
            let r = log.db.begin_read().unwrap();
            let meta = r.open_table(META).unwrap();
            assert_eq!(meta.get(LEGACY_HEAD).unwrap().unwrap().value(), 3);
        }
        {
            let log = RedbLog::open(&dir, 64).unwrap();
            assert_eq!(log.bounds().await.unwrap().head, 3);
            assert!(
                matches!(log.append(new("d")).await.unwrap(), Appended::New(ref e) if e.cursor == 4)
            );
        }
        // A log whose META holds a head beyond its last event (as written
        // by an earlier build after a trim of everything).
        {
            let db = Database::create(dir.join("events.redb")).unwrap();
            // The clean stop recorded the head where earlier builds read it.
            let r = db.begin_read().unwrap();
            let meta = r.open_table(META).unwrap();
            assert_eq!(meta.get(LEGACY_HEAD).unwrap().unwrap().value(), 4);
            drop((meta, r));
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(LEGACY_HEAD, 9)
                .unwrap();
            txn.open_table(EVENTS).unwrap().remove(4).unwrap();
            txn.commit().unwrap();
        }
        let log = RedbLog::open(&dir, 64).unwrap();
        assert_eq!(log.bounds().await.unwrap().head, 9);
        assert!(
            matches!(log.append(new("e")).await.unwrap(), Appended::New(ref e) if e.cursor == 10)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn append_dedupe_read_trim_reopen() {
        let dir = std::env::temp_dir().join(format!("igw-redb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let log = RedbLog::open(&dir, 64).unwrap();
            let mut live = log.live();
            let a = log.append(new("a")).await.unwrap();
            assert!(matches!(a, Appended::New(ref e) if e.cursor == 1));
            assert!(matches!(
                log.append(new("a")).await.unwrap(),
                Appended::Duplicate(1)
            ));
            // Concurrent appends share commits and get distinct cursors.
            let all =
                futures::future::join_all((0..20).map(|i| log.append(new(&format!("c{i}"))))).await;
            assert!(all.iter().all(|r| matches!(r, Ok(Appended::New(_)))));
            assert_eq!(live.recv().await.unwrap().cursor, 1);
            assert_eq!(
                log.bounds().await.unwrap(),
                Bounds {
                    trimmed_through: 0,
                    head: 21
                }
            );
            let page = log.read_after(1, 5).await.unwrap();
            assert_eq!(
                page.iter().map(|e| e.cursor).collect::<Vec<_>>(),
                vec![2, 3, 4, 5, 6]
            );
            let removed = log
                .trim(Retention {
                    max_age: std::time::Duration::from_secs(3600),
                    max_events: 15,
                })
                .await
                .unwrap();
            assert_eq!(removed, 6);
            // "a" left retention: it may be stored again.
            assert!(
                matches!(log.append(new("a")).await.unwrap(), Appended::New(ref e) if e.cursor == 22)
            );
        }
        let log = RedbLog::open(&dir, 64).unwrap();
        assert_eq!(
            log.bounds().await.unwrap(),
            Bounds {
                trimmed_through: 6,
                head: 22
            }
        );
        assert_eq!(log.read_after(0, 1).await.unwrap()[0].cursor, 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

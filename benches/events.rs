//! Webhook ingest and event fan-out, measured against the real gateway
//! binary (a separate process, so its RSS is its own) on loopback.
//!
//! 1. Ingest: 32 concurrent senders POST signed TRANSACTION webhooks (redb,
//!    fsync on) — webhooks/s and p99 time to the 2xx.
//! 2. Fan-out: N concurrent `Subscribe` streams (1, then 1 000, then
//!    10 000); one sender posts events at a steady pace — p99 from the POST
//!    to each subscriber's receipt, and the gateway's RSS (peak). The round
//!    of one subscriber is the floor under the others, measured in the same
//!    run: the webhook's way to a durable commit and one delivery, which on
//!    a shared VM has a tail of its own (fsync, wake-ups).
//!
//!    Before the rounds, as many webhooks signed with another secret are
//!    refused at the same pace: the HTTP round trip and the signature check
//!    without the commit.
//!
//! 3. Replay: last, 1 and then 10 subscribers at once (on one HTTP/2
//!    connection, decoding ids only) read the ingest's events from the
//!    oldest (history catch-up) — events/s, and the gateway's CPU per event.
//!
//! 0. The floor under both: what one durable commit costs on this disk —
//!    `fdatasync` of a 1 KiB append, and a one-event redb commit (the same
//!    `Durability::Immediate` the gateway uses) — p50 and p99.
//!
//! Both processes float over every core, as before. `PIN=1` runs the
//! gateway on its own core and this process (the senders and the
//! subscribers' client) on another (`taskset`; `GATEWAY_CPUS`, default `1`,
//! `CLIENT_CPUS`, default `0`): the client's work on 1 000 streams then
//! takes none of the gateway's CPU, but the gateway has one core and one
//! tokio worker. Besides latency, the CPU time each process spent per
//! delivery from the first post until the last subscriber is done (ingest included) (`/proc/<pid>/stat`, clock-tick
//! resolution) is reported: it varies far less with the machine's load.
//! `STREAMS_PER_CONN` (default and at most 1 000) sets how many subscribers share one
//! HTTP/2 connection. The subscribers decode only each event's id
//! (`DECODE=full`: whole events). `EVENTS` (default 100) sets how many
//! events each round posts: at 100, the p99 of a round is decided by its
//! two slowest events, so more gives a steadier p99. `INGEST` caps the
//! ingest phase's webhooks (default 20 000; 0 skips it).
//! `GATEWAY_BIN` runs another build of the gateway (e.g. an older
//! commit's) under the same client, for a before/after in one run.
//!
//! Every loop is bounded by a count and a time limit. Not a test.
//! Run: `cargo bench --bench events` (`FANOUT=1000` for one round only).
//! Results: docs/BENCHMARKS.md.

#[path = "support/proc_stat.rs"]
mod proc_stat;
use proc_stat::clk_tck;

use std::{
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use imprint_gateway::{events::pb::SubscribeRequest, sandbox::sign};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

const SECRET: &str = "whsec_bench";
const INGEST_SENDERS: usize = 32;
const INGEST_MAX: usize = 20_000;
const INGEST_TIME: Duration = Duration::from_secs(10);
const FANOUT_PACE: Duration = Duration::from_millis(20);
const PHASE_LIMIT: Duration = Duration::from_secs(60);

struct Gateway {
    child: Child,
    grpc: u16,
    http: u16,
    _dir: std::path::PathBuf,
}

impl Drop for Gateway {
    /// SIGTERM first, so that a gateway under valgrind writes its profile
    /// as it exits; SIGKILL if it has not exited within 30 s.
    fn drop(&mut self) {
        let asked = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let start = Instant::now();
        while asked
            && matches!(self.child.try_wait(), Ok(None))
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CPUs for the gateway and for this process; `None`: unpinned.
fn cpus() -> Option<(String, String)> {
    if !std::env::var("PIN").is_ok_and(|p| p == "1") {
        return None;
    }
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    Some((var("GATEWAY_CPUS", "1"), var("CLIENT_CPUS", "0")))
}

fn spawn_gateway() -> Gateway {
    let dir = std::env::temp_dir().join(format!("igw-bench-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (grpc, http) = (free_port(), free_port());
    let bin = std::env::var("GATEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_imprint-gateway").to_string());
    let mut command = match cpus() {
        Some((gateway, _)) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(gateway).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let child = command
        .arg("serve")
        .env("IMPRINT_API_BASE_URL", "http://127.0.0.1:9")
        .env("IMPRINT_API_KEY", "sk_bench")
        .env("IMPRINT_WEBHOOK_SECRET", SECRET)
        .env("GATEWAY_DATA_DIR", &dir)
        .env("GATEWAY_ALLOW_UNAUTHENTICATED", "true")
        .env("GATEWAY_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0")
        .env("GATEWAY__SERVER__MAX_CONCURRENT_STREAMS", "20000")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the gateway");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(
            // Generous: `GATEWAY_BIN` may run it under valgrind.
            start.elapsed() < Duration::from_secs(120),
            "gateway did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Gateway {
        child,
        grpc,
        http,
        _dir: dir,
    }
}

/// VmRSS and VmHWM (peak) of `pid`, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let [now, peak] = proc_stat::status_kib(pid, ["VmRSS", "VmHWM"]);
    (now as f64 / 1024.0, peak as f64 / 1024.0)
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clk_tck()
}

fn body(id: &str) -> String {
    serde_json::json!({
        "object": "TRANSACTION",
        "data": {
            "merchant_key": "MERCHANT_ABC", "transaction_id": format!("t-{id}"), "event_id": id,
            "customer_id": "2EE24580-B97B-4949-A65C-929CCB9B9B8D", "status": "APPROVED",
            "amount": 5000, "currency": "USD", "created_at": "2025-02-27T18:11:32.358Z",
            "merchant": {"name": "Target", "category_code": "5411"},
        }
    })
    .to_string()
}

async fn post(client: &reqwest::Client, http: u16, id: &str) -> bool {
    post_signed(client, http, id, SECRET)
        .await
        .is_some_and(|s| s.is_success())
}

/// Posts webhook `id` signed with `secret`; the answer's status.
async fn post_signed(
    client: &reqwest::Client,
    http: u16,
    id: &str,
    secret: &str,
) -> Option<reqwest::StatusCode> {
    let b = body(id);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = format!("t={t},s={}", sign(secret.as_bytes(), &t, b.as_bytes()));
    client
        .post(format!("http://127.0.0.1:{http}/webhooks/imprint"))
        .header("content-type", "application/json")
        .header("X-IMPRINT-HMAC-SIGNATURE", sig)
        .body(b)
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

/// The way to the gateway and back without the commit: webhooks signed
/// with another secret, at the fan-out rounds' pace, refused (401) after
/// the signature check — p50 and p99 to the 401.
async fn refused(gw: &Gateway) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(FANOUT_PACE);
    let mut l = Vec::with_capacity(fanout_events());
    for n in 0..fanout_events() {
        tick.tick().await;
        let t0 = Instant::now();
        let status = post_signed(&client, gw.http, &format!("refused-{n}"), "whsec_other").await;
        l.push(t0.elapsed());
        assert_eq!(status, Some(reqwest::StatusCode::UNAUTHORIZED));
    }
    l.sort();
    println!(
        "refused webhooks (another secret; verified, not stored), {} at the fan-out pace: to 401 p50 {:.2?} p99 {:.2?}",
        l.len(),
        p(&l, 0.50),
        p(&l, 0.99)
    );
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Webhooks the ingest phase posts at most (`INGEST`, default 20 000; 0
/// skips it, e.g. to count a fan-out's instructions under callgrind alone).
fn ingest_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| env_count("INGEST").unwrap_or(INGEST_MAX))
}

/// A count from the environment variable `name`, if set to one.
fn env_count(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

/// Posts the ingest phase's webhooks; how many were stored.
async fn ingest(gw: &Gateway) -> usize {
    let client = reqwest::Client::new();
    let sent = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(ingest_max())));
    let start = Instant::now();
    let tasks: Vec<_> = (0..INGEST_SENDERS)
        .map(|s| {
            let (client, sent, latencies, http) =
                (client.clone(), sent.clone(), latencies.clone(), gw.http);
            tokio::spawn(async move {
                loop {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    if n >= ingest_max() || start.elapsed() > INGEST_TIME {
                        return;
                    }
                    let t0 = Instant::now();
                    let ok = post(&client, http, &format!("ingest-{s}-{n}")).await;
                    assert!(ok, "webhook refused");
                    latencies.lock().push(t0.elapsed());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let mut l = latencies.lock().clone();
    l.sort();
    println!(
        "ingest: {} webhooks in {:.2?} by {INGEST_SENDERS} senders = {:.0}/s; to 2xx p50 {:.2?} p99 {:.2?} max {:.2?}",
        l.len(),
        elapsed,
        l.len() as f64 / elapsed.as_secs_f64(),
        p(&l, 0.50),
        p(&l, 0.99),
        l.last().copied().unwrap_or_default()
    );
    l.len()
}

/// History catch-up: `readers` subscribers at once, each from the oldest
/// event until it has `stored` (what ingest stored); events/s each and in
/// all, and the gateway's CPU per event delivered.
async fn replay(gw: &Gateway, stored: usize, readers: usize) {
    use imprint_gateway::events::pb::StartPosition;
    let ch = Endpoint::from_shared(format!("http://127.0.0.1:{}", gw.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let cpu_before = cpu_secs(gw.child.id());
    let start = Instant::now();
    let tasks: Vec<_> = (0..readers)
        .map(|_| {
            let ch = ch.clone();
            tokio::spawn(async move {
                let oldest = SubscribeRequest {
                    start: StartPosition::Oldest as i32,
                    ..Default::default()
                };
                let mut s = subscribe::<EventId>(ch, oldest).await;
                let mut n = 0;
                let _ = tokio::time::timeout(PHASE_LIMIT, async {
                    while n < stored {
                        match s.message().await {
                            Ok(Some(_)) => n += 1,
                            _ => break,
                        }
                    }
                })
                .await;
                (n, start.elapsed())
            })
        })
        .collect();
    let mut got = 0;
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (n, took) = t.await.unwrap();
        got += n;
        slowest = slowest.max(took);
    }
    let cpu = (cpu_secs(gw.child.id()) - cpu_before) * 1e6 / got.max(1) as f64;
    println!(
        "replay from the oldest, {readers} at once: {got} events of {} expected in {slowest:.2?} = {:.0} events/s in all, {:.0}/s each; gateway CPU per event {cpu:.1} µs",
        stored * readers,
        got as f64 / slowest.as_secs_f64(),
        got as f64 / slowest.as_secs_f64() / readers as f64,
    );
}

/// The durable-commit floor on the filesystem of the gateway's data dir.
fn commit_floor() {
    use std::io::Write as _;
    const N: usize = 200;
    let dir = std::env::temp_dir().join(format!("igw-bench-fsync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = std::fs::File::create(dir.join("append")).unwrap();
    let record = [7u8; 1024];
    let mut fsync = Vec::with_capacity(N);
    for _ in 0..N {
        let t0 = Instant::now();
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
        fsync.push(t0.elapsed());
    }
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let db = redb::Database::create(dir.join("floor.redb")).unwrap();
    let mut commits = Vec::with_capacity(N);
    for i in 0..N as u64 {
        let t0 = Instant::now();
        let txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(i, &record[..]).unwrap();
        txn.commit().unwrap();
        commits.push(t0.elapsed());
    }
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    fsync.sort();
    commits.sort();
    println!(
        "commit floor ({N} each): fdatasync of a 1 KiB append p50 {:.2?} p99 {:.2?}; one-event redb commit p50 {:.2?} p99 {:.2?}",
        p(&fsync, 0.50),
        p(&fsync, 0.99),
        p(&commits, 0.50),
        p(&commits, 0.99),
    );
}

/// What the subscribers read of each event by default: its id, to match
/// the send time. prost skips the other fields without decoding them, so
/// the client's CPU (on the same cores as the gateway) is spent on
/// receiving, not on building messages the bench throws away. `DECODE=full`
/// decodes whole events instead, as most subscribers would.
#[derive(Clone, PartialEq, prost::Message)]
struct EventId {
    #[prost(string, tag = "3")]
    event_id: String,
}

/// An event as the subscribers decode it; its id.
trait Received: prost::Message + Default + Send + 'static {
    fn into_id(self) -> String;
}

impl Received for EventId {
    fn into_id(self) -> String {
        self.event_id
    }
}

impl Received for imprint_gateway::events::pb::Event {
    fn into_id(self) -> String {
        self.event_id
    }
}

/// `Subscribe` on `ch` as `req` asks, its events decoded as `T`.
async fn subscribe<T: Received>(ch: Channel, req: SubscribeRequest) -> tonic::Streaming<T> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("channel ready");
    grpc.server_streaming(
        tonic::Request::new(req),
        http::uri::PathAndQuery::from_static("/imprint.gateway.v1.EventService/Subscribe"),
        tonic_prost::ProstCodec::<SubscribeRequest, T>::default(),
    )
    .await
    .expect("subscribe")
    .into_inner()
}

/// One subscriber: `Subscribe` on `ch`, each event's receipt time with its
/// id, until `EVENTS` of them or the phase's time limit; `ready` counted
/// once the stream is open.
async fn receive<T: Received>(ch: Channel, ready: &AtomicUsize) -> Vec<(Instant, String)> {
    let mut s = subscribe::<T>(ch, SubscribeRequest::default()).await;
    ready.fetch_add(1, Ordering::Relaxed);
    let mut mine = Vec::with_capacity(fanout_events());
    // One time limit for the whole stream, not a timer per message (whose
    // cost would be counted in every receipt after it).
    let _ = tokio::time::timeout(PHASE_LIMIT, async {
        while mine.len() < fanout_events() {
            let Ok(Some(e)) = s.message().await else {
                break;
            };
            // The receipt time, before anything else.
            let now = Instant::now();
            mine.push((now, e.into_id()));
        }
    })
    .await;
    mine
}

/// `CLIENT=h2`: the subscribers of one connection as plain HTTP/2 streams
/// (the `h2` crate tonic's client runs on), all read by one task: each
/// stream's data as it comes, cut into gRPC messages, each decoded for its
/// event id. 1 000 tonic streams cost this process a task wake-up, a
/// `Streaming` and a decoder per delivery; on a 2-core machine that is CPU
/// the gateway's own deliveries wait for, and in production each subscriber
/// would be a process of its own elsewhere. Same window sizes as tonic's
/// client (hyper's: 2 MiB per stream, 5 MiB per connection).
async fn receive_h2(port: u16, streams: usize, ready: &AtomicUsize) -> Vec<(Instant, String)> {
    use futures::StreamExt as _;
    use prost::Message as _;

    type Next = (
        Option<Result<bytes::Bytes, h2::Error>>,
        h2::RecvStream,
        bytes::BytesMut,
        usize,
    );
    async fn next(mut body: h2::RecvStream, buf: bytes::BytesMut, count: usize) -> Next {
        (body.data().await, body, buf, count)
    }

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.set_nodelay(true).unwrap();
    let (mut send, connection) = h2::client::Builder::new()
        .initial_window_size(2 << 20)
        .initial_connection_window_size(5 << 20)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let uri = format!("http://127.0.0.1:{port}/imprint.gateway.v1.EventService/Subscribe");
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        // One handle, made ready before each stream: it waits for a slot
        // under the server's concurrent-stream limit (a clone would not).
        send = send.ready().await.expect("stream slot");
        let request = http::Request::post(uri.as_str())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut body) = send.send_request(request, false).expect("open a stream");
        // An empty SubscribeRequest (start now), as one gRPC message.
        body.send_data(bytes::Bytes::from_static(&[0; 5]), true)
            .expect("send the request");
        opened.push(response);
    }
    let mut streams_open = futures::stream::FuturesUnordered::new();
    for response in opened {
        let response = response.await.expect("Subscribe answered");
        assert_eq!(response.status(), http::StatusCode::OK);
        // A refusal comes as trailers only: status in the headers, no events.
        assert!(
            response.headers().get("grpc-status").is_none(),
            "Subscribe refused: {:?}",
            response.headers()
        );
        ready.fetch_add(1, Ordering::Relaxed);
        streams_open.push(next(response.into_body(), bytes::BytesMut::new(), 0));
    }
    let mut got = Vec::with_capacity(streams * fanout_events());
    let _ = tokio::time::timeout(PHASE_LIMIT, async {
        while let Some((data, mut body, mut buf, mut count)) = streams_open.next().await {
            // The receipt time, before anything else.
            let now = Instant::now();
            let Some(Ok(data)) = data else { continue };
            let _ = body.flow_control().release_capacity(data.len());
            buf.extend_from_slice(&data);
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 5 + len {
                    break;
                }
                let message = buf.split_to(5 + len);
                let id = EventId::decode(&message[5..]).expect("an event").event_id;
                got.push((now, id));
                count += 1;
            }
            if count < fanout_events() {
                streams_open.push(next(body, buf, count));
            }
        }
    })
    .await;
    got
}

/// Events posted per fan-out round (`EVENTS`, default 100).
/// Read once: the subscribers' loops ask for every message.
fn fanout_events() -> usize {
    static EVENTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *EVENTS.get_or_init(|| env_count("EVENTS").filter(|n| *n > 0).unwrap_or(100))
}

/// `CLIENT=h2` (see [`receive_h2`]); tonic's client otherwise.
fn h2_client() -> bool {
    std::env::var("CLIENT").is_ok_and(|v| v == "h2")
}

fn decode_full() -> bool {
    std::env::var("DECODE").is_ok_and(|v| v == "full")
}

/// Streams per HTTP/2 connection: `STREAMS_PER_CONN`, default and at most
/// 1 000 (the gateway allows 1 024 concurrent streams per connection).
fn streams_per_conn() -> usize {
    env_count("STREAMS_PER_CONN").map_or(1000, |n| n.clamp(1, 1000))
}

/// Each receipt's latency: its time less its event's send time (the event
/// `<prefix><n>` was sent at `sent_at[n]`).
fn match_sent(got: Vec<(Instant, String)>, prefix: &str, sent_at: &[Instant]) -> Vec<Duration> {
    got.into_iter()
        .filter_map(|(now, id)| {
            let n: usize = id.strip_prefix(prefix)?.parse().ok()?;
            Some(now - *sent_at.get(n)?)
        })
        .collect()
}

async fn fanout(gw: &Gateway, subscribers: usize, round: usize) {
    let connections = subscribers.div_ceil(streams_per_conn());
    let ready = Arc::new(AtomicUsize::new(0));
    let setup = Instant::now();
    // Each task hands back its receipts; they are matched to the send
    // times after the phase, not on the way in.
    let mut tasks = Vec::with_capacity(subscribers);
    if h2_client() {
        for c in 0..connections {
            let streams = streams_per_conn().min(subscribers - c * streams_per_conn());
            let (ready, port) = (ready.clone(), gw.grpc);
            tasks.push(tokio::spawn(async move {
                receive_h2(port, streams, &ready).await
            }));
        }
    } else {
        let mut channels: Vec<Channel> = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(
                Endpoint::from_shared(format!("http://127.0.0.1:{}", gw.grpc))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        for i in 0..subscribers {
            let (ch, ready) = (channels[i % connections].clone(), ready.clone());
            tasks.push(tokio::spawn(async move {
                if decode_full() {
                    receive::<imprint_gateway::events::pb::Event>(ch, &ready).await
                } else {
                    receive::<EventId>(ch, &ready).await
                }
            }));
        }
    }
    while ready.load(Ordering::Relaxed) < subscribers {
        assert!(
            setup.elapsed() < PHASE_LIMIT,
            "subscribers did not all start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let setup_time = setup.elapsed();
    let (rss_idle, _) = rss_mib(gw.child.id());
    let client = reqwest::Client::new();
    let cpu_before = (cpu_secs(gw.child.id()), cpu_secs(std::process::id()));
    let mut tick = tokio::time::interval(FANOUT_PACE);
    let mut to_2xx = Vec::with_capacity(fanout_events());
    let mut sent_at = Vec::with_capacity(fanout_events());
    for n in 0..fanout_events() {
        tick.tick().await;
        let t0 = Instant::now();
        sent_at.push(t0);
        assert!(post(&client, gw.http, &format!("fan{round}-{n}")).await);
        to_2xx.push(t0.elapsed());
    }
    to_2xx.sort();
    let prefix = format!("fan{round}-");
    let mut l = Vec::with_capacity(subscribers * fanout_events());
    for t in tasks {
        if let Ok(got) = t.await {
            l.extend(match_sent(got, &prefix, &sent_at));
        }
    }
    let (rss, peak) = rss_mib(gw.child.id());
    l.sort();
    // CPU time over the posting phase, per delivery (clock-tick resolution).
    let per_delivery =
        |before: f64, pid: u32| (cpu_secs(pid) - before) * 1e6 / l.len().max(1) as f64;
    let (gateway_cpu, client_cpu) = (
        per_delivery(cpu_before.0, gw.child.id()),
        per_delivery(cpu_before.1, std::process::id()),
    );
    println!(
        "fan-out to {subscribers} subscribers ({} streams on {connections} connections, {} client, {} decoding, set up in {setup_time:.2?}): {} deliveries of {} expected; ingest→delivery p50 {:.2?} p90 {:.2?} p99 {:.2?} max {:.2?}; the same posts to 2xx p50 {:.2?} p99 {:.2?}; gateway RSS {rss_idle:.0} MiB subscribed, {rss:.0} MiB after, peak {peak:.0} MiB; CPU per delivery: gateway {gateway_cpu:.1} µs, this client {client_cpu:.1} µs",
        subscribers,
        if h2_client() { "plain HTTP/2" } else { "tonic" },
        if decode_full() && !h2_client() { "whole-event" } else { "id-only" },
        l.len(),
        subscribers * fanout_events(),
        p(&l, 0.50),
        p(&l, 0.90),
        p(&l, 0.99),
        l.last().copied().unwrap_or_default(),
        p(&to_2xx, 0.50),
        p(&to_2xx, 0.99),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing to run.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Pinned before the runtime starts its threads (so it sizes itself to
    // the client's CPUs).
    match cpus() {
        Some((gateway, client)) => {
            let pinned = Command::new("taskset")
                .args(["-a", "-p", "-c", &client, &std::process::id().to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(pinned, "PIN=1 needs taskset (util-linux)");
            println!("method: gateway on CPU {gateway}, this client on CPU {client} (taskset)");
        }
        None => println!("method: unpinned (PIN=1 pins)"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    commit_floor();
    rt.block_on(async {
        let gw = spawn_gateway();
        let stored = ingest(&gw).await;
        refused(&gw).await;
        // FANOUT=1000 runs one round only.
        let rounds: Vec<usize> = std::env::var("FANOUT")
            .unwrap_or_else(|_| "1,1000,10000".into())
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        for (round, n) in rounds.into_iter().enumerate() {
            fanout(&gw, n, round).await;
        }
        // After fan-out, so that its peak RSS is fan-out's own. The log's
        // oldest `stored` events are the ingest's.
        for readers in [1, 10] {
            replay(&gw, stored, readers).await;
        }
    });
}

//! The production topology on loopback, with real processes: three `serve`
//! replicas sharing one redis-server, in front of the Imprint emulator, and
//! a round-robin client (what a Kubernetes Service with three pods is).
//!
//! The emulator is served behind a recording layer, so the test knows
//! exactly what Imprint received and from which replica (each replica has
//! an API key of its own, all valid at the emulator).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use futures::StreamExt as _;
use imprint_gateway::{
    events::pb::{event_service_client::EventServiceClient, SubscribeRequest},
    pb::imprint::v2::{
        customer_service_client::CustomerServiceClient,
        customer_session_service_client::CustomerSessionServiceClient,
        transaction_intent_service_client::TransactionIntentServiceClient, *,
    },
    sandbox::{Emulator, EmulatorConfig, Product},
};
use parking_lot::Mutex;
use tonic::{metadata::MetadataValue, transport::Channel, Code};
use tonic_types::StatusExt as _;

use crate::{
    events::{next, post_signed, transaction, SECRET},
    fixtures::s,
    harness::{req, GatewayProcess, RedisServer, API_KEY, MERCHANT_KEY},
};

/// Each replica's own Imprint API key: the emulator accepts all three, and
/// the recording layer tells the replicas apart by it.
const KEYS: [&str; 3] = [
    "sk_test_replica_1",
    "sk_test_replica_2",
    "sk_test_replica_3",
];
/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(20);
/// How long the emulator's answer to a create is held back: keyed calls
/// stay in flight long enough for a replica to die under them.
const SLOW_CREATE: Duration = Duration::from_millis(300);

/// One request Imprint received.
#[derive(Debug, Clone)]
struct Seen {
    /// Index into [`KEYS`] of the replica that sent it.
    replica: Option<usize>,
    method: Method,
    path: String,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<Seen>>>,
    /// Creates being answered now, per replica.
    creating: Arc<[AtomicUsize; 3]>,
}

impl Recorder {
    fn posts(&self, path: &str) -> Vec<Seen> {
        self.log
            .lock()
            .iter()
            .filter(|s| s.method == Method::POST && s.path == path)
            .cloned()
            .collect()
    }

    /// POSTs of intents whose `network_transaction_id` is `key`.
    fn creates_for(&self, key: &str) -> usize {
        self.posts("/v2/transaction_intents")
            .iter()
            .filter(|s| s.body["network_transaction_id"] == key)
            .count()
    }

    fn gets(&self, path: &str) -> usize {
        self.log
            .lock()
            .iter()
            .filter(|s| s.method == Method::GET && s.path == path)
            .count()
    }
}

fn replica_of(req: &Request) -> Option<usize> {
    use base64::Engine as _;
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let b64 = auth.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let user = String::from_utf8(decoded).ok()?;
    let key = user.strip_suffix(':').unwrap_or(&user);
    KEYS.iter().position(|k| *k == key)
}

/// Records each request as it arrives (before the emulator runs it), then
/// holds creates' answers back by [`SLOW_CREATE`].
async fn record(State(rec): State<Recorder>, req: Request, next: Next) -> Response {
    if req.method() == Method::HEAD && req.uri().path() == "/" {
        return next.run(req).await; // the gateways' health probe
    }
    let replica = replica_of(&req);
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    rec.log.lock().push(Seen {
        replica,
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        body: serde_json::from_slice(&bytes).unwrap_or_default(),
    });
    let slow = parts.method == Method::POST && parts.uri.path() == "/v2/transaction_intents";
    if let (true, Some(r)) = (slow, replica) {
        rec.creating[r].fetch_add(1, Ordering::SeqCst);
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if slow {
        tokio::time::sleep(SLOW_CREATE).await;
        if let Some(r) = replica {
            rec.creating[r].fetch_sub(1, Ordering::SeqCst);
        }
    }
    resp
}

/// The emulator on a loopback port behind the recording layer.
async fn emulator() -> (String, Recorder) {
    let mut config = EmulatorConfig {
        api_keys: KEYS
            .iter()
            .chain([&API_KEY])
            .map(|k| k.to_string())
            .collect(),
        ..EmulatorConfig::default()
    };
    config.products[0] = Product::new(
        "default",
        Some(MERCHANT_KEY),
        config.products[0].reward_program,
    );
    let rec = Recorder::default();
    let app = Emulator::new(config)
        .router()
        .layer(axum::middleware::from_fn_with_state(rec.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rec)
}

/// Three `serve` replicas on one Redis, cache on, webhook secret set.
async fn replicas(upstream: &str, redis: &RedisServer) -> Vec<GatewayProcess> {
    let mut out = Vec::new();
    for key in KEYS {
        let env = [
            ("IMPRINT_API_KEY", key),
            ("GATEWAY_REDIS_URL", redis.url.as_str()),
            ("IMPRINT_WEBHOOK_SECRET", SECRET),
            ("GATEWAY__CACHE__ENABLED", "true"),
            ("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0"),
            // A claim whose replica died answers its duplicates (as an
            // unknown outcome) after 3 s rather than the default 2 min.
            ("GATEWAY__UPSTREAM__DEFAULT_DEADLINE", "2s"),
            ("GATEWAY__IDEMPOTENCY__IN_FLIGHT_TIMEOUT", "3s"),
        ];
        out.push(GatewayProcess::spawn(upstream, &env).await);
    }
    out
}

fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = req(message);
    r.metadata_mut()
        .insert("idempotency-key", MetadataValue::try_from(key).unwrap());
    r
}

fn intent_for(customer: &str, key: &str) -> CreateTransactionIntentRequest {
    CreateTransactionIntentRequest {
        customer_id: customer.into(),
        amount: Some(2500),
        currency: "USD".into(),
        // Lets the recording layer tell which key a POST belongs to (the
        // idempotency key itself is the gateway's, never sent to Imprint).
        network_transaction_id: Some(key.into()),
        ..Default::default()
    }
}

/// A customer of the emulator's, created through `ch`.
async fn new_customer(ch: &Channel, partner_id: &str) -> String {
    CustomerSessionServiceClient::new(ch.clone())
        .create_customer_session(req(CreateCustomerSessionRequest {
            partner_customer_id: Some(partner_id.into()),
            customer_history: Some(CustomerAccountHistory {
                first_name: Some("Rep".into()),
                last_name: Some("approve".into()),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let found = CustomerServiceClient::new(ch.clone())
        .search_customers(req(SearchCustomersRequest {
            partner_customer_id: Some(partner_id.into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.data.len(), 1);
    found.data[0].id.clone()
}

/// Reads `customer` through `ch` until the answer's `x-cache` is `want`.
async fn read_until(ch: &Channel, customer: &str, want: &str) -> Customer {
    let mut c = CustomerServiceClient::new(ch.clone());
    let start = Instant::now();
    loop {
        let r = c
            .get_customer(req(GetCustomerRequest {
                customer_id: customer.into(),
            }))
            .await
            .unwrap();
        let x = r
            .metadata()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if x.as_deref() == Some(want) {
            return r.into_inner();
        }
        assert!(
            start.elapsed() < WAIT,
            "x-cache never became {want} ({x:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_redis_share_keys_events_and_cache_and_survive_kill_9() {
    let redis = RedisServer::start();
    let (upstream, rec) = emulator().await;
    let gws = replicas(&upstream, &redis).await;
    let chans: Vec<Channel> = gws.iter().map(|g| g.channel.clone()).collect();
    let customer = new_customer(&chans[0], "REPLICAS-1").await;

    // 1. An idempotency key used on replica 1 replays on replicas 2 and 3;
    //    Imprint saw one POST.
    let first = TransactionIntentServiceClient::new(chans[0].clone())
        .create_transaction_intent(keyed(intent_for(&customer, "replay-1"), "replay-1"))
        .await
        .unwrap();
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let first = first.into_inner();
    for ch in &chans[1..] {
        let again = TransactionIntentServiceClient::new(ch.clone())
            .create_transaction_intent(keyed(intent_for(&customer, "replay-1"), "replay-1"))
            .await
            .unwrap();
        assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
        assert_eq!(again.into_inner(), first);
    }
    assert_eq!(
        rec.creates_for("replay-1"),
        1,
        "one POST across three replicas"
    );
    assert_eq!(rec.posts("/v2/transaction_intents")[0].replica, Some(0));

    // 2. A webhook ingested by replica 1 reaches subscribers on 2 and 3.
    let mut streams = Vec::new();
    for ch in &chans[1..] {
        streams.push(
            EventServiceClient::new(ch.clone())
                .subscribe(req(SubscribeRequest::default()))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let body = transaction("replicas-evt-1", &customer);
    let http1 = format!("127.0.0.1:{}", gws[0].http_port);
    let (status, text) = post_signed(&http1, SECRET, &body).await;
    assert_eq!(status, 200, "{text}");
    for s in &mut streams {
        let e = next(s).await;
        assert_eq!(e.event_id, "replicas-evt-1");
        assert_eq!(e.raw_json, body);
    }

    // 3. A write through replica 1 invalidates what 2 and 3 hold.
    let path = format!("/v2/customers/{customer}");
    for ch in &chans {
        read_until(ch, &customer, "hit").await;
    }
    let reads = rec.gets(&path);
    CustomerServiceClient::new(chans[0].clone())
        .update_customer(req(UpdateCustomerRequest {
            customer_id: customer.clone(),
            email: s("replicas@example.com"),
            ..Default::default()
        }))
        .await
        .unwrap();
    for ch in &chans[1..] {
        let after = read_until(ch, &customer, "miss").await;
        assert_eq!(after.email.as_deref(), Some("replicas@example.com"));
    }
    assert_eq!(
        rec.gets(&path),
        reads + 2,
        "one read each from replicas 2 and 3"
    );

    // 4. kill -9 replica 2 mid-load.
    kill_one_mid_load(gws, &rec, &customer).await;
}

#[derive(Debug, Clone)]
enum Op {
    Create(String),
    Read,
}

#[derive(Debug)]
struct Outcome {
    op: Op,
    replica: usize,
    result: Result<(), tonic::Status>,
}

async fn run(ch: Channel, op: &Op, customer: &str) -> Result<(), tonic::Status> {
    match op {
        Op::Create(key) => {
            let mut r = keyed(intent_for(customer, key), key);
            // Long enough to outlast a dead replica's claim (3 s).
            r.set_timeout(Duration::from_secs(10));
            TransactionIntentServiceClient::new(ch)
                .create_transaction_intent(r)
                .await
                .map(drop)
        }
        Op::Read => CustomerServiceClient::new(ch)
            .get_customer(req(GetCustomerRequest {
                customer_id: customer.into(),
            }))
            .await
            .map(drop),
    }
}

async fn kill_one_mid_load(gws: Vec<GatewayProcess>, rec: &Recorder, customer: &str) {
    const VICTIM: usize = 1;
    const CALLS: usize = 60;
    let chans: Vec<Channel> = gws.iter().map(|g| g.channel.clone()).collect();
    let alive: Arc<[AtomicBool; 3]> = Arc::new(Default::default());
    for a in alive.iter() {
        a.store(true, Ordering::SeqCst);
    }
    let done = Arc::new(AtomicUsize::new(0));
    let mut gws: Vec<Option<GatewayProcess>> = gws.into_iter().map(Some).collect();
    let victim = gws[VICTIM].take().unwrap();

    // The killer: once a third of the load is done and the victim has a
    // create on the wire, it leaves the balancer and dies (SIGKILL: std's
    // Child::kill, which dropping a GatewayProcess does).
    let killer = {
        let (alive, done, rec) = (alive.clone(), done.clone(), rec.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            while done.load(Ordering::SeqCst) < CALLS / 3
                || rec.creating[VICTIM].load(Ordering::SeqCst) == 0
            {
                assert!(
                    start.elapsed() < WAIT,
                    "the victim never had a call in flight"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            alive[VICTIM].store(false, Ordering::SeqCst);
            drop(victim);
        })
    };

    // Round-robin over the replicas still in the balancer, 6 calls at a time:
    // two creates to every read.
    let ops: Vec<Op> = (0..CALLS)
        .map(|i| {
            if i % 3 == 2 {
                Op::Read
            } else {
                Op::Create(format!("load-{i}"))
            }
        })
        .collect();
    let outcomes: Vec<Outcome> = futures::stream::iter(ops.into_iter().enumerate())
        .map(|(i, op)| {
            let (chans, alive, done) = (chans.clone(), alive.clone(), done.clone());
            let customer = customer.to_owned();
            async move {
                let replica = (0..3)
                    .map(|k| (i + k) % 3)
                    .find(|&r| alive[r].load(Ordering::SeqCst))
                    .unwrap();
                let result = run(chans[replica].clone(), &op, &customer).await;
                done.fetch_add(1, Ordering::SeqCst);
                Outcome {
                    op,
                    replica,
                    result,
                }
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    killer.await.unwrap();

    // The caller saw failures only for calls on the killed replica.
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    for o in &failed {
        assert_eq!(o.replica, VICTIM, "a call on a live replica failed: {o:?}");
    }
    assert!(
        !failed.is_empty(),
        "the victim died with calls in flight, and they failed"
    );
    let served_by_victim = outcomes.iter().filter(|o| o.replica == VICTIM).count();
    assert!(
        served_by_victim < CALLS / 3,
        "it left the balancer before its round-robin share was done"
    );

    // Retrying those on the others, with the same idempotency key: reads
    // succeed; a keyed call succeeds, or, when the dead replica had claimed
    // the key (so the request may have reached Imprint), every retry is told
    // OUTCOME_UNKNOWN once the claim is older than in_flight_timeout.
    // Never a second POST.
    let mut unknown = 0;
    for (n, o) in failed.iter().enumerate() {
        let survivor = [0, 2][n % 2];
        let retried = run(chans[survivor].clone(), &o.op, customer).await;
        match (&o.op, retried) {
            (Op::Read, r) => assert!(r.is_ok(), "{r:?}"),
            (Op::Create(key), Ok(())) => assert_eq!(rec.creates_for(key), 1, "{key}"),
            (Op::Create(key), Err(s)) => {
                assert_eq!(s.code(), Code::Aborted, "{s:?}");
                assert_eq!(
                    s.get_details_error_info().unwrap().reason,
                    "OUTCOME_UNKNOWN"
                );
                assert!(rec.creates_for(key) <= 1, "{key}");
                unknown += 1;
            }
        }
    }

    // Every keyed call that succeeded made exactly one POST; no key made two.
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for p in rec.posts("/v2/transaction_intents") {
        let key = p.body["network_transaction_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *per_key.entry(key).or_default() += 1;
    }
    for (key, n) in &per_key {
        assert_eq!(*n, 1, "{key} was POSTed {n} times");
    }
    for o in &outcomes {
        if let (Op::Create(key), Ok(())) = (&o.op, &o.result) {
            assert_eq!(per_key.get(key), Some(&1), "{key}");
        }
    }
    // The victim's own POSTs were all for keys the caller either got an
    // answer for or was told were unknown.
    let victim_posts = rec
        .posts("/v2/transaction_intents")
        .into_iter()
        .filter(|p| p.replica == Some(VICTIM))
        .count();
    eprintln!(
        "kill -9 mid-load: {CALLS} calls, {} on the victim, {} failed in flight, \
         {unknown} retried as OUTCOME_UNKNOWN, {victim_posts} creates sent by the victim",
        served_by_victim,
        failed.len()
    );
}

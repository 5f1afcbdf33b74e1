//! Webhooks → event log → EventService, through the real HTTP and gRPC
//! servers: verification and refusals, dedupe, live delivery, resume,
//! slow subscribers, retention, permissions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imprint_gateway::{
    events::pb::{
        event::Payload, event_service_client::EventServiceClient, Event, EventKind,
        ListEventsRequest, StartPosition, SubscribeRequest,
    },
    sandbox::sign,
};
use tonic::{Code, Streaming};

use crate::harness::{req, tempdir, with_token, TestGateway, LIMITED_TOKEN};

pub const SECRET: &str = "whsec_events_test";
/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn transaction(event_id: &str, customer: &str) -> String {
    serde_json::json!({
        "object": "TRANSACTION",
        "data": {
            "merchant_key": "MERCHANT_ABC",
            "transaction_id": format!("txn-{event_id}"),
            "event_id": event_id,
            "customer_id": customer,
            "status": "APPROVED",
            "amount": 5000,
            "currency": "USD",
            "created_at": "2025-02-27T18:11:32.358Z",
        }
    })
    .to_string()
}

pub fn signature(secret: &str, t: &str, body: &str) -> String {
    format!("t={t},s={}", sign(secret.as_bytes(), t, body.as_bytes()))
}

/// POSTs a webhook signed now (seconds) with `secret`.
pub async fn post_signed(http: &str, secret: &str, body: &str) -> (u16, String) {
    let t = now_secs().to_string();
    post(
        http,
        Some(&signature(secret, &t, body)),
        body.as_bytes().to_vec(),
    )
    .await
}

pub async fn post(http: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{http}/webhooks/imprint"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = signature {
        r = r.header("X-IMPRINT-HMAC-SIGNATURE", s);
    }
    let resp = r.send().await.expect("webhook endpoint answers");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// Gateway with a webhook secret and its own data dir, plus extra env.
async fn gateway(extra: &[(&str, &str)]) -> (TestGateway, tempdir::Dir) {
    let data = tempdir::Dir::new();
    let dir = data.0.display().to_string();
    let mut env = vec![
        ("IMPRINT_WEBHOOK_SECRET", SECRET),
        ("GATEWAY_DATA_DIR", dir.as_str()),
    ];
    env.extend_from_slice(extra);
    let gw = TestGateway::start_with("http://127.0.0.1:9", &env).await;
    (gw, data)
}

pub async fn list(client: &mut EventServiceClient<tonic::transport::Channel>) -> Vec<Event> {
    client
        .list_events(req(ListEventsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .data
}

pub async fn next(stream: &mut Streaming<Event>) -> Event {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event within the wait")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn signed_transaction_is_delivered_once_as_a_typed_event() {
    let (gw, _data) = gateway(&[]).await;
    let http = gw.http_addr().to_string();
    let mut client = EventServiceClient::new(gw.channel.clone());
    let mut live = client
        .subscribe(req(SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();

    let body = transaction("evt-1", "cust-1");
    let (status, text) = post_signed(&http, SECRET, &body).await;
    assert_eq!(status, 200, "{text}");
    let e = next(&mut live).await;
    assert_eq!(e.kind, EventKind::Transaction as i32);
    assert_eq!(e.event_id, "evt-1");
    assert_eq!(e.raw_json, body);
    assert!(e.received_at.is_some());
    let Some(Payload::Transaction(t)) = &e.payload else {
        panic!("{e:?}")
    };
    assert_eq!((t.customer_id.as_str(), t.amount), ("cust-1", 5000));

    // Imprint retries: the same event again is 2xx and not delivered again.
    let (status, text) = post_signed(&http, SECRET, &body).await;
    assert_eq!(status, 200);
    assert!(text.contains("duplicate"), "{text}");
    // `t` in milliseconds is accepted too; the next delivery is this one.
    let body2 = transaction("evt-2", "cust-1");
    let t_ms = (now_secs() * 1000 + 123).to_string();
    let (status, _) = post(
        &http,
        Some(&signature(SECRET, &t_ms, &body2)),
        body2.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let e2 = next(&mut live).await;
    assert_eq!(e2.event_id, "evt-2");
    assert!(e2.cursor.parse::<u64>().unwrap() > e.cursor.parse::<u64>().unwrap());
    assert_eq!(list(&mut client).await.len(), 2);

    // An unknown kind is verified, stored and delivered, never refused.
    let odd = r#"{"object":"SOMETHING_NEW","data":{"customer_id":"cust-1","x":1}}"#;
    assert_eq!(post_signed(&http, SECRET, odd).await.0, 200);
    let e3 = next(&mut live).await;
    assert_eq!(e3.kind, EventKind::Unspecified as i32);
    assert_eq!(e3.raw_json, odd);
    assert!(e3.event_id.starts_with("sha256:"));

    let health: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("http://{http}/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let log = &health["dependencies"]["event_log"];
    assert_eq!(log["ok"], true, "{health}");
    assert!(
        log["backend"].as_str().unwrap().starts_with("redb"),
        "{health}"
    );
    // (`head` is as of the last refresh, every 2 s: not checked here.)
}

#[tokio::test]
async fn refusals_store_nothing() {
    let (gw, _data) = gateway(&[]).await;
    let http = gw.http_addr().to_string();
    let body = transaction("evt-r", "c");
    let now = now_secs();
    let sig = |t: u64, b: &str| signature(SECRET, &t.to_string(), b);
    let cases: Vec<(&str, Option<String>, Vec<u8>, u16)> = vec![
        (
            "forged",
            Some(signature("whsec_wrong", &now.to_string(), &body)),
            body.clone().into_bytes(),
            401,
        ),
        (
            "stale",
            Some(sig(now - 600, &body)),
            body.clone().into_bytes(),
            401,
        ),
        (
            "future",
            Some(sig(now + 600, &body)),
            body.clone().into_bytes(),
            401,
        ),
        (
            "stale ms",
            Some(sig((now - 600) * 1000, &body)),
            body.clone().into_bytes(),
            401,
        ),
        ("missing header", None, body.clone().into_bytes(), 401),
        (
            "garbage header",
            Some("garbage".into()),
            body.clone().into_bytes(),
            401,
        ),
        (
            "not hex",
            Some(format!("t={now},s=zz")),
            body.clone().into_bytes(),
            401,
        ),
        (
            "non-JSON",
            Some(sig(now, "not json")),
            b"not json".to_vec(),
            400,
        ),
        (
            "duplicate keys",
            Some(sig(
                now,
                r#"{"object":"TRANSACTION","object":"REWARD","data":{}}"#,
            )),
            br#"{"object":"TRANSACTION","object":"REWARD","data":{}}"#.to_vec(),
            400,
        ),
    ];
    for (what, signature, body, expected) in cases {
        let (status, reason) = post(&http, signature.as_deref(), body).await;
        assert_eq!(status, expected, "{what}: {reason}");
        assert!(!reason.trim().is_empty(), "{what}: a reason");
        assert!(!reason.contains(SECRET));
    }
    // 2 MiB: refused by size before anything else.
    let big = format!(
        r#"{{"object":"TRANSACTION","data":{{"pad":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let (status, _) = post(&http, Some(&sig(now, &big)), big.into_bytes()).await;
    assert_eq!(status, 413);
    // Wrong content type.
    let resp = reqwest::Client::new()
        .post(format!("http://{http}/webhooks/imprint"))
        .header("content-type", "text/plain")
        .header("X-IMPRINT-HMAC-SIGNATURE", sig(now, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);

    let mut client = EventServiceClient::new(gw.channel.clone());
    assert!(list(&mut client).await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn no_secret_configured_is_503() {
    let gw = TestGateway::start_with("http://127.0.0.1:9", &[]).await;
    let body = transaction("e", "c");
    let (status, _) = post_signed(&gw.http_addr().to_string(), SECRET, &body).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn rotation_accepts_old_and_new_secret() {
    let data = tempdir::Dir::new();
    let file = data.0.join("secrets");
    std::fs::write(&file, "whsec_old\nwhsec_new\n").unwrap();
    let file = file.display().to_string();
    let dir = data.0.join("d").display().to_string();
    let gw = TestGateway::start_with(
        "http://127.0.0.1:9",
        &[
            ("IMPRINT_WEBHOOK_SECRET_FILE", file.as_str()),
            ("GATEWAY_DATA_DIR", dir.as_str()),
        ],
    )
    .await;
    let http = gw.http_addr().to_string();
    assert_eq!(
        post_signed(&http, "whsec_old", &transaction("a", "c"))
            .await
            .0,
        200
    );
    assert_eq!(
        post_signed(&http, "whsec_new", &transaction("b", "c"))
            .await
            .0,
        200
    );
    assert_eq!(
        post_signed(&http, "whsec_other", &transaction("c", "c"))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn resume_after_cursor_gets_exactly_what_followed() {
    let (gw, _data) = gateway(&[]).await;
    let http = gw.http_addr().to_string();
    let mut client = EventServiceClient::new(gw.channel.clone());
    let mut s = client
        .subscribe(req(SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    for i in 0..2 {
        assert_eq!(
            post_signed(&http, SECRET, &transaction(&format!("r{i}"), "c"))
                .await
                .0,
            200
        );
    }
    let _ = next(&mut s).await;
    let last = next(&mut s).await.cursor;
    drop(s);
    for i in 2..5 {
        assert_eq!(
            post_signed(&http, SECRET, &transaction(&format!("r{i}"), "c"))
                .await
                .0,
            200
        );
    }
    let mut s = client
        .subscribe(req(SubscribeRequest {
            after_cursor: Some(last),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(next(&mut s).await.event_id);
    }
    assert_eq!(ids, ["r2", "r3", "r4"]);
    // Then live, with no duplicate at the seam.
    assert_eq!(
        post_signed(&http, SECRET, &transaction("r5", "c")).await.0,
        200
    );
    assert_eq!(next(&mut s).await.event_id, "r5");

    // Filters: by customer and by kind.
    assert_eq!(
        post_signed(&http, SECRET, &transaction("other", "someone-else"))
            .await
            .0,
        200
    );
    let page = client
        .list_events(req(ListEventsRequest {
            customer_id: Some("someone-else".into()),
            kinds: vec![EventKind::Transaction as i32],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0].event_id, "other");
    // Paging.
    let page = client
        .list_events(req(ListEventsRequest {
            limit: Some(2),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.data.len(), 2);
    assert!(page.has_more);
    let rest = client
        .list_events(req(ListEventsRequest {
            after_cursor: Some(page.next_cursor),
            limit: Some(100),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.data.len(), 5);
    assert!(!rest.has_more);
}

#[tokio::test]
async fn slow_subscriber_is_ended_with_resource_exhausted() {
    // The smallest buffer allowed: the largest publish burst.
    let (gw, _data) = gateway(&[("GATEWAY__EVENTS__SUBSCRIBER_BUFFER", "512")]).await;
    let http = gw.http_addr().to_string();
    let mut client = EventServiceClient::new(gw.channel.clone());
    // A client that reads nothing: small HTTP/2 windows, so what the
    // network can hold for it is small too.
    let slow_channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        gw.running.as_ref().unwrap().grpc_addr()
    ))
    .unwrap()
    .initial_stream_window_size(Some(16 * 1024))
    .initial_connection_window_size(Some(64 * 1024))
    .connect()
    .await
    .unwrap();
    let mut slow = EventServiceClient::new(slow_channel)
        .subscribe(req(SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut fast = client
        .subscribe(req(SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // Large events fill the slow one's HTTP/2 window (16 KiB) at once;
    // then it falls behind by one event per post, past 512.
    let pad = "p".repeat(8 * 1024);
    let n = 560;
    for i in 0..n {
        let body = serde_json::json!({
            "object": "TRANSACTION",
            "data": {"event_id": format!("s{i}"), "customer_id": "c", "customer_metadata": {"pad": pad}}
        })
        .to_string();
        assert_eq!(post_signed(&http, SECRET, &body).await.0, 200);
        // The fast one keeps up and gets everything.
        assert_eq!(next(&mut fast).await.event_id, format!("s{i}"));
    }
    // The slow one now reads: some events, then RESOURCE_EXHAUSTED naming
    // the last cursor it was given.
    let mut last = String::new();
    let status = loop {
        match tokio::time::timeout(WAIT, slow.message())
            .await
            .expect("within the wait")
        {
            Ok(Some(e)) => last = e.cursor,
            Ok(None) => panic!("ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(&format!("cursor {last}")),
        "{status:?} / {last}"
    );
    assert!(last.parse::<u64>().unwrap() < n);
}

#[tokio::test]
async fn cursor_older_than_retention_is_out_of_range() {
    let (gw, _data) = gateway(&[
        ("GATEWAY__EVENTS__RETENTION_MAX_EVENTS", "2"),
        ("GATEWAY__EVENTS__RETENTION_INTERVAL", "\"50ms\""),
    ])
    .await;
    let http = gw.http_addr().to_string();
    let mut client = EventServiceClient::new(gw.channel.clone());
    for i in 0..5 {
        assert_eq!(
            post_signed(&http, SECRET, &transaction(&format!("o{i}"), "c"))
                .await
                .0,
            200
        );
    }
    // Wait (bounded) for retention to run.
    let start = std::time::Instant::now();
    while list(&mut client).await.len() > 2 {
        assert!(start.elapsed() < WAIT, "retention did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept = list(&mut client).await;
    assert_eq!(kept[0].cursor, "4");
    let err = client
        .subscribe(req(SubscribeRequest {
            after_cursor: Some("1".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message().contains("oldest cursor available is 4"),
        "{err:?}"
    );
    let err = client
        .list_events(req(ListEventsRequest {
            after_cursor: Some("2".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    // The cursor just before the oldest kept one is still fine.
    let ok = client
        .list_events(req(ListEventsRequest {
            after_cursor: Some("3".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.data.len(), 2);
}

#[tokio::test]
async fn callers_need_permission_for_event_service() {
    let (gw, _data) = gateway(&[]).await;
    let mut client = EventServiceClient::new(gw.channel.clone());
    let err = client
        .list_events(with_token(ListEventsRequest::default(), LIMITED_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .subscribe(with_token(SubscribeRequest::default(), LIMITED_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .list_events(tonic::Request::new(ListEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn shutdown_ends_open_subscriptions_promptly() {
    let (mut gw, _data) = gateway(&[]).await;
    let mut client = EventServiceClient::new(gw.channel.clone());
    let mut s = client
        .subscribe(req(SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let running = gw.running.take().unwrap();
    let stopped = tokio::time::timeout(WAIT, running.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown waited on the stream");
    let status = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("the stream ended")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("resume after cursor"),
        "{status:?}"
    );
}

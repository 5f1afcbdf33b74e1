//! The event log survives `kill -9` (redb, fsync before 2xx), and with
//! Redis two gateway processes share one log: ingested by A, delivered by
//! B, deduplicated across both.

use imprint_gateway::events::pb::{
    event_service_client::EventServiceClient, ListEventsRequest, StartPosition, SubscribeRequest,
};

use crate::events::{list, next, post_signed, transaction, SECRET};
use crate::harness::{req, tempdir, GatewayProcess, RedisServer};

const NOWHERE: &str = "http://127.0.0.1:9";

#[tokio::test]
async fn an_acknowledged_event_survives_kill_9() {
    let data = tempdir::Dir::new();
    let dir = data.0.display().to_string();
    let env = [
        ("IMPRINT_WEBHOOK_SECRET", SECRET),
        ("GATEWAY_DATA_DIR", dir.as_str()),
    ];
    let gw = GatewayProcess::spawn(NOWHERE, &env).await;
    let http = format!("127.0.0.1:{}", gw.http_port);
    assert_eq!(
        post_signed(&http, SECRET, &transaction("before", "c"))
            .await
            .0,
        200
    );
    let (status, text) = post_signed(&http, SECRET, &transaction("k9", "c")).await;
    assert_eq!(status, 200, "{text}");
    // Dropping a GatewayProcess is SIGKILL (std's Child::kill): no shutdown
    // code runs, right after the 2xx.
    drop(gw);

    let gw = GatewayProcess::spawn(NOWHERE, &env).await;
    let mut client = EventServiceClient::new(gw.channel.clone());
    let stored = list(&mut client).await;
    assert_eq!(
        stored
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        ["before", "k9"]
    );
    // A subscriber resuming from before it gets it.
    let mut s = client
        .subscribe(req(SubscribeRequest {
            after_cursor: Some(stored[0].cursor.clone()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut s).await.event_id, "k9");
    // And the dedupe record survived too.
    let http = format!("127.0.0.1:{}", gw.http_port);
    let (_, text) = post_signed(&http, SECRET, &transaction("k9", "c")).await;
    assert!(text.contains("duplicate"), "{text}");
}

async fn two_on(redis: &RedisServer, extra: &[(&str, &str)]) -> (GatewayProcess, GatewayProcess) {
    let mut env = vec![
        ("IMPRINT_WEBHOOK_SECRET", SECRET),
        ("GATEWAY_REDIS_URL", redis.url.as_str()),
    ];
    env.extend_from_slice(extra);
    let a = GatewayProcess::spawn(NOWHERE, &env).await;
    let b = GatewayProcess::spawn(NOWHERE, &env).await;
    (a, b)
}

#[tokio::test]
async fn two_replicas_share_one_log_on_redis() {
    let redis = RedisServer::start();
    let (a, b) = two_on(&redis, &[]).await;
    let mut on_b = EventServiceClient::new(b.channel.clone());
    let mut live_b = on_b
        .subscribe(req(SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();

    let body = transaction("shared-1", "c");
    let (status, text) = post_signed(&format!("127.0.0.1:{}", a.http_port), SECRET, &body).await;
    assert_eq!(status, 200, "{text}");
    let e = next(&mut live_b).await;
    assert_eq!(e.event_id, "shared-1");
    assert_eq!(e.raw_json, body);

    // Imprint's retry lands on B: a duplicate, not delivered again.
    let (status, text) = post_signed(&format!("127.0.0.1:{}", b.http_port), SECRET, &body).await;
    assert_eq!(status, 200);
    assert!(text.contains("duplicate"), "{text}");
    let body2 = transaction("shared-2", "c");
    assert_eq!(
        post_signed(&format!("127.0.0.1:{}", b.http_port), SECRET, &body2)
            .await
            .0,
        200
    );
    assert_eq!(next(&mut live_b).await.event_id, "shared-2");

    // Both replicas list the same two events, and history works on A.
    let mut on_a = EventServiceClient::new(a.channel.clone());
    assert_eq!(list(&mut on_a).await, list(&mut on_b).await);
    assert_eq!(list(&mut on_a).await.len(), 2);
    let mut old = on_a
        .subscribe(req(SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut old).await.event_id, "shared-1");
    assert_eq!(next(&mut old).await.event_id, "shared-2");
}

/// The documented durable setting: AOF fsync'd on every write (WAITAOF,
/// the alternative, needs Redis 7.2; CI's is older).
#[tokio::test]
async fn redis_with_an_fsync_always_aof() {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (a, _b) = two_on(&redis, &[]).await;
    let (status, text) = post_signed(
        &format!("127.0.0.1:{}", a.http_port),
        SECRET,
        &transaction("aof", "c"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let mut client = EventServiceClient::new(a.channel.clone());
    let page = client
        .list_events(req(ListEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.data.len(), 1);
}

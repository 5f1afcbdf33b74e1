//! Idempotency keys: one upstream POST per (caller, key), replays, mismatch,
//! unknown outcomes, and the same across two gateway processes sharing Redis.

use std::time::Duration;

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_session_service_client::CustomerSessionServiceClient,
    transaction_intent_service_client::TransactionIntentServiceClient, *,
};
use tonic::{metadata::MetadataValue, transport::Channel, Code};
use tonic_types::StatusExt;

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, GatewayProcess, RedisServer, Reply, TestGateway},
};

fn create(amount: i64, key: &str) -> tonic::Request<CreateTransactionIntentRequest> {
    let mut r = req(CreateTransactionIntentRequest {
        customer_id: "9B5E1EE0".into(),
        amount: Some(amount),
        currency: "USD".into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("idempotency-key", MetadataValue::try_from(key).unwrap());
    r
}

async fn fifty_concurrent(
    channels: &[Channel],
    key: &str,
) -> Vec<Result<tonic::Response<TransactionIntent>, tonic::Status>> {
    futures::future::join_all((0..50).map(|i| {
        let mut c = TransactionIntentServiceClient::new(channels[i % channels.len()].clone());
        let key = key.to_string();
        async move { c.create_transaction_intent(create(10000, &key)).await }
    }))
    .await
}

fn slow_intent() -> Reply {
    Reply::ok(intent_json()).delay(Duration::from_millis(300))
}

#[tokio::test]
async fn fifty_concurrent_duplicates_make_one_post_and_get_one_answer() {
    let up = FakeUpstream::start().await;
    let gw =
        TestGateway::start_with(&up.url(), &[("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0")]).await;
    up.on(Method::POST, "/v2/transaction_intents", slow_intent());
    let answers = fifty_concurrent(std::slice::from_ref(&gw.channel), "order-123").await;
    assert_eq!(up.requests().len(), 1, "exactly one upstream POST");
    for a in &answers {
        assert_eq!(a.as_ref().unwrap().get_ref(), &intent());
    }
    let replayed = answers
        .iter()
        .filter(|a| {
            a.as_ref()
                .unwrap()
                .metadata()
                .get("idempotent-replayed")
                .is_some()
        })
        .count();
    assert_eq!(
        replayed, 49,
        "all but the first are answered from the record"
    );

    // Later duplicate: replayed, no upstream call.
    let again = TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(create(10000, "order-123"))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.into_inner(), intent());
    assert_eq!(up.requests().len(), 1);

    // Same key, different request: refused, naming the mismatch.
    let s = TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(create(99, "order-123"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert_eq!(
        s.get_details_error_info().unwrap().reason,
        "IDEMPOTENCY_KEY_MISMATCH"
    );
    assert!(
        s.message().contains("different parameters"),
        "{}",
        s.message()
    );
    assert_eq!(up.requests().len(), 1);

    // Keys are per caller and per key: a new key runs again.
    TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(create(10000, "order-124"))
        .await
        .unwrap();
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn an_unknown_outcome_is_reported_and_never_resent() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::json(504, "gateway timeout"),
    );
    let mut c = TransactionIntentServiceClient::new(gw.channel.clone());
    for _ in 0..2 {
        let s = c
            .create_transaction_intent(create(5, "k-unknown"))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(
            s.get_details_error_info().unwrap().reason,
            "OUTCOME_UNKNOWN"
        );
        assert!(
            s.message().contains("may or may not have reached Imprint"),
            "{}",
            s.message()
        );
    }
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn a_503_releases_the_key_and_a_retry_runs() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(&up.url(), &[("GATEWAY__RETRY__MAX_ATTEMPTS", "1")]).await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::json(503, "{}"),
    )
    .on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::ok(intent_json()),
    );
    let mut c = TransactionIntentServiceClient::new(gw.channel.clone());
    assert_eq!(
        c.create_transaction_intent(create(5, "k-503"))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    c.create_transaction_intent(create(5, "k-503"))
        .await
        .unwrap();
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn a_bad_key_is_refused_before_anything_is_sent() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let long = "k".repeat(300);
    let s = TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(create(5, &long))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn client_secrets_are_not_kept_for_replays() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/customer_sessions",
        Reply::json(201, session_json()),
    );
    let mut c = CustomerSessionServiceClient::new(gw.channel.clone());
    let call = || {
        let mut r = req(CreateCustomerSessionRequest {
            partner_customer_id: Some("P1".into()),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("idempotency-key", MetadataValue::from_static("sess-1"));
        r
    };
    let first = c
        .create_customer_session(call())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.client_secret, session().client_secret);
    let replay = c
        .create_customer_session(call())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.client_secret, "", "the secret was never stored");
    assert_eq!(replay.id, first.id);
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn two_gateway_processes_sharing_redis_make_one_post() {
    let redis = RedisServer::start();
    let up = FakeUpstream::start().await;
    up.on(Method::POST, "/v2/transaction_intents", slow_intent());
    let env = [
        ("GATEWAY_REDIS_URL", redis.url.as_str()),
        ("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0"),
    ];
    let a = GatewayProcess::spawn(&up.url(), &env).await;
    let b = GatewayProcess::spawn(&up.url(), &env).await;

    let answers = fifty_concurrent(&[a.channel.clone(), b.channel.clone()], "shared-1").await;
    assert_eq!(
        up.requests().len(),
        1,
        "one POST across both replicas: {:#?} {:?}",
        up.requests(),
        answers
            .iter()
            .map(|a| a.as_ref().err().map(|s| s.message().to_string()))
            .collect::<Vec<_>>()
    );
    for r in &answers {
        assert_eq!(
            r.as_ref().expect("every duplicate answered").get_ref(),
            &intent()
        );
    }
    // A replay through the other replica, and a mismatch detected by it.
    let mut cb = TransactionIntentServiceClient::new(b.channel.clone());
    let again = cb
        .create_transaction_intent(create(10000, "shared-1"))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    let s = cb
        .create_transaction_intent(create(1, "shared-1"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn without_redis_keyed_calls_are_refused_and_nothing_is_sent() {
    let mut redis = RedisServer::start();
    let up = FakeUpstream::start().await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::ok(intent_json()),
    );
    let gw = GatewayProcess::spawn(&up.url(), &[("GATEWAY_REDIS_URL", redis.url.as_str())]).await;
    let readyz = format!("http://127.0.0.1:{}/readyz", gw.http_port);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);

    redis.stop();
    let mut c = TransactionIntentServiceClient::new(gw.channel.clone());
    let mut r = create(7, "no-redis");
    r.set_timeout(Duration::from_secs(5));
    let s = c.create_transaction_intent(r).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert_eq!(
        s.get_details_error_info().unwrap().reason,
        "STATE_STORE_UNAVAILABLE"
    );
    let api_calls = || {
        up.requests()
            .iter()
            .filter(|r| r.path.starts_with("/v2/"))
            .count()
    };
    assert_eq!(api_calls(), 0, "a keyed call never runs unrecorded");
    // Still ready (a Redis outage is shared by every replica); health says why.
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    // Health is refreshed every 2 s: wait (bounded) for it to tell.
    let healthz = format!("http://127.0.0.1:{}/healthz", gw.http_port);
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let health: serde_json::Value =
            serde_json::from_str(&reqwest::get(&healthz).await.unwrap().text().await.unwrap())
                .unwrap();
        if health["dependencies"]["state_store"]["ok"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "health never told: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Unkeyed calls do not need the store.
    let mut plain = req(CreateTransactionIntentRequest {
        customer_id: "9B5E1EE0".into(),
        amount: Some(7),
        currency: "USD".into(),
        ..Default::default()
    });
    plain.set_timeout(Duration::from_secs(5));
    c.create_transaction_intent(plain).await.unwrap();
}

#[tokio::test]
async fn starts_without_redis_and_connects_when_it_comes() {
    let up = FakeUpstream::start().await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::ok(intent_json()),
    );
    let dir = crate::harness::tempdir::Dir::new();
    let socket = dir.0.join("redis.sock");
    let url = RedisServer::url_for(&socket);
    // Nothing listens there yet: the gateway starts all the same.
    let gw = GatewayProcess::spawn(&up.url(), &[("GATEWAY_REDIS_URL", url.as_str())]).await;
    let readyz = format!("http://127.0.0.1:{}/readyz", gw.http_port);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    let mut c = TransactionIntentServiceClient::new(gw.channel.clone());
    let started = std::time::Instant::now();
    let s = c
        .create_transaction_intent(create(3, "before-redis"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert_eq!(
        s.get_details_error_info().unwrap().reason,
        "STATE_STORE_UNAVAILABLE"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "keyed calls fail fast while Redis is away"
    );
    assert!(up.requests().iter().all(|r| !r.path.starts_with("/v2/")));

    // Redis comes up: the gateway connects in the background.
    let _redis = RedisServer::start_at(socket, dir);
    let healthz = format!("http://127.0.0.1:{}/healthz", gw.http_port);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health: serde_json::Value =
            serde_json::from_str(&reqwest::get(&healthz).await.unwrap().text().await.unwrap())
                .unwrap();
        if health["dependencies"]["state_store"]["ok"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never connected: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.create_transaction_intent(create(3, "after-redis"))
        .await
        .unwrap();
    let again = c
        .create_transaction_intent(create(3, "after-redis"))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
}

//! Fault injection through the real gRPC server against a scripted upstream:
//! retries, Retry-After, the retry budget, the breaker, load shedding and
//! per-caller rate limits.

use std::time::{Duration, Instant};

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_service_client::CustomerServiceClient,
    transaction_intent_service_client::TransactionIntentServiceClient, *,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, Reply, TestGateway},
};

fn get_c1() -> tonic::Request<GetCustomerRequest> {
    req(GetCustomerRequest {
        customer_id: "C1".into(),
    })
}

fn intent() -> CreateTransactionIntentRequest {
    CreateTransactionIntentRequest {
        customer_id: "C1".into(),
        amount: Some(100),
        currency: "USD".into(),
        ..Default::default()
    }
}

fn unavailable() -> Reply {
    Reply::json(
        503,
        r#"{"error":{"type":"UNAVAILABLE","message":"try later"}}"#,
    )
}

fn md<'a>(m: &'a tonic::metadata::MetadataMap, k: &str) -> Option<&'a str> {
    m.get(k).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn get_503_then_200_succeeds_in_two_attempts() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::GET, "/v2/customers/C1", unavailable()).on(
        Method::GET,
        "/v2/customers/C1",
        Reply::ok(customer_json()),
    );
    let resp = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(get_c1())
        .await
        .unwrap();
    assert_eq!(md(resp.metadata(), "x-upstream-attempts"), Some("2"));
    assert_eq!(
        md(resp.metadata(), "x-upstream-retry-cause"),
        Some("HTTP 503")
    );
    assert_eq!(resp.into_inner(), customer());
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn a_post_that_got_a_503_is_not_sent_again() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::POST, "/v2/transaction_intents", unavailable());
    let s = TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(req(intent()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(md(s.metadata(), "x-upstream-attempts"), Some("1"));
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn a_connection_refused_post_is_sent_again() {
    // A port nobody listens on yet: the first attempts are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = TestGateway::start_with(
        &format!("http://127.0.0.1:{port}"),
        &[
            ("GATEWAY__RETRY__MAX_ATTEMPTS", "10"),
            ("GATEWAY__RETRY__BASE_BACKOFF", "\"100ms\""),
            ("GATEWAY__RETRY__MAX_BACKOFF", "\"1s\""),
        ],
    )
    .await;
    let mut client = TransactionIntentServiceClient::new(gw.channel.clone());
    let call = tokio::spawn(async move {
        let mut r = req(intent());
        r.set_timeout(Duration::from_secs(10));
        client.create_transaction_intent(r).await
    });
    // Long enough for the first attempts to be refused even on a busy machine;
    // ten attempts with back-off up to 1 s outlast it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let up = FakeUpstream::start_on(port).await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::ok(intent_json()),
    );
    let resp = call.await.unwrap().expect("succeeds once Imprint listens");
    let attempts: u32 = md(resp.metadata(), "x-upstream-attempts")
        .unwrap()
        .parse()
        .unwrap();
    assert!(attempts >= 2, "{attempts}");
    assert_eq!(
        md(resp.metadata(), "x-upstream-retry-cause"),
        Some("connection failed")
    );
    assert_eq!(
        up.requests().len(),
        1,
        "only the attempt that connected reached Imprint"
    );
}

#[tokio::test]
async fn retry_after_one_second_is_waited_for() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::json(429, "{}").header("retry-after", "1"),
    )
    .on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let start = Instant::now();
    CustomerServiceClient::new(gw.channel.clone())
        .get_customer(get_c1())
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_fails_at_once_with_retry_info() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::json(429, "{}").header("retry-after", "30"),
    );
    let mut r = get_c1();
    r.set_timeout(Duration::from_secs(3));
    let start = Instant::now();
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(r)
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert_eq!(
        s.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(30))
    );
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn the_budget_caps_retries_under_a_burst_of_failures() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__RETRY__BUDGET_PERCENT", "0.1"),
            ("GATEWAY__RETRY__BUDGET_MIN_PER_SEC", "1"),
            ("GATEWAY__RETRY__BASE_BACKOFF", "\"1ms\""),
            ("GATEWAY__BREAKER__MIN_REQUESTS", "100000"),
            ("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0"),
        ],
    )
    .await;
    up.on(Method::GET, "/v2/customers/C1", unavailable());
    let calls = 60;
    let results = futures::future::join_all((0..calls).map(|_| {
        let mut c = CustomerServiceClient::new(gw.channel.clone());
        async move { c.get_customer(get_c1()).await }
    }))
    .await;
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_err_and(|s| s.code() == Code::Unavailable)));
    let sent = up.requests().len();
    // Without a budget: 60 × 3 attempts = 180. With it: 10% of 60, plus
    // 1/s over the 10 s window.
    assert!(sent > calls, "some retries happen: {sent}");
    assert!(
        sent <= calls + 6 + 10,
        "retries are capped: {sent} requests for {calls} calls"
    );
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_probes_and_closes() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__RETRY__MAX_ATTEMPTS", "1"),
            ("GATEWAY__BREAKER__MIN_REQUESTS", "4"),
            ("GATEWAY__BREAKER__OPEN_FOR", "\"500ms\""),
        ],
    )
    .await;
    for _ in 0..4 {
        up.on(Method::GET, "/v2/customers/C1", unavailable());
    }
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    for _ in 0..4 {
        assert_eq!(
            c.get_customer(get_c1()).await.unwrap_err().code(),
            Code::Unavailable
        );
    }
    // Open: fails fast, nothing reaches Imprint, RetryInfo says when to return.
    let s = c.get_customer(get_c1()).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(s.get_details_error_info().unwrap().reason, "CIRCUIT_OPEN");
    assert!(s.get_details_retry_info().unwrap().retry_delay.unwrap() <= Duration::from_millis(500));
    assert_eq!(up.requests().len(), 4);
    // After open_for: a probe goes through, succeeds, and the breaker closes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.get_customer(get_c1()).await.unwrap();
    c.get_customer(get_c1()).await.unwrap();
    assert_eq!(up.requests().len(), 6);
}

#[tokio::test]
async fn load_beyond_the_in_flight_bound_is_shed() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__LIMITS__MAX_IN_FLIGHT", "2"),
            ("GATEWAY__LIMITS__MAX_QUEUE", "0"),
        ],
    )
    .await;
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::ok(customer_json()).delay(Duration::from_millis(500)),
    );
    let results = futures::future::join_all((0..4).map(|_| {
        let mut c = CustomerServiceClient::new(gw.channel.clone());
        async move { c.get_customer(get_c1()).await }
    }))
    .await;
    let shed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(shed.len(), 2, "{results:?}");
    for s in shed {
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.get_details_error_info().unwrap().reason, "OVERLOADED");
    }
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn callers_are_held_to_their_rate() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "1"),
            ("GATEWAY__LIMITS__CALLER_BURST", "2"),
        ],
    )
    .await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    c.get_customer(get_c1()).await.unwrap();
    c.get_customer(get_c1()).await.unwrap();
    let s = c.get_customer(get_c1()).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert_eq!(s.get_details_error_info().unwrap().reason, "RATE_LIMITED");
    let wait = s.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert_eq!(up.requests().len(), 2);
}

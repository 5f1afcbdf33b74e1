//! Requests that break the spec get Imprint's error envelopes.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn missing_required_fields_and_wrong_types() {
    let api = Api::start().await;
    let e = api
        .post(
            "/v2/transaction_intents",
            json!({"customer_id": JOHN, "amount": "12"}),
        )
        .await
        .expect(400);
    assert_eq!(e["error"], "Bad Request");
    assert_eq!(e["status"], 400);
    assert_eq!(e["path"], "/v2/transaction_intents");
    let details: Vec<String> = serde_json::from_value(e["details"].clone()).unwrap();
    assert!(
        details.contains(&"amount: must be an integer".to_string()),
        "{details:?}"
    );
    assert!(
        details.contains(&"currency: must not be null".to_string()),
        "{details:?}"
    );

    let e = api
        .post(
            "/v2/simulate_transaction_event",
            json!({"payment_method_id": JOHN_CARD, "status": "SETTLED"}),
        )
        .await
        .expect(400);
    assert!(e["details"][0]
        .as_str()
        .unwrap()
        .starts_with("status: must be one of"));

    let e = api.get("/v2/payment_methods?type=CARD").await.expect(400);
    assert_eq!(e["details"][0], "customer_id: must not be null");
    api.post("/v2/customers", json!({"ssn": "12-34"}))
        .await
        .expect(400);
    api.post("/v2/customers", json!({"date_of_birth": {"year": 1800}}))
        .await
        .expect(400);
    api.post(
        "/v2/transaction_intents",
        json!({"customer_id": JOHN, "amount": 1, "currency": "USD", "expected_date": "soon"}),
    )
    .await
    .expect(400);
    let e = api
        .send(reqwest::Method::POST, "/v2/orders", None)
        .await
        .expect(400);
    assert!(e["details"].as_array().unwrap().len() >= 3);
}

#[tokio::test]
async fn limit_must_be_at_least_one() {
    let api = Api::start().await;
    for q in ["limit=0", "limit=-3", "limit=abc"] {
        api.get(&format!("/v2/rewards?{q}")).await.expect(400);
    }
    api.get("/v2/rewards?starting_after=not-an-id")
        .await
        .expect(400);
}

#[tokio::test]
async fn order_lines_must_add_up() {
    let api = Api::start().await;
    let e = api
        .post(
            "/v2/orders",
            json!({"payment_method_id": JOHN_CARD, "partner_order_id": "o", "total_order_amount": 5,
                   "order_lines": [{"name": "x", "quantity": 2, "rate": 1, "rewards_rate": 0}]}),
        )
        .await
        .expect(400);
    assert!(e["details"][0]
        .as_str()
        .unwrap()
        .starts_with("total_order_amount"));
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let api = Api::start().await;
    let resp = api
        .client
        .post(format!("{}/v2/customer_sessions", api.running.url()))
        .basic_auth(&api.key, Some(""))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn injected_faults_and_latency() {
    use std::time::{Duration, Instant};

    use imprint_gateway::sandbox::{EmulatorConfig, FaultRule};
    let api = Api::start_with(EmulatorConfig {
        faults: vec![
            FaultRule::errors("/v2/orders", 1.0, 503),
            FaultRule::latency("/v2/rewards", Duration::from_millis(200)),
        ],
        ..EmulatorConfig::default()
    })
    .await;
    let e = api.get("/v2/orders").await.expect(503);
    assert_eq!(e["error"]["type"], "INJECTED_FAULT");
    let start = Instant::now();
    api.get("/v2/rewards").await.ok();
    assert!(start.elapsed() >= Duration::from_millis(190));
    // Other routes are untouched.
    api.get(&format!("/v2/customers/{JOHN}")).await.ok();
}

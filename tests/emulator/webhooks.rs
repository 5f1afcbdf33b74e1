//! Webhooks: signed per Imprint's notes, retried until a 2xx.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use imprint_gateway::{
    events::signature::verify,
    sandbox::{EmulatorConfig, WebhookConfig},
};
use parking_lot::Mutex;
use secrecy::SecretString;
use serde_json::json;

use crate::harness::*;

const SECRET: &str = "whsec_emulator_test";

#[derive(Default)]
struct Receiver {
    /// Answers to give, in order; then 200.
    script: Vec<u16>,
    got: Vec<(Option<String>, String)>,
}

async fn receive(
    State(r): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let sig = headers
        .get("x-imprint-hmac-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut r = r.lock();
    r.got.push((sig, body));
    let status = if r.script.is_empty() {
        200
    } else {
        r.script.remove(0)
    };
    StatusCode::from_u16(status).unwrap()
}

async fn receiver(script: Vec<u16>) -> (String, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(Receiver {
        script,
        got: Vec::new(),
    }));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

async fn with_hooks(url: &str) -> Api {
    let mut hooks = WebhookConfig::new(vec![url.to_string()], SecretString::from(SECRET));
    hooks.initial_backoff = Duration::from_millis(20);
    Api::start_with(EmulatorConfig {
        webhooks: Some(hooks),
        ..EmulatorConfig::default()
    })
    .await
}

async fn wait_for(state: &Arc<Mutex<Receiver>>, n: usize) {
    for _ in 0..300 {
        if state.lock().got.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} webhook requests, got {}",
        state.lock().got.len()
    );
}

#[tokio::test]
async fn transaction_events_are_signed_and_verifiable() {
    let (url, state) = receiver(vec![]).await;
    let api = with_hooks(&url).await;
    let ev = api
        .post(
            "/v2/simulate_transaction_event",
            json!({"payment_method_id": JOHN_CARD, "status": "APPROVED", "amount": 2000}),
        )
        .await
        .ok();
    // A TRANSACTION event and a REWARD event.
    wait_for(&state, 2).await;
    let got = state.lock().got.clone();
    let mut objects = Vec::new();
    for (sig, body) in &got {
        verify(
            SECRET.as_bytes(),
            sig.as_deref(),
            body.as_bytes(),
            SystemTime::now(),
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("{e}: {sig:?}"));
        assert!(verify(
            b"wrong",
            sig.as_deref(),
            body.as_bytes(),
            SystemTime::now(),
            Duration::from_secs(300)
        )
        .is_err());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        objects.push(v["object"].as_str().unwrap().to_string());
        if v["object"] == "TRANSACTION" {
            assert_eq!(v["data"]["transaction_id"], ev["transaction_id"]);
            assert_eq!(v["data"]["event_id"], ev["event_id"]);
            assert_eq!(v["data"]["status"], "APPROVED");
            assert_eq!(v["data"]["amount"], 2000);
        }
    }
    objects.sort();
    assert_eq!(objects, ["REWARD", "TRANSACTION"]);
}

#[tokio::test]
async fn deliveries_are_retried_until_a_2xx() {
    let (url, state) = receiver(vec![500, 503, 404]).await;
    let api = with_hooks(&url).await;
    api.post(
        &format!("/v2/customers/{JANE}/link"),
        json!({"partner_customer_id": "P-J"}),
    )
    .await
    .ok();
    wait_for(&state, 4).await;
    let got = state.lock().got.clone();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|(_, b)| b == &got[0].1),
        "the same event each time"
    );
    let deliveries = api.emulator().deliveries();
    for _ in 0..100 {
        if api.emulator().deliveries()[0].delivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = &api.emulator().deliveries()[0];
    assert!(d.delivered);
    assert_eq!(d.attempts, 4);
    assert_eq!(d.object, "CUSTOMER_LINK");
    assert_eq!(deliveries.len(), 1);
}

#[tokio::test]
async fn application_outcome_follows_the_last_name() {
    let (url, state) = receiver(vec![]).await;
    let api = with_hooks(&url).await;
    let new_session = |partner: &str, last: &str| json!({"partner_customer_id": partner, "customer_history": {"first_name": "A", "last_name": last}});
    api.send(
        reqwest::Method::POST,
        "/v2/customer_sessions",
        Some(new_session("P-A", "approve")),
    )
    .await
    .expect(201);
    // APPLICATION (OFFER_ACCEPTED) and PAYMENT_METHOD for the new card.
    wait_for(&state, 2).await;
    api.send(
        reqwest::Method::POST,
        "/v2/customer_sessions",
        Some(new_session("P-R", "Smith")),
    )
    .await
    .expect(201);
    wait_for(&state, 3).await;
    api.send(
        reqwest::Method::POST,
        "/v2/customer_sessions",
        Some(new_session("P-V", "review")),
    )
    .await
    .expect(201);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bodies: Vec<serde_json::Value> = state
        .lock()
        .got
        .iter()
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(bodies.len(), 3, "review gets no decision yet");
    let apps: Vec<_> = bodies
        .iter()
        .filter(|b| b["object"] == "APPLICATION")
        .map(|b| b["data"]["status"].clone())
        .collect();
    assert_eq!(apps, [json!("OFFER_ACCEPTED"), json!("REJECTED")]);
    assert!(bodies
        .iter()
        .any(|b| b["object"] == "PAYMENT_METHOD" && b["data"]["new_status"] == "ACTIVE"));
    let customer = api.get("/v2/customers?partner_customer_id=P-A").await.ok();
    let cid = customer["data"][0]["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/v2/customers/{cid}/payment_methods"))
            .await
            .ok()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

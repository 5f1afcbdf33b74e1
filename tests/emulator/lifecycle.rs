//! The transaction lifecycle, rewards and simulations.

use std::time::Duration;

use imprint_gateway::sandbox::EmulatorConfig;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn approved_captured_refunded_with_rewards() {
    let api = Api::start().await;
    let intent = api
        .post(
            "/v2/transaction_intents",
            json!({"customer_id": JANE, "amount": 4000, "currency": "USD"}),
        )
        .await
        .ok();
    let ev = api
        .post(
            "/v2/simulate_transaction_event",
            json!({"payment_method_id": JANE_CARD, "status": "APPROVED", "amount": 4000, "currency": "USD",
                   "purchase_method": "ONLINE", "merchant": {"name": "Target"}}),
        )
        .await
        .ok();
    assert_eq!(ev["status"], "APPROVED");
    let tid = ev["transaction_id"].as_str().unwrap().to_string();
    let txn = api.get(&format!("/v2/transactions/{tid}")).await.ok();
    assert_eq!(
        txn["intent_id"], intent["id"],
        "the matching intent is linked"
    );
    assert_eq!(txn["customer_id"], JANE);

    let reward = api
        .get(&format!(
            "/v2/rewards?transaction_event_id={}",
            ev["event_id"].as_str().unwrap()
        ))
        .await
        .ok();
    assert_eq!(reward["data"][0]["status"], "PENDING");
    assert_eq!(reward["data"][0]["amount"], 200, "5% of 4000");

    let step = |status: &'static str| json!({"payment_method_id": JANE_CARD, "transaction_id": tid, "status": status});
    assert_eq!(
        api.post("/v2/simulate_transaction_event", step("CAPTURED"))
            .await
            .ok()["status"],
        "CAPTURED"
    );
    // Delayed rewards become available when processed.
    let sim = api
        .post(
            "/v2/simulate_reward",
            json!({"customer_id": JANE, "reward_type": "DELAYED"}),
        )
        .await
        .ok();
    assert!(sim["debugging_id"].is_string());
    let balance = api
        .get(&format!("/v2/customers/{JANE}/rewards_balance"))
        .await
        .ok();
    assert_eq!(balance["reward_balance"], 200);

    assert_eq!(
        api.post("/v2/simulate_transaction_event", step("REFUNDED"))
            .await
            .ok()["status"],
        "REFUNDED"
    );
    let rewards = api.get(&format!("/v2/customers/{JANE}/rewards")).await.ok();
    assert_eq!(rewards["data"][0]["status"], "PENDING_DEDUCTION");
    assert_eq!(
        api.get(&format!("/v2/transactions/{tid}")).await.ok()["status"],
        "REFUNDED"
    );
}

#[tokio::test]
async fn illegal_transitions_are_409() {
    let api = Api::start().await;
    let ev = api
        .post(
            "/v2/simulate_transaction_event",
            json!({"payment_method_id": JOHN_CARD, "status": "APPROVED"}),
        )
        .await
        .ok();
    let tid = ev["transaction_id"].as_str().unwrap();
    let step = |status: &str| json!({"payment_method_id": JOHN_CARD, "transaction_id": tid, "status": status});
    let e = api
        .post("/v2/simulate_transaction_event", step("REFUNDED"))
        .await
        .expect(409);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("APPROVED -> REFUNDED"),
        "{e}"
    );
    assert_eq!(
        api.post("/v2/simulate_transaction_event", step("UPDATED"))
            .await
            .ok()["status"],
        "UPDATED"
    );
    assert_eq!(
        api.post("/v2/simulate_transaction_event", step("VOIDED"))
            .await
            .ok()["status"],
        "VOIDED"
    );
    api.post("/v2/simulate_transaction_event", step("CAPTURED"))
        .await
        .expect(409);
    // A new transaction must start APPROVED.
    api.post(
        "/v2/simulate_transaction_event",
        json!({"payment_method_id": JOHN_CARD, "status": "CAPTURED"}),
    )
    .await
    .expect(409);
    api.post(
        "/v2/simulate_transaction_event",
        json!({"payment_method_id": "nope", "status": "APPROVED"}),
    )
    .await
    .expect(404);
}

#[tokio::test]
async fn reward_simulations_conflict_while_running_and_check_the_product() {
    let api = Api::start_with(EmulatorConfig {
        simulation_time: Duration::from_millis(1000),
        ..EmulatorConfig::default()
    })
    .await;
    api.post(
        "/v2/simulate_reward",
        json!({"customer_id": JOHN, "reward_type": "DELAYED"}),
    )
    .await
    .ok();
    let e = api
        .post(
            "/v2/simulate_reward",
            json!({"customer_id": JOHN, "reward_type": "DELAYED"}),
        )
        .await
        .expect(409);
    assert_eq!(e["error"]["type"], "SIMULATION_IN_PROGRESS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.post(
        "/v2/simulate_reward",
        json!({"customer_id": JOHN, "reward_type": "DELAYED"}),
    )
    .await
    .ok();

    // The default product is DELAYED: statement simulations are refused.
    assert_eq!(
        api.post(
            "/v2/simulate_statement_reward",
            json!({"customer_id": JANE})
        )
        .await
        .status,
        400
    );
    assert_eq!(
        api.post(
            "/v2/simulate_reward",
            json!({"customer_id": "nope", "reward_type": "DELAYED"})
        )
        .await
        .status,
        404
    );

    let mut api = api;
    api.merchant_key = Some("mk_sandbox_statement".into());
    api.post("/v2/simulate_statement_reward", json!({"customer_id": SAM}))
        .await
        .ok();
    let balance = api
        .get(&format!("/v2/customers/{SAM}/rewards_balance"))
        .await
        .ok();
    assert_eq!(balance["reward_balance"], 2500);
    api.post(
        "/v2/simulate_reward",
        json!({"customer_id": SAM, "reward_type": "STATEMENT"}),
    )
    .await
    .expect(409);
}

#[tokio::test]
async fn simulations_are_forbidden_outside_the_sandbox() {
    let api = Api::start_with(EmulatorConfig {
        production: true,
        ..EmulatorConfig::default()
    })
    .await;
    for (path, body) in [
        (
            "/v2/simulate_transaction_event",
            json!({"payment_method_id": JOHN_CARD, "status": "APPROVED"}),
        ),
        (
            "/v2/simulate_reward",
            json!({"customer_id": JOHN, "reward_type": "DELAYED"}),
        ),
        (
            "/v2/simulate_statement_reward",
            json!({"customer_id": JOHN}),
        ),
    ] {
        let e = api.post(path, body).await.expect(403);
        assert!(
            e["error"]["message"].as_str().unwrap().contains("sandbox"),
            "{e}"
        );
    }
    // Everything else works as usual.
    api.get(&format!("/v2/customers/{JOHN}")).await.ok();
}

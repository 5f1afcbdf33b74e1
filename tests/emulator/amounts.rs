//! Huge amounts, points and counts are a 400 naming the field, never a panic
//! or a wrapped number, and the emulator keeps serving afterwards.

use imprint_gateway::sandbox::{EmulatorConfig, MAX_AMOUNT};
use serde_json::{json, Value};

use crate::harness::*;

/// The emulator's documented bound on amounts, points and counts.
const MAX: i64 = MAX_AMOUNT;

#[test]
fn the_bound_is_the_largest_integer_exact_in_json() {
    assert_eq!(MAX, (1 << 53) - 1);
}

/// Asserts a validation envelope for `path` with a detail about `field`.
#[track_caller]
/// The `ApiError` envelope the simulate endpoints answer 400 with.
fn names_enveloped(e: &Value, field: &str) {
    assert_eq!(e["error"]["type"], "BAD_REQUEST_ERROR", "{e}");
    let message = e["error"]["message"].as_str().expect("message");
    assert!(message.starts_with(&format!("{field}: ")), "{e}");
}

fn names(e: &Value, path: &str, field: &str) {
    assert_eq!(e["status"], 400, "{e}");
    assert_eq!(e["path"], path, "{e}");
    let details = e["details"].as_array().expect("details");
    assert!(
        details
            .iter()
            .filter_map(Value::as_str)
            .any(|d| d.starts_with(&format!("{field}: "))),
        "no detail names {field}: {e}"
    );
}

async fn approve(api: &Api, card: &str, amount: i64) -> String {
    let ev = api
        .post(
            "/v2/simulate_transaction_event",
            json!({"payment_method_id": card, "status": "APPROVED", "amount": amount}),
        )
        .await
        .ok();
    ev["transaction_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_transaction_of_i64_max_is_a_400() {
    let api = Api::start().await;
    let path = "/v2/simulate_transaction_event";
    let e = api
        .post(
            path,
            json!({"payment_method_id": JOHN_CARD, "status": "APPROVED", "amount": i64::MAX}),
        )
        .await
        .expect(400);
    names(&e, path, "amount");
    // Nothing was stored, and the emulator still answers.
    approve(&api, JOHN_CARD, 4000).await;
    let txns = api
        .get(&format!("/v2/customers/{JOHN}/transactions?limit=100"))
        .await
        .ok();
    assert!(
        txns["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["amount"] != json!(i64::MAX)),
        "{txns}"
    );
}

#[tokio::test]
async fn an_update_to_a_huge_amount_is_a_400_and_changes_nothing() {
    let api = Api::start().await;
    let tid = approve(&api, JOHN_CARD, 4000).await;
    let path = "/v2/simulate_transaction_event";
    let step = |status: &str, amount: i64| json!({"payment_method_id": JOHN_CARD, "transaction_id": tid, "status": status, "amount": amount});
    for status in ["UPDATED", "CAPTURED"] {
        let e = api.post(path, step(status, i64::MAX)).await.expect(400);
        names(&e, path, "amount");
    }
    let txn = api.get(&format!("/v2/transactions/{tid}")).await.ok();
    assert_eq!(txn["status"], "APPROVED");
    assert_eq!(txn["amount"], 4000);
    // The lifecycle goes on with ordinary amounts.
    api.post(path, step("UPDATED", 6000)).await.ok();
    api.post(path, step("CAPTURED", 6000)).await.ok();
    let e = api.post(path, step("REFUNDED", i64::MIN)).await.expect(400);
    names(&e, path, "amount");
    api.post(path, step("REFUNDED", 6000)).await.ok();
}

#[tokio::test]
async fn a_huge_intent_is_a_400() {
    let api = Api::start().await;
    let path = "/v2/transaction_intents";
    let e = api
        .post(
            path,
            json!({"customer_id": JOHN, "amount": i64::MAX, "currency": "USD"}),
        )
        .await
        .expect(400);
    names(&e, path, "amount");
    let intent = api
        .post(
            path,
            json!({"customer_id": JOHN, "amount": MAX, "currency": "USD"}),
        )
        .await
        .ok();
    let id = intent["id"].as_str().unwrap();
    let e = api
        .post(
            &format!("{path}/{id}"),
            json!({"customer_id": JOHN, "amount": MAX + 1, "status": "CONFIRMED",
                   "created_at": "2025-02-13T19:08:07.000Z"}),
        )
        .await
        .expect(400);
    names(&e, &format!("{path}/{id}"), "amount");
}

/// With a reward of one point per cent, two captured transactions of the
/// largest amount earn more points together than a balance can hold.
#[tokio::test]
async fn two_captures_whose_rewards_would_overflow_the_balance_are_a_400() {
    let mut config = EmulatorConfig::default();
    config.products[0].reward_rate_bps = 10_000;
    let api = Api::start_with(config).await;
    for _ in 0..2 {
        let tid = approve(&api, JANE_CARD, MAX).await;
        api.post(
            "/v2/simulate_transaction_event",
            json!({"payment_method_id": JANE_CARD, "transaction_id": tid, "status": "CAPTURED"}),
        )
        .await
        .ok();
    }
    let path = "/v2/simulate_reward";
    let e = api
        .post(path, json!({"customer_id": JANE, "reward_type": "DELAYED"}))
        .await
        .expect(400);
    names_enveloped(&e, "customer_id");
    let balance = api
        .get(&format!("/v2/customers/{JANE}/rewards_balance"))
        .await
        .ok();
    assert_eq!(balance["reward_balance"], 0, "no reward became available");
    // Another customer's simulation still runs.
    api.post(path, json!({"customer_id": JOHN, "reward_type": "DELAYED"}))
        .await
        .ok();
}

#[tokio::test]
async fn a_reward_update_that_would_overflow_the_balance_is_a_400() {
    let api = Api::start().await;
    let rewards = api.get(&format!("/v2/customers/{JOHN}/rewards")).await.ok();
    let pending = rewards["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "PENDING")
        .expect("John has a pending reward")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = api
        .get(&format!("/v2/customers/{JOHN}/rewards_balance"))
        .await
        .ok()["reward_balance"]
        .as_i64()
        .unwrap();
    assert!(before > 0, "John has an available reward");
    let path = format!("/v2/rewards/{pending}");
    for amount in [i64::MAX, MAX] {
        let e = api
            .patch(&path, json!({"amount": amount, "status": "AVAILABLE"}))
            .await
            .expect(400);
        names(&e, &path, "amount");
    }
    let balance = api
        .get(&format!("/v2/customers/{JOHN}/rewards_balance"))
        .await
        .ok();
    assert_eq!(balance["reward_balance"], before);
    let r = api
        .patch(&path, json!({"amount": 1, "status": "AVAILABLE"}))
        .await
        .ok();
    assert_eq!(r["status"], "AVAILABLE");
    let balance = api
        .get(&format!("/v2/customers/{JOHN}/rewards_balance"))
        .await
        .ok();
    assert_eq!(balance["reward_balance"], before + 1);
}

#[tokio::test]
async fn a_statement_product_with_a_huge_reward_is_a_400() {
    let mut config = EmulatorConfig::default();
    config.products[1].statement_reward = MAX;
    // Back-to-back simulations, without waiting for the first to finish.
    config.simulation_time = std::time::Duration::ZERO;
    let mut api = Api::start_with(config).await;
    api.merchant_key = Some("mk_sandbox_statement".into());
    let path = "/v2/simulate_statement_reward";
    api.post(path, json!({"customer_id": SAM})).await.ok();
    // The first fills the balance; the second would overflow it.
    let e = api
        .post(path, json!({"customer_id": SAM}))
        .await
        .expect(400);
    names_enveloped(&e, "customer_id");
    let balance = api
        .get(&format!("/v2/customers/{SAM}/rewards_balance"))
        .await
        .ok();
    assert_eq!(balance["reward_balance"], MAX);
}

fn line(quantity: i64, rate: i64, rewards_rate: i64) -> Value {
    json!({"name": "couch", "quantity": quantity, "rate": rate, "rewards_rate": rewards_rate})
}

#[tokio::test]
async fn order_lines_that_overflow_are_a_400() {
    let api = Api::start().await;
    let path = "/v2/orders";
    let order = |lines: Vec<Value>, total: i64| {
        json!({"payment_method_id": JOHN_CARD, "partner_order_id": "o-1",
               "order_lines": lines, "total_order_amount": total})
    };
    // rate × quantity overflows an i64.
    let e = api
        .post(path, order(vec![line(MAX, MAX, 0)], 1))
        .await
        .expect(400);
    names(&e, path, "order_lines[0]");
    // Each line fits; their sum does not.
    let e = api
        .post(path, order(vec![line(1, MAX, 0), line(1, MAX, 0)], 1))
        .await
        .expect(400);
    names(&e, path, "order_lines");
    let e = api
        .post(path, order(vec![line(1, i64::MAX, 0)], i64::MAX))
        .await
        .expect(400);
    names(&e, path, "total_order_amount");
    names(&e, path, "order_lines[0].rate");
    let created = api
        .post(path, order(vec![line(2, 1000, 0)], 2000))
        .await
        .ok();

    let path = "/v2/order_events";
    let event = |lines: Vec<Value>, amount: i64, rewards: i64| {
        json!({"order_id": created["id"], "type": "CAPTURED", "amount": amount,
               "rewards_amount": rewards, "network_transaction_id": "n-1", "order_lines": lines})
    };
    let e = api
        .post(path, event(vec![line(MAX, 1, MAX)], 1, 1))
        .await
        .expect(400);
    names(&e, path, "order_lines[0]");
    let e = api.post(path, event(vec![], 1, i64::MIN)).await.expect(400);
    names(&e, path, "rewards_amount");
    api.post(path, event(vec![line(2, 1000, 10)], 2000, 20))
        .await
        .ok();
}

#[tokio::test]
async fn a_date_of_birth_past_its_range_is_a_400_not_ignored() {
    let api = Api::start().await;
    let path = "/v2/customers";
    let e = api
        .post(path, json!({"date_of_birth": {"year": 99_999_999_999_i64}}))
        .await
        .expect(400);
    names(&e, path, "date_of_birth.year");
    let e = api
        .post(path, json!({"date_of_birth": {"month": 13}}))
        .await
        .expect(400);
    names(&e, path, "date_of_birth.month");
    api.post(path, json!({"date_of_birth": {"year": 1990}}))
        .await
        .ok();
}

//! Every path of the spec answers its happy case with real state.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn customers_search_get_update_and_balance() {
    let api = Api::start().await;
    let page = api
        .get("/v2/customers?partner_customer_id=PARTNER_USER_456")
        .await
        .ok();
    assert_eq!(page["total"], 1);
    assert_eq!(page["data"][0]["id"], JOHN);
    assert!(
        page["data"][0].get("ssn").is_none(),
        "the full SSN is never returned"
    );

    let by_ssn = api
        .post("/v2/customers", json!({"ssn": "987654321"}))
        .await
        .ok();
    assert_eq!(by_ssn["data"][0]["id"], JANE);
    let by_dob = api
        .post("/v2/customers", json!({"date_of_birth": {"year": 1978}}))
        .await
        .ok();
    assert_eq!(by_dob["data"][0]["id"], SAM);

    let john = api.get(&format!("/v2/customers/{JOHN}")).await.ok();
    assert_eq!(john["last_name"], "Approve");
    assert_eq!(john["statuses"]["Imprint Rewards Card"], "OPEN");

    let updated = api
        .post(
            &format!("/v2/customers/{JOHN}"),
            json!({"email": "j@new.example", "city": "Oakland", "metadata": {"tier": "gold"}}),
        )
        .await
        .ok();
    assert_eq!(updated["email"], "j@new.example");
    assert_eq!(updated["address"]["city"], "Oakland");
    assert_eq!(updated["metadata"]["tier"], "gold");
    assert_eq!(
        api.get(&format!("/v2/customers/{JOHN}")).await.ok()["email"],
        "j@new.example"
    );

    let balance = api
        .get(&format!("/v2/customers/{JOHN}/rewards_balance"))
        .await
        .ok();
    assert_eq!(balance["customer_id"], JOHN);
    assert_eq!(
        balance["reward_balance"], 250,
        "the captured seed transaction's reward"
    );
    assert_eq!(balance["reward_symbol"], "points");
}

#[tokio::test]
async fn customer_sub_resources() {
    let api = Api::start().await;
    let pms = api
        .get(&format!("/v2/customers/{JOHN}/payment_methods"))
        .await
        .ok();
    assert_eq!(pms["data"].as_array().unwrap().len(), 2);
    let intents = api
        .get(&format!("/v2/customers/{JOHN}/transaction_intents"))
        .await
        .ok();
    assert_eq!(intents["data"][0]["status"], "CONFIRMED");
    let txns = api
        .get(&format!("/v2/customers/{JOHN}/transactions"))
        .await
        .ok();
    assert_eq!(txns["total"], 2);
    let rewards = api.get(&format!("/v2/customers/{JOHN}/rewards")).await.ok();
    assert_eq!(rewards["total"], 2);
    // Most recently updated first.
    assert_eq!(rewards["data"][0]["status"], "PENDING");
    for sub in [
        "payment_methods",
        "transaction_intents",
        "transactions",
        "rewards",
        "rewards_balance",
    ] {
        let a = api.get(&format!("/v2/customers/nobody/{sub}")).await;
        assert_eq!(a.status, 404, "{sub}");
        assert_eq!(a.body["type"], "CUSTOMER_NOT_FOUND_ERROR");
    }
}

#[tokio::test]
async fn links_and_sessions() {
    let api = Api::start().await;
    let link = api
        .post(
            &format!("/v2/customers/{JANE}/link"),
            json!({"partner_customer_id": "P-JANE", "metadata": {"store_id": "s1"}}),
        )
        .await
        .ok();
    assert_eq!(link["status"], "ACTIVE");
    assert_eq!(link["metadata"]["store_id"], "s1");
    let again = api
        .post(
            &format!("/v2/customers/{JANE}/link"),
            json!({"partner_customer_id": "P-OTHER"}),
        )
        .await
        .expect(409);
    assert_eq!(again["error"]["type"], "CUSTOMER_ALREADY_LINKED");
    assert_eq!(
        again["error"]["existing_link"]["partner_customer_id"],
        "P-JANE"
    );

    let session = api
        .send(
            reqwest::Method::POST,
            "/v2/customer_sessions",
            Some(json!({"partner_customer_id": "NEW-1", "customer_history": {"first_name": "Nia", "last_name": "Review"},
                        "customer_metadata": {"loyalty_id": "L1"}, "source": "web_signup"})),
        )
        .await
        .expect(201);
    assert!(!session["client_secret"].as_str().unwrap().is_empty());
    assert_eq!(session["customer_metadata"]["loyalty_id"], "L1");
    let id = session["id"].as_str().unwrap();
    let fetched = api.get(&format!("/v2/customer_sessions/{id}")).await.ok();
    assert_eq!(fetched["id"], id);
    assert_eq!(fetched["expires_at"], session["expires_at"]);
    let created = api
        .get("/v2/customers?partner_customer_id=NEW-1")
        .await
        .ok();
    assert_eq!(created["data"][0]["first_name"], "Nia");
    assert_eq!(
        api.get("/v2/customer_sessions/nope").await.expect(404)["type"],
        "SESSION_NOT_FOUND_ERROR"
    );
}

#[tokio::test]
async fn payment_methods_intents_transactions() {
    let api = Api::start().await;
    let cards = api
        .get(&format!("/v2/payment_methods?customer_id={JOHN}&type=CARD"))
        .await
        .ok();
    assert_eq!(cards["total"], 1);
    assert_eq!(cards["data"][0]["id"], JOHN_CARD);
    let by_pan = api
        .post(
            "/v2/payment_methods",
            json!({"customer_id": JANE, "pan": "5105105105105100"}),
        )
        .await
        .ok();
    assert_eq!(by_pan["data"][0]["id"], JANE_CARD);
    let bank = api
        .get(&format!("/v2/payment_methods/{JOHN_BANK}"))
        .await
        .ok();
    assert_eq!(bank["bank_account"]["bank_name"], "Wells Fargo");

    let intent = api
        .post(
            "/v2/transaction_intents",
            json!({"customer_id": JOHN, "payment_method_id": JOHN_CARD, "amount": 1234, "currency": "USD",
                   "merchant_name": "walmart", "expected_date": "2025-03-01", "metadata": {"k": "v"}}),
        )
        .await
        .ok();
    assert_eq!(intent["status"], "CONFIRMED");
    let id = intent["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/v2/transaction_intents/{id}")).await.ok()["amount"],
        1234
    );
    let listed = api
        .get("/v2/transaction_intents?type=CONFIRMED&limit=1")
        .await
        .ok();
    assert_eq!(listed["data"][0]["id"], id, "newest first");
    assert_eq!(listed["has_more"], true);
    let updated = api
        .post(
            &format!("/v2/transaction_intents/{id}"),
            json!({"customer_id": JOHN, "amount": 999, "status": "CANCELED", "created_at": "2025-02-13T19:08:07.000Z",
                   "partner_transaction_id": "ptx-9"}),
        )
        .await
        .ok();
    assert_eq!(
        (updated["status"].clone(), updated["amount"].clone()),
        (json!("CANCELED"), json!(999))
    );
    assert_eq!(
        api.get("/v2/transaction_intents?type=CANCELED").await.ok()["total"],
        1
    );

    let txn = api
        .get("/v2/transactions/E777214A-2D11-4CAD-9E8F-E1BD71D9FE67")
        .await
        .ok();
    assert_eq!(txn["status"], "CAPTURED");
    assert_eq!(
        api.get("/v2/transactions/nope").await.expect(404)["type"],
        "TRANSACTION_NOT_FOUND_ERROR"
    );
}

#[tokio::test]
async fn rewards_and_offers() {
    let api = Api::start().await;
    let all = api.get("/v2/rewards").await.ok();
    assert_eq!(all["total"], 2);
    let event = all["data"][0]["transaction_event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let one = api
        .get(&format!("/v2/rewards?transaction_event_id={event}"))
        .await
        .ok();
    assert_eq!(one["total"], 1);
    let reward_id = one["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.get(&format!("/v2/rewards/{reward_id}")).await.ok()["id"],
        reward_id.as_str()
    );

    let pending = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "PENDING")
        .unwrap();
    let pid = pending["id"].as_str().unwrap();
    let patched = api
        .patch(
            &format!("/v2/rewards/{pid}"),
            json!({"amount": 120, "status": "AVAILABLE"}),
        )
        .await
        .ok();
    assert_eq!(
        (patched["amount"].clone(), patched["status"].clone()),
        (json!(120), json!("AVAILABLE"))
    );
    // No longer pending: further changes are refused.
    api.patch(&format!("/v2/rewards/{pid}"), json!({"amount": 1}))
        .await
        .expect(400);

    let offer = api
        .get("/v2/offers?partner_customer_id=PARTNER_USER_456")
        .await
        .ok();
    assert_eq!(offer["is_prescreened"], true);
    assert!(offer["title"].is_string() && offer["description"].is_string());
    assert_eq!(
        api.get("/v2/offers?partner_customer_id=unknown")
            .await
            .expect(404)["type"],
        "PARTNER_CUSTOMER_NOT_FOUND_ERROR"
    );
}

#[tokio::test]
async fn orders_and_order_events() {
    let api = Api::start().await;
    let line = json!({"name": "Couch", "product_url": "x", "quantity": 2, "rate": 1000, "rewards_rate": 50});
    let order = api
        .post(
            "/v2/orders",
            json!({"payment_method_id": JOHN_CARD, "partner_order_id": "o-77", "total_order_amount": 2000,
                   "total_rewards_amount": 100, "currency": "USD", "order_lines": [line]}),
        )
        .await
        .ok();
    let oid = order["id"].as_str().unwrap().to_string();
    assert_eq!(order["customer_id"], JOHN);
    let listed = api.get("/v2/orders?partner_order_id=o-77").await.ok();
    assert_eq!(listed["data"][0]["id"], oid.as_str());
    let replaced = api
        .put(
            &format!("/v2/orders/{oid}"),
            json!({"payment_method_id": JOHN_CARD, "partner_order_id": "o-77", "total_order_amount": 3000}),
        )
        .await
        .ok();
    assert_eq!(replaced["total_order_amount"], 3000);
    assert_eq!(replaced["created_at"], order["created_at"]);

    let event = api
        .post(
            "/v2/order_events",
            json!({"order_id": oid, "type": "CAPTURED", "amount": 2000, "rewards_amount": 100,
                   "network_transaction_id": "n-1", "partner_event_id": "pe-1", "order_lines": [line]}),
        )
        .await
        .ok();
    let eid = event["order_event_id"].as_str().unwrap().to_string();
    let events = api
        .get(&format!("/v2/order_events?order_id={oid}"))
        .await
        .ok();
    assert_eq!(events["data"][0]["order_event_id"], eid.as_str());
    assert_eq!(
        api.get("/v2/order_events?partner_event_id=pe-1").await.ok()["total"],
        1
    );
    assert_eq!(
        api.delete(&format!("/v2/order_events/{eid}")).await.status,
        204
    );
    assert_eq!(
        api.delete(&format!("/v2/order_events/{eid}")).await.status,
        404
    );
    assert_eq!(api.delete(&format!("/v2/orders/{oid}")).await.status, 204);
    assert_eq!(
        api.get("/v2/orders?partner_order_id=o-77").await.ok()["data"],
        json!([])
    );
}

#[tokio::test]
async fn pagination_walks_every_item_once() {
    let api = Api::start().await;
    for i in 0..7 {
        api.post(
            "/v2/transaction_intents",
            json!({"customer_id": JANE, "amount": 100 + i, "currency": "USD"}),
        )
        .await
        .ok();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("/v2/transaction_intents?limit=3&starting_after={c}"),
            None => "/v2/transaction_intents?limit=3".to_string(),
        };
        let page = api.get(&q).await.ok();
        assert_eq!(page["total"], 8, "7 new + 1 seed");
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        if page["has_more"] == false {
            break;
        }
        cursor = Some(seen.last().unwrap().clone());
    }
    assert_eq!(seen.len(), 8);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "no item twice");
}

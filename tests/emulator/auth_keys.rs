//! Authentication like Imprint's, merchant keys, and key rotation.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn basic_bearer_and_refusals() {
    let api = Api::start().await;
    let url = format!("{}/v2/customers/{JOHN}", api.running.url());
    let bearer = api
        .client
        .get(&url)
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let none = api.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = api
        .client
        .get(&url)
        .basic_auth("sk_wrong", Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = serde_json::from_str(&wrong.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "UNAUTHORIZED");
    let bad_merchant = api
        .client
        .get(&url)
        .bearer_auth(&api.key)
        .header("x-imprint-merchant-key", "mk_unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_merchant.status(), 401);
}

#[tokio::test]
async fn merchant_keys_select_products() {
    let mut api = Api::start().await;
    // Seed payment methods live in the default product...
    assert_eq!(
        api.get(&format!("/v2/payment_methods/{JOHN_CARD}"))
            .await
            .status,
        200
    );
    // ...and are not visible from the statement product.
    api.merchant_key = Some("mk_sandbox_statement".into());
    assert_eq!(
        api.get(&format!("/v2/payment_methods/{JOHN_CARD}"))
            .await
            .status,
        404
    );
    // Customers are the partner's, visible from both.
    assert_eq!(api.get(&format!("/v2/customers/{JOHN}")).await.status, 200);
}

#[tokio::test]
async fn created_key_works_at_once_deleted_key_stops_at_once() {
    let mut api = Api::start().await;
    let created = api.send(reqwest::Method::POST, "/v2/keys", None).await.ok();
    let new_key = created["key"].as_str().unwrap().to_string();
    assert!(created["created_at"].is_string());
    let old_key = std::mem::replace(&mut api.key, new_key.clone());
    assert_eq!(
        api.get(&format!("/v2/customers/{JOHN}")).await.status,
        200,
        "new key works"
    );

    // Rotation's last step: delete the old key, authenticated with it.
    api.key = old_key.clone();
    let deleted = api.delete("/v2/keys").await.ok();
    assert_eq!(deleted["key"], old_key.as_str());
    assert!(deleted["deleted_at"].is_string());
    assert_eq!(
        api.get(&format!("/v2/customers/{JOHN}")).await.status,
        401,
        "old key is dead"
    );
    assert!(!api.emulator().key_is_valid(&old_key));
    api.key = new_key;
    assert_eq!(api.get(&format!("/v2/customers/{JOHN}")).await.status, 200);
    let _ = json!({});
}

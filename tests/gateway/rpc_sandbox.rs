//! SandboxService.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{sandbox_service_client::SandboxServiceClient, *};
use serde_json::json;

use crate::{
    fixtures::*,
    harness::{assert_authenticated, req, FakeUpstream, Reply, TestGateway},
};

#[tokio::test]
async fn simulate_transaction_event() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/simulate_transaction_event",
        Reply::ok(r#"{"transaction_id":"E777214A","event_id":"EV-1","status":"APPROVED"}"#),
    );
    let got = SandboxServiceClient::new(gw.channel.clone())
        .simulate_transaction_event(req(SimulateTransactionEventRequest {
            event_id: None,
            transaction_id: None,
            payment_method_id: "7f754378".into(),
            status: TransactionStatus::Approved as i32,
            amount: Some(5000),
            currency: s("USD"),
            authorization_code: s("645432"),
            network_transaction_id: s("txn-789456"),
            purchase_method: PurchaseMethod::Chip as i32,
            merchant: Some(Merchant {
                network_id: s("234923454545"),
                name: s("Target"),
                category: None,
                category_code: s("5411"),
                address: None,
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        TransactionEvent {
            transaction_id: s("E777214A"),
            event_id: s("EV-1"),
            status: TransactionStatus::Approved as i32,
        }
    );
    let r = up.only_request();
    assert_eq!(
        r.json(),
        json!({"payment_method_id":"7f754378","status":"APPROVED","amount":5000,"currency":"USD",
               "authorization_code":"645432","network_transaction_id":"txn-789456","purchase_method":"CHIP",
               "merchant":{"network_id":"234923454545","name":"Target","category_code":"5411"}})
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn simulate_statement_reward() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/simulate_statement_reward",
        Reply::ok(r#"{"debugging_id":"E777214A-2D11"}"#),
    );
    let got = SandboxServiceClient::new(gw.channel.clone())
        .simulate_statement_reward(req(SimulateStatementRewardRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.debugging_id, s("E777214A-2D11"));
    let r = up.only_request();
    assert_eq!(r.json(), json!({"customer_id":"C1"}));
    assert_authenticated(&r);
}

#[tokio::test]
async fn simulate_reward() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/simulate_reward",
        Reply::ok(r#"{"debugging_id":"DBG-2"}"#),
    );
    let got = SandboxServiceClient::new(gw.channel.clone())
        .simulate_reward(req(SimulateRewardRequest {
            customer_id: "C1".into(),
            reward_type: SimulatedRewardType::Delayed as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.debugging_id, s("DBG-2"));
    let r = up.only_request();
    assert_eq!(
        r.json(),
        json!({"customer_id":"C1","reward_type":"DELAYED"})
    );
    assert_authenticated(&r);
}

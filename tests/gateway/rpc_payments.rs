//! PaymentMethodService, TransactionIntentService, TransactionService.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    payment_method_service_client::PaymentMethodServiceClient,
    transaction_intent_service_client::TransactionIntentServiceClient,
    transaction_service_client::TransactionServiceClient, *,
};
use serde_json::json;

use crate::{
    fixtures::*,
    harness::{assert_authenticated, req, FakeUpstream, Reply, TestGateway},
};

#[tokio::test]
async fn list_payment_methods_get_with_filters() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/payment_methods",
        Reply::ok(page(&[card_payment_method_json()], true, 3)),
    );
    let got = PaymentMethodServiceClient::new(gw.channel.clone())
        .list_payment_methods(req(ListPaymentMethodsRequest {
            customer_id: "C 1/2".into(),
            r#type: PaymentMethodType::Card as i32,
            limit: Some(1),
            starting_after: None,
            pan: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        ListPaymentMethodsResponse {
            data: vec![card_payment_method()],
            has_more: true,
            total: 3
        }
    );
    let r = up.only_request();
    assert_eq!(r.method, Method::GET);
    assert_eq!(
        r.query_pairs(),
        vec![
            ("customer_id".into(), "C 1/2".into()),
            ("type".into(), "CARD".into()),
            ("limit".into(), "1".into())
        ]
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn list_payment_methods_by_pan_posts_the_pan() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/payment_methods",
        Reply::ok(page(&[card_payment_method_json()], false, 1)),
    );
    PaymentMethodServiceClient::new(gw.channel.clone())
        .list_payment_methods(req(ListPaymentMethodsRequest {
            customer_id: "C1".into(),
            pan: s("4111111592341815"),
            ..Default::default()
        }))
        .await
        .unwrap();
    let r = up.only_request();
    assert_eq!((r.method.clone(), r.query.clone()), (Method::POST, None));
    assert_eq!(
        r.json(),
        json!({"customer_id":"C1","pan":"4111111592341815"})
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn get_payment_method() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/payment_methods/PM-LOAN",
        Reply::ok(loan_payment_method_json()),
    );
    let got = PaymentMethodServiceClient::new(gw.channel.clone())
        .get_payment_method(req(GetPaymentMethodRequest {
            payment_method_id: "PM-LOAN".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, loan_payment_method());
    assert_authenticated(&up.only_request());
}

#[tokio::test]
async fn create_transaction_intent() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::ok(intent_json()),
    );
    let got = TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(req(CreateTransactionIntentRequest {
            customer_id: "9B5E1EE0".into(),
            payment_method_id: s("DCBFC736"),
            amount: Some(10000),
            currency: "USD".into(),
            network_transaction_id: None,
            merchant_name: s("walmart"),
            merchant_address: Some(address()),
            merchant_id: s("m-1"),
            merchant_code: s("5411"),
            expected_date: s("2025-02-13"),
            metadata: st(json!({"platform_version":"2.1.0"})),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, intent());
    let r = up.only_request();
    assert_eq!(r.method, Method::POST);
    assert_eq!(
        r.json(),
        json!({
            "customer_id":"9B5E1EE0","payment_method_id":"DCBFC736","amount":10000,"currency":"USD",
            "merchant_name":"walmart","merchant_address":serde_json::from_str::<serde_json::Value>(address_json()).unwrap(),
            "merchant_id":"m-1","merchant_code":"5411","expected_date":"2025-02-13",
            "metadata":{"platform_version":"2.1.0"}
        })
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn list_transaction_intents() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/transaction_intents",
        Reply::ok(page(&[intent_json()], false, 1)),
    );
    let got = TransactionIntentServiceClient::new(gw.channel.clone())
        .list_transaction_intents(req(ListTransactionIntentsRequest {
            r#type: TransactionIntentStatus::Canceled as i32,
            limit: None,
            starting_after: s("x"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        ListTransactionIntentsResponse {
            data: vec![intent()],
            has_more: false,
            total: 1
        }
    );
    assert_eq!(
        up.only_request().query.as_deref(),
        Some("type=CANCELED&starting_after=x")
    );
}

#[tokio::test]
async fn get_transaction_intent() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/transaction_intents/5B30532B",
        Reply::ok(intent_json()),
    );
    let got = TransactionIntentServiceClient::new(gw.channel.clone())
        .get_transaction_intent(req(GetTransactionIntentRequest {
            intent_id: "5B30532B".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, intent());
    assert_authenticated(&up.only_request());
}

#[tokio::test]
async fn update_transaction_intent() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/transaction_intents/5B30532B",
        Reply::ok(intent_json()),
    );
    let got = TransactionIntentServiceClient::new(gw.channel.clone())
        .update_transaction_intent(req(UpdateTransactionIntentRequest {
            intent_id: "5B30532B".into(),
            customer_id: "9B5E1EE0".into(),
            amount: Some(100),
            status: TransactionIntentStatus::Canceled as i32,
            created_at: ts(T2, 250_000_000),
            currency: s("USD"),
            network_transaction_id: None,
            partner_transaction_id: s("ptx-1"),
            metadata: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, intent());
    let r = up.only_request();
    assert_eq!(
        r.json(),
        json!({"customer_id":"9B5E1EE0","amount":100,"status":"CANCELED",
               "created_at":"2025-02-14T10:00:00.250Z","currency":"USD","partner_transaction_id":"ptx-1"})
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn get_transaction() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/transactions/E777214A",
        Reply::ok(transaction_json()),
    );
    let got = TransactionServiceClient::new(gw.channel.clone())
        .get_transaction(req(GetTransactionRequest {
            transaction_id: "E777214A".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, transaction());
    let r = up.only_request();
    assert_eq!(r.method, Method::GET);
    assert_authenticated(&r);
}

//! An omitted required value is never sent as zero: required scalars have
//! presence (proto3 `optional` + `REQUIRED`), so "unset" is refused with a
//! BadRequest violation before any upstream call, and an explicit `0` is
//! still sent as `0`.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    order_event_service_client::OrderEventServiceClient, order_service_client::OrderServiceClient,
    transaction_intent_service_client::TransactionIntentServiceClient, *,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, Reply, TestGateway},
};

fn intent_request(amount: Option<i64>) -> CreateTransactionIntentRequest {
    CreateTransactionIntentRequest {
        customer_id: "9B5E1EE0".into(),
        amount,
        currency: "USD".into(),
        ..Default::default()
    }
}

fn order_request(total_order_amount: Option<i64>) -> CreateOrderRequest {
    CreateOrderRequest {
        payment_method_id: "0144ea84".into(),
        partner_order_id: "o-c8a1".into(),
        total_order_amount,
        ..Default::default()
    }
}

fn event_request(amount: Option<i64>) -> CreateOrderEventRequest {
    CreateOrderEventRequest {
        order_id: "77f60af4".into(),
        r#type: OrderEventType::Captured as i32,
        amount,
        network_transaction_id: "615e3ba0".into(),
        ..Default::default()
    }
}

/// INVALID_ARGUMENT with exactly one BadRequest violation, on `field`.
fn assert_missing(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, field);
    assert!(
        violations[0].description.contains("is required"),
        "{violations:?}"
    );
}

#[tokio::test]
async fn a_missing_required_amount_is_refused_without_an_upstream_call() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;

    let s = TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(req(intent_request(None)))
        .await
        .unwrap_err();
    assert_missing(&s, "amount");

    let s = OrderServiceClient::new(gw.channel.clone())
        .create_order(req(order_request(None)))
        .await
        .unwrap_err();
    assert_missing(&s, "total_order_amount");

    let s = OrderEventServiceClient::new(gw.channel.clone())
        .create_order_event(req(event_request(None)))
        .await
        .unwrap_err();
    assert_missing(&s, "amount");

    assert!(
        up.requests().is_empty(),
        "a request without its required value must not reach Imprint: {:?}",
        up.requests()
    );
}

#[tokio::test]
async fn a_missing_required_value_inside_an_order_line_is_refused_too() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let mut line = order_line();
    line.quantity = None;
    let s = OrderServiceClient::new(gw.channel.clone())
        .create_order(req(CreateOrderRequest {
            order_lines: vec![order_line(), line],
            ..order_request(Some(274999))
        }))
        .await
        .unwrap_err();
    assert_missing(&s, "order_lines[1].quantity");
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[tokio::test]
async fn an_explicit_zero_is_sent_as_zero() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::ok(intent_json()),
    );
    up.on(Method::POST, "/v2/orders", Reply::ok(order_json()));
    up.on(
        Method::POST,
        "/v2/order_events",
        Reply::ok(order_event_json()),
    );

    TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(req(intent_request(Some(0))))
        .await
        .unwrap();
    OrderServiceClient::new(gw.channel.clone())
        .create_order(req(order_request(Some(0))))
        .await
        .unwrap();
    OrderEventServiceClient::new(gw.channel.clone())
        .create_order_event(req(event_request(Some(0))))
        .await
        .unwrap();

    let sent: Vec<_> = up
        .requests()
        .into_iter()
        .map(|r| (r.path.clone(), r.json()))
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0].0, "/v2/transaction_intents");
    assert_eq!(sent[0].1["amount"], serde_json::json!(0));
    assert_eq!(sent[1].0, "/v2/orders");
    assert_eq!(sent[1].1["total_order_amount"], serde_json::json!(0));
    assert_eq!(sent[2].0, "/v2/order_events");
    assert_eq!(sent[2].1["amount"], serde_json::json!(0));
}

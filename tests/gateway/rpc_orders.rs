//! OrderService and OrderEventService.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    order_event_service_client::OrderEventServiceClient, order_service_client::OrderServiceClient,
    *,
};
use serde_json::json;

use crate::{
    fixtures::*,
    harness::{assert_authenticated, req, FakeUpstream, Reply, TestGateway},
};

fn order_body() -> serde_json::Value {
    json!({
        "customer_id":"1bb0ab64","payment_method_id":"0144ea84","partner_order_id":"o-c8a1",
        "merchant_name":"Rest Assured",
        "merchant_address":[serde_json::from_str::<serde_json::Value>(address_json()).unwrap()],
        "order_lines":[{"name":"Couch Supreme","product_url":"www.restassured.com/couch","quantity":1,"rate":274999,"rewards_rate":2500}],
        "total_order_amount":274999,"total_rewards_amount":2500,"currency":"USD"
    })
}

#[tokio::test]
async fn list_orders() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/orders",
        Reply::ok(format!(r#"{{"data":[{}]}}"#, order_json())),
    );
    let got = OrderServiceClient::new(gw.channel.clone())
        .list_orders(req(ListOrdersRequest {
            id: None,
            partner_order_id: s("o-c8a1"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        ListOrdersResponse {
            data: vec![order()],
            has_more: false,
            total: 0
        }
    );
    let r = up.only_request();
    assert_eq!(r.query.as_deref(), Some("partner_order_id=o-c8a1"));
    assert_authenticated(&r);
}

#[tokio::test]
async fn create_order() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::POST, "/v2/orders", Reply::ok(order_json()));
    let got = OrderServiceClient::new(gw.channel.clone())
        .create_order(req(CreateOrderRequest {
            customer_id: s("1bb0ab64"),
            payment_method_id: "0144ea84".into(),
            partner_order_id: "o-c8a1".into(),
            merchant_id: None,
            merchant_name: s("Rest Assured"),
            merchant_address: vec![address()],
            order_lines: vec![order_line()],
            total_order_amount: Some(274999),
            total_rewards_amount: Some(2500),
            currency: s("USD"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, order());
    let r = up.only_request();
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.json(), order_body());
    assert_authenticated(&r);
}

#[tokio::test]
async fn update_order_is_a_put() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::PUT, "/v2/orders/77f60af4", Reply::ok(order_json()));
    let got = OrderServiceClient::new(gw.channel.clone())
        .update_order(req(UpdateOrderRequest {
            order_id: "77f60af4".into(),
            customer_id: s("1bb0ab64"),
            payment_method_id: "0144ea84".into(),
            partner_order_id: "o-c8a1".into(),
            merchant_id: None,
            merchant_name: s("Rest Assured"),
            merchant_address: vec![address()],
            order_lines: vec![order_line()],
            total_order_amount: Some(274999),
            total_rewards_amount: Some(2500),
            currency: s("USD"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, order());
    let r = up.only_request();
    assert_eq!(r.method, Method::PUT);
    assert_eq!(
        r.json(),
        order_body(),
        "the order id stays in the path only"
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn delete_order_returns_empty_on_204() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::DELETE, "/v2/orders/77f60af4", Reply::json(204, ""));
    OrderServiceClient::new(gw.channel.clone())
        .delete_order(req(DeleteOrderRequest {
            order_id: "77f60af4".into(),
        }))
        .await
        .unwrap();
    let r = up.only_request();
    assert_eq!(
        (r.method.clone(), r.body.is_empty()),
        (Method::DELETE, true)
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn list_order_events() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/order_events",
        Reply::ok(page(&[order_event_json()], true, 9)),
    );
    let got = OrderEventServiceClient::new(gw.channel.clone())
        .list_order_events(req(ListOrderEventsRequest {
            order_event_id: None,
            order_id: s("77f60af4"),
            partner_event_id: None,
            network_transaction_id: s("txn-123456"),
            limit: Some(1),
            starting_after: s("7622c07c"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        ListOrderEventsResponse {
            data: vec![order_event()],
            has_more: true,
            total: 9
        }
    );
    assert_eq!(
        up.only_request().query.as_deref(),
        Some("order_id=77f60af4&network_transaction_id=txn-123456&limit=1&starting_after=7622c07c")
    );
}

#[tokio::test]
async fn create_order_event() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/order_events",
        Reply::ok(order_event_json()),
    );
    let got = OrderEventServiceClient::new(gw.channel.clone())
        .create_order_event(req(CreateOrderEventRequest {
            order_id: "77f60af4".into(),
            partner_event_id: s("pe-1"),
            r#type: OrderEventType::Refunded as i32,
            amount: Some(274999),
            rewards_amount: Some(2500),
            currency: s("USD"),
            network_transaction_id: "615e3ba0".into(),
            order_lines: vec![order_line()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, order_event());
    let r = up.only_request();
    assert_eq!(
        r.json(),
        json!({"order_id":"77f60af4","partner_event_id":"pe-1","type":"REFUNDED","amount":274999,"rewards_amount":2500,
               "currency":"USD","network_transaction_id":"615e3ba0",
               "order_lines":[{"name":"Couch Supreme","product_url":"www.restassured.com/couch","quantity":1,"rate":274999,"rewards_rate":2500}]})
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn delete_order_event() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::DELETE,
        "/v2/order_events/7622c07d",
        Reply::json(204, ""),
    );
    OrderEventServiceClient::new(gw.channel.clone())
        .delete_order_event(req(DeleteOrderEventRequest {
            order_event_id: "7622c07d".into(),
        }))
        .await
        .unwrap();
    let r = up.only_request();
    assert_eq!(r.method, Method::DELETE);
    assert_authenticated(&r);
}

//! CustomerLinkService and CustomerSessionService.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_link_service_client::CustomerLinkServiceClient,
    customer_session_service_client::CustomerSessionServiceClient, *,
};
use serde_json::json;

use crate::{
    fixtures::*,
    harness::{assert_authenticated, req, FakeUpstream, Reply, TestGateway},
};

#[tokio::test]
async fn link_customer() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/customers/9B5E1EE0/link",
        Reply::ok(link_json()),
    );
    let got = CustomerLinkServiceClient::new(gw.channel.clone())
        .link_customer(req(LinkCustomerRequest {
            customer_id: "9B5E1EE0".into(),
            partner_customer_id: "PARTNER_USER_456".into(),
            metadata: st(json!({"store_id":"store_789"})),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, link());
    let r = up.only_request();
    assert_eq!(
        r.json(),
        json!({"partner_customer_id":"PARTNER_USER_456","metadata":{"store_id":"store_789"}})
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn create_customer_session() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/customer_sessions",
        Reply::json(201, session_json()),
    );
    let got = CustomerSessionServiceClient::new(gw.channel.clone())
        .create_customer_session(req(CreateCustomerSessionRequest {
            customer_id: None,
            partner_customer_id: s("CUST_03476998"),
            transaction_amount: Some(34000),
            transaction_currency: s("USD"),
            customer_history: Some(CustomerAccountHistory {
                email: s("a@b.co"),
                loyalty_tier: s("GOLD"),
                transaction_count: Some(100),
                ..Default::default()
            }),
            source: s("web_signup"),
            metadata: st(json!({"store_number":"123"})),
            customer_metadata: [("loyalty_id".to_string(), "840012345678".to_string())].into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, session());
    assert!(
        !format!("{got:?}").contains("QzMyNzg4"),
        "client_secret must not show in Debug"
    );
    let r = up.only_request();
    assert_eq!(
        r.json(),
        json!({"partner_customer_id":"CUST_03476998","transaction_amount":34000,"transaction_currency":"USD",
               "customer_history":{"email":"a@b.co","loyalty_tier":"GOLD","transaction_count":100},
               "source":"web_signup","metadata":{"store_number":"123"},
               "customer_metadata":{"loyalty_id":"840012345678"}})
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn get_customer_session() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/customer_sessions/SESS-1",
        Reply::ok(session_json()),
    );
    let got = CustomerSessionServiceClient::new(gw.channel.clone())
        .get_customer_session(req(GetCustomerSessionRequest {
            session_id: "SESS-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, session());
    assert_authenticated(&up.only_request());
}

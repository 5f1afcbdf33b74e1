//! Callers are denied by default and allowed only what their token allows.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_service_client::CustomerServiceClient, order_service_client::OrderServiceClient, *,
};
use tonic::Code;

use crate::{
    fixtures::*,
    harness::{with_token, FakeUpstream, Reply, TestGateway, LIMITED_TOKEN},
};

fn get_customer() -> GetCustomerRequest {
    GetCustomerRequest {
        customer_id: "C1".into(),
    }
}

#[tokio::test]
async fn no_token_or_unknown_token_is_unauthenticated() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    let s = c
        .get_customer(tonic::Request::new(get_customer()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = c
        .get_customer(with_token(get_customer(), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(!s.message().contains("wrong"), "tokens are never echoed");
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn tokens_are_scoped_to_their_methods() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    CustomerServiceClient::new(gw.channel.clone())
        .get_customer(with_token(get_customer(), LIMITED_TOKEN))
        .await
        .unwrap();
    let s = OrderServiceClient::new(gw.channel.clone())
        .delete_order(with_token(
            DeleteOrderRequest {
                order_id: "O1".into(),
            },
            LIMITED_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("customers-only"), "{}", s.message());
    assert_eq!(
        up.requests().len(),
        1,
        "the denied call never reached Imprint"
    );
}

#[tokio::test]
async fn allow_unauthenticated_lets_callers_in_without_a_token() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(&up.url(), &[("GATEWAY_ALLOW_UNAUTHENTICATED", "true")]).await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    CustomerServiceClient::new(gw.channel.clone())
        .get_customer(tonic::Request::new(get_customer()))
        .await
        .unwrap();
    // A token that is presented must still be valid.
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(with_token(get_customer(), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
}

//! Translation edge cases: hostile ids, unset vs zero, sensitive fields,
//! required fields, and the leniency rules for upstream answers.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_service_client::CustomerServiceClient,
    payment_method_service_client::PaymentMethodServiceClient,
    reward_service_client::RewardServiceClient,
    transaction_intent_service_client::TransactionIntentServiceClient, *,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, Reply, TestGateway},
};

#[tokio::test]
async fn hostile_ids_never_change_the_route() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    let cases = [
        ("a/b", "/v2/customers/a%2Fb"),
        ("x?limit=1", "/v2/customers/x%3Flimit%3D1"),
        ("x#frag", "/v2/customers/x%23frag"),
        ("../keys", "/v2/customers/..%2Fkeys"),
        ("sp ace", "/v2/customers/sp%20ace"),
        ("%2e%2e", "/v2/customers/%252e%252e"),
        ("ünï", "/v2/customers/%C3%BCn%C3%AF"),
    ];
    for (id, path) in cases {
        up.on(Method::GET, path, Reply::ok(customer_json()));
        c.get_customer(req(GetCustomerRequest {
            customer_id: id.into(),
        }))
        .await
        .unwrap_or_else(|e| panic!("{id:?}: {e:?}"));
    }
    let paths: Vec<_> = up
        .requests()
        .into_iter()
        .map(|r| (r.path, r.query))
        .collect();
    let expected: Vec<_> = cases.iter().map(|(_, p)| (p.to_string(), None)).collect();
    assert_eq!(paths, expected);
}

#[tokio::test]
async fn dot_segments_are_refused_without_an_upstream_call() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    for id in [".", ".."] {
        let s = c
            .get_customer(req(GetCustomerRequest {
                customer_id: id.into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.get_details_bad_request().unwrap().field_violations[0].field,
            "customer_id"
        );
    }
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn missing_required_fields_never_reach_upstream() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let s = TransactionIntentServiceClient::new(gw.channel.clone())
        .update_transaction_intent(req(UpdateTransactionIntentRequest {
            intent_id: "I1".into(),
            amount: Some(5),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let fields: Vec<_> = s
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["customer_id", "status", "created_at"]);
    assert!(
        s.message().contains("customer_id is required"),
        "{}",
        s.message()
    );

    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = CustomerServiceClient::new(gw.channel.clone())
        .search_customers(req(SearchCustomersRequest {
            limit: Some(0),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(
        s.get_details_bad_request().unwrap().field_violations[0].field,
        "limit"
    );
    assert!(
        up.requests().is_empty(),
        "invalid requests must not reach Imprint"
    );
}

#[tokio::test]
async fn unset_differs_from_zero_and_empty() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::PATCH, "/v2/rewards/R1", Reply::ok(reward_json()));
    let mut c = RewardServiceClient::new(gw.channel.clone());
    c.update_reward(req(UpdateRewardRequest {
        reward_id: "R1".into(),
        amount: None,
        status: 0,
    }))
    .await
    .unwrap();
    c.update_reward(req(UpdateRewardRequest {
        reward_id: "R1".into(),
        amount: Some(0),
        status: 0,
    }))
    .await
    .unwrap();
    let bodies: Vec<_> = up.requests().iter().map(|r| r.json()).collect();
    assert_eq!(
        bodies,
        [serde_json::json!({}), serde_json::json!({"amount": 0})]
    );
}

#[tokio::test]
async fn sensitive_values_never_appear_in_a_url() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/customers",
        Reply::ok(page(&[], false, 0)),
    );
    up.on(
        Method::POST,
        "/v2/payment_methods",
        Reply::ok(page(&[], false, 0)),
    );
    CustomerServiceClient::new(gw.channel.clone())
        .search_customers(req(SearchCustomersRequest {
            partner_customer_id: s("P1"),
            ssn: s("987654321"),
            limit: Some(3),
            ..Default::default()
        }))
        .await
        .unwrap();
    CustomerServiceClient::new(gw.channel.clone())
        .search_customers(req(SearchCustomersRequest {
            date_of_birth: Some(DateOfBirth {
                year: Some(1980),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    PaymentMethodServiceClient::new(gw.channel.clone())
        .list_payment_methods(req(ListPaymentMethodsRequest {
            customer_id: "C1".into(),
            r#type: PaymentMethodType::Card as i32,
            pan: s("4111111111111111"),
            ..Default::default()
        }))
        .await
        .unwrap();
    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.query, None);
        for secret in ["987654321", "1980", "4111111111111111"] {
            assert!(!r.path.contains(secret));
        }
    }
    assert_eq!(
        reqs[0].json(),
        serde_json::json!({"partner_customer_id":"P1","ssn":"987654321","limit":3})
    );
    assert_eq!(
        reqs[1].json(),
        serde_json::json!({"date_of_birth":{"year":1980}})
    );
    assert_eq!(
        reqs[2].json(),
        serde_json::json!({"customer_id":"C1","type":"CARD","pan":"4111111111111111"})
    );
}

#[tokio::test]
async fn unknown_enums_unknown_fields_nulls_and_malformed_values_are_tolerated() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/payment_methods/PM1",
        Reply::ok(
            r#"{"id":"PM1","type":"CRYPTO_WALLET","customer_id":"C1","brand_new_field":{"deep":[1,2,3]},
                "card":{"last4":1234,"network":"","card_type":"HOLOGRAPHIC","exp_month":null,
                        "tokens":[{"type":"WORLDPAY","token":"t"}, "not-an-object", {"type":"FUTURE","token":"u"}]},
                "created_at":"yesterday-ish","updated_at":"2025-02-13T21:08:07+02:00",
                "status":"ACTIVE","metadata":"not-an-object","loan":null}"#,
        ),
    );
    let got = PaymentMethodServiceClient::new(gw.channel.clone())
        .get_payment_method(req(GetPaymentMethodRequest {
            payment_method_id: "PM1".into(),
        }))
        .await
        .expect("a lenient decode succeeds")
        .into_inner();
    assert_eq!(got.id, "PM1");
    assert_eq!(
        got.r#type,
        PaymentMethodType::Unspecified as i32,
        "unknown enum → UNSPECIFIED"
    );
    let card = got.card.unwrap();
    assert_eq!(
        card.last4, "",
        "a number where a string belongs is left unset"
    );
    assert_eq!(
        card.network,
        CardNetwork::Unspecified as i32,
        "'' → UNSPECIFIED"
    );
    assert_eq!(card.card_type, CardType::Unspecified as i32);
    assert_eq!(card.exp_month, None, "null is unset");
    assert_eq!(card.tokens.len(), 2, "a non-object element is dropped");
    assert_eq!(
        card.tokens[0].r#type,
        PaymentMethodTokenType::Worldpay as i32
    );
    assert_eq!(
        card.tokens[1].r#type,
        PaymentMethodTokenType::Unspecified as i32
    );
    assert_eq!(
        got.created_at, None,
        "an unparsable timestamp is left unset"
    );
    assert_eq!(got.updated_at, ts(T1, 0), "offsets are normalised to UTC");
    assert_eq!(got.status, PaymentMethodStatus::Active as i32);
    assert_eq!(got.metadata, None);
    assert_eq!(got.loan, None);
}

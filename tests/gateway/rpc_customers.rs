//! CustomerService: every RPC, what Imprint received and what the caller got.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{customer_service_client::CustomerServiceClient, *};
use serde_json::json;

use crate::{
    fixtures::*,
    harness::{assert_authenticated, req, FakeUpstream, Reply, TestGateway},
};

async fn setup() -> (
    FakeUpstream,
    TestGateway,
    CustomerServiceClient<tonic::transport::Channel>,
) {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let client = CustomerServiceClient::new(gw.channel.clone());
    (up, gw, client)
}

#[tokio::test]
async fn search_customers_by_partner_id_is_a_get_with_query() {
    let (up, _gw, mut c) = setup().await;
    up.on(
        Method::GET,
        "/v2/customers",
        Reply::ok(page(&[&customer_json()], true, 42)),
    );
    let resp = c
        .search_customers(req(SearchCustomersRequest {
            partner_customer_id: s("PARTNER 456&x"),
            limit: Some(2),
            starting_after: s("cus_1"),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(resp.metadata().get("x-request-id").is_some());
    assert_eq!(
        resp.into_inner(),
        SearchCustomersResponse {
            data: vec![customer()],
            has_more: true,
            total: 42
        }
    );
    let r = up.only_request();
    assert_eq!(r.method, Method::GET);
    assert_eq!(
        r.query_pairs(),
        vec![
            ("partner_customer_id".into(), "PARTNER 456&x".into()),
            ("limit".into(), "2".into()),
            ("starting_after".into(), "cus_1".into())
        ]
    );
    assert!(r.body.is_empty());
    assert_authenticated(&r);
}

#[tokio::test]
async fn search_customers_with_ssn_or_birth_date_posts_them_in_the_body() {
    let (up, _gw, mut c) = setup().await;
    up.on(
        Method::POST,
        "/v2/customers",
        Reply::ok(page(&[&customer_json()], false, 1)),
    );
    let resp = c
        .search_customers(req(SearchCustomersRequest {
            ssn: s("123456789"),
            date_of_birth: Some(DateOfBirth {
                year: Some(1990),
                month: Some(1),
                day: Some(2),
            }),
            limit: Some(5),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.data, vec![customer()]);
    let r = up.only_request();
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.query, None, "nothing sensitive may be in the URL");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"ssn":"123456789","date_of_birth":{"year":1990,"month":1,"day":2},"limit":5})
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn get_customer() {
    let (up, _gw, mut c) = setup().await;
    up.on(Method::GET, "/v2/customers/C-1", Reply::ok(customer_json()));
    let got = c
        .get_customer(req(GetCustomerRequest {
            customer_id: "C-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, customer());
    let r = up.only_request();
    assert_eq!(
        (r.method.clone(), r.path.as_str(), r.query.as_deref()),
        (Method::GET, "/v2/customers/C-1", None)
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn update_customer_sends_only_set_fields() {
    let (up, _gw, mut c) = setup().await;
    up.on(
        Method::POST,
        "/v2/customers/C-1",
        Reply::ok(customer_json()),
    );
    let got = c
        .update_customer(req(UpdateCustomerRequest {
            customer_id: "C-1".into(),
            email: s("new@example.com"),
            city: s(""),
            customer_history: Some(CustomerAccountHistory {
                account_tenure: Some(13),
                ltv_amount: Some(34000),
                ltv_currency: s("USD"),
                account_created_at: ts(T1, 0),
                address: Some(Address {
                    country: s("USA"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            metadata: st(json!({"tier": 3, "ratio": 0.5, "tags": ["a"], "nothing": null})),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, customer());
    let r = up.only_request();
    assert_eq!(r.method, Method::POST);
    assert_eq!(
        r.json(),
        json!({
            "email": "new@example.com",
            "city": "",
            "customer_history": {
                "address": {"country": "USA"},
                "account_tenure": 13,
                "ltv_amount": 34000,
                "ltv_currency": "USD",
                "account_created_at": "2025-02-13T19:08:07.000Z"
            },
            "metadata": {"tier": 3, "ratio": 0.5, "tags": ["a"], "nothing": null}
        })
    );
    // Integers stay integers on the wire, not 3.0.
    assert!(String::from_utf8_lossy(&r.body).contains("\"tier\":3"));
    assert_authenticated(&r);
}

#[tokio::test]
async fn get_rewards_balance() {
    let (up, _gw, mut c) = setup().await;
    up.on(
        Method::GET,
        "/v2/customers/C-1/rewards_balance",
        Reply::ok(r#"{"customer_id":"C-1","reward_balance":120000,"reward_symbol":"points","reward_description":"Imprint points"}"#),
    );
    let got = c
        .get_rewards_balance(req(GetRewardsBalanceRequest {
            customer_id: "C-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        GetRewardsBalanceResponse {
            customer_id: "C-1".into(),
            reward_balance: 120000,
            reward_symbol: "points".into(),
            reward_description: s("Imprint points"),
        }
    );
    assert_eq!(up.only_request().method, Method::GET);
}

#[tokio::test]
async fn list_customer_payment_methods() {
    let (up, _gw, mut c) = setup().await;
    up.on(
        Method::GET,
        "/v2/customers/C-1/payment_methods",
        Reply::ok(format!(
            r#"{{"data":[{},{},{}]}}"#,
            card_payment_method_json(),
            bank_payment_method_json(),
            loan_payment_method_json()
        )),
    );
    let got = c
        .list_customer_payment_methods(req(ListCustomerPaymentMethodsRequest {
            customer_id: "C-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        ListCustomerPaymentMethodsResponse {
            data: vec![
                card_payment_method(),
                bank_payment_method(),
                loan_payment_method()
            ],
            has_more: false,
            total: 0,
        }
    );
    let r = up.only_request();
    assert_eq!((r.method, r.query), (Method::GET, None));
}

#[tokio::test]
async fn list_customer_transaction_intents() {
    let (up, _gw, mut c) = setup().await;
    up.on(
        Method::GET,
        "/v2/customers/C-1/transaction_intents",
        Reply::ok(page(&[intent_json(), intent_json()], false, 2)),
    );
    let got = c
        .list_customer_transaction_intents(req(ListCustomerTransactionIntentsRequest {
            customer_id: "C-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, vec![intent(), intent()]);
    assert_eq!((got.has_more, got.total), (false, 2));
    assert_authenticated(&up.only_request());
}

#[tokio::test]
async fn list_customer_transactions_pages() {
    let (up, _gw, mut c) = setup().await;
    up.on(
        Method::GET,
        "/v2/customers/C-1/transactions",
        Reply::ok(page(&[&transaction_json()], true, 7)),
    );
    let got = c
        .list_customer_transactions(req(ListCustomerTransactionsRequest {
            customer_id: "C-1".into(),
            limit: Some(1),
            starting_after: s("E0"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        ListCustomerTransactionsResponse {
            data: vec![transaction()],
            has_more: true,
            total: 7
        }
    );
    let r = up.only_request();
    assert_eq!(r.query.as_deref(), Some("limit=1&starting_after=E0"));
}

#[tokio::test]
async fn list_customer_rewards() {
    let (up, _gw, mut c) = setup().await;
    up.on(
        Method::GET,
        "/v2/customers/C-1/rewards",
        Reply::ok(page(&[reward_json()], false, 1)),
    );
    let got = c
        .list_customer_rewards(req(ListCustomerRewardsRequest {
            customer_id: "C-1".into(),
            limit: Some(10),
            starting_after: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, vec![reward()]);
    assert_eq!(up.only_request().query.as_deref(), Some("limit=10"));
}

//! The hardening issue's defects, each shown through the real server where a
//! caller sees it: a hanging Imprint opens the breaker under short deadlines,
//! a mutation that may have executed is UNKNOWN (never UNAVAILABLE, which
//! stock retry policies re-send), only final answers are recorded for an
//! idempotency key, an oversized answer keeps its status, and Imprint's
//! error texts never carry a sensitive request value back to the caller.

use std::time::Duration;

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_service_client::CustomerServiceClient,
    payment_method_service_client::PaymentMethodServiceClient,
    transaction_intent_service_client::TransactionIntentServiceClient, *,
};
use tonic::{metadata::MetadataValue, Code};
use tonic_types::StatusExt;

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, Reply, ResetUpstream, TestGateway},
};

fn intent() -> CreateTransactionIntentRequest {
    CreateTransactionIntentRequest {
        customer_id: "C1".into(),
        amount: Some(100),
        currency: "USD".into(),
        ..Default::default()
    }
}

fn reason(s: &tonic::Status) -> String {
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_hanging_imprint_opens_the_breaker_even_under_short_deadlines() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__BREAKER__MIN_REQUESTS", "4"),
            ("GATEWAY__UPSTREAM__ATTEMPT_TIMEOUT", "30s"),
        ],
    )
    .await;
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::ok(customer_json()).delay(Duration::from_secs(60)),
    );
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    let get = || {
        let mut r = req(GetCustomerRequest {
            customer_id: "C1".into(),
        });
        // Shorter than the 30 s attempt timeout; long enough that the
        // gateway's 50 ms margin beats the client's timer on a busy machine.
        r.set_timeout(Duration::from_secs(1));
        r
    };
    for _ in 0..4 {
        let s = c.get_customer(get()).await.unwrap_err();
        assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
        // The gateway ended it (its ErrorInfo), not the client's own timer.
        assert_eq!(reason(&s), "DEADLINE_EXCEEDED", "{s:?}");
    }
    let s = c.get_customer(get()).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert_eq!(reason(&s), "CIRCUIT_OPEN");
    assert_eq!(up.requests().len(), 4, "the open breaker spares Imprint");
}

#[tokio::test]
async fn a_post_answered_502_without_a_key_is_unknown_not_unavailable() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::json(
            502,
            r#"{"error":{"type":"BAD_GATEWAY","message":"upstream"}}"#,
        ),
    );
    let s = TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(req(intent()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unknown, "{s:?}");
    assert_eq!(reason(&s), "OUTCOME_UNKNOWN");
    assert!(s.message().contains("idempotency-key"), "{}", s.message());
    assert!(
        s.message().contains("look the result up"),
        "{}",
        s.message()
    );
    assert_eq!(up.requests().len(), 1, "never re-sent");

    // The same 502 on a read is UNAVAILABLE (and was retried).
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::json(502, r#"{"error":{"type":"BAD_GATEWAY"}}"#),
    );
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
}

#[tokio::test]
async fn a_post_reset_after_it_was_written_is_unknown() {
    let up = ResetUpstream::start().await;
    let gw = TestGateway::start_with(&up.url(), &[]).await;
    let s = TransactionIntentServiceClient::new(gw.channel.clone())
        .create_transaction_intent(req(intent()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unknown, "{s:?}");
    assert_eq!(reason(&s), "OUTCOME_UNKNOWN");
    assert_eq!(up.received(), 1, "written once, never re-sent");

    // A read reset the same way is UNAVAILABLE, after its retries.
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert_eq!(up.received(), 1 + 3, "the read was tried three times");
}

#[tokio::test]
async fn a_401_is_not_recorded_for_an_idempotency_key() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::json(
            401,
            r#"{"error":{"type":"UNAUTHORIZED","message":"bad key"}}"#,
        ),
    );
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::ok(intent_json()),
    );
    let mut c = TransactionIntentServiceClient::new(gw.channel.clone());
    let keyed = || {
        let mut r = req(intent());
        r.metadata_mut()
            .insert("idempotency-key", MetadataValue::from_static("k-401"));
        r
    };
    let s = c.create_transaction_intent(keyed()).await.unwrap_err();
    assert_eq!(
        s.code(),
        Code::Internal,
        "our credential, not the caller's: {s:?}"
    );
    // The key was released: once the credential is fixed, the call runs.
    let ok = c.create_transaction_intent(keyed()).await.unwrap();
    assert!(ok.metadata().get("idempotent-replayed").is_none());
    assert_eq!(up.requests().len(), 2);
    // And now it is final: replayed.
    let again = c.create_transaction_intent(keyed()).await.unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn an_oversized_503_is_still_a_503() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[("GATEWAY__UPSTREAM__MAX_RESPONSE_BYTES", "1024")],
    )
    .await;
    let huge = format!(
        r#"{{"error":{{"type":"UNAVAILABLE","message":"{}"}}}}"#,
        "x".repeat(8192)
    );
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::json(503, huge.clone()),
    );
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    // A 503 is retried even when its body is over the limit.
    let ok = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap();
    assert_eq!(ok.metadata().get("x-upstream-attempts").unwrap(), "2");
    assert_eq!(
        ok.metadata().get("x-upstream-retry-cause").unwrap(),
        "HTTP 503"
    );

    // And the caller's code says 503, not "undecodable answer".
    up.on(Method::GET, "/v2/customers/C2", Reply::json(503, huge));
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C2".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert_eq!(
        s.get_details_error_info().unwrap().metadata["http_status"],
        "503"
    );
}

#[tokio::test]
async fn imprint_error_texts_never_carry_a_sensitive_value_to_the_caller() {
    const SSN: &str = "078051120";
    const PAN: &str = "4242424242424242";
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    // Imprint quotes the bad input back, in each of its error shapes.
    up.on(
        Method::POST,
        "/v2/customers",
        Reply::json(
            400,
            r#"{"path":"/v2/customers","details":["ssn: 078-05-1120 is not a valid SSN","date_of_birth: 1961-07-04 is out of range"],"error":"Bad Request","status":400}"#,
        ),
    );
    up.on(
        Method::POST,
        "/v2/payment_methods",
        Reply::json(
            422,
            r#"{"error":{"type":"INVALID_PAN","message":"card 4242 4242 4242 4242 failed the check","param":"pan"}}"#,
        ),
    );
    let s = CustomerServiceClient::new(gw.channel.clone())
        .search_customers(req(SearchCustomersRequest {
            ssn: Some(SSN.into()),
            date_of_birth: Some(DateOfBirth {
                year: Some(1961),
                month: Some(7),
                day: Some(4),
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    let p = PaymentMethodServiceClient::new(gw.channel.clone())
        .list_payment_methods(req(ListPaymentMethodsRequest {
            customer_id: "C1".into(),
            pan: Some(PAN.into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    for status in [&s, &p] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        // Everything the caller gets: message, every detail, metadata.
        let seen = format!(
            "{} {:?} {:?} {:?}",
            status.message(),
            status.get_error_details(),
            status.metadata(),
            String::from_utf8_lossy(status.details())
        );
        for secret in ["078051120", "078-05-1120", "1961-07-04", "4242 4242", PAN] {
            assert!(
                !seen.contains(secret),
                "{secret} reached the caller: {seen}"
            );
        }
        assert!(seen.contains("[redacted]"), "{seen}");
    }
    // The field names survive: the caller still learns what was wrong.
    let fields: Vec<String> = s
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["ssn", "date_of_birth"]);
}

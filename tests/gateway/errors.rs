//! The contract's error table: each upstream failure → gRPC code + details.

use std::time::Duration;

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_link_service_client::CustomerLinkServiceClient,
    customer_service_client::CustomerServiceClient, sandbox_service_client::SandboxServiceClient,
    *,
};
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, Reply, TestGateway},
};

async fn get_customer_with(reply: Reply) -> tonic::Status {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::GET, "/v2/customers/C1", reply);
    let status = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap_err();
    assert!(
        status.metadata().get("x-request-id").is_some(),
        "errors carry x-request-id too"
    );
    status
}

fn error_info(status: &tonic::Status) -> tonic_types::ErrorInfo {
    status.get_details_error_info().expect("ErrorInfo detail")
}

#[tokio::test]
async fn status_400_is_invalid_argument_with_field_violations() {
    let s = get_customer_with(Reply::json(
        400,
        r#"{"path":"/v2/customers","details":["email: must be a well-formed email address"],"error":"Bad Request","status":400,"timestamp":"2025-01-20T18:18:22.923+00:00"}"#,
    ))
    .await;
    assert_eq!(s.code(), Code::InvalidArgument);
    let br = s.get_details_bad_request().expect("BadRequest detail");
    assert_eq!(br.field_violations[0].field, "email");
    assert_eq!(
        br.field_violations[0].description,
        "must be a well-formed email address"
    );
    let info = error_info(&s);
    assert_eq!(info.domain, "imprint.co");
    assert_eq!(info.metadata["http_status"], "400");
}

#[tokio::test]
async fn status_422_with_param_is_invalid_argument() {
    let s = get_customer_with(Reply::json(
        422,
        r#"{"error":{"type":"INVALID_REQUEST_ERROR","message":"limit must be >= 1","param":"limit"}}"#,
    ))
    .await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(s.message(), "limit must be >= 1");
    let info = error_info(&s);
    assert_eq!(info.reason, "INVALID_REQUEST_ERROR");
    assert_eq!(info.metadata["param"], "limit");
    let br = s.get_details_bad_request().unwrap();
    assert_eq!(br.field_violations[0].field, "limit");
}

#[tokio::test]
async fn status_401_is_internal_never_unauthenticated() {
    let s = get_customer_with(Reply::json(
        401,
        r#"{"error":{"type":"UNAUTHORIZED","message":"bad key sk_test_gateway_key"}}"#,
    ))
    .await;
    assert_eq!(s.code(), Code::Internal);
    assert!(s.message().contains("credential"), "{}", s.message());
    assert!(
        !s.message().contains("sk_test"),
        "the key never reaches the caller"
    );
}

#[tokio::test]
async fn status_403_permission_vs_sandbox_only() {
    let s = get_customer_with(Reply::json(
        403,
        r#"{"error":{"type":"FORBIDDEN","message":"not allowed"}}"#,
    ))
    .await;
    assert_eq!(s.code(), Code::PermissionDenied);

    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/simulate_reward",
        Reply::json(403, r#"{"error":{"type":"FORBIDDEN","message":"Endpoint is only available in sandbox environments"}}"#),
    );
    let s = SandboxServiceClient::new(gw.channel.clone())
        .simulate_reward(req(SimulateRewardRequest {
            customer_id: "C1".into(),
            reward_type: SimulatedRewardType::Statement as i32,
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn status_404_flat_envelope_is_not_found() {
    let s = get_customer_with(Reply::json(
        404,
        r#"{"type":"CUSTOMER_NOT_FOUND_ERROR","message":"Customer not found for provided ID: C1","param":"customer_id"}"#,
    ))
    .await;
    assert_eq!(s.code(), Code::NotFound);
    assert_eq!(s.message(), "Customer not found for provided ID: C1");
    let info = error_info(&s);
    assert_eq!(info.reason, "CUSTOMER_NOT_FOUND_ERROR");
    assert_eq!(info.metadata["param"], "customer_id");
    assert_eq!(info.metadata["http_status"], "404");
}

#[tokio::test]
async fn status_409_on_link_is_already_exists_with_the_existing_link() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::POST,
        "/v2/customers/9B5E1EE0/link",
        Reply::json(
            409,
            format!(
                r#"{{"error":{{"type":"CUSTOMER_ALREADY_LINKED","message":"Customer already linked to a partner account","existing_link":{}}}}}"#,
                link_json()
            ),
        ),
    );
    let s = CustomerLinkServiceClient::new(gw.channel.clone())
        .link_customer(req(LinkCustomerRequest {
            customer_id: "9B5E1EE0".into(),
            partner_customer_id: "OTHER".into(),
            metadata: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists);
    assert_eq!(error_info(&s).reason, "CUSTOMER_ALREADY_LINKED");
    let details = tonic_types::pb::Status::decode(s.details()).unwrap();
    let any = details
        .details
        .iter()
        .find(|a| a.type_url == "type.googleapis.com/imprint.v2.CustomerLink")
        .expect("existing link in details");
    assert_eq!(CustomerLink::decode(any.value.as_slice()).unwrap(), link());
}

#[tokio::test]
async fn status_409_elsewhere_is_aborted() {
    let s = get_customer_with(Reply::json(
        409,
        r#"{"type":"CONFLICT","message":"illegal transition"}"#,
    ))
    .await;
    assert_eq!(s.code(), Code::Aborted);
}

#[tokio::test]
async fn status_429_is_resource_exhausted_with_retry_info() {
    let s = get_customer_with(
        Reply::json(
            429,
            r#"{"error":{"type":"RATE_LIMITED","message":"slow down"}}"#,
        )
        .header("retry-after", "7"),
    )
    .await;
    assert_eq!(s.code(), Code::ResourceExhausted);
    let retry = s.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn status_5xx_are_unavailable() {
    for code in [500, 502, 503, 504] {
        let s = get_customer_with(Reply::json(code, "<html>upstream sad</html>")).await;
        assert_eq!(s.code(), Code::Unavailable, "HTTP {code}");
        assert_eq!(error_info(&s).reason, format!("HTTP_{code}"));
    }
}

#[tokio::test]
async fn connect_error_is_unavailable() {
    // A port nothing listens on: bind, take the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = TestGateway::start_with(&format!("http://127.0.0.1:{port}"), &[]).await;
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(error_info(&s).reason, "UPSTREAM_UNREACHABLE");
}

#[tokio::test]
async fn connection_reset_is_unavailable() {
    // An upstream that accepts and immediately closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            drop(sock);
        }
    });
    let gw = TestGateway::start_with(&format!("http://{addr}"), &[]).await;
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
}

#[tokio::test]
async fn undecodable_success_body_is_internal() {
    let s = get_customer_with(Reply::ok("this is not json")).await;
    assert_eq!(s.code(), Code::Internal);
    assert_eq!(error_info(&s).reason, "UPSTREAM_DECODE");
}

#[tokio::test]
async fn oversized_answers_are_refused_not_buffered() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[("GATEWAY__UPSTREAM__MAX_RESPONSE_BYTES", "1024")],
    )
    .await;
    let big = format!(r#"{{"id":"C1","first_name":"{}"}}"#, "x".repeat(4096));
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(big));
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Internal);
    assert!(s.message().contains("limit"), "{}", s.message());
}

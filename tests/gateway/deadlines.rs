//! The caller's deadline bounds the upstream call.

use std::time::{Duration, Instant};

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{customer_service_client::CustomerServiceClient, *};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, Reply, TestGateway},
};

#[tokio::test]
async fn slow_upstream_ends_at_the_callers_deadline() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::ok(customer_json()).delay(Duration::from_secs(10)),
    );
    let mut r = req(GetCustomerRequest {
        customer_id: "C1".into(),
    });
    // 1 s: the gateway answers 50 ms before the caller gives up, a margin
    // that holds on a loaded machine.
    r.set_timeout(Duration::from_secs(1));
    let start = Instant::now();
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(r)
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    // The gateway ended the call, not the client's own timer: only the
    // gateway's status carries its ErrorInfo and the request id.
    assert_eq!(
        s.get_details_error_info().map(|i| (i.reason, i.domain)),
        Some(("DEADLINE_EXCEEDED".into(), "imprint-gateway".into())),
        "{s:?}"
    );
    assert!(s.metadata().get("x-request-id").is_some(), "{s:?}");
    // Generous bound: the point is "near 1 s", not "after the 10 s upstream".
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn default_deadline_applies_when_the_caller_sends_none() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[("GATEWAY__UPSTREAM__DEFAULT_DEADLINE", "\"300ms\"")],
    )
    .await;
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::ok(customer_json()).delay(Duration::from_secs(10)),
    );
    let start = Instant::now();
    let s = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded);
    assert!(start.elapsed() < Duration::from_secs(3));
}

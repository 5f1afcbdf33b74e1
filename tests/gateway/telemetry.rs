//! Traces end to end: caller `traceparent` → SERVER span → one CLIENT span
//! per attempt → `traceparent` at Imprint, exported to a real OTLP receiver.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{customer_service_client::CustomerServiceClient, *};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::metadata::MetadataValue;

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, Reply, TestGateway},
    otlp::{attr, Collector},
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn get_c1() -> tonic::Request<GetCustomerRequest> {
    req(GetCustomerRequest {
        customer_id: "C1".into(),
    })
}

#[tokio::test]
async fn a_call_is_one_server_span_and_one_client_span_per_attempt() {
    let collector = Collector::start().await;
    let up = FakeUpstream::start().await;
    let endpoint = collector.endpoint();
    let mut gw = TestGateway::start_with(
        &up.url(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await;
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::json(503, r#"{"error":{"type":"UNAVAILABLE","message":"later"}}"#),
    )
    .on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));

    let mut request = get_c1();
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{TRACE_ID}-{CALLER_SPAN}-01")).unwrap(),
    );
    let resp = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(request)
        .await
        .unwrap();
    assert_eq!(
        resp.metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(TRACE_ID)
    );
    let request_id = resp
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();

    // Shutdown flushes: everything is exported before it returns.
    gw.running.take().unwrap().shutdown().await.unwrap();
    collector
        .wait_for("three spans", |c| c.spans().len() >= 3)
        .await;
    let spans = collector.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");

    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a SERVER span");
    assert_eq!(server.name, "imprint.v2.CustomerService/GetCustomer");
    assert_eq!(hex::encode(&server.trace_id), TRACE_ID);
    assert_eq!(hex::encode(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(attr(server, "rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(
        attr(server, "rpc.method").as_deref(),
        Some("imprint.v2.CustomerService/GetCustomer")
    );
    assert_eq!(
        attr(server, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
    assert_eq!(attr(server, "error.type"), None);
    assert_eq!(attr(server, "gateway.caller").as_deref(), Some("tester"));
    assert_eq!(
        attr(server, "gateway.request_id").as_deref(),
        Some(request_id.as_str())
    );

    let mut clients: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| attr(s, "gateway.attempt"));
    assert_eq!(clients.len(), 2);
    for (i, (client, status)) in clients.iter().zip(["503", "200"]).enumerate() {
        assert_eq!(hex::encode(&client.trace_id), TRACE_ID);
        assert_eq!(
            client.parent_span_id, server.span_id,
            "child of the SERVER span"
        );
        assert_eq!(client.name, "GET /v2/customers/{customer_id}");
        assert_eq!(attr(client, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(
            attr(client, "url.template").as_deref(),
            Some("/v2/customers/{customer_id}")
        );
        assert_eq!(attr(client, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            attr(client, "http.response.status_code").as_deref(),
            Some(status)
        );
        assert_eq!(attr(client, "gateway.attempt"), Some((i + 1).to_string()));
    }
    assert_eq!(attr(clients[0], "error.type").as_deref(), Some("503"));
    assert_eq!(attr(clients[0], "gateway.retry_cause"), None);
    assert_eq!(
        attr(clients[1], "gateway.retry_cause").as_deref(),
        Some("HTTP 503")
    );

    // Imprint saw each attempt's span as its parent, in the caller's trace.
    let sent: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.header("traceparent").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sent.len(), 2);
    for (tp, client) in sent.iter().zip(&clients) {
        assert_eq!(
            tp,
            &format!("00-{TRACE_ID}-{}-01", hex::encode(&client.span_id))
        );
    }
}

#[tokio::test]
async fn a_caller_without_traceparent_starts_a_new_trace() {
    let collector = Collector::start().await;
    let up = FakeUpstream::start().await;
    let endpoint = collector.endpoint();
    let gw = TestGateway::start_with(
        &up.url(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let resp = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(get_c1())
        .await
        .unwrap();
    let trace_id = resp
        .metadata()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "0".repeat(32));
    let tp = up.only_request().header("traceparent").unwrap().to_owned();
    assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let resp = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(get_c1())
        .await
        .unwrap();
    assert!(resp.metadata().get("x-trace-id").is_none());
    assert!(up.only_request().header("traceparent").is_none());
}

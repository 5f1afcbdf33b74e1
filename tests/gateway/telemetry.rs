//! Traces end to end: caller `traceparent` → SERVER span → one CLIENT span
//! per attempt → `traceparent` at Imprint, exported to a real OTLP receiver.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{customer_service_client::CustomerServiceClient, *};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::time::Duration;

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
    request
        .metadata_mut()
        .insert("tracestate", MetadataValue::from_static("vendor=opaque-7"));
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
    // The caller's tracestate goes along, unchanged.
    for r in up.requests() {
        assert_eq!(r.header("tracestate"), Some("vendor=opaque-7"));
    }
}

#[tokio::test]
async fn a_caller_without_traceparent_starts_a_new_trace() {
    let collector = Collector::start().await;
    let up = FakeUpstream::start().await;
    let endpoint = collector.endpoint();
    let mut gw = TestGateway::start_with(
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
    // Exporters stop with the gateway, not with the test's runtime.
    gw.running.take().unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn cache_hits_and_misses_are_events_on_the_call_span() {
    let collector = Collector::start().await;
    let up = FakeUpstream::start().await;
    let endpoint = collector.endpoint();
    let mut gw = TestGateway::start_with(
        &up.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("GATEWAY__CACHE__ENABLED", "true"),
        ],
    )
    .await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let mut client = CustomerServiceClient::new(gw.channel.clone());
    let mut trace_ids = Vec::new();
    for _ in 0..2 {
        let resp = client.get_customer(get_c1()).await.unwrap();
        let id = resp.metadata().get("x-trace-id").unwrap().to_str().unwrap();
        trace_ids.push(id.to_owned());
    }
    assert_eq!(up.requests().len(), 1, "the second call is a hit");
    gw.running.take().unwrap().shutdown().await.unwrap();
    collector
        .wait_for("two calls' spans", |c| c.spans().len() >= 3)
        .await;
    let spans = collector.spans();
    let events_of = |trace_id: &str| -> Vec<String> {
        let server = spans
            .iter()
            .find(|s| s.kind == SpanKind::Server as i32 && hex::encode(&s.trace_id) == trace_id)
            .expect("a SERVER span per call");
        server.events.iter().map(|e| e.name.clone()).collect()
    };
    assert_eq!(events_of(&trace_ids[0]), ["cache.miss"]);
    assert_eq!(events_of(&trace_ids[1]), ["cache.hit"]);
    // The miss ran in the cache's own task, still in the caller's trace.
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(clients.len(), 1, "a hit sends no attempt: {spans:#?}");
    assert_eq!(hex::encode(&clients[0].trace_id), trace_ids[0]);
    let tp = up.only_request().header("traceparent").unwrap().to_owned();
    assert_eq!(
        tp,
        format!(
            "00-{}-{}-01",
            trace_ids[0],
            hex::encode(&clients[0].span_id)
        )
    );
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

async fn scrape(gw: &TestGateway) -> String {
    let resp = reqwest::get(format!("http://{}/metrics", gw.http_addr()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The value of the sample `name{labels}` whose labels include all of `with`.
fn sample(text: &str, name: &str, with: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| with.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_known_traffic_with_bounded_labels() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "1"),
            ("GATEWAY__LIMITS__CALLER_BURST", "3"),
        ],
    )
    .await;
    let unavailable = Reply::json(503, r#"{"error":{"type":"UNAVAILABLE","message":"later"}}"#);
    up.on(Method::GET, "/v2/customers/C1", unavailable).on(
        Method::GET,
        "/v2/customers/C1",
        Reply::ok(customer_json()),
    );
    up.on(
        Method::GET,
        "/v2/customers/ID-NEVER-A-LABEL",
        Reply::ok(customer_json()),
    );
    let mut client = CustomerServiceClient::new(gw.channel.clone());
    client.get_customer(get_c1()).await.unwrap();
    client
        .get_customer(req(GetCustomerRequest {
            customer_id: "ID-NEVER-A-LABEL".into(),
        }))
        .await
        .unwrap();
    client.get_customer(get_c1()).await.unwrap();
    // The burst is spent: the fourth call is refused by the rate limit.
    let refused = client.get_customer(get_c1()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);

    let text = scrape(&gw).await;
    let get = r#"rpc_method="imprint.v2.CustomerService/GetCustomer""#;
    let route = r#"url_template="/v2/customers/{customer_id}""#;
    assert_eq!(
        sample(
            &text,
            "rpc_server_call_duration_seconds_count",
            &[get, r#"rpc_response_status_code="OK""#]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "rpc_server_call_duration_seconds_count",
            &[get, r#"rpc_response_status_code="RESOURCE_EXHAUSTED""#]
        ),
        Some(1.0),
        "{text}"
    );
    // Histogram buckets are in seconds.
    assert!(
        text.contains(r#"le="0.005""#) && text.contains(r#"le="30""#),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "http_client_request_duration_seconds_count",
            &[route, r#"http_response_status_code="200""#]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "http_client_request_duration_seconds_count",
            &[
                route,
                r#"http_response_status_code="503""#,
                r#"error_type="503""#
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "gateway_upstream_attempts_total", &[route]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "gateway_upstream_retries_total",
            &[route, r#"cause="HTTP 503""#]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "gateway_upstream_in_flight", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "gateway_ratelimit_rejected_total",
            &[r#"caller="tester""#]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "gateway_decode_anomalies_total",
            &[r#"kind="malformed""#]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "gateway_build_info",
            &[&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    // Ids never become label values.
    assert!(!text.contains("ID-NEVER-A-LABEL"), "{text}");
    assert!(!text.contains("C1\""), "{text}");
}

/// The breaker's state gauge and transition counter on `/metrics`.
fn breaker_state(text: &str, state: &str) -> Option<f64> {
    sample(
        text,
        "gateway_breaker_state",
        &[
            r#"server_address="127.0.0.1""#,
            &format!(r#"state="{state}""#),
        ],
    )
}

/// `gateway_breaker_state` is 1 for `current` and 0 for the other states.
fn assert_breaker(text: &str, current: &str) {
    for state in ["closed", "open", "half_open"] {
        let want = if state == current { 1.0 } else { 0.0 };
        assert_eq!(breaker_state(text, state), Some(want), "{state}: {text}");
    }
}

fn breaker_transitions(text: &str, from: &str, to: &str) -> Option<f64> {
    sample(
        text,
        "gateway_breaker_transitions_total",
        &[
            r#"server_address="127.0.0.1""#,
            &format!(r#"from="{from}""#),
            &format!(r#"to="{to}""#),
        ],
    )
}

#[tokio::test]
async fn breaker_state_and_transitions_are_metrics() {
    let collector = Collector::start().await;
    let up = FakeUpstream::start().await;
    let endpoint = collector.endpoint();
    let mut gw = TestGateway::start_with(
        &up.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("GATEWAY__RETRY__MAX_ATTEMPTS", "1"),
            ("GATEWAY__BREAKER__MIN_REQUESTS", "4"),
            ("GATEWAY__BREAKER__OPEN_FOR", "\"500ms\""),
        ],
    )
    .await;
    let unavailable = || Reply::json(503, r#"{"error":{"type":"UNAVAILABLE","message":"later"}}"#);
    // Four failures open it; the first probe fails, the second succeeds.
    for _ in 0..5 {
        up.on(Method::GET, "/v2/customers/C1", unavailable());
    }
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let mut client = CustomerServiceClient::new(gw.channel.clone());

    let text = scrape(&gw).await;
    assert_breaker(&text, "closed");

    for _ in 0..4 {
        client.get_customer(get_c1()).await.unwrap_err();
    }
    let refused = client.get_customer(get_c1()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(up.requests().len(), 4, "open: nothing reached Imprint");
    let text = scrape(&gw).await;
    assert_breaker(&text, "open");
    assert_eq!(
        breaker_transitions(&text, "closed", "open"),
        Some(1.0),
        "{text}"
    );

    // After open_for the first call probes (half-open); Imprint still fails.
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.get_customer(get_c1()).await.unwrap_err();
    assert_eq!(up.requests().len(), 5);
    let text = scrape(&gw).await;
    assert_breaker(&text, "open");
    assert_eq!(
        breaker_transitions(&text, "open", "half_open"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        breaker_transitions(&text, "half_open", "open"),
        Some(1.0),
        "{text}"
    );

    // The next probe succeeds: closed again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.get_customer(get_c1()).await.unwrap();
    assert_eq!(up.requests().len(), 6);
    let text = scrape(&gw).await;
    assert_breaker(&text, "closed");
    assert_eq!(
        breaker_transitions(&text, "open", "half_open"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        breaker_transitions(&text, "half_open", "closed"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        breaker_transitions(&text, "closed", "open"),
        Some(1.0),
        "{text}"
    );

    // The same instruments go out over OTLP; shutdown flushes them.
    gw.running.take().unwrap().shutdown().await.unwrap();
    collector
        .wait_for("breaker metrics", |c| {
            let names = c.metric_names();
            names.iter().any(|n| n == "gateway.breaker.state")
                && names.iter().any(|n| n == "gateway.breaker.transitions")
        })
        .await;
    let exported = collector.metrics_text();
    assert!(exported.contains("half_open"), "{exported}");
}

#[tokio::test]
async fn unknown_methods_are_one_label_value() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let mut grpc = tonic::client::Grpc::new(gw.channel.clone());
    grpc.ready().await.unwrap();
    let path =
        http::uri::PathAndQuery::from_static("/imprint.v2.CustomerService/NoSuchMethod-ID-42");
    let mut r = req(GetCustomerRequest::default());
    r.metadata_mut().remove("grpc-timeout");
    let err = grpc
        .unary::<_, GetCustomerRequest, _>(r, path, tonic_prost::ProstCodec::default())
        .await
        .unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
    let text = scrape(&gw).await;
    assert!(!text.contains("NoSuchMethod"), "{text}");
    assert!(text.contains(r#"rpc_method="_OTHER""#), "{text}");
}

#[tokio::test]
async fn the_request_log_keeps_calls_with_sensitive_fields_redacted() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    // Imprint's error echoes the SSN back.
    up.on(
        Method::POST,
        "/v2/customers",
        Reply::json(
            400,
            r#"{"error":{"type":"invalid_request","message":"bad ssn 123456789","param":"ssn"}}"#,
        ),
    );
    let err = CustomerServiceClient::new(gw.channel.clone())
        .search_customers(req(SearchCustomersRequest {
            ssn: s("123456789"),
            date_of_birth: Some(DateOfBirth {
                year: Some(1990),
                month: Some(1),
                day: Some(2),
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let log = gw.running.as_ref().unwrap().telemetry().request_log();
    let (calls, next) = log.list(&imprint_gateway::telemetry::request_log::Query {
        limit: 10,
        ..Default::default()
    });
    assert_eq!(next, None);
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.rpc, "imprint.v2.CustomerService/SearchCustomers");
    assert_eq!(call.template, "/v2/customers");
    assert_eq!(call.status, 400);
    assert_eq!(call.caller.as_ref(), "tester");
    assert_eq!(call.attempts, 1);
    for text in [&call.request_body, &call.response_body] {
        assert!(!text.contains("123456789"), "{text}");
        assert!(!text.contains("1990"), "{text}");
    }
    assert!(
        call.request_body.contains("[REDACTED]"),
        "{}",
        call.request_body
    );
}

#[tokio::test]
async fn no_secret_reaches_spans_metrics_the_request_log_or_statuses() {
    use crate::secrets_scan::*;
    use imprint_gateway::pb::imprint::v2::{
        customer_session_service_client::CustomerSessionServiceClient,
        payment_method_service_client::PaymentMethodServiceClient,
    };
    let collector = Collector::start().await;
    let up = FakeUpstream::start().await;
    let endpoint = collector.endpoint();
    let mut gw = TestGateway::start_with(
        &up.url(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await;
    // Failures that echo their input.
    up.on(
        Method::POST,
        "/v2/customers",
        Reply::json(
            400,
            format!(r#"{{"error":{{"type":"invalid_request","message":"no customer with ssn {SSN} born {DOB_YEAR}","param":"ssn"}}}}"#),
        ),
    );
    up.on(
        Method::POST,
        "/v2/payment_methods",
        Reply::ok(format!(
            r#"{{"data":[{{"id":"PM1","pci_details":{{"pan":"{PAN}","cvv":"{CVV}"}}}}],"has_more":false,"total":1}}"#
        )),
    );
    up.on(
        Method::POST,
        "/v2/customer_sessions",
        Reply::ok(session_json()),
    );

    let mut statuses = String::new();
    let searched = CustomerServiceClient::new(gw.channel.clone())
        .search_customers(req(SearchCustomersRequest {
            ssn: s(SSN),
            date_of_birth: Some(DateOfBirth {
                year: Some(DOB_YEAR),
                month: Some(3),
                day: Some(14),
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    statuses.push_str(&format!("{searched:?}\n"));
    PaymentMethodServiceClient::new(gw.channel.clone())
        .list_payment_methods(req(ListPaymentMethodsRequest {
            customer_id: "C1".into(),
            pan: s(PAN),
            ..Default::default()
        }))
        .await
        .unwrap();
    CustomerSessionServiceClient::new(gw.channel.clone())
        .create_customer_session(req(CreateCustomerSessionRequest {
            customer_id: s("C1"),
            ..Default::default()
        }))
        .await
        .unwrap();
    // A refused caller token must not echo either.
    let refused = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(crate::harness::with_token(
            GetCustomerRequest {
                customer_id: "C1".into(),
            },
            "caller-token-all-but-wrong",
        ))
        .await
        .unwrap_err();
    statuses.push_str(&format!("{refused:?}\n"));

    let scraped = scrape(&gw).await;
    let log = gw.running.as_ref().unwrap().telemetry().request_log();
    let (calls, _) = log.list(&imprint_gateway::telemetry::request_log::Query {
        limit: 100,
        ..Default::default()
    });
    assert_eq!(calls.len(), 3);
    let request_log = format!("{calls:?}");
    gw.running.take().unwrap().shutdown().await.unwrap();
    collector
        .wait_for("spans and metrics", |c| {
            c.spans().len() >= 4 && !c.metric_names().is_empty()
        })
        .await;
    assert_clean(&[
        ("exported spans", &collector.traces_text()),
        ("exported metrics", &collector.metrics_text()),
        ("GET /metrics", &scraped),
        ("request log", &request_log),
        ("error statuses", &statuses),
    ]);
    // The scanner does see a secret where one is.
    let seeded = format!("x {SSN} y");
    let caught = std::panic::catch_unwind(|| assert_clean(&[("seeded", seeded.as_str())]));
    assert!(caught.is_err());
}

/// The gateway binary with `RUST_LOG=trace`, JSON logs and OTLP export:
/// every log line of a call carries its trace id, one `call finished` line
/// per call, SIGTERM flushes spans, and no seeded secret is in the logs.
#[tokio::test]
async fn trace_level_json_logs_carry_the_trace_id_and_no_secret() {
    use crate::secrets_scan::*;
    let collector = Collector::start().await;
    let up = FakeUpstream::start().await;
    up.on(
        Method::POST,
        "/v2/customers",
        Reply::json(
            400,
            format!(
                r#"{{"error":{{"type":"invalid_request","message":"ssn {SSN}","param":"ssn"}}}}"#
            ),
        ),
    );
    let dir = crate::harness::tempdir::Dir::new();
    let tokens = dir.0.join("callers.toml");
    std::fs::write(&tokens, crate::harness::TOKENS_FILE).unwrap();
    let log_path = dir.0.join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imprint-gateway"))
        .arg("serve")
        .env("IMPRINT_API_BASE_URL", up.url())
        .env("IMPRINT_API_KEY", crate::harness::API_KEY)
        .env("IMPRINT_MERCHANT_KEY", crate::harness::MERCHANT_KEY)
        .env("IMPRINT_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("GATEWAY_DATA_DIR", dir.0.join("data"))
        .env("GATEWAY_CALLER_TOKENS_FILE", &tokens)
        .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("GATEWAY_LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let (grpc, http) = crate::harness::listening_in(&log_path).await;
    let (grpc, http) = (grpc.port(), http.port());
    let mut channel = None;
    for _ in 0..100 {
        match tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => {
                channel = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let channel = channel.expect("the gateway listens");
    let mut request = req(SearchCustomersRequest {
        ssn: s(SSN),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{TRACE_ID}-{CALLER_SPAN}-01")).unwrap(),
    );
    let status = CustomerServiceClient::new(channel)
        .search_customers(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Webhooks: one signed with the secret (stored), one forged (refused).
    let body = r#"{"object":"TRANSACTION","data":{"event_id":"ev-scan-1","transaction_id":"t1"}}"#;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signed = imprint_gateway::sandbox::sign(WEBHOOK_SECRET.as_bytes(), &t, body.as_bytes());
    let http_client = reqwest::Client::new();
    for (signature, ok) in [(signed, true), ("0".repeat(64), false)] {
        let resp = http_client
            .post(format!("http://127.0.0.1:{http}/webhooks/imprint"))
            .header("content-type", "application/json")
            .header("X-IMPRINT-HMAC-SIGNATURE", format!("t={t},s={signature}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().is_success(), ok, "{resp:?}");
    }

    // SIGTERM: a graceful stop, which flushes the spans.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    collector
        .wait_for("the call's spans", |c| c.spans().len() >= 2)
        .await;

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let finished: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["fields"]["message"] == "call finished")
        .collect();
    assert_eq!(finished.len(), 1, "{logs}");
    let line = &finished[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["code"], "INVALID_ARGUMENT");
    assert_eq!(line["span"]["trace_id"], TRACE_ID, "{line}");
    assert!(line["span"]["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    // Every line logged inside the call has the trace id.
    let in_call = logs
        .lines()
        .filter(|l| l.contains("\"name\":\"rpc\""))
        .count();
    assert!(in_call >= 2, "{logs}");
    assert!(logs
        .lines()
        .filter(|l| l.contains("\"name\":\"rpc\""))
        .all(|l| l.contains(TRACE_ID)));
    assert_clean(&[("logs at trace level", &logs)]);
}

#[tokio::test]
async fn list_upstream_calls_is_for_admin_callers_and_pages() {
    use imprint_gateway::pb::imprint::gateway::v1::{
        admin_service_client::AdminServiceClient, ListUpstreamCallsRequest,
    };
    const ADMIN_TOKEN: &str = "caller-token-admin";
    let up = FakeUpstream::start().await;
    let dir = crate::harness::tempdir::Dir::new();
    let tokens = dir.0.join("callers-admin.toml");
    std::fs::write(
        &tokens,
        format!(
            "{}\n[[callers]]\nname = \"ops\"\ntoken = \"{ADMIN_TOKEN}\"\nadmin = true\nallow = [\"imprint.gateway.v1.AdminService/*\"]\n",
            crate::harness::TOKENS_FILE
        ),
    )
    .unwrap();
    let tokens = tokens.display().to_string();
    let gw = TestGateway::start_with(
        &up.url(),
        &[("GATEWAY_CALLER_TOKENS_FILE", tokens.as_str())],
    )
    .await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    up.on(
        Method::GET,
        "/v2/customers/C2",
        Reply::json(404, r#"{"error":{"type":"not_found","message":"no"}}"#),
    );
    let mut customers = CustomerServiceClient::new(gw.channel.clone());
    for id in ["C1", "C2", "C1"] {
        let _ = customers
            .get_customer(req(GetCustomerRequest {
                customer_id: id.into(),
            }))
            .await;
    }
    let mut admin = AdminServiceClient::new(gw.channel.clone());
    // allow = ["*"] is not enough: the admin flag is.
    let refused = admin
        .list_upstream_calls(req(ListUpstreamCallsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let page = admin
        .list_upstream_calls(crate::harness::with_token(
            ListUpstreamCallsRequest {
                limit: Some(2),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.data.len(), 2);
    assert!(page.has_more);
    assert_eq!(page.data[0].status, 200);
    assert_eq!(page.data[1].status, 404);
    assert_eq!(page.data[0].route_template, "/v2/customers/{customer_id}");
    assert_eq!(page.data[0].caller, "tester");
    assert_eq!(page.data[0].attempts, 1);
    let rest = admin
        .list_upstream_calls(crate::harness::with_token(
            ListUpstreamCallsRequest {
                limit: Some(2),
                cursor: Some(page.next_cursor.clone()),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.data.len(), 1);
    assert!(!rest.has_more);
    let only_4xx = admin
        .list_upstream_calls(crate::harness::with_token(
            ListUpstreamCallsRequest {
                status_class: Some(4),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_4xx.data.len(), 1);
    assert_eq!(only_4xx.data[0].status, 404);
}

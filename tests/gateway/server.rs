//! Health, reflection, HTTP probes, request ids and graceful shutdown.

use std::time::Duration;

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{customer_service_client::CustomerServiceClient, *};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, Reply, TestGateway},
};

#[tokio::test]
async fn health_is_served_per_service_without_a_token() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let mut h = HealthClient::new(gw.channel.clone());
    for service in [
        "",
        "imprint.v2.CustomerService",
        "imprint.v2.SandboxService",
    ] {
        let resp = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status, ServingStatus::Serving as i32, "{service}");
    }
}

#[tokio::test]
async fn reflection_lists_every_service_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(gw.channel.clone());
    let mut stream = client
        .server_reflection_info(req(tokio_stream::iter(vec![request])))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        resp.message_response
    else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in imprint_gateway::services::SERVICE_NAMES {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(names.iter().any(|n| n == "grpc.health.v1.Health"));

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "imprint.v2.CustomerService".into(),
            ),
        ),
    };
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(gw.channel.clone());
    let mut stream = client
        .server_reflection_info(req(tokio_stream::iter(vec![request])))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    assert!(matches!(
        resp.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

#[tokio::test]
async fn http_probes() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let base = format!("http://{}", gw.http_addr());
    let healthz = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200, "{}", readyz.text().await.unwrap());

    let health: serde_json::Value = serde_json::from_str(&healthz.text().await.unwrap()).unwrap();
    assert_eq!(health["dependencies"]["imprint"]["ok"], true, "{health}");
    assert_eq!(
        health["dependencies"]["state_store"]["ok"], true,
        "{health}"
    );

    // Without a reachable upstream the gateway is still ready: readiness is
    // about this process, and an Imprint outage is shared by every replica.
    // Health tells what is wrong.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = TestGateway::start_with(&format!("http://127.0.0.1:{port}"), &[]).await;
    let readyz = reqwest::get(format!("http://{}/readyz", gw.http_addr()))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let healthz = reqwest::get(format!("http://{}/healthz", gw.http_addr()))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let health: serde_json::Value = serde_json::from_str(&healthz.text().await.unwrap()).unwrap();
    assert_eq!(health["dependencies"]["imprint"]["ok"], false, "{health}");
    assert!(
        !health.to_string().contains(crate::harness::API_KEY),
        "{health}"
    );
}

#[tokio::test]
async fn request_id_travels_upstream_and_back() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let mut r = req(GetCustomerRequest {
        customer_id: "C1".into(),
    });
    r.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("trace-abc-123"));
    let resp = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(r)
        .await
        .unwrap();
    assert_eq!(
        resp.metadata().get("x-request-id").unwrap(),
        "trace-abc-123"
    );
    assert_eq!(
        up.only_request().header("x-request-id"),
        Some("trace-abc-123")
    );

    // Without one, the gateway makes one up and uses it both ways.
    let resp = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: "C1".into(),
        }))
        .await
        .unwrap();
    let id = resp
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(up.requests()[1].header("x-request-id"), Some(id.as_str()));
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_calls() {
    let up = FakeUpstream::start().await;
    let mut gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/customers/C1",
        Reply::ok(customer_json()).delay(Duration::from_millis(400)),
    );
    let mut client = CustomerServiceClient::new(gw.channel.clone());
    let in_flight = tokio::spawn(async move {
        client
            .get_customer(req(GetCustomerRequest {
                customer_id: "C1".into(),
            }))
            .await
    });
    // Let the call reach the upstream before asking the gateway to stop.
    for _ in 0..100 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.requests().len(), 1);
    let grpc_addr = gw.running.as_ref().unwrap().grpc_addr();
    gw.running.take().unwrap().shutdown().await.unwrap();
    let resp = in_flight.await.unwrap().expect("in-flight call completes");
    assert_eq!(resp.into_inner(), customer());
    // And nothing listens any more.
    assert!(tokio::net::TcpStream::connect(grpc_addr).await.is_err());
}

#[tokio::test]
async fn reload_swaps_the_key_and_the_caller_tokens_without_a_restart() {
    use crate::harness::{tempdir, API_KEY};
    let up = FakeUpstream::start().await;
    let dir = tempdir::Dir::new();
    let key_file = dir.0.join("api-key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    let key_path = key_file.display().to_string();
    let gw = TestGateway::start_with(
        &up.url(),
        &[("IMPRINT_API_KEY", ""), ("IMPRINT_API_KEY_FILE", &key_path)],
    )
    .await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let call = || {
        req(GetCustomerRequest {
            customer_id: "C1".into(),
        })
    };
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    c.get_customer(call()).await.unwrap();

    // Rotate: a new key in the file, then SIGHUP (here: reload()).
    std::fs::write(&key_file, "sk_rotated_key\n").unwrap();
    gw.running.as_ref().unwrap().reload().unwrap();
    c.get_customer(call()).await.unwrap();
    let auths: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    use base64::Engine as _;
    let basic = |k: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{k}:"))
        )
    };
    assert_eq!(auths, [basic(API_KEY), basic("sk_rotated_key")]);

    // A broken file changes nothing.
    std::fs::write(&key_file, "\n").unwrap();
    assert!(gw.running.as_ref().unwrap().reload().is_err());
    c.get_customer(call()).await.unwrap();
    assert_eq!(
        up.requests()[2].header("authorization"),
        Some(basic("sk_rotated_key").as_str())
    );
}

#[tokio::test]
async fn a_reload_with_one_bad_source_changes_nothing() {
    use crate::harness::{tempdir, API_KEY, TOKENS_FILE};
    let up = FakeUpstream::start().await;
    let dir = tempdir::Dir::new();
    let key_file = dir.0.join("api-key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    let tokens = dir.0.join("callers.toml");
    std::fs::write(&tokens, TOKENS_FILE).unwrap();
    let (key_path, tokens_path) = (key_file.display().to_string(), tokens.display().to_string());
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("IMPRINT_API_KEY", ""),
            ("IMPRINT_API_KEY_FILE", &key_path),
            ("GATEWAY_CALLER_TOKENS_FILE", &tokens_path),
        ],
    )
    .await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let call = || {
        req(GetCustomerRequest {
            customer_id: "C1".into(),
        })
    };
    let mut c = CustomerServiceClient::new(gw.channel.clone());

    // A good new key, but a broken caller tokens file: neither is taken.
    std::fs::write(&key_file, "sk_would_be_new\n").unwrap();
    std::fs::write(&tokens, "[[callers]]\nname = \"x\"\n").unwrap();
    let e = gw.running.as_ref().unwrap().reload().unwrap_err();
    assert!(format!("{e:#}").contains("caller tokens"), "{e:#}");
    c.get_customer(call()).await.unwrap();
    let sent = up.only_request();
    use base64::Engine as _;
    let old = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{API_KEY}:"))
    );
    assert_eq!(
        sent.header("authorization"),
        Some(old.as_str()),
        "the old key is still used"
    );
}

#[tokio::test]
async fn oversized_messages_are_refused_before_any_upstream_call() {
    let up = FakeUpstream::start().await;
    let gw =
        TestGateway::start_with(&up.url(), &[("GATEWAY__SERVER__MAX_MESSAGE_BYTES", "2048")]).await;
    let big = "x".repeat(4096);
    let s = CustomerServiceClient::new(gw.channel.clone())
        .update_customer(req(UpdateCustomerRequest {
            customer_id: "C1".into(),
            city: Some(big),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::OutOfRange, "{s:?}");
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn every_refusal_carries_x_request_id() {
    let up = FakeUpstream::start().await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__SERVER__MAX_MESSAGE_BYTES", "2048"),
            ("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0.001"),
            ("GATEWAY__LIMITS__CALLER_BURST", "1"),
        ],
    )
    .await;
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    let get = || GetCustomerRequest {
        customer_id: "C1".into(),
    };
    let id_of = |s: &tonic::Status| {
        s.metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    // No token: UNAUTHENTICATED, with a fresh id.
    let s = c
        .get_customer(tonic::Request::new(get()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    let id = id_of(&s).expect("x-request-id on an auth refusal");
    assert!(uuid_like(&id), "{id}");

    // The caller's own id comes back on a refusal too.
    let mut r = tonic::Request::new(get());
    r.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("caller-id-7"));
    let s = c.get_customer(r).await.unwrap_err();
    assert_eq!(id_of(&s).as_deref(), Some("caller-id-7"));

    // Not allowed.
    let s = imprint_gateway::pb::imprint::v2::order_service_client::OrderServiceClient::new(
        gw.channel.clone(),
    )
    .list_orders(crate::harness::with_token(
        ListOrdersRequest::default(),
        crate::harness::LIMITED_TOKEN,
    ))
    .await
    .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    assert!(id_of(&s).is_some(), "x-request-id on PERMISSION_DENIED");

    // Too large a message.
    let s = c
        .update_customer(req(UpdateCustomerRequest {
            customer_id: "C1".into(),
            city: Some("x".repeat(4096)),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::OutOfRange);
    assert!(id_of(&s).is_some(), "x-request-id on a size refusal");

    // Over the rate (burst 1 was spent above by the size-refused call, or
    // is spent now): one of two calls is refused by the rate limit.
    let mut limited = None;
    for _ in 0..2 {
        if let Err(s) = c.get_customer(req(get())).await {
            limited = Some(s);
        }
    }
    let s = limited.expect("a call over the rate limit");
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    assert!(id_of(&s).is_some(), "x-request-id on a rate-limit refusal");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.bytes().filter(|b| *b == b'-').count() == 4
}

/// The fixture customer's id, its REST path, and a GetCustomer for it.
const CUSTOMER_ID: &str = "9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4";
const CUSTOMER_PATH: &str = "/v2/customers/9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4";

fn get_fixture_customer() -> tonic::Request<GetCustomerRequest> {
    req(GetCustomerRequest {
        customer_id: CUSTOMER_ID.into(),
    })
}

/// A method no `imprint.v2` service has is UNIMPLEMENTED, and nothing goes
/// upstream; the real methods beside it are served. So is an unknown method
/// of EventService (reached ahead of the router) and an unknown service
/// (left to the router).
#[tokio::test]
async fn an_unknown_method_of_a_served_service_is_unimplemented() {
    let up = FakeUpstream::start().await;
    up.on(Method::GET, CUSTOMER_PATH, Reply::ok(customer_json()));
    let gw = TestGateway::start(&up).await;
    let mut grpc = tonic::client::Grpc::new(gw.channel.clone());
    for path in [
        "/imprint.v2.CustomerService/NoSuchMethod",
        "/imprint.gateway.v1.EventService/NoSuchMethod",
        "/imprint.v2.NoSuchService/GetCustomer",
    ] {
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static(path);
        let codec = tonic_prost::ProstCodec::<GetCustomerRequest, Customer>::default();
        let status = grpc
            .unary(get_fixture_customer(), path.clone(), codec)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{path}: {status:?}"
        );
    }
    assert!(up.requests().is_empty());
    let customer = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(get_fixture_customer())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer, crate::fixtures::customer());
    assert_eq!(up.requests().len(), 1);
}

/// A CONNECT proxy on 127.0.0.1 that pipes bytes; records each request head.
async fn connect_proxy() -> (String, std::sync::Arc<parking_lot::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://gw:proxy-s3cret@{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let heads = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                heads.lock().push(head);
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (url, seen)
}

/// `serve` takes its proxy from the environment: calls to Imprint go through
/// a CONNECT tunnel with the proxy URL's credentials, and the caller gets
/// Imprint's answer; an https:// proxy is refused at start-up naming the
/// variable, never its value.
#[tokio::test]
async fn serve_reaches_imprint_through_the_proxy_the_environment_names() {
    let up = FakeUpstream::start().await;
    up.on(Method::GET, CUSTOMER_PATH, Reply::ok(customer_json()));
    let (proxy, heads) = connect_proxy().await;
    let gw =
        crate::harness::GatewayProcess::spawn(&up.url(), &[("HTTP_PROXY", proxy.as_str())]).await;
    let customer = CustomerServiceClient::new(gw.channel.clone())
        .get_customer(get_fixture_customer())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer, crate::fixtures::customer());
    let sent = up.only_request();
    assert_eq!(sent.path, CUSTOMER_PATH);
    assert!(sent.headers.contains_key("authorization"));
    let heads = heads.lock().clone();
    let authority = up.url().trim_start_matches("http://").to_owned();
    // The call's tunnel (and the readiness probe's, if it ran yet): each a
    // CONNECT to Imprint with `gw:proxy-s3cret` as Basic credentials.
    assert!(!heads.is_empty());
    for head in &heads {
        assert!(
            head.starts_with(&format!("CONNECT {authority} ")),
            "{heads:?}"
        );
        assert!(head.contains("Basic Z3c6cHJveHktczNjcmV0"), "{heads:?}");
    }
    assert!(!sent.headers.contains_key("proxy-authorization"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imprint-gateway"))
        .arg("serve")
        .env("IMPRINT_API_KEY", "sk_test_proxy")
        .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("HTTPS_PROXY", "https://gw:proxy-s3cret@proxy.invalid:443")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTPS_PROXY must be an http:// proxy URL"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret") && !stderr.contains("proxy.invalid"),
        "{stderr}"
    );
}

//! The response cache, through the real server against the counting fake
//! upstream: hits, single flight, invalidation, what is never cached,
//! caller control, and invalidation across replicas over Redis.

use std::time::Duration;

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_service_client::CustomerServiceClient,
    customer_session_service_client::CustomerSessionServiceClient,
    payment_method_service_client::PaymentMethodServiceClient, *,
};
use tonic::{metadata::MetadataValue, transport::Channel};

use crate::{
    fixtures::*,
    harness::{req, FakeUpstream, GatewayProcess, RedisServer, Reply, TestGateway},
};

const ID: &str = "9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4";
const ON: &[(&str, &str)] = &[("GATEWAY__CACHE__ENABLED", "true")];

async fn setup() -> (FakeUpstream, TestGateway, CustomerServiceClient<Channel>) {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start_with(&up.url(), ON).await;
    let client = CustomerServiceClient::new(gw.channel.clone());
    (up, gw, client)
}

fn count(up: &FakeUpstream, method: Method, path: &str) -> usize {
    up.requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

fn x_cache(md: &tonic::metadata::MetadataMap) -> Option<String> {
    md.get("x-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn get_customer(id: &str) -> tonic::Request<GetCustomerRequest> {
    req(GetCustomerRequest {
        customer_id: id.into(),
    })
}

async fn read(c: &mut CustomerServiceClient<Channel>) -> (Customer, Option<String>) {
    let r = c.get_customer(get_customer(ID)).await.unwrap();
    let x = x_cache(r.metadata());
    (r.into_inner(), x)
}

#[tokio::test]
async fn cache_repeated_reads_hit_and_a_write_invalidates() {
    let (up, _gw, mut c) = setup().await;
    let path = format!("/v2/customers/{ID}");
    let updated = customer_json().replace("customer@example.com", "new@example.com");
    up.on(Method::GET, &path, Reply::ok(customer_json()))
        .on(Method::GET, &path, Reply::ok(updated.clone()))
        .on(Method::POST, &path, Reply::ok(updated));

    let (first, x1) = read(&mut c).await;
    let (second, x2) = read(&mut c).await;
    assert_eq!((x1.as_deref(), x2.as_deref()), (Some("miss"), Some("hit")));
    assert_eq!(first, second);
    // The first hit decoded and encoded the entry; the next ones send
    // that encoding, gzipped too for a caller that accepts it.
    let (again, x) = read(&mut c).await;
    assert_eq!((again, x.as_deref()), (first.clone(), Some("hit")));
    let mut gz = c
        .clone()
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let r = gz.get_customer(get_customer(ID)).await.unwrap();
    assert_eq!(
        r.metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    assert_eq!(x_cache(r.metadata()).as_deref(), Some("hit"));
    assert_eq!(r.into_inner(), first);
    assert_eq!(count(&up, Method::GET, &path), 1);

    let mut write = req(UpdateCustomerRequest {
        customer_id: ID.into(),
        email: s("new@example.com"),
        ..Default::default()
    });
    write.set_timeout(Duration::from_secs(5));
    let w = c.update_customer(write).await.unwrap();
    assert_eq!(x_cache(w.metadata()), None, "writes are not cacheable RPCs");

    let (third, x3) = read(&mut c).await;
    assert_eq!(x3.as_deref(), Some("miss"));
    assert_eq!(third.email.as_deref(), Some("new@example.com"));
    assert_eq!(count(&up, Method::GET, &path), 2);

    // The same story in /metrics.
    let text = reqwest::get(format!("http://{}/metrics", _gw.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str, label: &str| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .find(|l| l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value("gateway_cache_lookups_total", "result=\"hit\""),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value("gateway_cache_lookups_total", "result=\"miss\""),
        Some(2.0),
        "{text}"
    );
    assert!(
        value("gateway_cache_invalidations_total", "") >= Some(1.0),
        "{text}"
    );
    // Sizes are moka's, settled by its housekeeping: present, maybe behind.
    assert!(
        value("gateway_cache_entries", "").is_some_and(|n| n <= 1.0),
        "{text}"
    );
    assert!(value("gateway_cache_size_bytes", "").is_some(), "{text}");
    assert_eq!(
        value("gateway_cache_evictions_total", ""),
        Some(0.0),
        "{text}"
    );
}

#[tokio::test]
async fn cache_concurrent_identical_misses_make_one_upstream_call() {
    let (up, _gw, c) = setup().await;
    let path = format!("/v2/customers/{ID}");
    up.on(
        Method::GET,
        &path,
        Reply::ok(customer_json()).delay(Duration::from_millis(300)),
    );
    let calls = (0..100).map(|_| {
        let mut c = c.clone();
        async move { c.get_customer(get_customer(ID)).await.unwrap().into_inner() }
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(answers.len(), 100);
    assert!(answers.iter().all(|a| *a == answers[0]));
    assert_eq!(answers[0], customer());
    assert_eq!(count(&up, Method::GET, &path), 1);
}

#[tokio::test]
async fn cache_errors_are_not_cached_and_no_cache_goes_upstream() {
    let (up, _gw, mut c) = setup().await;
    let path = format!("/v2/customers/{ID}");
    up.on(
        Method::GET,
        &path,
        Reply::json(
            404,
            r#"{"error":{"type":"not_found","message":"no such customer"}}"#,
        ),
    )
    .on(Method::GET, &path, Reply::ok(customer_json()));

    let err = c.get_customer(get_customer(ID)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(x_cache(err.metadata()).as_deref(), Some("miss"));
    let (_, x) = read(&mut c).await;
    assert_eq!(x.as_deref(), Some("miss"));
    assert_eq!(count(&up, Method::GET, &path), 2);

    let mut fresh = get_customer(ID);
    fresh
        .metadata_mut()
        .insert("cache-control", MetadataValue::from_static("no-cache"));
    let r = c.get_customer(fresh).await.unwrap();
    assert_eq!(x_cache(r.metadata()).as_deref(), Some("bypass"));
    assert_eq!(count(&up, Method::GET, &path), 3);
    assert_eq!(
        up.requests().last().unwrap().header("cache-control"),
        Some("no-cache")
    );
    // The bypass refreshed the entry.
    let (_, x) = read(&mut c).await;
    assert_eq!(x.as_deref(), Some("hit"));
    assert_eq!(count(&up, Method::GET, &path), 3);
}

#[tokio::test]
async fn cache_honours_no_store_from_imprint() {
    let (up, _gw, mut c) = setup().await;
    let path = format!("/v2/customers/{ID}");
    up.on(
        Method::GET,
        &path,
        Reply::ok(customer_json()).header("cache-control", "private, no-store"),
    );
    read(&mut c).await;
    read(&mut c).await;
    assert_eq!(count(&up, Method::GET, &path), 2);
}

#[tokio::test]
async fn cache_never_holds_a_secret() {
    let (up, gw, mut c) = setup().await;
    const CLIENT_SECRET: &str = "QzMyNzg4QzgtNEUwOS00QkU4";
    const PAN: &str = "5105105105105100";
    const SSN: &str = "123456789";
    up.on(
        Method::GET,
        &format!("/v2/customers/{ID}"),
        Reply::ok(customer_json()),
    )
    .on(
        Method::POST,
        "/v2/customer_sessions",
        Reply::json(201, session_json()),
    )
    .on(
        Method::GET,
        "/v2/customer_sessions/SESS-1",
        Reply::ok(session_json()),
    )
    .on(
        Method::GET,
        "/v2/payment_methods/PM-1",
        Reply::ok(card_payment_method_json()),
    )
    .on(
        Method::POST,
        "/v2/payment_methods",
        Reply::ok(page(&[card_payment_method_json()], false, 1)),
    )
    .on(
        Method::POST,
        "/v2/customers",
        Reply::ok(page(&[&customer_json()], false, 1)),
    );
    // Something cacheable, so the dump is not trivially empty.
    read(&mut c).await;
    read(&mut c).await;

    let mut sessions = CustomerSessionServiceClient::new(gw.channel.clone());
    let mut payments = PaymentMethodServiceClient::new(gw.channel.clone());
    for _ in 0..2 {
        sessions
            .create_customer_session(req(CreateCustomerSessionRequest {
                partner_customer_id: s("P1"),
                ..Default::default()
            }))
            .await
            .unwrap();
        let r = sessions
            .get_customer_session(req(GetCustomerSessionRequest {
                session_id: "SESS-1".into(),
            }))
            .await
            .unwrap();
        assert_eq!(x_cache(r.metadata()), None, "never a cacheable RPC");
        payments
            .get_payment_method(req(GetPaymentMethodRequest {
                payment_method_id: "PM-1".into(),
            }))
            .await
            .unwrap();
        payments
            .list_payment_methods(req(ListPaymentMethodsRequest {
                customer_id: "C1".into(),
                pan: s(PAN),
                ..Default::default()
            }))
            .await
            .unwrap();
        let r = c
            .search_customers(req(SearchCustomersRequest {
                ssn: s(SSN),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(x_cache(r.metadata()).as_deref(), Some("bypass"));
    }
    assert_eq!(count(&up, Method::POST, "/v2/customer_sessions"), 2);
    assert_eq!(count(&up, Method::GET, "/v2/customer_sessions/SESS-1"), 2);
    assert_eq!(count(&up, Method::GET, "/v2/payment_methods/PM-1"), 2);
    assert_eq!(count(&up, Method::POST, "/v2/payment_methods"), 2);
    assert_eq!(count(&up, Method::POST, "/v2/customers"), 2);

    let dump = gw.running.as_ref().unwrap().cache().unwrap().dump().await;
    assert_eq!(dump.len(), 1, "{dump:?}");
    let text = dump.join("\n");
    for secret in [
        CLIENT_SECRET,
        PAN,
        SSN,
        "pci_details",
        "client_secret",
        "cvv",
    ] {
        assert!(!text.contains(secret), "{secret} found in the cache");
    }
}

/// Reads through `c` until `x-cache` says `want` (bounded).
async fn read_until(c: &mut CustomerServiceClient<Channel>, want: &str) -> Customer {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (customer, x) = read(c).await;
        if x.as_deref() == Some(want) {
            return customer;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "x-cache never became {want} (last {x:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cache_replicas_share_invalidations_over_redis_and_drop_the_cache_without_it() {
    let mut redis = RedisServer::start();
    let up = FakeUpstream::start().await;
    let path = format!("/v2/customers/{ID}");
    let updated = customer_json().replace("customer@example.com", "new@example.com");
    up.on(Method::GET, &path, Reply::ok(customer_json()))
        .on(Method::GET, &path, Reply::ok(customer_json()))
        .on(Method::GET, &path, Reply::ok(updated.clone()))
        .on(Method::POST, &path, Reply::ok(updated));
    let env = [
        ("GATEWAY__CACHE__ENABLED", "true"),
        ("GATEWAY_REDIS_URL", redis.url.as_str()),
    ];
    let a = GatewayProcess::spawn(&up.url(), &env).await;
    let b = GatewayProcess::spawn(&up.url(), &env).await;
    let mut ca = CustomerServiceClient::new(a.channel.clone());
    let mut cb = CustomerServiceClient::new(b.channel.clone());

    // Both subscribed (bypass until then) and holding the entry.
    let before = read_until(&mut cb, "hit").await;
    assert_eq!(before.email.as_deref(), Some("customer@example.com"));
    read_until(&mut ca, "hit").await;
    let reads = count(&up, Method::GET, &path);

    ca.update_customer(req(UpdateCustomerRequest {
        customer_id: ID.into(),
        email: s("new@example.com"),
        ..Default::default()
    }))
    .await
    .unwrap();
    // B's next read after the broadcast arrives goes upstream.
    let after = read_until(&mut cb, "miss").await;
    assert_eq!(after.email.as_deref(), Some("new@example.com"));
    assert_eq!(count(&up, Method::GET, &path), reads + 1);
    read_until(&mut cb, "hit").await;

    // Without Redis, B may miss invalidations: it drops its cache and
    // bypasses it rather than serve what it holds.
    redis.stop();
    let reads = count(&up, Method::GET, &path);
    read_until(&mut cb, "bypass").await;
    assert!(count(&up, Method::GET, &path) > reads);
}

const ADMIN_TOKENS: &str = r#"
[[callers]]
name = "ops"
token = "caller-token-admin"
allow = ["*"]
admin = true

[[callers]]
name = "tester"
token = "caller-token-all"
allow = ["*"]
"#;

#[tokio::test]
async fn cache_admin_purges_and_reports_stats_for_admin_callers_only() {
    use imprint_gateway::pb::gateway::v1::{
        admin_service_client::AdminServiceClient, purge_cache_request::Target, GetStatsRequest,
        PurgeCacheRequest, ResourceRef,
    };

    use crate::harness::{tempdir::Dir, with_token};

    let dir = Dir::new();
    let tokens = dir.0.join("admin.toml");
    std::fs::write(&tokens, ADMIN_TOKENS).unwrap();
    let up = FakeUpstream::start().await;
    let path = format!("/v2/customers/{ID}");
    up.on(Method::GET, &path, Reply::ok(customer_json()));
    let tokens = tokens.display().to_string();
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__CACHE__ENABLED", "true"),
            ("GATEWAY_CALLER_TOKENS_FILE", tokens.as_str()),
        ],
    )
    .await;
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    let mut admin = AdminServiceClient::new(gw.channel.clone());

    // `*` is not enough.
    let denied = admin.get_stats(req(GetStatsRequest {})).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    read(&mut c).await;
    read(&mut c).await;
    let stats = admin
        .get_stats(with_token(GetStatsRequest {}, "caller-token-admin"))
        .await
        .unwrap()
        .into_inner()
        .cache
        .unwrap();
    assert!(stats.enabled);
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    assert!(stats.bytes > 0);

    let purges = [
        Target::Resource(ResourceRef {
            kind: "customer".into(),
            id: ID.into(),
        }),
        Target::Rpc("GetCustomer".into()),
        Target::All(true),
    ];
    for (n, target) in purges.into_iter().enumerate() {
        admin
            .purge_cache(with_token(
                PurgeCacheRequest {
                    target: Some(target),
                },
                "caller-token-admin",
            ))
            .await
            .unwrap();
        let (_, x) = read(&mut c).await;
        assert_eq!(x.as_deref(), Some("miss"));
        assert_eq!(count(&up, Method::GET, &path), n + 2);
    }
}

#[tokio::test]
async fn cache_a_verified_webhook_invalidates_what_it_names() {
    use crate::{
        events::{post_signed, transaction, SECRET},
        harness::tempdir,
    };
    let up = FakeUpstream::start().await;
    let data = tempdir::Dir::new();
    let dir = data.0.display().to_string();
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__CACHE__ENABLED", "true"),
            ("IMPRINT_WEBHOOK_SECRET", SECRET),
            ("GATEWAY_DATA_DIR", dir.as_str()),
        ],
    )
    .await;
    let mut c = CustomerServiceClient::new(gw.channel.clone());
    let path = format!("/v2/customers/{ID}");
    up.on(Method::GET, &path, Reply::ok(customer_json()));
    assert_eq!(read(&mut c).await.1.as_deref(), Some("miss"));
    assert_eq!(read(&mut c).await.1.as_deref(), Some("hit"));
    assert_eq!(count(&up, Method::GET, &path), 1);

    // Imprint says something happened to this customer: the entry goes.
    let http = gw.http_addr().to_string();
    let (code, _) = post_signed(&http, SECRET, &transaction("evt-cache-1", ID)).await;
    assert_eq!(code, 200);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, x) = read(&mut c).await;
        if x.as_deref() == Some("miss") {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the webhook never invalidated the entry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(count(&up, Method::GET, &path), 2);
}

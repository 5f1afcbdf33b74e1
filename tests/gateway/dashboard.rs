//! The deploy files against the real gateway: every metric the Grafana
//! dashboard (`deploy/grafana/imprint-gateway.json`) queries is one that
//! `GET /metrics` exports after known traffic, and the container image's
//! HEALTHCHECK command (`deploy/docker/Dockerfile`) answers SERVING.

use std::{collections::BTreeSet, time::Duration};

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    customer_service_client::CustomerServiceClient,
    transaction_intent_service_client::TransactionIntentServiceClient, *,
};
use tonic::{metadata::MetadataValue, Code};

use crate::{
    events::{post_signed, transaction, SECRET},
    fixtures::*,
    harness::{req, tempdir, with_token, FakeUpstream, Reply, TestGateway, LIMITED_TOKEN},
};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/imprint-gateway.json"
);
const DOCKERFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker/Dockerfile");

/// Labels Prometheus adds to every scraped series (not the gateway's).
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// PromQL words that are never metric names.
const NOT_METRICS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "label_values",
];

/// What a PromQL expression reads: `(metric names, label names)`.
/// Metric names are identifiers outside label matchers, ranges, strings
/// and grouping clauses that are not called as functions; label names are
/// those matched in `{...}` and grouped by in `by (...)`.
fn promql_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // Label matchers: `name op "value", ...`.
            i += 1;
            let mut want_name = true;
            while i < chars.len() && chars[i] != '}' {
                let d = chars[i];
                if d == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                    want_name = false;
                } else if d == ',' {
                    want_name = true;
                    i += 1;
                } else if ident_start(d) && want_name {
                    let s = i;
                    while i < chars.len() && ident_char(chars[i]) {
                        i += 1;
                    }
                    labels.insert(chars[s..i].iter().collect());
                    want_name = false;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == '$' {
            // A Grafana variable ($job, $__rate_interval).
            i += 1;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let s = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[s..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let called = j < chars.len() && chars[j] == '(';
            if word == "label_values" && called {
                // Grafana's `label_values(selector, label)`.
                let close = chars.iter().rposition(|&d| d == ')').unwrap();
                let args: String = chars[j + 1..close].iter().collect();
                let (selector, label) = args.rsplit_once(',').unwrap_or((&args, ""));
                let (m, l) = promql_names(selector);
                metrics.extend(m);
                labels.extend(l);
                labels.extend(Some(label.trim().to_owned()).filter(|l| !l.is_empty()));
                i = close + 1;
            } else if matches!(word.as_str(), "by" | "without" | "on" | "ignoring") && called {
                // A grouping clause: label names up to `)`.
                let close = chars[j..].iter().position(|&d| d == ')').unwrap() + j;
                let inside: String = chars[j + 1..close].iter().collect();
                labels.extend(
                    inside
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
                i = close + 1;
            } else if !called && !NOT_METRICS.contains(&word.as_str()) {
                metrics.insert(word);
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

/// Every PromQL expression of the dashboard: panel targets and the
/// template variables' queries.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard file");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    fn panels(v: &serde_json::Value, exprs: &mut Vec<String>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                exprs.push(t["expr"].as_str().expect("a PromQL target").to_owned());
            }
            panels(&p["panels"], exprs);
        }
    }
    panels(&dashboard["panels"], &mut exprs);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            exprs.push(var["query"]["query"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

#[test]
fn promql_names_reads_metrics_and_labels() {
    let (m, l) = promql_names(
        r#"histogram_quantile(0.99, sum by (le, rpc_method) (rate(rpc_server_call_duration_seconds_bucket{job=~"$job",rpc_response_status_code!="OK"}[$__rate_interval]))) / sum(gateway_x_total offset 5m)"#,
    );
    assert_eq!(
        m.into_iter().collect::<Vec<_>>(),
        ["gateway_x_total", "rpc_server_call_duration_seconds_bucket"]
    );
    assert_eq!(
        l.into_iter().collect::<Vec<_>>(),
        ["job", "le", "rpc_method", "rpc_response_status_code"]
    );
    let (m, l) = promql_names("label_values(gateway_build_info, job)");
    assert_eq!(m.into_iter().collect::<Vec<_>>(), ["gateway_build_info"]);
    assert_eq!(l.into_iter().collect::<Vec<_>>(), ["job"]);
}

/// Sample names present in a Prometheus text scrape.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

async fn scrape(gw: &TestGateway) -> String {
    let resp = reqwest::get(format!("http://{}/metrics", gw.http_addr()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

fn keyed(key: &str) -> tonic::Request<CreateTransactionIntentRequest> {
    let mut r = req(CreateTransactionIntentRequest {
        customer_id: "9B5E1EE0".into(),
        amount: Some(1000),
        currency: "USD".into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("idempotency-key", MetadataValue::try_from(key).unwrap());
    r
}

fn get(id: &str, token: &str) -> tonic::Request<GetCustomerRequest> {
    with_token(
        GetCustomerRequest {
            customer_id: id.into(),
        },
        token,
    )
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let up = FakeUpstream::start().await;
    let unavailable = Reply::json(503, r#"{"error":{"type":"UNAVAILABLE","message":"later"}}"#);
    up.on(Method::GET, "/v2/customers/C1", unavailable)
        .on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()))
        .on(
            Method::POST,
            "/v2/transaction_intents",
            Reply::ok(intent_json()),
        );
    for i in 0..10 {
        let slow = Reply::ok(customer_json()).delay(Duration::from_millis(400));
        up.on(Method::GET, &format!("/v2/customers/SLOW-{i}"), slow);
    }
    let data = tempdir::Dir::new();
    let dir = data.0.display().to_string();
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY__CACHE__ENABLED", "true"),
            ("IMPRINT_WEBHOOK_SECRET", SECRET),
            ("GATEWAY_DATA_DIR", dir.as_str()),
            // One attempt to Imprint at a time and no queue: a second
            // concurrent miss is shed.
            ("GATEWAY__LIMITS__MAX_IN_FLIGHT", "1"),
            ("GATEWAY__LIMITS__MAX_QUEUE", "0"),
            // Each caller: a burst of 20, then 1 a second.
            ("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "1"),
            ("GATEWAY__LIMITS__CALLER_BURST", "20"),
        ],
    )
    .await;
    let mut customers = CustomerServiceClient::new(gw.channel.clone());

    // A retry (503, then 200), then a cache hit.
    let first = customers
        .get_customer(get("C1", crate::harness::TOKEN))
        .await
        .unwrap();
    assert_eq!(
        first.metadata().get("x-upstream-attempts").unwrap(),
        "2",
        "retried once"
    );
    let hit = customers
        .get_customer(get("C1", crate::harness::TOKEN))
        .await
        .unwrap();
    assert_eq!(hit.metadata().get("x-cache").unwrap(), "hit");

    // A keyed mutation and its replay.
    let mut intents = TransactionIntentServiceClient::new(gw.channel.clone());
    intents
        .create_transaction_intent(keyed("dash-1"))
        .await
        .unwrap();
    let replay = intents
        .create_transaction_intent(keyed("dash-1"))
        .await
        .unwrap();
    assert_eq!(
        replay.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );

    // A signed webhook.
    let (status, text) = post_signed(
        &gw.http_addr().to_string(),
        SECRET,
        &transaction("dash-evt", "C1"),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // Two concurrent misses with room for one: one is shed.
    let mut shed = false;
    for i in (0..10).step_by(2) {
        let (mut a, mut b) = (customers.clone(), customers.clone());
        let (ra, rb) = tokio::join!(
            a.get_customer(get(&format!("SLOW-{i}"), crate::harness::TOKEN)),
            b.get_customer(get(&format!("SLOW-{}", i + 1), crate::harness::TOKEN)),
        );
        if [ra.err(), rb.err()]
            .iter()
            .flatten()
            .any(|s| s.code() == Code::ResourceExhausted)
        {
            shed = true;
            break;
        }
    }
    assert!(shed, "a concurrent miss was shed");

    // Another caller spends its burst (cache hits): refused by its rate limit.
    let mut limited = false;
    for _ in 0..60 {
        if let Err(s) = customers.get_customer(get("C1", LIMITED_TOKEN)).await {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            limited = true;
            break;
        }
    }
    assert!(limited, "the burst ran out");

    let text = scrape(&gw).await;
    let exported = sample_names(&text);
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "the dashboard has its panels");
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for q in &queries {
        let (metrics, labels) = promql_names(q);
        assert!(!metrics.is_empty(), "no metric in {q}");
        for m in metrics {
            if !exported.contains(&m) {
                missing.push(format!("metric {m} (in {q})"));
            }
            used.insert(m);
        }
        for l in labels {
            if !TARGET_LABELS.contains(&l.as_str()) && !text.contains(&format!("{l}=\"")) {
                missing.push(format!("label {l} (in {q})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries what /metrics does not export: {missing:#?}\n{text}"
    );
    // The panels the deploy issue asks for, as far as they are exported.
    for m in [
        "rpc_server_call_duration_seconds_count",
        "rpc_server_call_duration_seconds_bucket",
        "http_client_request_duration_seconds_bucket",
        "gateway_upstream_retries_total",
        "gateway_upstream_rejected_total",
    ] {
        assert!(used.contains(m), "the dashboard has no panel on {m}");
    }
}

/// The `CMD [...]` of the Dockerfile's HEALTHCHECK.
fn healthcheck_command() -> Vec<String> {
    let text = std::fs::read_to_string(DOCKERFILE).expect("the Dockerfile");
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK instruction");
    let json = &line[line.find("CMD").expect("HEALTHCHECK ... CMD [...]") + 3..];
    serde_json::from_str(json.trim()).expect("CMD in exec form (a JSON array)")
}

#[tokio::test]
async fn the_image_healthcheck_answers_serving_without_a_caller_token() {
    let gw = TestGateway::start_with("http://127.0.0.1:9", &[]).await;
    let cmd = healthcheck_command();
    assert_eq!(cmd[0], "/usr/local/bin/imprint-gateway");
    let grpc = gw.running.as_ref().unwrap().grpc_addr().to_string();
    // The image sets GATEWAY_GRPC_ADDR, which `call` reads as its address.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_imprint-gateway"))
            .args(&cmd[1..])
            .env("GATEWAY_GRPC_ADDR", &grpc)
            .env_remove("GATEWAY_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SERVING"), "{stdout}");
}

/// The TOML the Kubernetes manifests (and the compose stack) mount, loaded
/// by the gateway's own parser with the environment the Deployment sets.
#[test]
fn the_kubernetes_config_loads_with_the_deployment_environment() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/base/config.toml");
    let dir = tempdir::Dir::new();
    let file = |name: &str, text: &str| {
        let p = dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let env = [
        (
            "IMPRINT_API_BASE_URL",
            "https://dev.sbx.imprint.co".to_owned(),
        ),
        ("IMPRINT_API_KEY_FILE", file("api-key", "sk_test_k8s")),
        (
            "IMPRINT_WEBHOOK_SECRET_FILE",
            file("webhook-secret", "whsec_k8s"),
        ),
        (
            "GATEWAY_CALLER_TOKENS_FILE",
            file("callers.toml", crate::harness::TOKENS_FILE),
        ),
        ("GATEWAY_REDIS_URL", "redis://redis:6379/0".to_owned()),
        ("GATEWAY_DATA_DIR", dir.0.display().to_string()),
        ("GATEWAY_GRPC_ADDR", "0.0.0.0:50051".to_owned()),
        ("GATEWAY_HTTP_ADDR", "0.0.0.0:8080".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let load = |extra: &[(&str, &str)]| {
        let mut vars = env.to_vec();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        imprint_gateway::config::Config::load_with_env(Some(&path), vars)
            .expect("the Kubernetes config.toml is valid")
    };
    // The base alone has neither TLS nor plaintext chosen: `serve` refuses
    // its non-loopback listener. The sandbox overlay and compose choose
    // plaintext; production sets the TLS files.
    let config = load(&[]);
    let refused = config.check_transport().unwrap_err().to_string();
    assert!(refused.contains("server.plaintext"), "{refused}");
    load(&[("GATEWAY__SERVER__PLAINTEXT", "true")])
        .check_transport()
        .expect("the sandbox overlay's plaintext setting");
    load(&[
        ("GATEWAY_TLS_CERT_FILE", "/run/secrets/tls/tls.crt"),
        ("GATEWAY_TLS_KEY_FILE", "/run/secrets/tls/tls.key"),
        ("GATEWAY_TLS_CLIENT_CA_FILE", "/run/secrets/tls/ca.crt"),
        ("GATEWAY__SERVER__TLS_CLIENT_CERT_REQUIRED", "true"),
    ])
    .check_transport()
    .expect("the production overlay's TLS settings");
    assert_eq!(config.server.grpc_addr.to_string(), "0.0.0.0:50051");
    assert_eq!(config.server.http_addr.to_string(), "0.0.0.0:8080");
    // The Deployment's terminationGracePeriodSeconds (45) covers the
    // preStop pause (5 s), this grace and the telemetry flush.
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.telemetry.flush_timeout, Duration::from_secs(5));
    assert!(config.cache.enabled);
}

/// The image label, the image tag the manifests and compose use, and the
/// binary's `--version` all name this version.
#[test]
fn the_deploy_files_name_this_version() {
    let version = env!("CARGO_PKG_VERSION");
    let read =
        |p: &str| std::fs::read_to_string(format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(
        read("deploy/docker/Dockerfile").contains(&format!("\nARG VERSION={version}\n")),
        "Dockerfile ARG VERSION"
    );
    assert!(
        read("deploy/kubernetes/base/kustomization.yaml").contains(&format!("newTag: {version}\n")),
        "kustomization newTag"
    );
    let compose = read("deploy/compose/compose.yaml");
    let tags: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: imprint-gateway:"))
        .collect();
    assert!(
        !tags.is_empty() && tags.iter().all(|t| *t == version),
        "{tags:?}"
    );
}

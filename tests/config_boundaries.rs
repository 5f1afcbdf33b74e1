//! `check-config` accepts only what `serve` can run: every numeric setting
//! is walked through boundary values; each value the configuration accepts
//! must start the gateway, serve a call and a health check, and stop —
//! with no panic anywhere in the process. (Its own test binary: it installs
//! a process-wide panic hook.)

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use imprint_gateway::{
    config::Config,
    pb::imprint::v2::{customer_service_client::CustomerServiceClient, GetCustomerRequest},
    server,
};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Values tried for each kind of setting.
const INTEGERS: &[&str] = &[
    "-1",
    "0",
    "1",
    "1023",
    "1024",
    "65536",
    "2147483647",
    "9223372036854775807",
];
const FLOATS: &[&str] = &[
    "-1", "0", "1e-300", "0.001", "0.5", "1", "1.5", "1000", "1e300", "nan", "inf",
];
const DURATIONS: &[&str] = &[
    "0s",
    "1ms",
    "99ms",
    "1s",
    "60s",
    "61s",
    "1day",
    "31days",
    "1000years",
];

/// An upstream that answers every call with an empty customer.
async fn upstream() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            [(http::header::CONTENT_TYPE, "application/json")],
            r#"{"id":"C1"}"#,
        )
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Every `section.key` whose default is a number or a duration.
fn numeric_settings() -> Vec<(String, String, &'static [&'static str])> {
    let defaults = toml::Value::try_from(Config::default()).unwrap();
    let mut out = Vec::new();
    for (section, table) in defaults.as_table().unwrap() {
        let Some(table) = table.as_table() else {
            continue;
        };
        for (key, value) in table {
            let values: &'static [&'static str] = match value {
                toml::Value::Integer(_) => INTEGERS,
                toml::Value::Float(_) => FLOATS,
                toml::Value::String(s) if humantime::parse_duration(s).is_ok() => DURATIONS,
                _ => continue,
            };
            out.push((section.clone(), key.clone(), values));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_value_starts_and_serves() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let base = upstream().await;
    let settings = numeric_settings();
    assert!(
        settings.len() >= 30,
        "only {} numeric settings found",
        settings.len()
    );
    let (mut accepted, mut refused) = (0, 0);
    for (section, key, values) in &settings {
        for value in *values {
            let var = format!(
                "GATEWAY__{}__{}",
                section.to_uppercase(),
                key.to_uppercase()
            );
            let env = vec![
                ("IMPRINT_API_BASE_URL".to_string(), base.clone()),
                ("IMPRINT_API_KEY".to_string(), "sk_boundary".to_string()),
                (
                    "GATEWAY_ALLOW_UNAUTHENTICATED".to_string(),
                    "true".to_string(),
                ),
                (var.clone(), value.to_string()),
            ];
            let config = match Config::load_with_env(None, env) {
                Ok(c) => c,
                Err(e) => {
                    // Refused: the message names the setting (or the
                    // variable), never the value.
                    let said = e.to_string();
                    assert!(
                        said.contains(&format!("{section}.{key}")) || said.contains(&var),
                        "{var}={value}: {said}"
                    );
                    refused += 1;
                    continue;
                }
            };
            accepted += 1;
            let before = panics.load(Ordering::SeqCst);
            let outcome =
                tokio::time::timeout(Duration::from_secs(20), start_call_stop(config)).await;
            assert!(
                outcome.is_ok(),
                "{var}={value}: accepted, but did not start/serve/stop in time"
            );
            if let Err(e) = outcome.unwrap() {
                panic!("{var}={value}: accepted by check-config, but serve failed: {e:#}");
            }
            assert_eq!(
                panics.load(Ordering::SeqCst),
                before,
                "{var}={value}: accepted, but panicked"
            );
        }
    }
    println!(
        "{} settings; {accepted} values accepted and served, {refused} refused",
        settings.len()
    );
    assert!(accepted > 0 && refused > 0);
}

async fn start_call_stop(config: Config) -> anyhow::Result<()> {
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let running = server::start(config, grpc, http).await?;
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr()))?
        .connect()
        .await?;
    let mut request = tonic::Request::new(GetCustomerRequest {
        customer_id: "C1".into(),
    });
    request.set_timeout(Duration::from_secs(5));
    // Any answer is fine (a 1 ms deadline may well time out); what matters
    // is that the server answers and is still up afterwards.
    let _ = CustomerServiceClient::new(channel)
        .get_customer(request)
        .await;
    let ready = reqwest::get(format!("http://{}/readyz", running.http_addr())).await?;
    anyhow::ensure!(
        ready.status() == 200,
        "not ready after a call: {}",
        ready.status()
    );
    running.shutdown().await
}

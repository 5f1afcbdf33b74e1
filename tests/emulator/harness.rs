//! Starts an emulator on 127.0.0.1 and talks to it with reqwest.

use std::time::Duration;

use imprint_gateway::sandbox::{Emulator, EmulatorConfig, RunningEmulator, DEFAULT_API_KEY};
use reqwest::Method;
use serde_json::Value;

pub use imprint_gateway::sandbox::seed::{JANE, JANE_CARD, JOHN, JOHN_BANK, JOHN_CARD, SAM};

pub struct Api {
    pub running: RunningEmulator,
    pub client: reqwest::Client,
    pub key: String,
    pub merchant_key: Option<String>,
}

/// An answer: status and JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "expected 2xx, got {} {}",
            self.status,
            self.body
        );
        self.body
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        self.body
    }
}

impl Api {
    pub async fn start() -> Self {
        Self::start_with(EmulatorConfig::default()).await
    }

    pub async fn start_with(config: EmulatorConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = Emulator::new(config).serve(listener).await.unwrap();
        Self {
            running,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            key: DEFAULT_API_KEY.to_string(),
            merchant_key: None,
        }
    }

    pub fn emulator(&self) -> &Emulator {
        self.running.emulator()
    }

    /// Sends with Basic auth (key as user name) unless `bearer`.
    pub async fn send(&self, method: Method, path_and_query: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .client
            .request(
                method.clone(),
                format!("{}{path_and_query}", self.running.url()),
            )
            .basic_auth(&self.key, Some(""));
        if let Some(m) = &self.merchant_key {
            req = req.header("x-imprint-merchant-key", m);
        }
        if let Some(b) = &body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        record(&method, path_and_query, status, &body);
        Answer { status, body }
    }

    pub async fn get(&self, p: &str) -> Answer {
        self.send(Method::GET, p, None).await
    }
    pub async fn post(&self, p: &str, body: Value) -> Answer {
        self.send(Method::POST, p, Some(body)).await
    }
    pub async fn patch(&self, p: &str, body: Value) -> Answer {
        self.send(Method::PATCH, p, Some(body)).await
    }
    pub async fn put(&self, p: &str, body: Value) -> Answer {
        self.send(Method::PUT, p, Some(body)).await
    }
    pub async fn delete(&self, p: &str) -> Answer {
        self.send(Method::DELETE, p, None).await
    }
}

/// With `IMPRINT_EMULATOR_RECORD=<file>`, every answer is appended there for
/// `.ci/spec_check.py` to validate against the spec's response schemas.
fn record(method: &Method, path_and_query: &str, status: u16, body: &Value) {
    use std::io::Write as _;
    let Ok(file) = std::env::var("IMPRINT_EMULATOR_RECORD") else {
        return;
    };
    let path = path_and_query.split('?').next().unwrap_or_default();
    let line = serde_json::json!({"method": method.as_str(), "path": path, "status": status, "body": body});
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

//! Signed webhook delivery, retried with exponential back-off until a 2xx,
//! like Imprint's event notifications.
//!
//! Signature: `X-IMPRINT-HMAC-SIGNATURE: t=<timestamp>,s=<hex HMAC-SHA256>`
//! over `<timestamp>.<raw body>` with the event signing token.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::Sha256;

/// Where webhooks go and how they are signed and retried.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    /// The event signing token.
    pub secret: SecretString,
    /// Attempts per delivery before giving up.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles each time up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// `t` in Unix milliseconds instead of seconds (Imprint's docs say
    /// milliseconds, its example shows seconds; receivers must take both).
    pub timestamp_millis: bool,
}

impl WebhookConfig {
    pub fn new(urls: Vec<String>, secret: SecretString) -> Self {
        Self {
            urls,
            secret,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            timestamp_millis: false,
        }
    }
}

/// One webhook delivery and how it went.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    /// The `object` of the payload: TRANSACTION, REWARD, ...
    pub object: String,
    /// The exact body sent (and signed).
    pub body: String,
    /// The signature header of the last attempt.
    pub signature: String,
    pub attempts: u32,
    pub delivered: bool,
    pub last_status: Option<u16>,
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

pub(crate) struct Webhooks {
    config: Option<WebhookConfig>,
    client: reqwest::Client,
    log: Arc<Mutex<Vec<Delivery>>>,
}

impl Webhooks {
    pub(crate) fn new(config: Option<WebhookConfig>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("webhook HTTP client");
        Self {
            config,
            client,
            log: Arc::default(),
        }
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().clone()
    }

    /// Queues `{"object": object, "data": data}` to every configured URL.
    pub(crate) fn send(&self, object: &str, data: Value) {
        let Some(config) = &self.config else { return };
        let body = json!({ "object": object, "data": data }).to_string();
        for url in &config.urls {
            let index = {
                let mut log = self.log.lock();
                log.push(Delivery {
                    url: url.clone(),
                    object: object.to_string(),
                    body: body.clone(),
                    signature: String::new(),
                    attempts: 0,
                    delivered: false,
                    last_status: None,
                });
                log.len() - 1
            };
            let (client, log, config, url, body) = (
                self.client.clone(),
                self.log.clone(),
                config.clone(),
                url.clone(),
                body.clone(),
            );
            tokio::spawn(async move { deliver(client, log, index, config, url, body).await });
        }
    }
}

async fn deliver(
    client: reqwest::Client,
    log: Arc<Mutex<Vec<Delivery>>>,
    index: usize,
    config: WebhookConfig,
    url: String,
    body: String,
) {
    let mut backoff = config.initial_backoff;
    for attempt in 1..=config.max_attempts {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let t = if config.timestamp_millis {
            now.as_millis().to_string()
        } else {
            now.as_secs().to_string()
        };
        let signature = format!(
            "t={t},s={}",
            sign(
                config.secret.expose_secret().as_bytes(),
                &t,
                body.as_bytes()
            )
        );
        let result = client
            .post(&url)
            .header("content-type", "application/json")
            .header("X-IMPRINT-HMAC-SIGNATURE", &signature)
            .body(body.clone())
            .send()
            .await;
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        {
            let mut log = log.lock();
            let d = &mut log[index];
            d.attempts = attempt;
            d.last_status = status;
            d.delivered = delivered;
            d.signature = signature;
        }
        if delivered {
            return;
        }
        tracing::debug!(%url, attempt, ?status, "webhook delivery failed; retrying");
        if attempt < config.max_attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }
    tracing::warn!(%url, "webhook delivery abandoned after {} attempts", config.max_attempts);
}

//! A stateful emulator of Imprint's v2 API and webhooks, for laptops and
//! tests: `imprint-gateway emulator` serves it alone, `imprint-gateway
//! sandbox` wires the gateway in front of it.
//!
//! It behaves like Imprint's sandbox for every path of Imprint's OpenAPI
//! description (plus the update-customer endpoint): Basic or Bearer API keys,
//! merchant keys selecting a product, spec validation with Imprint's error
//! envelopes, cursor pagination, the transaction lifecycle, rewards,
//! simulations, key rotation, and signed webhooks retried with back-off.
//! State lives in memory; seed data is deterministic for a given seed.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use imprint_gateway::sandbox::{Emulator, EmulatorConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let emulator = Emulator::new(EmulatorConfig::default());
//! let running = emulator.clone().serve(listener).await?;
//! println!("Imprint emulator on http://{}", running.addr());
//! # Ok(()) }
//! ```

mod amount;
mod body;
mod clock;
mod customers;
mod faults;
mod http;
mod keys;
mod orders;
mod payments;
mod rewards;
pub mod seed;
mod simulate;
mod state;
mod transaction_event;
mod webhooks;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use base64::Engine as _;

pub use amount::MAX_AMOUNT;
pub use faults::FaultRule;
pub use state::Product;
pub use webhooks::{sign, Delivery, WebhookConfig};

use self::{http::ApiError, state::Store, webhooks::Webhooks};

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Seed of ids and seed data: the same seed gives the same world.
    pub seed: u64,
    /// Whether to create the seed customers, payment methods, transactions...
    pub seed_data: bool,
    /// API keys accepted from the start (more can be created at /v2/keys).
    pub api_keys: Vec<String>,
    /// Products; the first one without a merchant key is the default.
    pub products: Vec<Product>,
    /// Where and how webhooks are sent; `None` sends none.
    pub webhooks: Option<WebhookConfig>,
    /// How long a customer session's client secret lives.
    pub session_ttl: Duration,
    /// How long a reward simulation runs (a second one meanwhile is a 409).
    pub simulation_time: Duration,
    /// Injected latency and failures.
    pub faults: Vec<FaultRule>,
    /// Behave like a production environment: `simulate_*` answers 403.
    pub production: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            seed_data: true,
            api_keys: vec![DEFAULT_API_KEY.to_string()],
            products: vec![
                Product::new("default", None, state::RewardProgram::Delayed),
                Product::new(
                    "statement",
                    Some("mk_sandbox_statement"),
                    state::RewardProgram::Statement,
                ),
            ],
            webhooks: None,
            session_ttl: Duration::from_secs(15 * 60),
            simulation_time: Duration::from_secs(1),
            faults: Vec::new(),
            production: false,
        }
    }
}

/// The API key the emulator accepts when none is configured.
pub const DEFAULT_API_KEY: &str = "sk_sandbox_emulator";

/// The emulator: configuration, state and webhook sender.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

struct Inner {
    config: EmulatorConfig,
    store: Store,
    webhooks: Webhooks,
}

/// A running emulator.
pub struct RunningEmulator {
    addr: SocketAddr,
    emulator: Emulator,
    task: tokio::task::JoinHandle<()>,
}

impl RunningEmulator {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn emulator(&self) -> &Emulator {
        &self.emulator
    }

    /// Stops serving.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        let store = Store::new(config.seed, &config.api_keys, &config.products);
        if config.seed_data {
            seed::populate(&store);
        }
        let webhooks = Webhooks::new(config.webhooks.clone());
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                webhooks,
            }),
        }
    }

    /// The HTTP routes, for embedding or serving.
    pub fn router(&self) -> Router {
        let v2 = Router::new()
            .route(
                "/v2/customers",
                get(customers::search_get).post(customers::search_post),
            )
            .route(
                "/v2/customers/{customer_id}",
                get(customers::get).post(customers::update),
            )
            .route("/v2/customers/{customer_id}/link", post(customers::link))
            .route(
                "/v2/customers/{customer_id}/rewards_balance",
                get(rewards::balance),
            )
            .route(
                "/v2/customers/{customer_id}/payment_methods",
                get(payments::customer_payment_methods),
            )
            .route(
                "/v2/customers/{customer_id}/transaction_intents",
                get(payments::customer_intents),
            )
            .route(
                "/v2/customers/{customer_id}/transactions",
                get(payments::customer_transactions),
            )
            .route(
                "/v2/customers/{customer_id}/rewards",
                get(rewards::customer_rewards),
            )
            .route("/v2/customer_sessions", post(customers::create_session))
            .route(
                "/v2/customer_sessions/{session_id}",
                get(customers::get_session),
            )
            .route(
                "/v2/payment_methods",
                get(payments::search_get).post(payments::search_post),
            )
            .route(
                "/v2/payment_methods/{payment_method_id}",
                get(payments::get_payment_method),
            )
            .route(
                "/v2/transaction_intents",
                post(payments::create_intent).get(payments::list_intents),
            )
            .route(
                "/v2/transaction_intents/{intent_id}",
                get(payments::get_intent).post(payments::update_intent),
            )
            .route(
                "/v2/transactions/{transaction_id}",
                get(payments::get_transaction),
            )
            .route("/v2/rewards", get(rewards::search))
            .route(
                "/v2/rewards/{reward_id}",
                get(rewards::get).patch(rewards::update),
            )
            .route("/v2/offers", get(rewards::offer))
            .route(
                "/v2/order_events",
                get(orders::list_events).post(orders::create_event),
            )
            .route(
                "/v2/order_events/{order_event_id}",
                axum::routing::delete(orders::delete_event),
            )
            .route("/v2/orders", get(orders::list).post(orders::create))
            .route(
                "/v2/orders/{order_id}",
                axum::routing::put(orders::replace).delete(orders::delete),
            )
            .route(
                "/v2/simulate_transaction_event",
                post(transaction_event::transaction_event),
            )
            .route(
                "/v2/simulate_statement_reward",
                post(simulate::statement_reward),
            )
            .route("/v2/simulate_reward", post(simulate::reward))
            .route("/v2/keys", post(keys::create).delete(keys::delete))
            .route_layer(middleware::from_fn_with_state(self.clone(), sandbox_only))
            .route_layer(middleware::from_fn_with_state(self.clone(), authenticate));
        Router::new()
            .merge(v2)
            .route(
                "/",
                get(|| async { "Imprint API emulator (imprint-gateway)\n" }).head(|| async {}),
            )
            .layer(middleware::from_fn_with_state(self.clone(), faults::inject))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the returned handle is dropped.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<RunningEmulator> {
        let addr = listener.local_addr()?;
        let router = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("emulator stopped: {e}");
            }
        });
        Ok(RunningEmulator {
            addr,
            emulator: self,
            task,
        })
    }

    /// Webhook deliveries attempted so far (for tests and the `sandbox` log).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.webhooks.deliveries()
    }

    /// Whether `key` is currently a valid API key.
    pub fn key_is_valid(&self, key: &str) -> bool {
        self.inner.store.key_is_valid(key)
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn config(&self) -> &EmulatorConfig {
        &self.inner.config
    }

    fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }
}

/// Who is calling: the API key used and the product it selected.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) api_key: String,
    pub(crate) product: Arc<Product>,
}

/// Basic (key as user name) or Bearer, like Imprint; the merchant key
/// header picks the product.
async fn authenticate(State(emu): State<Emulator>, mut req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(api_key_of);
    let Some(key) = key.filter(|k| emu.store().key_is_valid(k)) else {
        return ApiError::unauthorized().into_response();
    };
    let merchant = req
        .headers()
        .get("x-imprint-merchant-key")
        .and_then(|v| v.to_str().ok());
    let product = match emu.store().product_for(merchant) {
        Some(p) => p,
        None => {
            return ApiError::enveloped(
                axum::http::StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "unknown merchant key",
            )
            .into_response()
        }
    };
    req.extensions_mut().insert(Ctx {
        api_key: key,
        product,
    });
    next.run(req).await
}

/// Outside the sandbox, Imprint answers 403 to the simulation endpoints.
async fn sandbox_only(State(emu): State<Emulator>, req: Request, next: Next) -> Response {
    if emu.config().production && req.uri().path().starts_with("/v2/simulate_") {
        return ApiError::enveloped(
            axum::http::StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "Endpoint is only available in sandbox environments",
        )
        .into_response();
    }
    next.run(req).await
}

fn api_key_of(header: &str) -> Option<String> {
    if let Some(token) = header.strip_prefix("Bearer ") {
        return Some(token.trim().to_string()).filter(|t| !t.is_empty());
    }
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _password) = text.split_once(':').unwrap_or((&text, ""));
    Some(user.to_string()).filter(|u| !u.is_empty())
}

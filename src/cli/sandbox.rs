//! `sandbox` and `emulator`: the embedded default for laptops and tests.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;
use rand::Rng as _;
use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::{
    config::{read_secret_file, Config},
    sandbox::{seed, Emulator, EmulatorConfig, FaultRule, Product, WebhookConfig},
    server, telemetry,
};

#[derive(Debug, Args)]
pub(super) struct SandboxArgs {
    /// TOML configuration file; upstream settings are replaced by the emulator's.
    #[arg(long, env = "GATEWAY_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Seed of the emulator's ids and data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the emulator listens (default: a free loopback port).
    #[arg(long, default_value = "127.0.0.1:0")]
    emulator_addr: SocketAddr,
    #[command(flatten)]
    webhooks: WebhookArgs,
}

#[derive(Debug, Args)]
pub(super) struct EmulatorArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    /// Seed of ids and data: the same seed gives the same world.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Start empty: no seed customers.
    #[arg(long)]
    no_seed_data: bool,
    /// Behave like a production environment: simulate_* answers 403.
    #[arg(long)]
    production: bool,
    /// API key to accept (repeatable); default `sk_sandbox_emulator`.
    #[arg(long = "api-key")]
    api_keys: Vec<String>,
    /// Add latency to requests under a path: `/v2/customers=250ms` (repeatable).
    #[arg(long, value_parser = parse_latency)]
    latency: Vec<FaultRule>,
    /// Fail a share of requests under a path: `/v2/orders=0.5:503` (repeatable).
    #[arg(long, value_parser = parse_fault)]
    fault: Vec<FaultRule>,
    #[command(flatten)]
    webhooks: WebhookArgs,
}

#[derive(Debug, Args)]
struct WebhookArgs {
    /// Send signed webhooks to this URL (repeatable).
    #[arg(long = "webhook-url")]
    webhook_urls: Vec<String>,
    /// File holding the webhook signing token (else IMPRINT_WEBHOOK_SECRET,
    /// else one is generated and written to <data dir>/sandbox-webhook-secret).
    #[arg(long, env = "IMPRINT_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
}

fn parse_latency(s: &str) -> Result<FaultRule, String> {
    let (prefix, d) = s.split_once('=').ok_or("expected PATH=DURATION")?;
    let d = humantime::parse_duration(d).map_err(|e| e.to_string())?;
    Ok(FaultRule::latency(prefix, d))
}

fn parse_fault(s: &str) -> Result<FaultRule, String> {
    let (prefix, rest) = s.split_once('=').ok_or("expected PATH=RATE[:STATUS]")?;
    let (rate, status) = rest.split_once(':').unwrap_or((rest, "503"));
    let rate: f64 = rate
        .parse()
        .map_err(|_| format!("'{rate}' is not a rate between 0 and 1"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("'{rate}' is not a rate between 0 and 1"));
    }
    let status: u16 = status
        .parse()
        .map_err(|_| format!("'{status}' is not an HTTP status"))?;
    Ok(FaultRule::errors(prefix, rate, status))
}

fn random_token(prefix: &str) -> String {
    use base64::Engine as _;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The webhook target: URLs given, and the secret from a file, the
/// environment, or generated (and written where the receiver can read it).
fn webhook_config(args: &WebhookArgs) -> anyhow::Result<Option<WebhookConfig>> {
    if args.webhook_urls.is_empty() {
        return Ok(None);
    }
    let secret = if let Some(path) = &args.webhook_secret_file {
        read_secret_file(path, "IMPRINT_WEBHOOK_SECRET_FILE")?
    } else if let Ok(s) = std::env::var("IMPRINT_WEBHOOK_SECRET") {
        SecretString::from(s)
    } else {
        let dir =
            PathBuf::from(std::env::var("GATEWAY_DATA_DIR").unwrap_or_else(|_| "./data".into()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("sandbox-webhook-secret");
        let secret = random_token("whsec_");
        write_private(&path, &secret)?;
        eprintln!("webhook signing token generated: {}", path.display());
        SecretString::from(secret)
    };
    Ok(Some(WebhookConfig::new(args.webhook_urls.clone(), secret)))
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

pub(super) async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<()> {
    telemetry::init(crate::config::LogFormat::Text);
    let mut signals = super::Signals::install()?;
    let mut faults = args.latency;
    faults.extend(args.fault);
    let config = EmulatorConfig {
        seed: args.seed,
        seed_data: !args.no_seed_data,
        api_keys: if args.api_keys.is_empty() {
            EmulatorConfig::default().api_keys
        } else {
            args.api_keys
        },
        webhooks: webhook_config(&args.webhooks)?,
        faults,
        production: args.production,
        ..EmulatorConfig::default()
    };
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let running = Emulator::new(config).serve(listener).await?;
    println!("Imprint API emulator on {}", running.url());
    println!("  auth: Basic (key as user name) or Bearer; the key is --api-key (default sk_sandbox_emulator)");
    println!("  products: default (no merchant key), statement (x-imprint-merchant-key: mk_sandbox_statement)");
    signals.wait(None).await?;
    Ok(())
}

pub(super) async fn run_sandbox(args: SandboxArgs, mut config: Config) -> anyhow::Result<()> {
    telemetry::init(config.log.format);
    let mut signals = super::Signals::install()?;
    // Credentials generated for this run, known only to the two halves.
    let api_key = random_token("sk_sandbox_");
    let merchant_key = random_token("mk_sandbox_");
    // Webhooks: to the run's inspector (which verifies and prints them) and
    // to any --webhook-url, signed with the given or a generated token.
    let mut hooks = webhook_config(&args.webhooks)?.unwrap_or_else(|| {
        WebhookConfig::new(Vec::new(), SecretString::from(random_token("whsec_")))
    });
    let inspector = inspect_webhooks(hooks.secret.clone()).await?;
    hooks.urls.insert(0, inspector.clone());
    // The gateway's own webhook endpoint, with the run's secret: simulate →
    // webhook → event, end to end. Listeners first, so the URL is known.
    let (grpc, http) = server::bind(&config).await?;
    hooks
        .urls
        .insert(0, format!("http://{}/webhooks/imprint", http.local_addr()?));
    config.events.webhook_secrets.push(hooks.secret.clone());
    // A log of this run's own: the emulator's ids repeat from run to run
    // (same seed), and a persistent log would take them for duplicates.
    let run_dir = config
        .events
        .data_dir
        .join(format!("sandbox-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    config.events.data_dir = run_dir.clone();
    let mut emulator_config = EmulatorConfig {
        seed: args.seed,
        api_keys: vec![api_key.clone()],
        webhooks: Some(hooks),
        ..EmulatorConfig::default()
    };
    emulator_config.products[0] = Product::new(
        "default",
        Some(&merchant_key),
        emulator_config.products[0].reward_program,
    );
    let listener = TcpListener::bind(args.emulator_addr)
        .await
        .with_context(|| format!("binding the emulator to {}", args.emulator_addr))?;
    let emulator = Emulator::new(emulator_config).serve(listener).await?;

    config.upstream.base_url = emulator.url();
    config.upstream.api_key = Some(SecretString::from(api_key));
    config.upstream.api_key_file = None;
    config.upstream.merchant_key = Some(SecretString::from(merchant_key));
    config.upstream.connect_timeout = Duration::from_secs(1);
    config.auth.allow_loopback_unauthenticated = true;
    // An admin caller for this run, so KeyService and key rotation can be
    // tried against the emulator (whose keys resource behaves like Imprint's).
    let admin_token = random_token("igw_admin_");
    config.auth.sandbox_admin_token = Some(SecretString::from(admin_token.clone()));
    let tokens = config.auth.caller_tokens_file.is_some();

    let mut running = server::start(config, grpc, http).await?;
    println!(
        "{}",
        banner(&running, &emulator.url(), &inspector, tokens, &admin_token)
    );
    signals.wait(Some(&mut running)).await?;
    let stopped = running.shutdown().await;
    let _ = std::fs::remove_dir_all(&run_dir);
    stopped
}

/// Receives the emulator's webhooks during a sandbox run: verifies each
/// signature with the run's token and prints one line per event, so a
/// developer sees what Imprint would notify. Returns its URL.
async fn inspect_webhooks(secret: SecretString) -> anyhow::Result<String> {
    use axum::{body::Bytes, http::HeaderMap, http::StatusCode, routing::post, Router};
    use secrecy::ExposeSecret as _;

    let receive = move |headers: HeaderMap, body: Bytes| {
        let secret = secret.clone();
        async move {
            let signature = headers
                .get("x-imprint-hmac-signature")
                .and_then(|v| v.to_str().ok());
            let verified = crate::events::signature::verify(
                secret.expose_secret().as_bytes(),
                signature,
                &body,
                std::time::SystemTime::now(),
                Duration::from_secs(300),
            );
            if let Err(e) = verified {
                println!("webhook refused: {e}");
                return (StatusCode::UNAUTHORIZED, e.to_string());
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let data = &v["data"];
            let mut line = format!(
                "webhook {} (signature verified)",
                v["object"].as_str().unwrap_or("?")
            );
            for field in [
                "customer_id",
                "transaction_id",
                "reward_id",
                "payment_method_id",
                "status",
                "new_status",
                "amount",
            ] {
                if let Some(x) = data.get(field).filter(|x| !x.is_null()) {
                    line.push_str(&format!(
                        " {field}={}",
                        x.as_str().map_or_else(|| x.to_string(), str::to_string)
                    ));
                }
            }
            println!("{line}");
            (StatusCode::OK, "ok".to_string())
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the webhook inspector")?;
    let url = format!("http://{}/webhooks", listener.local_addr()?);
    let app = Router::new().route("/webhooks", post(receive));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("webhook inspector stopped: {e}");
        }
    });
    Ok(url)
}

fn banner(
    running: &server::Running,
    emulator: &str,
    inspector: &str,
    tokens: bool,
    admin_token: &str,
) -> String {
    let grpc = running.grpc_addr();
    let addr_flag = if grpc.to_string() == "127.0.0.1:50051" {
        String::new()
    } else {
        format!(" --addr {grpc}")
    };
    let token_flag = if tokens {
        " --token \"$GATEWAY_TOKEN\""
    } else {
        ""
    };
    let auth = if tokens {
        "callers need a token from GATEWAY_CALLER_TOKENS_FILE"
    } else if grpc.ip().is_loopback() {
        "callers on loopback need no token"
    } else {
        // Anonymous access is for a loopback listener only.
        "not on loopback: every call is refused until GATEWAY_CALLER_TOKENS_FILE is set"
    };
    format!(
        "imprint-gateway sandbox is ready\n\
         \n  gRPC gateway      {grpc}  ({auth})\
         \n  HTTP probes       http://{http}/healthz\
         \n  Imprint emulator  {emulator}  (key and merchant key generated for this run)\
         \n  Webhooks          http://{http}/webhooks/imprint  (the gateway's own endpoint: stored as events)\
         \n                    {inspector}  (signed with a token generated for this run; printed here)\
         \n\nFirst call, from this repository in another terminal:\
         \n  cargo run --release -- call{addr_flag}{token_flag} imprint.v2.CustomerService/GetCustomer '{{\"customer_id\":\"{john}\"}}'\
         \n\nEvery method: cargo run --release -- call{addr_flag}{token_flag} --list\
         \nImprint's webhooks as typed events, one JSON object per line as they arrive:\
         \n  cargo run --release -- call{addr_flag}{token_flag} imprint.gateway.v1.EventService/Subscribe '{{}}'\
         \n\nAdmin token of this run (KeyService, KeyManagementService, AdminService): {admin_token}\
         \nRotate the gateway's key with the emulator (create, verify, swap, delete the old):\
         \n  cargo run --release -- call{addr_flag} --token {admin_token} imprint.gateway.v1.KeyManagementService/RotateCredential '{{}}'\
         \n  cargo run --release -- call{addr_flag} --token {admin_token} imprint.gateway.v1.KeyManagementService/ListCredentials '{{}}'\
         \n  cargo run --release -- call{addr_flag} --token {admin_token} imprint.v2.KeyService/CreateKey '{{}}'\
         \nStop with Ctrl-C.",
        http = running.http_addr(),
        john = seed::JOHN,
    )
}

//! Command-line interface: `serve`, `check-config`, `sandbox`, `emulator`, `call`.

mod sandbox;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{config::Config, server, telemetry};

/// gRPC gateway in front of Imprint's REST API.
#[derive(Debug, Parser)]
#[command(name = "imprint-gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway against a real Imprint environment.
    Serve {
        /// TOML configuration file (see config/example.toml).
        #[arg(long, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective settings, secrets masked.
    CheckConfig {
        /// TOML configuration file (see config/example.toml).
        #[arg(long, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the built-in Imprint emulator and the gateway in front of it:
    /// no credentials, no network needed.
    /// Rotates an Imprint API key the way KeyManagementService/RotateCredential
    /// does (create, verify, persist, delete the old), for operators. The
    /// new key is persisted where the running gateways read it (the data
    /// directory, or Redis with GATEWAY_MASTER_KEY_FILE); they switch within
    /// `credentials.sync_interval`, and the old key is deleted after that.
    RotateKey {
        #[arg(long, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// The product whose key to rotate (default: the default product).
        #[arg(long)]
        product: Option<String>,
    },
    Sandbox(sandbox::SandboxArgs),
    /// Run the built-in Imprint emulator alone (for other teams' tests).
    Emulator(sandbox::EmulatorArgs),
    /// Call the gateway (or any gRPC server with reflection): JSON in, JSON out.
    Call(CallArgs),
}

#[derive(Debug, Args)]
struct CallArgs {
    /// `package.Service/Method`, e.g. imprint.v2.CustomerService/GetCustomer.
    method: Option<String>,
    /// The request as JSON with REST field names; `{}` when omitted.
    json: Option<String>,
    /// List the services and methods instead of calling.
    #[arg(long)]
    list: bool,
    /// gRPC address of the gateway.
    #[arg(long, env = "GATEWAY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Caller token, sent as `authorization: Bearer <token>`.
    #[arg(long, env = "GATEWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra metadata, `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Deadline of a unary call (a server stream runs until it ends).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Speak TLS, trusting this PEM CA (for a gateway with GATEWAY_TLS_CERT_FILE).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; with --key and --ca.
    #[arg(long, value_name = "FILE", requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Name the gateway's certificate must hold (default: the address's host).
    #[arg(long, value_name = "NAME", requires = "ca")]
    tls_server_name: Option<String>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(config),
        Command::Serve { config } => {
            let config = match load(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if !config.has_default_credential() {
                eprintln!(
                    "error: no Imprint API key: set IMPRINT_API_KEY or IMPRINT_API_KEY_FILE (or upstream.api_key_file in the config file)"
                );
                return ExitCode::from(2);
            }
            if let Err(e) = config.check_transport() {
                eprintln!("error: invalid configuration: {e}");
                return ExitCode::from(2);
            }
            run(serve(config))
        }
        Command::Sandbox(args) => {
            let config = match load(args.config.clone()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            run(sandbox::run_sandbox(args, config))
        }
        Command::Emulator(args) => run(sandbox::run_emulator(args)),
        Command::RotateKey { config, product } => {
            let config = match load(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            run(rotate_key(config, product))
        }
        Command::Call(args) => call(args),
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.as_deref()).map_err(|e| {
        eprintln!("error: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = server::credentials_from(&config) {
        eprintln!("error: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = config.check_transport() {
        eprintln!("error: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    if let Some(files) = server::tls_files(&config) {
        if let Err(e) = crate::tls::TlsServer::load(files) {
            eprintln!("error: invalid configuration: {e:#}");
            return ExitCode::from(2);
        }
    }
    // The base URL, the proxies the environment names, the extra CAs.
    if let Err(e) = server::upstream_client(&config) {
        eprintln!("error: invalid configuration: {e:#}");
        return ExitCode::from(2);
    }
    let callers = match &config.auth.caller_tokens_file {
        Some(path) => match crate::auth::CallerTable::load(path) {
            Ok(table) => Some(table),
            Err(e) => {
                eprintln!("error: invalid configuration: GATEWAY_CALLER_TOKENS_FILE: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    print!("{}", config.render_masked());
    // Each caller's effective policy: what it may do, never its token.
    println!("\n# Caller policy (GATEWAY_CALLER_TOKENS_FILE)");
    match &callers {
        Some(table) if !table.is_empty() => {
            let limits = &config.limits;
            for line in table
                .describe(limits.caller_rate_per_sec, limits.caller_burst)
                .lines()
            {
                println!("# {line}");
            }
        }
        _ if config.auth.allow_unauthenticated => {
            println!("# no callers: GATEWAY_ALLOW_UNAUTHENTICATED lets anyone call anything but admin services");
        }
        _ => println!("# no callers: every call is refused"),
    }
    if !config.has_default_credential() {
        eprintln!("warning: no Imprint API key configured; `serve` will refuse to start");
    }
    ExitCode::SUCCESS
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn call(args: CallArgs) -> ExitCode {
    let opts = crate::call::CallOptions {
        addr: args.addr,
        token: args.token,
        headers: args.headers,
        timeout: args.timeout,
        tls: args.ca.map(|ca| crate::call::CallTls {
            ca,
            identity: args.cert.zip(args.key),
            server_name: args.tls_server_name,
        }),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.list {
        return match rt.block_on(crate::call::list(&opts)) {
            Ok(text) => emit(&text),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(method) = args.method else {
        eprintln!("error: name a method (package.Service/Method), or use --list");
        return ExitCode::from(2);
    };
    let json = args.json.unwrap_or_default();
    if let Err(e) = crate::call::check_json_argument(&json) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = rt.block_on(async {
        if crate::call::is_server_streaming(&opts, &method).await? {
            // One JSON object per line, printed as each message arrives.
            crate::call::call_streaming(&opts, &method, &json, |line| {
                if emit(&format!("{line}\n")) != ExitCode::SUCCESS {
                    std::process::exit(1);
                }
            })
            .await
            .map(|()| String::new())
        } else {
            crate::call::call(&opts, &method, &json).await
        }
    });
    match result {
        Ok(text) if text.is_empty() => ExitCode::SUCCESS,
        Ok(text) => emit(&format!("{text}\n")),
        Err(e) => {
            eprint!("{}", e.report());
            if matches!(e, crate::call::CallError::Other(_)) {
                eprintln!();
            }
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to standard output. A reader that has gone (`call … |
/// head`) ends the output, not in a panic: for a stream, the process ends
/// there, successfully.
fn emit(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing the answer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rotate-key`: the rotation procedure outside a running gateway, over
/// the same upstream stack and vault as `serve`.
async fn rotate_key(config: Config, product: Option<String>) -> anyhow::Result<()> {
    use std::sync::Arc;

    use crate::{
        credentials::CredentialStore,
        idempotency::MemoryStore,
        keys::{KeySettings, Keys},
        services::Gateway,
    };
    telemetry::init(config.log.format);
    let u = &config.upstream;
    let client = server::upstream_client(&config)?;
    let store = Arc::new(CredentialStore::with_products(server::credentials_from(
        &config,
    )?));
    let upstream = crate::stack::stack(
        client,
        store.clone(),
        Arc::new(MemoryStore::new()),
        &server::stack_config(&config),
    );
    let gateway = Gateway::new(upstream, u.default_deadline, store.clone());
    let mut settings = KeySettings::from_config(&config);
    settings.others_follow = true;
    let audit = Arc::new(crate::audit::AuditLog::new(16));
    let keys = Keys::new(
        gateway,
        store,
        crate::keys::vault_from(&config)?,
        audit,
        settings,
    );
    // Start from the key in use (a previous rotation's), not the configured one.
    keys.sync()
        .await
        .map_err(|e| anyhow::anyhow!("reading rotated keys: {e}"))?;
    let r = keys
        .rotate(product.as_deref(), "cli", "")
        .await
        .map_err(|s| anyhow::anyhow!("rotation failed: {}", s.message()))?;
    println!(
        "rotated product '{}': now {} (was {}){}",
        r.credential.product(),
        r.credential.fingerprint(),
        r.previous_fingerprint,
        if r.previous_deleted {
            "; the old key is deleted".to_owned()
        } else {
            format!("; warning: {}", r.warning)
        }
    );
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(config.log.format);
    let mut signals = Signals::install()?;
    let mut running = server::bind_and_start(config).await?;
    signals.wait(Some(&mut running)).await?;
    tracing::info!("shutting down: finishing in-flight calls");
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The process's signal handlers. Installed before anything listens, so a
/// SIGTERM that arrives during start-up (an orchestrator changing its mind)
/// is a graceful stop rather than the default kill.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Returns on SIGTERM/SIGINT (or when the gateway stops on its own);
    /// SIGHUP reloads the gateway's credentials and caller tokens.
    pub(crate) async fn wait(
        &mut self,
        mut running: Option<&mut server::Running>,
    ) -> anyhow::Result<()> {
        loop {
            let stopped = async {
                match running.as_deref_mut() {
                    Some(r) => r.wait().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.term.recv() => return Ok(()),
                _ = self.int.recv() => return Ok(()),
                _ = self.hup.recv() => {
                    if let Some(r) = running.as_deref() {
                        if let Err(e) = r.reload() {
                            tracing::error!("reload failed, keeping the previous credentials: {e:#}");
                        }
                    }
                }
                r = stopped => return r,
            }
        }
    }
}

//! Pass-through at the cost of a plain proxy: the side-by-side harness.
//!
//! Every process under test runs alone on one core (`taskset`), the load
//! generator and the static upstream on the other(s). For each target the
//! harness runs a closed-loop load of GetCustomer (a 620-byte customer) and
//! reports the CPU time the target's processes spent per call (utime + stime
//! from `/proc/<pid>/stat` over a known call count), calls/s, p50/p99; then
//! one call at a time for the latency each hop adds. Targets:
//!
//! - `direct`: HTTP/1.1 keep-alive straight to the static upstream (the
//!   latency baseline; no process under test);
//! - `nginx`: nginx as a plain HTTP/1.1 keep-alive reverse proxy in front of
//!   the same upstream (one worker; skipped with a message when nginx is not
//!   installed: `benches/passthrough.sh` installs it);
//! - `minimal_tonic`: a tonic server answering the same customer from memory;
//! - `minimal_proxy`: the least a gRPC→REST gateway on tonic and hyper does
//!   per call: the same tonic server, whose handler GETs the customer from
//!   the static upstream with hyper's pooled HTTP/1.1 client (keep-alive,
//!   `TCP_NODELAY`, as the gateway's) and decodes the JSON into the proto
//!   with the gateway's own serde derives. No auth, layers, telemetry or
//!   request log: the floor under `gateway`, so `gateway ÷ minimal_proxy` is
//!   what the gateway's own features cost, `minimal_proxy ÷ nginx` what the
//!   stack costs before any of them;
//! - `gateway`: `imprint-gateway serve`, pass-through (cache off);
//! - `gateway_hit`: the same, answered from the response cache;
//! - `baseline`, `baseline_hit`: the same two for another build of the
//!   gateway given by `BASELINE_GATEWAY_BIN` (a before/after in one run;
//!   `GATEWAY_BIN` replaces this build's binary in the same way).
//!
//! Run: `bash benches/passthrough.sh` (CALLS, CONCURRENCY, SERVER_CPU,
//! CLIENT_CPUS override the defaults; TARGETS=minimal_tonic,gateway_hit
//! runs only the named targets; PERF_EVENTS=<perf events> counts them per
//! call, e.g. `probe_libc:malloc` after `perf probe -x <libc.so.6> malloc`;
//! TARGET_WRAPPER=<script> starts every process under test through the
//! script, e.g. one that `exec`s `valgrind --tool=callgrind "$@"`, for
//! instructions per call: the totals include start-up, warm-up and the
//! one-at-a-time calls, so take two runs that differ only in CALLS and
//! divide the difference by the difference in calls served; raise
//! MAX_SECS_PER_RUN, and read no times from such a run). Results:
//! docs/BENCHMARKS.md. Linux only.

#[path = "support/proc_stat.rs"]
mod proc_stat;
use proc_stat::clk_tck;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use imprint_gateway::pb::imprint::v2::{
    self as v2,
    customer_service_client::CustomerServiceClient,
    customer_service_server::{CustomerService, CustomerServiceServer},
    Customer, GetCustomerRequest,
};
use tokio::net::TcpListener;

/// The customer every target answers with (620 bytes of JSON).
const CUSTOMER: &str = r#"{"id":"9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4","email":"customer@example.com","phone":"+14155552671","statuses":{"Card Program Name":"OPEN","Other Program":"CLOSED"},"first_name":"John","last_name":"Doe","preferred_language":"en","ssn4":"1234","address":{"street_line1":"123 Main St","street_line2":"Apt 4B","city":"San Francisco","state":"CA","postal_code":"94105","country":"USA"},"partner_customer_id":"PARTNER_USER_456","metadata":{"preferred_language":"en","tier":3,"vip":true,"tags":["a","b"]},"created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z","email_verified":true}"#;
const CUSTOMER_ID: &str = "9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4";
const CALLER_TOKEN: &str = "bench-caller-token";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `TARGETS` (a comma-separated list of target names; all when
/// unset) asks for `name`.
fn wanted(name: &str) -> bool {
    std::env::var("TARGETS").map_or(true, |t| t.split(',').any(|n| n.trim() == name))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Peak resident set of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let [peak] = proc_stat::status_kib(pid, ["VmHWM"]);
    peak
}

/// `pid`'s resident set now, in KiB: anonymous (its heap and stacks) and
/// file-backed (mostly the pages of its own executable it has touched).
fn rss_split_kib(pid: u32) -> (u64, u64) {
    let [anon, file] = proc_stat::status_kib(pid, ["RssAnon", "RssFile"]);
    (anon, file)
}

/// `pid` and its children (nginx's workers).
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    pids
}

// ---------------------------------------------------------------- servers

/// `minimal_tonic` (the customer from memory) or `minimal_proxy` (from the
/// upstream).
enum Minimal {
    Memory(Customer),
    Proxy(MinimalProxy),
}

#[tonic::async_trait]
impl CustomerService for Minimal {
    async fn get_customer(
        &self,
        req: tonic::Request<GetCustomerRequest>,
    ) -> Result<tonic::Response<Customer>, tonic::Status> {
        match self {
            Self::Memory(customer) => Ok(tonic::Response::new(customer.clone())),
            Self::Proxy(proxy) => proxy.get_customer(&req.get_ref().customer_id).await,
        }
    }

    async fn search_customers(
        &self,
        _: tonic::Request<v2::SearchCustomersRequest>,
    ) -> Result<tonic::Response<v2::SearchCustomersResponse>, tonic::Status> {
        Err(unused())
    }

    async fn update_customer(
        &self,
        _: tonic::Request<v2::UpdateCustomerRequest>,
    ) -> Result<tonic::Response<v2::Customer>, tonic::Status> {
        Err(unused())
    }

    async fn get_rewards_balance(
        &self,
        _: tonic::Request<v2::GetRewardsBalanceRequest>,
    ) -> Result<tonic::Response<v2::GetRewardsBalanceResponse>, tonic::Status> {
        Err(unused())
    }

    async fn list_customer_payment_methods(
        &self,
        _: tonic::Request<v2::ListCustomerPaymentMethodsRequest>,
    ) -> Result<tonic::Response<v2::ListCustomerPaymentMethodsResponse>, tonic::Status> {
        Err(unused())
    }

    async fn list_customer_transaction_intents(
        &self,
        _: tonic::Request<v2::ListCustomerTransactionIntentsRequest>,
    ) -> Result<tonic::Response<v2::ListCustomerTransactionIntentsResponse>, tonic::Status> {
        Err(unused())
    }

    async fn list_customer_transactions(
        &self,
        _: tonic::Request<v2::ListCustomerTransactionsRequest>,
    ) -> Result<tonic::Response<v2::ListCustomerTransactionsResponse>, tonic::Status> {
        Err(unused())
    }

    async fn list_customer_rewards(
        &self,
        _: tonic::Request<v2::ListCustomerRewardsRequest>,
    ) -> Result<tonic::Response<v2::ListCustomerRewardsResponse>, tonic::Status> {
        Err(unused())
    }
}

/// `minimal_proxy`'s upstream client: hyper's pooled client, as the gateway's.
struct MinimalProxy {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    base: String,
}

impl MinimalProxy {
    fn new(upstream: &str) -> Self {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(http);
        Self {
            client,
            base: format!("http://{upstream}"),
        }
    }

    async fn get_customer(&self, id: &str) -> Result<tonic::Response<Customer>, tonic::Status> {
        use http_body_util::BodyExt as _;
        let uri: http::Uri = format!("{}/v2/customers/{id}", self.base)
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("customer_id"))?;
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(http_body_util::Empty::new())
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?
            .to_bytes();
        let customer =
            serde_json::from_slice(&body).map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(customer))
    }
}

/// The RPCs the harness never calls.
fn unused() -> tonic::Status {
    tonic::Status::unimplemented("not part of the benchmark")
}

/// Runs this binary as one of the helper servers, if asked to:
/// `role@addr`, or `minimal_proxy@addr@upstream`.
fn serve_role(role: &str) {
    let mut parts = role.split('@');
    let (kind, addr) = (parts.next().unwrap(), parts.next().expect("role@addr"));
    let upstream = parts.next();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.unwrap();
        match kind {
            "upstream" => {
                let app = axum::Router::new().route(
                    "/v2/customers/{id}",
                    axum::routing::get(|| async {
                        ([("content-type", "application/json")], CUSTOMER)
                    }),
                );
                axum::serve(listener, app).await.unwrap()
            }
            "minimal" | "minimal_proxy" => {
                let minimal = if kind == "minimal" {
                    Minimal::Memory(serde_json::from_str(CUSTOMER).unwrap())
                } else {
                    Minimal::Proxy(MinimalProxy::new(
                        upstream.expect("minimal_proxy@addr@upstream"),
                    ))
                };
                tonic::transport::Server::builder()
                    .tcp_nodelay(true)
                    .add_service(CustomerServiceServer::new(minimal))
                    .serve_with_incoming(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                    )
                    .await
                    .unwrap()
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// A child process that is killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // nginx's workers go with their master on SIGTERM/SIGQUIT; SIGKILL of
        // the master would orphan them, so ask politely first.
        // perf writes its data on SIGINT too.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        for _ in 0..500 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program` on `cpus`. A process under test starts through
/// `TARGET_WRAPPER` when it is set (say, a script that `exec`s `valgrind
/// --tool=callgrind "$@"`: instructions per call, which do not drift with
/// the machine's load as CPU time does).
fn pinned(cpus: &str, program: &Path, under_test: bool) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpus);
    if let Some(wrapper) = std::env::var_os("TARGET_WRAPPER").filter(|_| under_test) {
        c.arg(wrapper);
    }
    c.arg(program);
    c.stdout(Stdio::null());
    c
}

fn spawn_role(cpus: &str, role: &str, port: u16, under_test: bool) -> Proc {
    spawn_process(cpus, &format!("{role}@127.0.0.1:{port}"), under_test)
}

/// This binary as a helper server (see [`serve_role`]).
fn spawn_process(cpus: &str, role: &str, under_test: bool) -> Proc {
    let mut c = pinned(cpus, &std::env::current_exe().unwrap(), under_test);
    c.env("PASSTHROUGH_ROLE", role);
    Proc(c.spawn().unwrap())
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn spawn_nginx(cpus: &str, dir: &Path, port: u16, upstream: u16) -> Option<Proc> {
    let nginx = nginx_binary()?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           upstream imprint {{ server 127.0.0.1:{upstream}; keepalive 128; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://imprint;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut c = pinned(cpus, &nginx, true);
    c.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stderr(Stdio::null());
    Some(Proc(c.spawn().unwrap()))
}

fn spawn_gateway(binary: &Path, cpus: &str, dir: &Path, upstream: u16, cache: bool) -> (Proc, u16) {
    let (grpc, http) = (free_port(), free_port());
    let config = dir.join(if cache { "hit.toml" } else { "pass.toml" });
    std::fs::write(&config, "[cache.ttl]\nGetCustomer = \"1h\"\n").unwrap();
    let tokens = dir.join("callers.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[callers]]\nname = \"bench\"\ntoken = \"{CALLER_TOKEN}\"\nallow = [\"imprint.v2.CustomerService/*\"]\n"
        ),
    )
    .unwrap();
    let mut c = pinned(cpus, binary, true);
    c.arg("serve")
        .arg("--config")
        .arg(&config)
        .env(
            "IMPRINT_API_BASE_URL",
            format!("http://127.0.0.1:{upstream}"),
        )
        .env("IMPRINT_API_KEY", "sk_bench")
        .env("GATEWAY_CALLER_TOKENS_FILE", &tokens)
        .env("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0")
        .env(
            "GATEWAY__CACHE__ENABLED",
            if cache { "true" } else { "false" },
        )
        .env("GATEWAY_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("GATEWAY_DATA_DIR", dir.join(format!("data-{grpc}")))
        // Like nginx's `access_log off`: no line per call on either side.
        .env("RUST_LOG", "warn");
    // `REQUEST_LOG_ENTRIES=0`: the gateway without its in-memory request
    // log, to see its own footprint (the log holds up to 10 000 bodies).
    if let Ok(n) = std::env::var("REQUEST_LOG_ENTRIES") {
        c.env("GATEWAY__TELEMETRY__REQUEST_LOG_ENTRIES", n);
    }
    (Proc(c.spawn().unwrap()), grpc)
}

// ---------------------------------------------------------------- load

#[derive(Clone)]
enum Target {
    Grpc(CustomerServiceClient<tonic::transport::Channel>),
    Http(reqwest::Client, Arc<str>),
}

impl Target {
    async fn call(&mut self) {
        match self {
            Target::Grpc(c) => {
                let mut r = tonic::Request::new(GetCustomerRequest {
                    customer_id: CUSTOMER_ID.into(),
                });
                r.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {CALLER_TOKEN}").parse().unwrap(),
                );
                let c = c.get_customer(r).await.unwrap().into_inner();
                assert_eq!(c.id, CUSTOMER_ID);
            }
            Target::Http(c, url) => {
                let r = c.get(&**url).send().await.unwrap();
                assert!(r.status().is_success());
                let body = r.bytes().await.unwrap();
                assert_eq!(body.len(), CUSTOMER.len());
            }
        }
    }
}

async fn grpc_target(addr: SocketAddr) -> Target {
    for _ in 0..500 {
        if let Ok(c) = CustomerServiceClient::connect(format!("http://{addr}")).await {
            // Up means answering, not only accepting.
            let mut probe = Target::Grpc(c.clone());
            let answered = tokio::spawn(async move { probe.call().await });
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), answered).await {
                return Target::Grpc(c);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} did not come up");
}

async fn http_target(port: u16) -> Target {
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();
    let url: Arc<str> = format!("http://127.0.0.1:{port}/v2/customers/{CUSTOMER_ID}").into();
    for _ in 0..500 {
        if let Ok(r) = client.get(&*url).send().await {
            if r.status().is_success() {
                return Target::Http(client, url);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("port {port} did not come up");
}

struct Run {
    calls: usize,
    cpu_us_per_call: Option<f64>,
    calls_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

/// The calls made before a measured run: connections, pools, caches.
fn warm_up_calls(calls: usize, concurrency: usize) -> usize {
    (calls / 10).clamp(200, 2_000) / concurrency * concurrency
}

/// A closed loop of `calls` calls by `concurrency` callers (at most `limit`
/// long), measuring the CPU of `pids`.
async fn run(target: &Target, pids: &[u32], calls: usize, concurrency: usize) -> Run {
    let limit = Duration::from_secs(env_or("MAX_SECS_PER_RUN", 60));
    // Warm-up: connections, pools, caches, allocator.
    let warm = warm_up_calls(calls, concurrency);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut t = target.clone();
            tokio::spawn(async move {
                for _ in 0..warm / concurrency.max(1) {
                    t.call().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let before = ticks(pids);
    let start = Instant::now();
    let per_worker = calls / concurrency;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut t = target.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let t0 = Instant::now();
                    t.call().await;
                    lat.push(t0.elapsed());
                    if start.elapsed() > limit {
                        break;
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(calls);
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    let elapsed = start.elapsed();
    let used = ticks(pids) - before;
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    let done = lat.len();
    Run {
        calls: done,
        cpu_us_per_call: (!pids.is_empty()).then(|| used as f64 / clk_tck() * 1e6 / done as f64),
        calls_per_sec: done as f64 / elapsed.as_secs_f64(),
        p50_us: q(0.50),
        p99_us: q(0.99),
    }
}

/// `perf record` of the target while it is under load, when `PROFILE_DIR`
/// names a directory: `<dir>/<target>.data`, for `perf report -i`.
fn profile(name: &str, pids: &[u32]) -> Option<Proc> {
    let dir = PathBuf::from(std::env::var_os("PROFILE_DIR")?);
    let pid = pids.first()?;
    std::fs::create_dir_all(&dir).ok()?;
    // `PROFILE_CALLGRAPH=dwarf` for whole stacks (the release build has no
    // frame pointers); the default `fp` is cheaper and shows self time.
    let graph = std::env::var("PROFILE_CALLGRAPH").unwrap_or_else(|_| "fp".into());
    // `PROFILE_EVENT=probe_libc:malloc`: where the allocations come from,
    // instead of where the time goes. Every event is a sample (perf does
    // not thin out uprobes): keep CALLS small, with dwarf ~1 GB per 1 000.
    // Otherwise CPU time is sampled `PROFILE_FREQ` times a second (999).
    let sampling = match std::env::var("PROFILE_EVENT") {
        Ok(event) => vec!["-e".into(), event],
        Err(_) => {
            let freq = std::env::var("PROFILE_FREQ").unwrap_or_else(|_| "999".into());
            vec!["-F".to_string(), freq]
        }
    };
    let mut args = vec!["record".to_string(), "--call-graph".into(), graph];
    args.extend(sampling);
    args.extend(["-p".into(), pid.to_string(), "-o".into()]);
    args.push(dir.join(format!("{name}.data")).display().to_string());
    spawn_perf(&args, "PROFILE_DIR")
}

/// `perf <args>`, given 300 ms to attach; `None` (and why) if it cannot run.
fn spawn_perf(args: &[String], asked_by: &str) -> Option<Proc> {
    let child = Command::new("perf")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            std::thread::sleep(Duration::from_millis(300));
            Some(Proc(c))
        }
        Err(e) => {
            eprintln!("{asked_by} is set but perf cannot run ({e}): apt-get install linux-perf");
            None
        }
    }
}

/// `perf stat` of the target while it is under load, when `PERF_EVENTS`
/// names events (e.g. `probe_libc:malloc` after `perf probe -x <libc>
/// malloc`, or `syscalls:sys_enter_writev`): reported per call.
fn count_events(name: &str, pids: &[u32]) -> Option<(Proc, PathBuf)> {
    let events = std::env::var("PERF_EVENTS").ok()?;
    let pid = pids.first()?;
    // Every process of the target (nginx: master and workers).
    let all: Vec<String> = pids.iter().map(u32::to_string).collect();
    let out = std::env::temp_dir().join(format!("passthrough-{name}-{pid}.stat"));
    let args: Vec<String> = ["stat", "-x", ",", "-e", &events, "-p", &all.join(","), "-o"]
        .iter()
        .map(|a| a.to_string())
        .chain([out.display().to_string()])
        .collect();
    Some((spawn_perf(&args, "PERF_EVENTS")?, out))
}

fn report_events(name: &str, out: &Path, calls: usize) {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let _ = std::fs::remove_file(out);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split(',').collect();
        if let (Some(count), Some(event)) = (cols.first(), cols.get(2)) {
            if let Ok(n) = count.parse::<f64>() {
                eprintln!("  {name}: {event} {:.1} per call", n / calls as f64);
            }
        }
    }
}

struct Row {
    name: &'static str,
    load: Run,
    single: Run,
    rss_kib: Option<u64>,
    /// Anonymous and file-backed resident KiB right after the load.
    rss_split: Option<(u64, u64)>,
}

async fn measure(
    name: &'static str,
    target: Target,
    pids: Vec<u32>,
    calls: usize,
    concurrency: usize,
) -> Row {
    let profile = profile(name, &pids);
    let counters = count_events(name, &pids);
    let load = run(&target, &pids, calls, concurrency).await;
    drop(profile);
    if let Some((proc, out)) = counters {
        drop(proc);
        // The counters ran over the warm-up too (and are slowed by their
        // probes: this row's times are not comparable to a run without).
        report_events(name, &out, load.calls + warm_up_calls(calls, concurrency));
    }
    let rss_kib = pids.first().map(|p| peak_rss_kib(*p));
    let rss_split = pids.first().map(|p| rss_split_kib(*p));
    let single = run(&target, &pids, (calls / 10).clamp(500, 5_000), 1).await;
    eprintln!(
        "  {name}: {} calls, {:.0} calls/s, cpu/call {}",
        load.calls,
        load.calls_per_sec,
        load.cpu_us_per_call
            .map(|c| format!("{c:.1} µs"))
            .unwrap_or_else(|| "-".into())
    );
    Row {
        name,
        load,
        single,
        rss_kib,
        rss_split,
    }
}

fn main() {
    if let Ok(role) = std::env::var("PASSTHROUGH_ROLE") {
        return serve_role(&role);
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not run us.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let calls: usize = env_or("CALLS", 40_000);
    let concurrency: usize = env_or("CONCURRENCY", 32);
    let server_cpu: String = env_or("SERVER_CPU", "1".to_string());
    let client_cpus: String = env_or("CLIENT_CPUS", "0".to_string());
    // The load generator (this process) and the upstream keep off the
    // server's core; pin before the runtime starts its threads.
    let pinned_self = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &client_cpus,
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(pinned_self, "taskset is needed (util-linux)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("passthrough-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rows = rt.block_on(async {
        let up_port = free_port();
        let _upstream = spawn_role(&client_cpus, "upstream", up_port, false);
        let mut rows = Vec::new();

        if wanted("direct") {
            let direct = http_target(up_port).await;
            rows.push(measure("direct", direct, vec![], calls, concurrency).await);
        }

        let n_port = free_port();
        let nginx = wanted("nginx")
            .then(|| spawn_nginx(&server_cpu, &dir, n_port, up_port))
            .flatten();
        if let Some(nginx) = nginx {
            let t = http_target(n_port).await;
            let pids = with_children(nginx.0.id());
            rows.push(measure("nginx", t, pids, calls, concurrency).await);
        } else if wanted("nginx") {
            eprintln!(
                "nginx is not installed: no proxy baseline (benches/passthrough.sh installs it)"
            );
        }

        if wanted("minimal_tonic") {
            let m_port = free_port();
            let minimal = spawn_role(&server_cpu, "minimal", m_port, true);
            let t = grpc_target(([127, 0, 0, 1], m_port).into()).await;
            rows.push(measure("minimal_tonic", t, vec![minimal.0.id()], calls, concurrency).await);
            drop(minimal);
        }

        if wanted("minimal_proxy") {
            let m_port = free_port();
            let role = format!("minimal_proxy@127.0.0.1:{m_port}@127.0.0.1:{up_port}");
            let minimal = spawn_process(&server_cpu, &role, true);
            let t = grpc_target(([127, 0, 0, 1], m_port).into()).await;
            rows.push(measure("minimal_proxy", t, vec![minimal.0.id()], calls, concurrency).await);
            drop(minimal);
        }

        // `BASELINE_GATEWAY_BIN`: another build of the gateway (say, the
        // commit before a change), measured in the same run as this one.
        let this = std::env::var_os("GATEWAY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_imprint-gateway")));
        let mut gateways = vec![("gateway", "gateway_hit", this)];
        if let Some(b) = std::env::var_os("BASELINE_GATEWAY_BIN") {
            gateways.insert(0, ("baseline", "baseline_hit", PathBuf::from(b)));
        }
        for (pass_name, hit_name, binary) in gateways {
            if wanted(pass_name) {
                let (gw, port) = spawn_gateway(&binary, &server_cpu, &dir, up_port, false);
                let t = grpc_target(([127, 0, 0, 1], port).into()).await;
                rows.push(measure(pass_name, t, vec![gw.0.id()], calls, concurrency).await);
                drop(gw);
            }
            if wanted(hit_name) {
                let (gw, port) = spawn_gateway(&binary, &server_cpu, &dir, up_port, true);
                let t = grpc_target(([127, 0, 0, 1], port).into()).await;
                rows.push(measure(hit_name, t, vec![gw.0.id()], calls, concurrency).await);
                drop(gw);
            }
        }
        rows
    });
    let _ = std::fs::remove_dir_all(&dir);
    report(&rows, calls, concurrency, &server_cpu, &client_cpus);
}

fn report(rows: &[Row], calls: usize, concurrency: usize, server_cpu: &str, client_cpus: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\npassthrough: GetCustomer, {calls} calls at {concurrency} concurrent, then one at a time; \
         server on cpu {server_cpu}, load generator and upstream on cpu {client_cpus}; loadavg {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "| target | CPU/call | calls/s | p50 | p99 | p50, one at a time | CPU/call, one at a time | peak RSS |\n|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {} | {} |",
            r.name,
            r.load
                .cpu_us_per_call
                .map(|c| format!("{c:.1} µs"))
                .unwrap_or_else(|| "-".into()),
            r.load.calls_per_sec,
            r.load.p50_us,
            r.load.p99_us,
            r.single.p50_us,
            r.single
                .cpu_us_per_call
                .map(|c| format!("{c:.1} µs"))
                .unwrap_or_else(|| "-".into()),
            r.rss_kib
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
        );
    }
    let get = |n: &str| rows.iter().find(|r| r.name == n);
    let cpu = |n: &str| get(n).and_then(|r| r.load.cpu_us_per_call);
    let single = |n: &str| get(n).map(|r| r.single.p50_us);
    println!();
    // `a ÷ b` of CPU per call, and of the latency each adds over `direct`
    // one call at a time, when both were measured.
    let cpu_ratio = |label: &str, a: &str, b: &str, note: &str| {
        if let (Some(a), Some(b)) = (cpu(a), cpu(b)) {
            println!("{label:<42}{:.2}×{note}", a / b);
        }
    };
    let latency_ratio = |a: &str, b: &str, note: &str| {
        if let (Some(x), Some(y), Some(d)) = (single(a), single(b), single("direct")) {
            println!(
                "latency added, one at a time: {a} {:.0} µs, {b} {:.0} µs: {:.2}×{note}",
                x - d,
                y - d,
                (x - d) / (y - d)
            );
        }
    };
    cpu_ratio(
        "gateway CPU/call ÷ nginx CPU/call:",
        "gateway",
        "nginx",
        " (goal ≤ 1.25×)",
    );
    latency_ratio("gateway", "nginx", " (goal ≤ 1.0×)");
    cpu_ratio(
        "minimal proxy CPU/call ÷ nginx CPU/call:",
        "minimal_proxy",
        "nginx",
        " (the stack's floor)",
    );
    cpu_ratio(
        "gateway CPU/call ÷ minimal proxy:",
        "gateway",
        "minimal_proxy",
        " (the gateway's own features)",
    );
    latency_ratio("minimal_proxy", "nginx", "");
    cpu_ratio(
        "cache hit CPU/call ÷ minimal tonic:",
        "gateway_hit",
        "minimal_tonic",
        " (goal ≤ 1.2×)",
    );
    if let (Some(h), Some(m)) = (get("gateway_hit"), get("minimal_tonic")) {
        println!(
            "cache hit calls/s ÷ minimal tonic:        {:.2}× (goal ≥ 0.9×)",
            h.load.calls_per_sec / m.load.calls_per_sec
        );
    }
    cpu_ratio(
        "gateway CPU/call ÷ baseline build:",
        "gateway",
        "baseline",
        "",
    );
    cpu_ratio(
        "cache hit CPU/call ÷ baseline build:",
        "gateway_hit",
        "baseline_hit",
        "",
    );
    if let Some(r) = get("gateway").and_then(|r| r.rss_kib) {
        println!(
            "gateway peak RSS under load:              {:.1} MiB (goal ≤ 25 MiB)",
            r as f64 / 1024.0
        );
    }
    let gateways = rows
        .iter()
        .filter(|r| r.name.starts_with("gateway") || r.name.starts_with("baseline"));
    for r in gateways {
        if let Some((anon, file)) = r.rss_split.filter(|s| *s != (0, 0)) {
            println!(
                "{} RSS after the load: {:.1} MiB anonymous + {:.1} MiB file-backed (executable and libraries)",
                r.name,
                anon as f64 / 1024.0,
                file as f64 / 1024.0
            );
        }
    }
}

//! A cache hit through the whole gateway vs a minimal tonic server returning
//! the same message: the server process's CPU time per call (from
//! `/proc/<pid>/stat`, utime + stime, over a known call count) and the
//! throughput, under a closed-loop load. Both servers are separate
//! processes: the gateway binary (`serve`) and this benchmark re-run as
//! the minimal server. Linux only.
//!
//! Run: `cargo bench --bench cache_hit` (CALLS, CONCURRENCY override the
//! defaults). Results: docs/BENCHMARKS.md.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use imprint_gateway::pb::imprint::v2::{
    transaction_service_client::TransactionServiceClient,
    transaction_service_server::{TransactionService, TransactionServiceServer},
    GetTransactionRequest, Transaction,
};
use tokio::net::TcpListener;

const TRANSACTION: &str = r#"{"id":"E777214A","intent_id":"5B30532B","customer_id":"9B5E1EE0","authorization_code":"ABCD",
"payment_method_id":"DCBFC736","purchase_method":"CONTACTLESS","amount":5000,"currency":"USD","status":"CAPTURED",
"network_transaction_id":"txn-789","created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z",
"merchant":{"network_id":"234923454545","name":"Target","category":"Grocery Stores","category_code":"5411"},
"metadata":{"platform_version":"2.1.0"}}"#;

struct Minimal(Transaction);

#[tonic::async_trait]
impl TransactionService for Minimal {
    async fn get_transaction(
        &self,
        _: tonic::Request<GetTransactionRequest>,
    ) -> Result<tonic::Response<Transaction>, tonic::Status> {
        Ok(tonic::Response::new(self.0.clone()))
    }
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
    // Fields after the command name (which may hold spaces): state is 3rd.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clk_tck() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn wait_up(addr: SocketAddr) -> TransactionServiceClient<tonic::transport::Channel> {
    for _ in 0..500 {
        if let Ok(c) = TransactionServiceClient::connect(format!("http://{addr}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} did not come up");
}

struct Measured {
    cpu_us_per_call: f64,
    calls_per_sec: f64,
}

async fn measure(pid: u32, addr: SocketAddr, calls: usize, concurrency: usize) -> Measured {
    let client = wait_up(addr).await;
    let request = || GetTransactionRequest {
        transaction_id: "E777214A".into(),
    };
    // Warm up (and fill the cache).
    for _ in 0..2000 {
        client.clone().get_transaction(request()).await.unwrap();
    }
    let before = cpu_ticks(pid);
    let start = Instant::now();
    let per_worker = calls / concurrency;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    c.get_transaction(request()).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = start.elapsed();
    let ticks = cpu_ticks(pid) - before;
    let done = (per_worker * concurrency) as f64;
    Measured {
        cpu_us_per_call: ticks as f64 / clk_tck() * 1e6 / done,
        calls_per_sec: done / elapsed.as_secs_f64(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(addr) = std::env::var("CACHE_HIT_BENCH_MINIMAL") {
        // Re-run as the minimal server.
        rt.block_on(async {
            let listener = TcpListener::bind(addr).await.unwrap();
            let txn: Transaction = serde_json::from_str(TRANSACTION).unwrap();
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(TransactionServiceServer::new(Minimal(txn)))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                )
                .await
                .unwrap()
        });
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not run us.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let calls = env_usize("CALLS", 40_000);
    let concurrency = env_usize("CONCURRENCY", 16);
    rt.block_on(async move {
        let imprint = {
            let app = axum::Router::new().route(
                "/v2/transactions/{id}",
                axum::routing::get(|| async {
                    ([("content-type", "application/json")], TRANSACTION)
                }),
            );
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
            a
        };
        let dir = std::env::temp_dir().join(format!("cache-hit-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("gateway.toml");
        std::fs::write(&config, "[cache.ttl]\nGetTransaction = \"1h\"\n").unwrap();
        let (g_grpc, g_http, m_port) = (free_port(), free_port(), free_port());
        let mut gateway: Child = Command::new(env!("CARGO_BIN_EXE_imprint-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("IMPRINT_API_BASE_URL", format!("http://{imprint}"))
            .env("IMPRINT_API_KEY", "sk_bench")
            .env("GATEWAY_ALLOW_UNAUTHENTICATED", "true")
            .env("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0")
            .env("GATEWAY_GRPC_ADDR", format!("127.0.0.1:{g_grpc}"))
            .env("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{g_http}"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut minimal: Child = Command::new(std::env::current_exe().unwrap())
            .env("CACHE_HIT_BENCH_MINIMAL", format!("127.0.0.1:{m_port}"))
            .spawn()
            .unwrap();
        let m = measure(
            minimal.id(),
            ([127, 0, 0, 1], m_port).into(),
            calls,
            concurrency,
        )
        .await;
        let g = measure(
            gateway.id(),
            ([127, 0, 0, 1], g_grpc).into(),
            calls,
            concurrency,
        )
        .await;
        println!("calls={calls} concurrency={concurrency}");
        println!(
            "minimal_tonic   cpu/call {:8.1} µs   throughput {:9.0} calls/s",
            m.cpu_us_per_call, m.calls_per_sec
        );
        println!(
            "gateway (hit)   cpu/call {:8.1} µs   throughput {:9.0} calls/s",
            g.cpu_us_per_call, g.calls_per_sec
        );
        println!(
            "ratios: cpu/call {:.2}x   throughput {:.2}x",
            g.cpu_us_per_call / m.cpu_us_per_call,
            g.calls_per_sec / m.calls_per_sec
        );
        let _ = gateway.kill();
        let _ = minimal.kill();
        let _ = gateway.wait();
        let _ = minimal.wait();
        let _ = std::fs::remove_dir_all(&dir);
    });
}

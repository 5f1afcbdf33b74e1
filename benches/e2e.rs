//! What a caller pays for going through the gateway, end to end on loopback.
//!
//! Three ways to get the same transaction, in the same run:
//! - `direct_rest`: reqwest GET to the (fake, in-process) Imprint and decode
//!   the JSON, what a service would do without the gateway;
//! - `minimal_tonic`: a tonic server that answers GetTransaction from memory,
//!   the cost of a gRPC hop alone;
//! - `gateway`: GetTransaction through the real gateway (auth, rate limit,
//!   every upstream layer) to the same fake Imprint.
//!
//! gateway ≈ direct_rest + minimal_tonic + the gateway's own work.
//! Run: `cargo bench --bench e2e`. Results: docs/BENCHMARKS.md.

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use imprint_gateway::{
    config::Config,
    pb::imprint::v2::{
        transaction_service_client::TransactionServiceClient,
        transaction_service_server::{TransactionService, TransactionServiceServer},
        GetTransactionRequest, Transaction,
    },
    server,
};
use tokio::net::TcpListener;

const TRANSACTION: &str = r#"{"id":"E777214A","intent_id":"5B30532B","customer_id":"9B5E1EE0","authorization_code":"ABCD",
"payment_method_id":"DCBFC736","purchase_method":"CONTACTLESS","amount":5000,"currency":"USD","status":"CAPTURED",
"network_transaction_id":"txn-789","created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z",
"merchant":{"network_id":"234923454545","name":"Target","category":"Grocery Stores","category_code":"5411"},
"metadata":{"platform_version":"2.1.0"}}"#;

async fn fake_imprint() -> SocketAddr {
    let app = axum::Router::new().route(
        "/v2/transactions/{id}",
        axum::routing::get(|| async { ([("content-type", "application/json")], TRANSACTION) }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

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

async fn minimal_tonic() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let txn: Transaction = serde_json::from_str(TRANSACTION).unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(TransactionServiceServer::new(Minimal(txn)))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
            .unwrap()
    });
    addr
}

fn request() -> GetTransactionRequest {
    GetTransactionRequest {
        transaction_id: "E777214A".into(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (imprint, minimal, gateway) = rt.block_on(async {
        let imprint = fake_imprint().await;
        let minimal = minimal_tonic().await;
        let config = Config::load_with_env(
            None,
            [
                ("IMPRINT_API_BASE_URL", format!("http://{imprint}")),
                ("IMPRINT_API_KEY", "sk_bench".to_string()),
                ("GATEWAY_ALLOW_UNAUTHENTICATED", "true".to_string()),
                ("GATEWAY__LIMITS__CALLER_RATE_PER_SEC", "0".to_string()),
                // Every call goes to Imprint: the cache-hit path is measured by
                // benches/passthrough.rs (`gateway_hit`).
                ("GATEWAY__CACHE__ENABLED", "false".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        )
        .unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = server::start(config, grpc, http).await.unwrap();
        let gateway = running.grpc_addr();
        std::mem::forget(running);
        (imprint, minimal, gateway)
    });
    let (rest, mut to_minimal, mut to_gateway) = rt.block_on(async {
        let rest = reqwest::Client::builder().build().unwrap();
        let m = TransactionServiceClient::connect(format!("http://{minimal}"))
            .await
            .unwrap();
        let g = TransactionServiceClient::connect(format!("http://{gateway}"))
            .await
            .unwrap();
        (rest, m, g)
    });
    let url = format!("http://{imprint}/v2/transactions/E777214A");

    let mut g = c.benchmark_group("get_transaction");
    g.bench_function("direct_rest", |b| {
        b.iter(|| {
            rt.block_on(async {
                let body = rest
                    .get(&url)
                    .basic_auth("sk_bench", Some(""))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                serde_json::from_slice::<Transaction>(&body).unwrap()
            })
        })
    });
    g.bench_function("minimal_tonic", |b| {
        b.iter(|| rt.block_on(to_minimal.get_transaction(request())).unwrap())
    });
    g.bench_function("gateway", |b| {
        b.iter(|| rt.block_on(to_gateway.get_transaction(request())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

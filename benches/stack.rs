//! What the upstream layers cost on the success path: the whole stack
//! (trace, idempotency check, deadline, breaker, retry, load shedding,
//! attempt timeout, credentials) against the bare inner service, in the same
//! run, with an in-memory "Imprint" so only the gateway's own work counts.
//!
//! Run: `cargo bench --bench stack`. Results: docs/BENCHMARKS.md.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method, StatusCode};
use imprint_gateway::{
    credentials::{AuthScheme, Credential, CredentialStore},
    idempotency::MemoryStore,
    stack::{self, StackConfig},
    telemetry::{Telemetry, TelemetrySettings},
    translate::RestCall,
    upstream::{self, UpstreamError, UpstreamRequest, UpstreamResponse},
};
use opentelemetry::{
    trace::{
        FutureExt as _, SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    },
    Context,
};
use secrecy::SecretString;
use tower::{service_fn, util::BoxCloneSyncService, Layer as _, ServiceExt};

fn request() -> UpstreamRequest {
    UpstreamRequest {
        rpc: "imprint.v2.CustomerService/GetCustomer",
        template: "/v2/customers/{customer_id}",
        call: RestCall {
            method: Method::GET,
            path_and_query: "/v2/customers/9B5E1EE0".into(),
            body: None,
            sensitive: Vec::new(),
        },
        headers: HeaderMap::new(),
        deadline: Some(tokio::time::Instant::now() + Duration::from_secs(10)),
        request_id: "bench".into(),
        caller: "bench".into(),
        idempotency_key: None,
        mutating: false,
        sensitive_fields: &[],
        secret_fields: &[],
        stats: Arc::default(),
        product: None,
        authenticate_with: None,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = Bytes::from_static(br#"{"id":"9B5E1EE0"}"#);
    let imprint = service_fn(move |_: UpstreamRequest| {
        let body = body.clone();
        async move {
            Ok::<_, UpstreamError>(UpstreamResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body,
                decoded: None,
            })
        }
    });
    let credentials = Arc::new(CredentialStore::new(Some(
        Credential::new(
            SecretString::from("sk_bench"),
            Some(SecretString::from("mk")),
            AuthScheme::Basic,
        )
        .unwrap(),
    )));
    let config = StackConfig::default();
    let on_credentials = credentials.clone();
    let full = rt.block_on(async {
        stack::stack_over(
            imprint.clone(),
            credentials,
            Arc::new(MemoryStore::new()),
            &config,
        )
    });
    let bare = BoxCloneSyncService::new(imprint.clone());
    // Each layer alone over the same inner service, to see where time goes.
    let alone = [
        (
            "trace",
            BoxCloneSyncService::new(
                upstream::TraceLayer::new(imprint_gateway::telemetry::Telemetry::disabled())
                    .layer(imprint.clone()),
            ),
        ),
        (
            "deadline",
            BoxCloneSyncService::new(upstream::DeadlineLayer::new().layer(imprint.clone())),
        ),
        (
            "breaker",
            BoxCloneSyncService::new(
                upstream::CircuitBreakerLayer::new(Default::default(), Telemetry::disabled())
                    .layer(imprint.clone()),
            ),
        ),
        (
            "retry",
            BoxCloneSyncService::new(
                upstream::RetryLayer::new(Default::default()).layer(imprint.clone()),
            ),
        ),
        (
            "load_shed",
            BoxCloneSyncService::new(
                upstream::LoadShedLayer::new(Default::default()).layer(imprint.clone()),
            ),
        ),
        (
            "attempt_timeout",
            BoxCloneSyncService::new(
                upstream::AttemptTimeoutLayer::new(Duration::from_secs(5)).layer(imprint.clone()),
            ),
        ),
    ];

    let mut g = c.benchmark_group("upstream_call");
    g.bench_function("bare_inner_service", |b| {
        b.iter(|| rt.block_on(bare.clone().oneshot(request())).unwrap())
    });
    g.bench_function("full_stack", |b| {
        b.iter(|| rt.block_on(full.clone().oneshot(request())).unwrap())
    });
    g.finish();

    // Telemetry off (no endpoint: no spans, metrics only) against on (OTLP
    // export configured, inside a sampled caller trace), same stack, same run.
    let (on, on_telemetry) = rt.block_on(async {
        let telemetry = Telemetry::new(&TelemetrySettings {
            // Nothing listens: spans are built, batched and their export fails
            // off the call path, which is what the call itself pays for.
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            service_name: "bench".into(),
            metrics_interval: Duration::from_secs(3600),
            upstream_host: "127.0.0.1".into(),
            ..TelemetrySettings::default()
        })
        .unwrap();
        let config = StackConfig {
            telemetry: telemetry.clone(),
            ..StackConfig::default()
        };
        let on = stack::stack_over(
            imprint.clone(),
            on_credentials.clone(),
            Arc::new(MemoryStore::new()),
            &config,
        );
        (on, telemetry)
    });
    let caller_trace = Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let mut g = c.benchmark_group("telemetry");
    g.bench_function("off", |b| {
        b.iter(|| {
            rt.block_on(
                full.clone()
                    .oneshot(request())
                    .with_context(caller_trace.clone()),
            )
            .unwrap()
        })
    });
    g.bench_function("on_otlp", |b| {
        b.iter(|| {
            rt.block_on(
                on.clone()
                    .oneshot(request())
                    .with_context(caller_trace.clone()),
            )
            .unwrap()
        })
    });
    g.finish();
    // Stop the exporters while the runtime that runs their tasks is driven:
    // dropped later, the provider would wait on a task nothing polls.
    drop(on);
    rt.block_on(on_telemetry.shutdown(Duration::from_secs(1)));

    let mut g = c.benchmark_group("layer_alone");
    for (name, svc) in alone {
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(svc.clone().oneshot(request())).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Telemetry: log set-up, and the OpenTelemetry traces and metrics of one
//! gateway instance.
//!
//! Providers are built per [`Telemetry`] (one per running server) and
//! passed to the layers that use them, never installed globally: tests run
//! many gateways in one process and each keeps its own exporters. Traces are
//! exported only when an OTLP endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`); without one no span is built at all.
//! Metrics are always kept (they back `GET /metrics`) and also pushed over
//! OTLP when an endpoint is set. Names are in `docs/OBSERVABILITY.md`.

mod admin;
mod metrics;
mod propagation;
pub mod request_log;
mod rpc;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use opentelemetry::{metrics::MeterProvider as _, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    metrics::{periodic_reader_with_async_runtime::PeriodicReader, SdkMeterProvider},
    runtime,
    trace::{span_processor_with_async_runtime::BatchSpanProcessor, SdkTracer, SdkTracerProvider},
    Resource,
};
use tracing_subscriber::{fmt, EnvFilter};

pub use admin::{list_upstream_calls, page_cursor, since_time};
pub use metrics::Metrics;
pub use propagation::{extract, inject};
pub use request_log::RequestLog;
pub use rpc::{RpcTelemetry, RpcTelemetryLayer};

use crate::config::LogFormat;

/// Span event names the upstream trace layer emits on the call's span.
pub mod events {
    pub const BREAKER_REJECTED: &str = "breaker.rejected";
    pub const LOAD_SHED: &str = "load.shed";
    pub const IDEMPOTENT_REPLAY: &str = "idempotency.replayed";
    pub const IDEMPOTENCY_CONFLICT: &str = "idempotency.conflict";
    /// The answer came from the response cache.
    pub const CACHE_HIT: &str = "cache.hit";
    /// The response cache was consulted and had nothing.
    pub const CACHE_MISS: &str = "cache.miss";
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), text
/// or JSON lines on stderr. A second call is a no-op (tests start many
/// gateways in one process).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// What [`Telemetry::new`] needs (from `[telemetry]` and `OTEL_*`).
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    /// OTLP/gRPC endpoint; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// How often metrics are pushed over OTLP.
    pub metrics_interval: Duration,
    /// The host of Imprint's base URL (`server.address` on client spans).
    pub upstream_host: String,
    /// Bounds of the request log (0 turns it off).
    pub request_log_entries: usize,
    pub request_log_max_bytes: usize,
}

/// The tracer, meter and registry of one gateway instance.
pub struct Telemetry {
    tracer: Option<SdkTracer>,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: SdkMeterProvider,
    registry: prometheus::Registry,
    metrics: Metrics,
    upstream_host: Arc<str>,
    request_log: RequestLog,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("tracing", &self.tracer.is_some())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Builds the providers. Must run inside the tokio runtime: the OTLP
    /// batch processors are tasks on it.
    pub fn new(settings: &TelemetrySettings) -> anyhow::Result<Arc<Self>> {
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
            .context("building the Prometheus exporter")?;
        let mut meters = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(prometheus);
        let (tracer, tracer_provider) = match &settings.otlp_endpoint {
            Some(endpoint) => {
                let spans = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .build()
                    .context("OTEL_EXPORTER_OTLP_ENDPOINT (traces)")?;
                let provider = SdkTracerProvider::builder()
                    .with_resource(resource.clone())
                    .with_span_processor(BatchSpanProcessor::builder(spans, runtime::Tokio).build())
                    .build();
                let pushed = opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .build()
                    .context("OTEL_EXPORTER_OTLP_ENDPOINT (metrics)")?;
                meters = meters.with_reader(
                    PeriodicReader::builder(pushed, runtime::Tokio)
                        .with_interval(settings.metrics_interval)
                        .build(),
                );
                (Some(provider.tracer("imprint-gateway")), Some(provider))
            }
            None => (None, None),
        };
        let meter_provider = meters.build();
        let metrics = Metrics::new(&meter_provider.meter("imprint-gateway"));
        Ok(Arc::new(Self {
            tracer,
            tracer_provider,
            meter_provider,
            registry,
            metrics,
            upstream_host: settings.upstream_host.as_str().into(),
            request_log: RequestLog::new(
                settings.request_log_entries,
                settings.request_log_max_bytes,
            ),
        }))
    }

    /// No export and no registry: what benchmarks and unit tests use.
    pub fn disabled() -> Arc<Self> {
        let meter_provider = SdkMeterProvider::builder().build();
        Arc::new(Self {
            tracer: None,
            tracer_provider: None,
            metrics: Metrics::new(&meter_provider.meter("imprint-gateway")),
            meter_provider,
            registry: prometheus::Registry::new(),
            upstream_host: "".into(),
            request_log: RequestLog::new(0, 0),
        })
    }

    /// The tracer, when traces are exported.
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.tracer.as_ref()
    }

    /// The meter of this instance, for modules that publish their own
    /// observable instruments (the response cache).
    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.meter_provider.meter("imprint-gateway")
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The redacted log of recent upstream calls.
    pub fn request_log(&self) -> &RequestLog {
        &self.request_log
    }

    pub fn upstream_host(&self) -> &Arc<str> {
        &self.upstream_host
    }

    /// Every metric in the Prometheus text format.
    pub fn prometheus_text(&self) -> String {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Flushes and stops the exporters, waiting at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        let tracer = self.tracer_provider.clone();
        let meters = self.meter_provider.clone();
        // The SDK's shutdown blocks on the export; keep it off the runtime's workers.
        let done = tokio::task::spawn_blocking(move || {
            if let Some(t) = tracer {
                let _ = t.force_flush();
                let _ = t.shutdown_with_timeout(timeout);
            }
            let _ = meters.force_flush();
            let _ = meters.shutdown_with_timeout(timeout);
        });
        if tokio::time::timeout(timeout + Duration::from_millis(100), done)
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "telemetry flush did not finish in time");
        }
    }
}

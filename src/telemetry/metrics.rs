//! The gateway's instruments, created once per [`super::Telemetry`].
//!
//! Label values are bounded by construction: gRPC methods the gateway
//! serves (anything else is `_OTHER`), route templates (never paths),
//! status codes, causes from a fixed set, and caller names from the caller
//! tokens file (never from input).

use opentelemetry::{
    metrics::{
        Counter, Gauge, Histogram, Meter, ObservableCounter, ObservableGauge, UpDownCounter,
    },
    KeyValue,
};

/// Buckets for call durations in seconds: 1 ms to 30 s.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every instrument; see `docs/OBSERVABILITY.md` for names and labels.
pub struct Metrics {
    /// `rpc.server.call.duration` {rpc.method, rpc.response.status_code}.
    pub rpc_duration: Histogram<f64>,
    /// `http.client.request.duration` per attempt {http.request.method,
    /// url.template, http.response.status_code | error.type}.
    pub client_duration: Histogram<f64>,
    /// `gateway.upstream.attempts` {url.template}.
    pub attempts: Counter<u64>,
    /// `gateway.upstream.retries` {url.template, cause}.
    pub retries: Counter<u64>,
    /// `gateway.upstream.in_flight`: attempts on the wire now.
    pub in_flight: UpDownCounter<i64>,
    /// `gateway.upstream.rejected` {reason = breaker_open | shed}.
    pub rejected: Counter<u64>,
    /// `gateway.breaker.state` {server.address, state = closed | open |
    /// half_open}: 1 for the breaker's current state, 0 for the others.
    pub breaker_state: Gauge<u64>,
    /// `gateway.breaker.transitions` {server.address, from, to}.
    pub breaker_transitions: Counter<u64>,
    /// `gateway.ratelimit.rejected` {caller}.
    pub rate_limited: Counter<u64>,
    /// `gateway.idempotency.outcomes` {outcome = replayed | conflict}.
    pub idempotency: Counter<u64>,
    _decode: ObservableCounter<u64>,
    _build: ObservableGauge<u64>,
}

impl Metrics {
    pub(super) fn new(meter: &Meter) -> Self {
        Self {
            rpc_duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Duration of gRPC calls served")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            client_duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of each HTTP attempt to Imprint")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            attempts: meter
                .u64_counter("gateway.upstream.attempts")
                .with_description("HTTP attempts sent to Imprint")
                .build(),
            retries: meter
                .u64_counter("gateway.upstream.retries")
                .with_description("Retried attempts to Imprint, by the cause of the retry")
                .build(),
            in_flight: meter
                .i64_up_down_counter("gateway.upstream.in_flight")
                .with_description("Attempts to Imprint in flight")
                .build(),
            rejected: meter
                .u64_counter("gateway.upstream.rejected")
                .with_description("Calls not sent: breaker open or shed")
                .build(),
            breaker_state: meter
                .u64_gauge("gateway.breaker.state")
                .with_description(
                    "The circuit breaker's state: 1 for the current one, 0 for the others",
                )
                .build(),
            breaker_transitions: meter
                .u64_counter("gateway.breaker.transitions")
                .with_description("Circuit breaker state changes, by from and to")
                .build(),
            rate_limited: meter
                .u64_counter("gateway.ratelimit.rejected")
                .with_description("Calls refused by the per-caller rate limit")
                .build(),
            idempotency: meter
                .u64_counter("gateway.idempotency.outcomes")
                .with_description(
                    "Keyed calls answered by a recorded result or refused as a conflict",
                )
                .build(),
            _decode: meter
                .u64_observable_counter("gateway.decode.anomalies")
                .with_description("Upstream values left unset: malformed or unknown enum")
                .with_callback(|o| {
                    o.observe(
                        crate::json::malformed_values(),
                        &[KeyValue::new("kind", "malformed")],
                    );
                    o.observe(
                        crate::json::unknown_enum_values(),
                        &[KeyValue::new("kind", "unknown_enum")],
                    );
                })
                .build(),
            _build: meter
                .u64_observable_gauge("gateway.build.info")
                .with_description("Always 1; the version is a label")
                .with_callback(|o| {
                    o.observe(1, &[KeyValue::new("version", env!("CARGO_PKG_VERSION"))]);
                })
                .build(),
        }
    }
}

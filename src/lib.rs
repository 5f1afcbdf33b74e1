//! imprint-gateway: a gRPC gateway in front of Imprint's REST API.
//!
//! The path of a call: a tonic service in [`services`] turns the proto
//! request into a REST call with [`translate`], sends it through the
//! [`upstream`] tower stack (trace → cache → idempotency → deadline → … → credentials → the HTTP client (hyper)), and
//! decodes the JSON answer with the mapping in [`json`]. Upstream failures
//! become gRPC statuses in exactly one place, [`errors`].

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod call;
pub mod cli;
pub mod config;
pub mod conn_activity;
pub mod credentials;
pub mod dispatch;
pub mod errors;
pub mod events;
pub mod idempotency;
pub mod json;
pub mod keys;
pub mod pb;
pub mod ratelimit;
pub mod request_id;
pub mod sandbox;
pub mod server;
pub mod services;
pub mod stack;
pub mod telemetry;
pub mod tls;
pub mod translate;
pub mod upstream;

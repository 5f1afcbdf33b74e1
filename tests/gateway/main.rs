//! End-to-end tests: a real tonic client → the real gateway on a loopback
//! port → a scripted fake Imprint on another loopback port. One module per
//! behaviour; one binary so the suite links once.

#![allow(unreachable_pub)]

#[allow(dead_code)]
mod fixtures;
#[allow(dead_code)]
mod harness;
#[allow(dead_code)]
mod otlp;
#[allow(dead_code)]
mod secrets_scan;

mod auth;
mod cache;
mod dashboard;
mod deadlines;
mod errors;
mod events;
mod events_durable;
mod events_sandbox;
mod hardening;
mod idempotency;
mod identity;
mod keys;
mod replicas;
mod required_presence;
mod resilience;
mod routes;
mod rpc_customers;
mod rpc_links_sessions;
mod rpc_orders;
mod rpc_payments;
mod rpc_rewards_offers;
mod rpc_sandbox;
mod sandbox_flow;
mod server;
mod telemetry;
mod translation;

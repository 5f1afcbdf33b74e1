//! The Imprint emulator on its own, over HTTP, as other teams' tests use it.

#![allow(unreachable_pub)]

#[allow(dead_code)]
mod harness;

mod amounts;
mod auth_keys;
mod lifecycle;
mod paths;
mod validation;
mod webhooks;

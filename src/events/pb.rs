//! Generated code of `proto/imprint/gateway/v1/events.proto`.
//!
//! Nested the way prost expects (`imprint::gateway::v1`), with `imprint::v2`
//! re-exported so the generated `super::super::v2::...` paths resolve.

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::derive_partial_eq_without_eq
)]
pub mod imprint {
    pub use crate::pb::imprint::v2;
    pub mod gateway {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/imprint.gateway.v1.rs"));
        }
    }
}

pub use imprint::gateway::v1::*;

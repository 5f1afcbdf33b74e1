//! Generated code of `proto/imprint/gateway/v1/events.proto` (with the
//! rest of `imprint.gateway.v1`; compiled once, in [`crate::pb`]).

pub use crate::pb::gateway::v1::*;

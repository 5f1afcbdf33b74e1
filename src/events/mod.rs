//! Imprint's webhooks, seen from the receiving side.
//!
//! [`signature`] verifies `X-IMPRINT-HMAC-SIGNATURE` the way Imprint's notes
//! require; the emulator's tests use it to prove their deliveries verify.

pub mod signature;

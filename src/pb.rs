//! Generated protobuf code: prost messages and tonic services, the REST
//! spelling of every enum, and a redacted `Debug` for every message with a
//! field marked `(imprint.gateway.v1.sensitive)` — all written by `build.rs`
//! from the proto.

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::derive_partial_eq_without_eq
)]
pub mod imprint {
    pub mod gateway {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/imprint.gateway.v1.rs"));
        }
    }
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/imprint.v2.rs"));
        include!(concat!(env!("OUT_DIR"), "/rest_enums.rs"));
        include!(concat!(env!("OUT_DIR"), "/redacted_debug.rs"));
    }
}

/// The encoded descriptors of every served proto (annotations included),
/// for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/imprint_descriptor.bin"));

/// What the generated `Debug` prints in place of a sensitive value.
pub(crate) const REDACTED: &str = "[redacted]";

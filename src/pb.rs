//! Generated protobuf code, plus what the generator cannot write: redacted
//! `Debug` for messages that hold secrets.

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::derive_partial_eq_without_eq
)]
pub mod imprint {
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/imprint.v2.rs"));
        include!(concat!(env!("OUT_DIR"), "/rest_enums.rs"));
    }
}

/// The encoded descriptors of every served proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/imprint_descriptor.bin"));

use std::fmt;

use imprint::v2::{CustomerSession, ListPaymentMethodsRequest, PciDetails, SearchCustomersRequest};

const REDACTED: &str = "[redacted]";

fn redacted<T>(v: &Option<T>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

impl fmt::Debug for CustomerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerSession")
            .field("id", &self.id)
            .field("client_secret", &REDACTED)
            .field("expires_at", &self.expires_at)
            .field("metadata", &self.metadata)
            .field("customer_metadata", &self.customer_metadata)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Debug for SearchCustomersRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchCustomersRequest")
            .field("partner_customer_id", &self.partner_customer_id)
            .field("ssn", &redacted(&self.ssn))
            .field("date_of_birth", &redacted(&self.date_of_birth))
            .field("limit", &self.limit)
            .field("starting_after", &self.starting_after)
            .finish()
    }
}

impl fmt::Debug for ListPaymentMethodsRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListPaymentMethodsRequest")
            .field("customer_id", &self.customer_id)
            .field("type", &self.r#type)
            .field("limit", &self.limit)
            .field("starting_after", &self.starting_after)
            .field("pan", &redacted(&self.pan))
            .finish()
    }
}

impl fmt::Debug for PciDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciDetails")
            .field("pan", &redacted(&self.pan))
            .field("exp_month", &redacted(&self.exp_month))
            .field("exp_year", &redacted(&self.exp_year))
            .field("cvv", &redacted(&self.cvv))
            .finish()
    }
}

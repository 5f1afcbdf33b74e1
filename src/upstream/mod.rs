//! The REST client for Imprint and the tower stack around it.
//!
//! Everything that happens to every upstream call is a layer here, assembled
//! in one place, [`stack`]; handlers only build an [`UpstreamRequest`].

mod client;
mod deadline;
mod error;
mod trace;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use tower::{util::BoxCloneSyncService, ServiceBuilder};

pub use client::{ClientConfig, HttpClient};
pub use deadline::{Deadline, DeadlineLayer};
pub use error::{ApiError, TransportKind, UpstreamError};
pub use trace::{Trace, TraceLayer};

use crate::{credentials::CredentialStore, credentials::CredentialsLayer, translate::RestCall};

/// One call to Imprint, as it travels down the stack.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Full gRPC method the call serves (for spans and metrics).
    pub rpc: &'static str,
    /// The route template, e.g. `/v2/customers/{customer_id}`: low
    /// cardinality, and free of ids.
    pub template: &'static str,
    /// What goes on the wire.
    pub call: RestCall,
    /// Extra headers; the credentials layer adds `authorization` here.
    pub headers: HeaderMap,
    /// When the caller stops waiting; bounds everything below.
    pub deadline: Option<Instant>,
    /// Sent as `x-request-id` and returned to the caller.
    pub request_id: Arc<str>,
}

/// A successful (2xx) answer from Imprint. Non-2xx answers are
/// [`UpstreamError::Status`], so every layer sees failures the same way.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The assembled stack, boxed at the boundary to keep types readable.
pub type UpstreamService = BoxCloneSyncService<UpstreamRequest, UpstreamResponse, UpstreamError>;

/// Assembles the upstream stack, outermost layer first.
pub fn stack(client: HttpClient, credentials: Arc<CredentialStore>) -> UpstreamService {
    let svc = ServiceBuilder::new()
        // One span per call, outermost so its timing covers every layer.
        .layer(TraceLayer::new())
        // The caller's deadline bounds the whole call, whatever runs below.
        .layer(DeadlineLayer::new())
        // The Imprint key is added last, right before the wire, and nowhere else.
        .layer(CredentialsLayer::new(credentials))
        .service(client);
    BoxCloneSyncService::new(svc)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A minimal request for layer tests.
    pub(crate) fn request() -> UpstreamRequest {
        UpstreamRequest {
            rpc: "imprint.v2.CustomerService/GetCustomer",
            template: "/v2/customers/{customer_id}",
            call: RestCall {
                method: http::Method::GET,
                path_and_query: "/v2/customers/c1".into(),
                body: None,
            },
            headers: HeaderMap::new(),
            deadline: None,
            request_id: "req-1".into(),
        }
    }
}

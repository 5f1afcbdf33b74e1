//! Translation of a gRPC request message into a REST call, declared per RPC.
//!
//! Every RPC is described by a [`Route`]: method, path template, which fields
//! are query parameters, which are required, and which fields force the
//! body-carrying `POST` variant (SSN, date of birth, PAN must never appear
//! in a URL). [`build`] does the rest generically in one serialization pass
//! over the request message: path fields are percent-encoded into the
//! template, query fields become the query string (only when set), and every
//! other set field goes into the JSON body.

mod split;

use bytes::Bytes;
use http::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

pub use split::FieldViolation;

/// How one RPC maps onto Imprint's REST API.
#[derive(Debug, Clone)]
pub struct Route {
    /// Full gRPC method name, e.g. `imprint.v2.CustomerService/GetCustomer`.
    pub rpc: &'static str,
    /// HTTP method of the ordinary form of the call.
    pub method: Method,
    /// Path template; `{field}` segments are filled from the request.
    pub path: &'static str,
    /// Fields sent as query parameters (when the call has no body).
    pub query: &'static [&'static str],
    /// Fields that must be set; a call without them never leaves the gateway.
    pub required: &'static [&'static str],
    /// Sensitive fields: when any is set the call is sent as `POST` to the
    /// same path with every non-path field in the JSON body.
    pub body_only: &'static [&'static str],
    /// Secret fields of the response, never stored (idempotency records).
    pub secret_response_fields: &'static [&'static str],
}

/// A gRPC request message that maps onto one REST call.
pub trait Endpoint: Serialize + Send + Sync + 'static {
    /// The proto response.
    type Response: Send + 'static;
    /// How the call maps onto REST.
    const ROUTE: Route;
    /// Decodes a successful upstream body into the response.
    fn decode(body: &[u8]) -> Result<Self::Response, serde_json::Error>;
}

/// The REST form of one call: what goes on the wire, minus host and auth.
/// Its `Debug` shows the body's size only: bodies carry SSNs and PANs.
#[derive(Clone)]
pub struct RestCall {
    pub method: Method,
    /// Percent-encoded path and query string, e.g. `/v2/customers/a%2Fb?limit=2`.
    pub path_and_query: String,
    /// JSON body, for POST/PUT/PATCH.
    pub body: Option<Bytes>,
    /// The set values of the request's sensitive fields, so that an echo
    /// of one in Imprint's error text can be scrubbed.
    pub sensitive: Vec<secrecy::SecretString>,
}

impl std::fmt::Debug for RestCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestCall")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("body_bytes", &self.body.as_ref().map(|b| b.len()))
            .finish()
    }
}

/// Path-segment encoding: everything but unreserved characters is escaped,
/// so `/`, `?`, `#`, `%` and spaces in an id can never change the route.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Builds the REST call for `request`, or says which fields are invalid.
pub fn build<E: Endpoint>(request: &E) -> Result<RestCall, Vec<FieldViolation>> {
    let route = &E::ROUTE;
    let fields = split::split(request, route)?;

    let mut url = String::with_capacity(route.path.len() + 48);
    let mut rest = route.path;
    while let Some(open) = rest.find('{') {
        url.push_str(&rest[..open]);
        let close = open
            + rest[open..]
                .find('}')
                .expect("route template braces balance");
        let name = &rest[open + 1..close];
        let value = fields.path_value(name).expect("path fields are required");
        url.extend(percent_encoding::utf8_percent_encode(value, SEGMENT));
        rest = &rest[close + 1..];
    }
    url.push_str(rest);

    let with_body = route.method != Method::GET && route.method != Method::DELETE;
    if fields.body_only_set || with_body {
        let method = if with_body {
            route.method.clone()
        } else {
            Method::POST
        };
        return Ok(RestCall {
            method,
            path_and_query: url,
            body: Some(fields.body.into()),
            sensitive: Vec::new(),
        });
    }
    let mut sep = '?';
    for (name, value) in &fields.query {
        url.push(sep);
        sep = '&';
        url.extend(percent_encoding::utf8_percent_encode(name, SEGMENT));
        url.push('=');
        url.extend(percent_encoding::utf8_percent_encode(value, SEGMENT));
    }
    Ok(RestCall {
        method: route.method.clone(),
        path_and_query: url,
        body: None,
        sensitive: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::imprint::v2::{DateOfBirth, ListPaymentMethodsRequest, SearchCustomersRequest};

    #[test]
    fn sensitive_searches_go_in_a_body_that_debug_never_shows() {
        let call = build(&SearchCustomersRequest {
            ssn: Some("123456789".into()),
            date_of_birth: Some(DateOfBirth {
                year: Some(1990),
                ..Default::default()
            }),
            limit: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.path_and_query, "/v2/customers");
        let body = String::from_utf8(call.body.clone().unwrap().to_vec()).unwrap();
        assert_eq!(
            body,
            r#"{"ssn":"123456789","date_of_birth":{"year":1990},"limit":2}"#
        );
        assert!(!format!("{call:?}").contains("123456789"));

        let call = build(&ListPaymentMethodsRequest {
            customer_id: "C1".into(),
            pan: Some("4111111111111111".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(!format!("{call:?}").contains("4111"));
        assert!(!call.path_and_query.contains("4111"));
    }

    #[test]
    fn without_sensitive_fields_a_search_is_a_get_with_a_query() {
        let call = build(&SearchCustomersRequest {
            partner_customer_id: Some("a b&c".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(call.method, Method::GET);
        assert_eq!(
            call.path_and_query,
            "/v2/customers?partner_customer_id=a%20b%26c"
        );
        assert!(call.body.is_none());
    }
}

//! `x-request-id` on every answer.
//!
//! The outermost layer of the gRPC server: it settles the call's request id
//! (the caller's, when it is a sane token, else a fresh UUID) before anything
//! else can refuse the call, puts it in the request for everything below
//! (services send it upstream, logs carry it), and copies it onto the
//! response. Refusals by auth, rate limits, message-size limits or shedding
//! carry it like any answer, so a caller can always quote it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// The metadata key, in both directions.
pub const HEADER: &str = "x-request-id";

/// [`HEADER`] as a header name: no parsing on the way in and out.
pub const HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

/// Whether a caller's id is usable as is: 1 to 128 characters of
/// `A-Z a-z 0-9 - _ . :`, so it is safe in logs and upstream headers.
pub fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(
            |b| matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':'),
        )
}

/// The caller's id if sane, else a fresh UUID.
pub fn settle(given: Option<&str>) -> String {
    given
        .filter(|id| is_sane(id))
        .map_or_else(new_id, str::to_owned)
}

/// A fresh UUIDv4 from the thread's CSPRNG (`rand`), not from a `getrandom`
/// system call per call as `Uuid::new_v4` makes.
fn new_id() -> String {
    fresh_uuid().to_string()
}

fn fresh_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// The id of a call as a header value: the caller's when sane (its bytes
/// shared, not copied), else a fresh UUID written without a `String`.
fn settle_value(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = given.filter(|v| v.to_str().is_ok_and(is_sane)) {
        return v.clone();
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = fresh_uuid().hyphenated().encode_lower(&mut buf);
    // A UUID is visible ASCII: always a valid header value.
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("invalid"))
}

/// Builds [`RequestId`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

/// Settles the request id and returns it on the response.
#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for RequestId<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let value = settle_value(req.headers().get(HEADER_NAME));
        req.headers_mut().insert(HEADER_NAME, value.clone());
        ResponseFuture {
            inner: self.inner.call(req),
            id: Some(value),
        }
    }
}

pin_project! {
    /// Adds `x-request-id` to the inner service's response.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(mut id) = this.id.take() {
            // New on every call: never indexed by HPACK (see the services).
            id.set_sensitive(true);
            // The services set it too (the same value); keep theirs.
            if let http::header::Entry::Vacant(e) = response.headers_mut().entry(HEADER_NAME) {
                e.insert(id);
            }
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert_eq!(settle(Some("req-1:a.b_c")), "req-1:a.b_c");
        for bad in ["", "a b", "a\nb", &"x".repeat(129)] {
            let id = settle(Some(bad));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok());
        }
        let kept = HeaderValue::from_static("req-1:a.b_c");
        assert_eq!(settle_value(Some(&kept)), kept);
        for bad in ["a b", "ä", &"x".repeat(129)] {
            let bad = HeaderValue::from_str(bad).unwrap_or(HeaderValue::from_static("a b"));
            let id = settle_value(Some(&bad));
            assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        }
        assert!(uuid::Uuid::parse_str(settle_value(None).to_str().unwrap()).is_ok());
    }
}

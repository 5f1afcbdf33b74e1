//! The innermost service: one reqwest client (rustls, pooled keep-alive
//! connections shared by every call) that puts an [`UpstreamRequest`] on the
//! wire and classifies the answer.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use http::{header, HeaderValue};
use tower::Service;

use super::{ApiError, TransportKind, UpstreamError, UpstreamRequest, UpstreamResponse};

/// Connection settings of the upstream client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Imprint's base URL, e.g. `https://dev.sbx.imprint.co` (no trailing slash).
    pub base_url: String,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub tcp_keepalive: Duration,
    /// Answers larger than this are refused rather than buffered.
    pub max_response_bytes: usize,
}

/// Sends requests to Imprint. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base_url: Arc<str>,
    /// `base_url` parsed once: a call sets only its path and query, so the
    /// host is not parsed (and IDNA-mapped) again on every call.
    base: Option<reqwest::Url>,
    max_response_bytes: usize,
}

impl HttpClient {
    pub fn new(config: &ClientConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .tcp_keepalive(config.tcp_keepalive)
            .tcp_nodelay(true)
            // Imprint never redirects an API call; following one could send
            // the credential somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("imprint-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base_url: Arc<str> = config.base_url.trim_end_matches('/').into();
        // Only a base without a path of its own can take a call's path as is.
        let base = reqwest::Url::parse(&base_url)
            .ok()
            .filter(|u| !u.cannot_be_a_base() && u.path() == "/" && u.query().is_none());
        Ok(Self {
            client,
            base_url,
            base,
            max_response_bytes: config.max_response_bytes,
        })
    }
}

impl HttpClient {
    /// Whether Imprint's host answers HTTP at all (any status counts), for
    /// readiness. Sends no credential.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let url = format!("{}/", self.base_url);
        match tokio::time::timeout(timeout, self.client.head(url).send()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.without_url().to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Starts the request of a call: on the parsed base with the call's
    /// path and query set, or (a base with a path of its own) on the two
    /// strings joined, which reqwest parses.
    fn request(&self, method: http::Method, path_and_query: &str) -> reqwest::RequestBuilder {
        let Some(base) = &self.base else {
            return self
                .client
                .request(method, format!("{}{path_and_query}", self.base_url));
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut url = base.clone();
        url.set_path(path);
        url.set_query(query);
        self.client.request(method, url)
    }
}

impl Service<UpstreamRequest> for HttpClient {
    type Response = UpstreamResponse;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<UpstreamResponse, UpstreamError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), UpstreamError>> {
        // reqwest queues internally; the concurrency limit layer bounds it.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: UpstreamRequest) -> Self::Future {
        req.stats.note_sent();
        let mut builder = self
            .request(req.call.method, &req.call.path_and_query)
            .headers(req.headers);
        if let Ok(id) = HeaderValue::from_str(&req.request_id) {
            builder = builder.header("x-request-id", id);
        }
        builder = builder.header(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(body) = req.call.body {
            builder = builder
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(body);
        }
        let limit = self.max_response_bytes;
        let sensitive = req.call.sensitive;
        Box::pin(async move {
            let mut response = builder.send().await.map_err(transport)?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let body = read_limited(&mut response, limit).await?;
            let Some(body) = body else {
                // Too large. A failure keeps its status (a 5xx stays a 5xx
                // for retries, the breaker and the caller's code); only a
                // success we cannot hold is an error of its own.
                if status.is_success() {
                    return Err(UpstreamError::Decode(serde::de::Error::custom(
                        format_args!("Imprint's answer exceeds the {limit}-byte limit"),
                    )));
                }
                return Err(UpstreamError::Status {
                    status,
                    error: Box::default(),
                    retry_after: retry_after(&headers),
                });
            };
            if status.is_success() {
                return Ok(UpstreamResponse {
                    status,
                    headers,
                    body,
                    decoded: None,
                });
            }
            let mut error = ApiError::parse(&body);
            error.scrub(&sensitive);
            Err(UpstreamError::Status {
                status,
                error: Box::new(error),
                retry_after: retry_after(&headers),
            })
        })
    }
}

/// The body, or `None` when it is larger than `limit`: read chunk by chunk
/// so a body without a length cannot grow past the limit either.
async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<bytes::Bytes>, UpstreamError> {
    match response.content_length() {
        Some(n) if n > limit as u64 => return Ok(None),
        // The usual answer, one chunk: taken as is, not copied.
        Some(n) if n > 0 => {
            if let Some(first) = response.chunk().await.map_err(transport)? {
                if first.len() as u64 == n {
                    return Ok(Some(first));
                }
                let mut body = bytes::BytesMut::with_capacity(n as usize);
                body.extend_from_slice(&first);
                return read_rest(response, body, limit).await;
            }
            return Ok(Some(bytes::Bytes::new()));
        }
        _ => {}
    }
    read_rest(response, bytes::BytesMut::with_capacity(8 * 1024), limit).await
}

async fn read_rest(
    response: &mut reqwest::Response,
    mut body: bytes::BytesMut,
    limit: usize,
) -> Result<Option<bytes::Bytes>, UpstreamError> {
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

fn transport(e: reqwest::Error) -> UpstreamError {
    let kind = if e.is_connect() {
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::Interrupted
    };
    // The URL holds ids only (secrets never go in URLs), but it adds nothing
    // a caller needs; keep messages short.
    UpstreamError::Transport {
        kind,
        source: e.without_url(),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    // Bounded: a wait beyond a day is nonsense, and an unbounded one would
    // overflow the deadline arithmetic.
    const MAX: Duration = Duration::from_secs(24 * 3600);
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .min(MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}

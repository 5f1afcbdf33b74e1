//! Records every allowed call to an admin-only method, with its outcome
//! (refused ones are recorded by the auth layer, which refuses them).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tower::{Layer, Service};

use super::{AuditLog, Outcome};

/// Builds [`Audited`].
#[derive(Clone)]
pub struct AuditLayer {
    log: Arc<AuditLog>,
    /// Which methods are audited (the auth module's admin-only services).
    is_admin: fn(&str) -> bool,
    /// The caller's name from the request extensions (set by the auth layer).
    caller: fn(&http::Extensions) -> Option<String>,
}

impl AuditLayer {
    pub fn new(
        log: Arc<AuditLog>,
        is_admin: fn(&str) -> bool,
        caller: fn(&http::Extensions) -> Option<String>,
    ) -> Self {
        Self {
            log,
            is_admin,
            caller,
        }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audited<S>;
    fn layer(&self, inner: S) -> Audited<S> {
        Audited {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AuditLayer`].
#[derive(Clone)]
pub struct Audited<S> {
    inner: S,
    layer: AuditLayer,
}

impl<S, B, ResBody> Service<http::Request<B>> for Audited<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    /// Other methods pass straight through, without an allocation.
    type Future = futures::future::Either<
        S::Future,
        Pin<Box<dyn Future<Output = Result<http::Response<ResBody>, S::Error>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !(self.layer.is_admin)(req.uri().path().trim_start_matches('/')) {
            return futures::future::Either::Left(self.inner.call(req));
        }
        let method = req.uri().path().trim_start_matches('/').to_owned();
        let actor = (self.layer.caller)(req.extensions()).unwrap_or_else(|| "anonymous".into());
        let request_id = req
            .headers()
            .get(crate::request_id::HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let log = self.layer.log.clone();
        let call = self.inner.call(req);
        futures::future::Either::Right(Box::pin(async move {
            let result = call.await;
            // A unary error answer is trailers-only: its grpc-status is in
            // the headers. A success carries grpc-status 0 in the trailers.
            let (outcome, detail) = match &result {
                Ok(resp) => match resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .filter(|c| *c != "0")
                {
                    Some(code) => {
                        let code = tonic::Code::from_bytes(code.as_bytes());
                        (Outcome::Failed, format!("{code:?}"))
                    }
                    None => (Outcome::Ok, String::new()),
                },
                Err(_) => (Outcome::Failed, "transport error".to_owned()),
            };
            log.record(&actor, &method, "", outcome, &detail, &request_id);
            result
        }))
    }
}

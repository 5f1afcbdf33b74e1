//! Authenticates and authorizes every gRPC call before it reaches a service.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{self, Either, Ready};
use tower::{Layer, Service};

use super::{Caller, CallerRegistry, Denied};
use crate::audit::AuditLog;
use crate::tls::PeerInfo;

/// Methods anyone may call: orchestrators probe health without a token.
const OPEN_SERVICES: &[&str] = &["grpc.health.v1.Health/"];
/// Methods every authenticated caller may call, whatever its allow list.
const AUTHENTICATED_SERVICES: &[&str] = &[
    "grpc.reflection.v1.ServerReflection/",
    "grpc.reflection.v1alpha.ServerReflection/",
];

/// Builds [`CallerAuth`].
#[derive(Debug, Clone)]
pub struct CallerAuthLayer {
    registry: Arc<CallerRegistry>,
    audit: Option<Arc<AuditLog>>,
}

impl CallerAuthLayer {
    pub fn new(registry: Arc<CallerRegistry>) -> Self {
        Self {
            registry,
            audit: None,
        }
    }

    /// Records refused calls to admin-only services in `audit`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }
}

impl<S> Layer<S> for CallerAuthLayer {
    type Service = CallerAuth<S>;
    fn layer(&self, inner: S) -> CallerAuth<S> {
        CallerAuth {
            inner,
            registry: self.registry.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// Answers UNAUTHENTICATED or PERMISSION_DENIED itself, or passes the call on
/// with the [`Caller`](super::Caller) in the request extensions.
#[derive(Debug, Clone)]
pub struct CallerAuth<S> {
    inner: S,
    registry: Arc<CallerRegistry>,
    audit: Option<Arc<AuditLog>>,
}

impl<S, B, ResBody> Service<http::Request<B>> for CallerAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().trim_start_matches('/');
        if OPEN_SERVICES.iter().any(|p| method.starts_with(p)) {
            return Either::Left(self.inner.call(req));
        }
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // Both listeners' connections carry ours: the peer's address, and on
        // TLS the verified client certificate's identity.
        let connection = req.extensions().get::<PeerInfo>();
        let peer = connection.and_then(|c| c.remote_addr).map(|a| a.ip());
        let cert = connection.and_then(|c| c.certificate.as_deref());
        let check = if AUTHENTICATED_SERVICES.iter().any(|p| method.starts_with(p)) {
            self.registry.authenticate(authorization, peer, cert)
        } else {
            self.registry.authorize(authorization, peer, cert, method)
        };
        if let (Err(denied), Some(audit)) = (&check, &self.audit) {
            if Caller::is_admin_method(method) {
                let (actor, why) = match denied {
                    Denied::Unauthenticated(why) => ("(unauthenticated)", *why),
                    Denied::NotAllowed { caller } => (caller.as_str(), "not an admin caller"),
                };
                let request_id = req
                    .headers()
                    .get(crate::request_id::HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                audit.denied(actor, method, why, request_id);
            }
        }
        let caller = match check {
            Ok(c) => c,
            Err(Denied::Unauthenticated(why)) => {
                tracing::info!(method, why, "call refused: unauthenticated");
                return Either::Right(future::ready(Ok(
                    tonic::Status::unauthenticated(why).into_http()
                )));
            }
            Err(Denied::NotAllowed { caller }) => {
                tracing::info!(method, caller, "call refused: not allowed");
                let status = tonic::Status::permission_denied(format!(
                    "caller '{caller}' may not call {method}"
                ));
                return Either::Right(future::ready(Ok(status.into_http())));
            }
        };
        req.extensions_mut().insert(caller);
        Either::Left(self.inner.call(req))
    }
}

//! The gateway's own gRPC methods, dispatched by path ahead of tonic's
//! router: the innermost layer of the gRPC server, so every other layer
//! (request id, caller auth, audit, telemetry, rate limit) still applies,
//! in the same order.
//!
//! tonic's router is axum's. It hands each request's body through axum's
//! body type and back into tonic's, and each answer's body the same way:
//! two more boxed bodies at each end, polled for every message (for every
//! event of every subscriber of a Subscribe stream), and per call a path
//! lookup, a boxed service clone and a boxed future. Here one `match` on the
//! path, generated with the routes ([`services::serve_reply`]), reaches the
//! `imprint.v2` methods, and EventService's paths its server. Anything else
//! (health, reflection, admin, keys, unknown paths) goes on to the router,
//! where every service is registered as well. `docs/BENCHMARKS.md` has
//! what it saves.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{future::Either, TryFutureExt as _};

use crate::{
    events::{Events, EventsServer},
    services::{self, reply::GrpcConfig, Gateway},
};

/// Whether `path` is one of EventService's: `/<service>/<method>`.
fn is_events(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(Events::SERVICE_NAME))
        .is_some_and(|method| method.starts_with('/'))
}

struct Own {
    gateway: Gateway,
    config: GrpcConfig,
    events: EventsServer,
}

/// See the module docs.
#[derive(Clone)]
pub struct DispatchLayer(Arc<Own>);

impl DispatchLayer {
    pub fn new(gateway: Gateway, config: GrpcConfig, events: EventsServer) -> Self {
        Self(Arc::new(Own {
            gateway,
            config,
            events,
        }))
    }
}

impl<S> tower::Layer<S> for DispatchLayer {
    type Service = Dispatch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dispatch {
            own: self.0.clone(),
            inner,
        }
    }
}

/// See [`DispatchLayer`].
#[derive(Clone)]
pub struct Dispatch<S> {
    own: Arc<Own>,
    inner: S,
}

type OwnFuture<E> = futures::future::MapErr<services::reply::ReplyFuture, fn(Infallible) -> E>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Dispatch<S>
where
    S: tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
    >,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<S::Future, OwnFuture<S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The router is always ready; so are our own services.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let never: fn(Infallible) -> S::Error = |e| match e {};
        if is_events(req.uri().path()) {
            let mut events = self.own.events.clone();
            return Either::Right(tower::Service::call(&mut events, req).map_err(never));
        }
        match services::serve_reply(&self.own.gateway, self.own.config, req) {
            Ok(reply) => Either::Right(reply.map_err(never)),
            Err(req) => Either::Left(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use tower::{Layer as _, Service as _};

    use super::*;
    use crate::{
        credentials::CredentialStore,
        events::{EventsService, RedbLog},
        upstream::{UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamService},
    };

    fn layer() -> DispatchLayer {
        // Never called: only where each call goes is looked at.
        let upstream = UpstreamService::new(tower::service_fn(|_: UpstreamRequest| async {
            Err::<UpstreamResponse, UpstreamError>(UpstreamError::Overloaded)
        }));
        let gateway = Gateway::new(
            upstream,
            Duration::from_secs(1),
            Arc::new(CredentialStore::new(None)),
        );
        let log = Arc::new(RedbLog::in_memory(16).unwrap());
        let events = EventsService::new(log, 16).server();
        let limits = crate::services::MessageLimits {
            max_decoding: 1 << 20,
            max_encoding: 1 << 20,
        };
        DispatchLayer::new(gateway, limits.grpc(), events)
    }

    /// Our own methods never reach the router; everything else does.
    #[tokio::test]
    async fn own_methods_skip_the_router_and_the_rest_reach_it() {
        let reached = Arc::new(AtomicUsize::new(0));
        let counted = reached.clone();
        let router = tower::service_fn(move |_: http::Request<tonic::body::Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, Infallible>(http::Response::new(
                tonic::body::Body::empty(),
            )))
        });
        let mut service = layer().layer(router);
        let request = |path: &str| {
            http::Request::post(path)
                .body(tonic::body::Body::empty())
                .unwrap()
        };
        for path in [
            "/imprint.v2.CustomerService/GetCustomer",
            "/imprint.v2.OrderService/CreateOrder",
            "/imprint.gateway.v1.EventService/Subscribe",
            "/imprint.gateway.v1.EventService/ListEvents",
        ] {
            let call = service.call(request(path));
            assert!(matches!(call, Either::Right(_)), "{path}");
        }
        assert_eq!(reached.load(Ordering::SeqCst), 0);
        let others = [
            "/grpc.health.v1.Health/Check",
            "/imprint.gateway.v1.AdminService/ListUpstreamCalls",
            "/imprint.v2.KeyService/CreateKey",
            "/imprint.v2.CustomerService/NoSuchMethod",
            "/imprint.gateway.v1.EventServiceX/Subscribe",
            "/imprint.gateway.v1.EventService",
        ];
        for path in others {
            let call = service.call(request(path));
            assert!(matches!(call, Either::Left(_)), "{path}");
            let _ = call.await;
        }
        assert_eq!(reached.load(Ordering::SeqCst), others.len());
    }
}

//! `imprint.gateway.v1.EventService`: Subscribe and ListEvents over the log.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use crate::{conn_activity::Activity, tls::PeerInfo};

use super::{
    codec,
    invalidate::{self, CacheInvalidator},
    log::{Bounds, EventLog, Retention},
    pb::{
        self, event_service_server::EventService, ListEventsRequest, ListEventsResponse,
        StartPosition, SubscribeRequest,
    },
    subscribe::{Filter, Subscription},
};

/// Default and largest ListEvents page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Events ListEvents looks at per call at most (filters may skip many).
const MAX_SCAN: usize = 10_000;

/// The EventService implementation.
#[derive(Clone)]
pub struct EventsService {
    log: Arc<dyn EventLog>,
    subscriber_buffer: usize,
    /// Set when the gateway stops: open streams end with UNAVAILABLE.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl EventsService {
    pub fn new(log: Arc<dyn EventLog>, subscriber_buffer: usize) -> Self {
        Self {
            log,
            subscriber_buffer,
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Ends every open subscription (UNAVAILABLE, naming its last cursor),
    /// so a graceful shutdown is not held up by streams that never end.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// The tonic service for EventService: Subscribe sends shared,
    /// once-encoded events; ListEvents is the generated server's.
    pub fn server(self) -> EventsServer {
        EventsServer {
            subscribe: self.clone(),
            generated: pb::event_service_server::EventServiceServer::new(self),
            max_decoding: None,
            max_encoding: None,
        }
    }

    /// Checks `cursor` against the log: OUT_OF_RANGE when events after it
    /// were removed by retention (or it is ahead of the log).
    fn position(cursor: &str, bounds: Bounds) -> Result<u64, Status> {
        let c: u64 = cursor.trim().parse().map_err(|_| {
            Status::invalid_argument(format!("after_cursor {cursor:?} is not a cursor"))
        })?;
        if c < bounds.trimmed_through {
            return Err(Status::out_of_range(format!(
                "cursor {c} is older than retention; the oldest cursor available is {} (resubscribe with start OLDEST)",
                bounds.trimmed_through + 1
            )));
        }
        if c > bounds.head {
            return Err(Status::out_of_range(format!(
                "cursor {c} is ahead of the log, whose newest cursor is {}",
                bounds.head
            )));
        }
        Ok(c)
    }

    /// Starts a subscription: the returned stream reads the history, then
    /// the live feed, as the client takes it.
    async fn open(
        &self,
        r: SubscribeRequest,
        activity: Option<Arc<Activity>>,
    ) -> Result<Subscription, Status> {
        // Live first, then the position: nothing stored in between is missed.
        let live = self.log.live();
        let bounds = self.bounds().await?;
        let after = match &r.after_cursor {
            Some(c) => Self::position(c, bounds)?,
            None => match StartPosition::try_from(r.start).unwrap_or(StartPosition::Unspecified) {
                StartPosition::Oldest => bounds.trimmed_through,
                StartPosition::Now | StartPosition::Unspecified => bounds.head,
            },
        };
        Ok(Subscription::new(
            self.log.clone(),
            live,
            Filter::new(&r.kinds, r.customer_id),
            after,
            self.subscriber_buffer,
            self.stopping.subscribe(),
            activity,
        ))
    }

    async fn bounds(&self) -> Result<Bounds, Status> {
        self.log
            .bounds()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

#[tonic::async_trait]
impl EventService for EventsService {
    type SubscribeStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Event, Status>> + Send>>;

    /// Not what the gateway serves (see [`EventsServer`], whose Subscribe
    /// sends each event's shared encoding); the same subscription, for
    /// anyone mounting the generated `EventServiceServer` directly.
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        use tokio_stream::StreamExt as _;
        let queue = self.open(request.into_inner(), None).await?;
        let stream = queue.map(|r| r.map(|e| e.event.clone()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT as i32).contains(&n) => n as usize,
            Some(_) => {
                return Err(Status::invalid_argument(format!(
                    "limit must be between 1 and {MAX_LIMIT}"
                )))
            }
        };
        let bounds = self.bounds().await?;
        let mut after = match &r.after_cursor {
            Some(c) => Self::position(c, bounds)?,
            None => bounds.trimmed_through,
        };
        let filter = Filter::new(&r.kinds, r.customer_id);
        let mut data = Vec::new();
        let mut scanned = 0;
        'scan: while scanned < MAX_SCAN {
            let page = self
                .log
                .read_after(after, (limit * 2).min(MAX_SCAN - scanned))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            if page.is_empty() {
                break;
            }
            for e in page {
                scanned += 1;
                after = e.cursor;
                if filter.matches(&e) {
                    data.push(e.event.clone());
                    if data.len() == limit {
                        break 'scan;
                    }
                }
            }
        }
        let head = self.bounds().await?.head;
        Ok(Response::new(ListEventsResponse {
            data,
            has_more: after < head,
            next_cursor: after.to_string(),
        }))
    }
}

/// The gRPC path of Subscribe.
const SUBSCRIBE_PATH: &str = "/imprint.gateway.v1.EventService/Subscribe";

/// EventService as mounted on the gateway's server: Subscribe answered by
/// [`codec`] (each event encoded and framed once, its bytes shared by every
/// subscriber: a thousand subscribers cost one encoding and no buffer each, not a
/// thousand message clones and encodings); every other method is the
/// generated server's.
#[derive(Clone)]
pub struct EventsServer {
    subscribe: EventsService,
    generated: pb::event_service_server::EventServiceServer<EventsService>,
    max_decoding: Option<usize>,
    max_encoding: Option<usize>,
}

impl EventsServer {
    /// Limits the size of a decoded request.
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.generated = self.generated.max_decoding_message_size(limit);
        self.max_decoding = Some(limit);
        self
    }

    /// Limits the size of an encoded response.
    #[must_use]
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.generated = self.generated.max_encoding_message_size(limit);
        self.max_encoding = Some(limit);
        self
    }
}

impl tonic::server::NamedService for EventsServer {
    const NAME: &'static str = super::Events::SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for EventsServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != SUBSCRIBE_PATH {
            return self.generated.call(req);
        }
        let (service, max_decoding, max_encoding) =
            (self.subscribe.clone(), self.max_decoding, self.max_encoding);
        // The connection's activity ([`crate::conn_activity`]); without it
        // (a connection the gateway did not accept) every stream pushes its
        // connection back after each event.
        let activity = req
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.activity.clone());
        Box::pin(async move {
            let opened = match codec::request(req, max_decoding).await {
                Ok(r) => service.open(r, activity).await,
                Err(status) => Err(status),
            };
            Ok(match opened {
                Ok(subscription) => codec::response(subscription, max_encoding),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Runs retention every `every`, for the life of the process.
/// Holds the log weakly: stops once the gateway has dropped it.
pub fn spawn_retention(log: &Arc<dyn EventLog>, retention: Retention, every: Duration) {
    let log = Arc::downgrade(log);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(log) = log.upgrade() else { return };
            match log.trim(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "event retention"),
                Err(e) => tracing::warn!(error = %e, "event retention failed"),
            }
        }
    });
}

/// Tells `cache` about every event stored, for the life of the process.
pub fn spawn_invalidation(log: &Arc<dyn EventLog>, cache: Arc<dyn CacheInvalidator>) {
    let mut live = log.live();
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(e) => cache.invalidate(&invalidate::resources(&e)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => cache.invalidate_all(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

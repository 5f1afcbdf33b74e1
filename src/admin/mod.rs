//! `imprint.gateway.v1.AdminService`: operating the gateway (cache purge,
//! counters, the request log of calls to Imprint). Admin callers only: the
//! auth layer lets only callers with `admin = true` in (see `auth`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    cache::{ResourceKind, ResponseCache},
    pb::gateway::v1::{
        admin_service_server::{self, AdminServiceServer},
        purge_cache_request::Target,
        CacheStats, GetStatsRequest, GetStatsResponse, ListUpstreamCallsRequest,
        ListUpstreamCallsResponse, PurgeCacheRequest, PurgeCacheResponse,
    },
    telemetry::Telemetry,
};

/// Serves [`AdminServiceServer`].
#[derive(Clone)]
pub struct Admin {
    cache: Option<Arc<ResponseCache>>,
    telemetry: Arc<Telemetry>,
}

impl Admin {
    /// `cache`: `None` when the cache is off.
    pub fn new(cache: Option<Arc<ResponseCache>>, telemetry: Arc<Telemetry>) -> Self {
        Self { cache, telemetry }
    }

    pub fn into_server(self) -> AdminServiceServer<Self> {
        AdminServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl admin_service_server::AdminService for Admin {
    async fn purge_cache(
        &self,
        request: Request<PurgeCacheRequest>,
    ) -> Result<Response<PurgeCacheResponse>, Status> {
        let Some(cache) = &self.cache else {
            return Ok(Response::new(PurgeCacheResponse {}));
        };
        match request.into_inner().target {
            Some(Target::All(true)) => cache.purge_all(),
            Some(Target::Rpc(rpc)) if !rpc.is_empty() => cache.purge_rpc(&rpc),
            Some(Target::Resource(r)) if !r.id.is_empty() => {
                let kind = ResourceKind::parse(&r.kind).ok_or_else(|| {
                    Status::invalid_argument(format!("unknown resource kind {:?}", r.kind))
                })?;
                cache.invalidate(kind, &r.id);
            }
            _ => {
                return Err(Status::invalid_argument(
                    "say what to purge: all = true, an rpc, or a resource kind and id",
                ))
            }
        }
        Ok(Response::new(PurgeCacheResponse {}))
    }

    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        let cache = match &self.cache {
            Some(cache) => {
                let s = cache.snapshot().await;
                CacheStats {
                    enabled: true,
                    hits: s.hits,
                    misses: s.misses,
                    bypasses: s.bypasses,
                    evictions: s.evictions,
                    invalidations: s.invalidations,
                    feed_losses: s.feed_losses,
                    entries: s.entries,
                    bytes: s.bytes,
                }
            }
            None => CacheStats::default(),
        };
        Ok(Response::new(GetStatsResponse { cache: Some(cache) }))
    }

    async fn list_upstream_calls(
        &self,
        request: Request<ListUpstreamCallsRequest>,
    ) -> Result<Response<ListUpstreamCallsResponse>, Status> {
        crate::telemetry::list_upstream_calls(&self.telemetry, request)
    }
}

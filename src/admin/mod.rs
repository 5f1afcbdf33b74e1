//! `imprint.gateway.v1.AdminService`: operating the gateway (cache purge,
//! counters). Admin callers only: the caller's allow list must name the
//! service; `*` is not enough.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    auth::Caller,
    cache::{ResourceKind, ResponseCache},
    pb::gateway::v1::{
        admin_service_server::{self, AdminServiceServer},
        purge_cache_request::Target,
        CacheStats, GetStatsRequest, GetStatsResponse, PurgeCacheRequest, PurgeCacheResponse,
    },
};

const SERVICE: &str = "imprint.gateway.v1.AdminService";

/// Serves [`AdminServiceServer`].
#[derive(Debug, Clone)]
pub struct Admin {
    cache: Option<Arc<ResponseCache>>,
}

impl Admin {
    /// `cache`: `None` when the cache is off.
    pub fn new(cache: Option<Arc<ResponseCache>>) -> Self {
        Self { cache }
    }

    pub fn into_server(self) -> AdminServiceServer<Self> {
        AdminServiceServer::new(self)
    }
}

fn admin_only<T>(request: &Request<T>) -> Result<(), Status> {
    match request.extensions().get::<Arc<Caller>>() {
        Some(caller) if caller.names_service(SERVICE) => Ok(()),
        _ => Err(Status::permission_denied(
            "AdminService is for admin callers: the caller's allow list must name it",
        )),
    }
}

#[tonic::async_trait]
impl admin_service_server::AdminService for Admin {
    async fn purge_cache(
        &self,
        request: Request<PurgeCacheRequest>,
    ) -> Result<Response<PurgeCacheResponse>, Status> {
        admin_only(&request)?;
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
        request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        admin_only(&request)?;
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
}

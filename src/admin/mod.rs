//! `imprint.gateway.v1.AdminService`: operating the gateway (cache purge,
//! counters, the request log of calls to Imprint). Admin callers only: the
//! auth layer lets only callers with `admin = true` in (see `auth`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    audit::{self, AuditLog},
    cache::{ResourceKind, ResponseCache},
    pb::gateway::v1::{
        admin_service_server::{self, AdminServiceServer},
        purge_cache_request::Target,
        AuditEvent, CacheStats, GetStatsRequest, GetStatsResponse, ListAuditEventsRequest,
        ListAuditEventsResponse, ListUpstreamCallsRequest, ListUpstreamCallsResponse,
        PurgeCacheRequest, PurgeCacheResponse,
    },
    telemetry::Telemetry,
};

/// Serves [`AdminServiceServer`].
#[derive(Clone)]
pub struct Admin {
    cache: Option<Arc<ResponseCache>>,
    telemetry: Arc<Telemetry>,
    audit: Arc<AuditLog>,
}

impl Admin {
    /// `cache`: `None` when the cache is off.
    pub fn new(
        cache: Option<Arc<ResponseCache>>,
        telemetry: Arc<Telemetry>,
        audit: Arc<AuditLog>,
    ) -> Self {
        Self {
            cache,
            telemetry,
            audit,
        }
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

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let r = request.into_inner();
        let before = crate::telemetry::page_cursor(r.cursor.as_deref())?;
        let limit = r.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Status::invalid_argument("limit must be between 1 and 1000"));
        }
        let query = audit::Query {
            actor: r.actor,
            action: r.action,
            outcome: r.outcome,
            since: r.since.map(crate::telemetry::since_time),
            before,
            limit: usize::try_from(limit).unwrap_or(100),
        };
        let (events, next) = self.audit.list(&query);
        let data = events
            .into_iter()
            .map(|e| AuditEvent {
                at: Some(prost_types::Timestamp::from(e.at)),
                actor: e.actor,
                action: e.action,
                target: e.target,
                outcome: e.outcome.as_str().to_owned(),
                detail: e.detail,
                request_id: e.request_id,
                sequence: e.sequence,
            })
            .collect();
        Ok(Response::new(ListAuditEventsResponse {
            data,
            has_more: next.is_some(),
            next_cursor: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }
}

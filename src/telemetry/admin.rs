//! `imprint.gateway.v1.AdminService/ListUpstreamCalls`: the request log over
//! gRPC, answered by [`crate::admin`]. Who may call it is the auth layer's
//! business (`admin = true`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::{request_log::Query, Telemetry};
use crate::pb::imprint::gateway::v1::{
    ListUpstreamCallsRequest, ListUpstreamCallsResponse, UpstreamCall,
};

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A page cursor as the admin listings hand it out (the sequence number of
/// the last item seen); none or empty: the first page.
pub fn page_cursor(cursor: Option<&str>) -> Result<Option<u64>, Status> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => c
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Status::invalid_argument("cursor is not one this gateway gave")),
    }
}

/// An admin listing's `since` filter as a time (before the epoch: the epoch).
pub fn since_time(t: prost_types::Timestamp) -> std::time::SystemTime {
    UNIX_EPOCH
        + Duration::new(
            u64::try_from(t.seconds).unwrap_or(0),
            u32::try_from(t.nanos).unwrap_or(0),
        )
}

/// One page of the request log, filtered as `r` asks.
pub fn list_upstream_calls(
    telemetry: &Telemetry,
    request: Request<ListUpstreamCallsRequest>,
) -> Result<Response<ListUpstreamCallsResponse>, Status> {
    let r = request.into_inner();
    let before = page_cursor(r.cursor.as_deref())?;
    let since = r.since.map(since_time);
    let query = Query {
        rpc: r.rpc,
        status_class: r.status_class.and_then(|c| u16::try_from(c).ok()),
        caller: r.caller,
        since,
        before,
        limit: usize::try_from(r.limit.unwrap_or(100)).unwrap_or(100),
    };
    let (calls, next) = telemetry.request_log().list(&query);
    let data = calls
        .into_iter()
        .map(|c| UpstreamCall {
            at: Some(timestamp(c.at)),
            rpc: c.rpc.into(),
            method: c.method,
            route_template: c.template.into(),
            status: i32::from(c.status),
            error: c.error.unwrap_or_default(),
            latency: prost_types::Duration::try_from(c.latency).ok(),
            attempts: i32::try_from(c.attempts).unwrap_or(i32::MAX),
            caller: c.caller.to_string(),
            request_id: c.request_id.to_string(),
            trace_id: c.trace_id,
            request_body: c.request_body,
            response_body: c.response_body,
        })
        .collect();
    Ok(Response::new(ListUpstreamCallsResponse {
        data,
        has_more: next.is_some(),
        next_cursor: next.map(|n| n.to_string()).unwrap_or_default(),
    }))
}

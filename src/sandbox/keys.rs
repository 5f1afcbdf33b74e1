//! API keys: a created key works at once, a deleted key stops at once.

use axum::{extract::State, Extension};

use super::{
    clock::now_ts,
    http::{ok, ApiResult},
    state::KeyRecord,
    Ctx, Emulator,
};
use crate::json::ser::format_timestamp;

/// `POST /v2/keys`: a new key with the caller's permissions.
pub(super) async fn create(State(emu): State<Emulator>) -> ApiResult {
    let key = emu.store().secret("sk_sandbox_");
    let created_at = now_ts();
    emu.store()
        .with(|w| w.keys.insert(key.clone(), KeyRecord { created_at }));
    ok(&serde_json::json!({
        "key": key,
        "created_at": format_timestamp(&created_at).unwrap_or_default(),
    }))
}

/// `DELETE /v2/keys`: deletes the key that authenticated this request.
pub(super) async fn delete(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
) -> ApiResult {
    let record = emu.store().with(|w| w.keys.remove(&ctx.api_key));
    let created_at = record.map(|r| r.created_at).unwrap_or_default();
    ok(&serde_json::json!({
        "key": ctx.api_key,
        "created_at": format_timestamp(&created_at).unwrap_or_default(),
        "deleted_at": format_timestamp(&now_ts()).unwrap_or_default(),
    }))
}

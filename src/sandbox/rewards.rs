//! Rewards, balances and offers.

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    Extension,
};
use serde_json::{json, Value};

use super::{
    amount,
    clock::now_ts,
    customers::customer_not_found,
    http::{ok, opt, validate_body, ApiError, ApiResult, Field, Query, Ty},
    state::{find, find_mut, select},
    Ctx, Emulator,
};
use crate::{json::RestEnum, pb::imprint::v2 as pb};

const REWARD_STATUSES: &[&str] = &["PENDING", "AVAILABLE", "PENDING_DEDUCTION", "DEDUCTED"];
const UPDATE: &[Field] = &[
    opt("amount", Ty::Amount),
    opt("status", Ty::Enum(REWARD_STATUSES)),
];

pub(super) async fn balance(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    if emu.store().with(|w| w.customer(&id).is_none()) {
        return Err(customer_not_found(&id));
    }
    let total = emu
        .store()
        .with(|w| w.balance(&ctx.product.name, &id))
        .ok_or_else(|| {
            ApiError::enveloped(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "the rewards balance is out of range",
            )
        })?;
    ok(&json!({
        "customer_id": id,
        "reward_balance": total,
        "reward_symbol": ctx.product.reward_symbol,
        "reward_description": format!("{} rewards", ctx.product.name),
    }))
}

pub(super) async fn customer_rewards(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let path = format!("/v2/customers/{id}/rewards");
    let mut q = Query::parse(&path, q.as_deref());
    let page = q.page();
    q.finish()?;
    if emu.store().with(|w| w.customer(&id).is_none()) {
        return Err(customer_not_found(&id));
    }
    let mut data = emu
        .store()
        .with(|w| select(&w.rewards, &ctx.product.name, |r| r.customer_id == id));
    // Imprint lists a customer's rewards by last update, newest first.
    data.sort_by_key(|r| std::cmp::Reverse(r.updated_at.map(|t| (t.seconds, t.nanos))));
    page.apply(&path, data, |r| &r.id)
}

pub(super) async fn search(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let path = "/v2/rewards";
    let mut q = Query::parse(path, q.as_deref());
    let event = q.str("transaction_event_id");
    let page = q.page();
    q.finish()?;
    let data = emu.store().with(|w| {
        select(&w.rewards, &ctx.product.name, |r| {
            event
                .as_ref()
                .is_none_or(|e| r.transaction_event_id.as_ref() == Some(e))
        })
    });
    page.apply(path, data, |r| &r.id)
}

fn reward_not_found(id: &str) -> ApiError {
    ApiError::not_found("REWARD_NOT_FOUND_ERROR", "Reward", "reward_id", id)
}

pub(super) async fn get(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let r = emu
        .store()
        .with(|w| find(&w.rewards, &ctx.product.name, |r| r.id == id).cloned());
    ok(&r.ok_or_else(|| reward_not_found(&id))?)
}

/// Only pending rewards change, as Imprint documents.
pub(super) async fn update(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v2/rewards/{id}");
    let b = validate_body(&path, &body, UPDATE)?;
    let new_amount = b.get("amount").and_then(Value::as_i64);
    let new_status = b
        .get("status")
        .and_then(Value::as_str)
        .and_then(pb::RewardStatus::from_rest);
    let product = &ctx.product.name;
    let result = emu.store().with(|w| {
        let r = find(&w.rewards, product, |r| r.id == id).ok_or_else(|| reward_not_found(&id))?;
        if r.status != pb::RewardStatus::Pending as i32
            && r.status != pb::RewardStatus::PendingDeduction as i32
        {
            return Err(ApiError::validation(
                &path,
                vec!["status: only pending rewards can be updated".into()],
            ));
        }
        // A pending reward made available joins the balance, which must stay in range.
        if new_status == Some(pb::RewardStatus::Available) {
            let joined = w
                .balance(product, &r.customer_id)
                .and_then(|b| amount::add(b, new_amount.unwrap_or(r.amount)));
            if joined.is_none() {
                let field = if new_amount.is_some() {
                    "amount"
                } else {
                    "status"
                };
                return Err(ApiError::out_of_range(
                    &path,
                    field,
                    "the rewards balance it leads to",
                ));
            }
        }
        let r = find_mut(&mut w.rewards, product, |r| r.id == id)
            .ok_or_else(|| reward_not_found(&id))?;
        if let Some(a) = new_amount {
            r.amount = a;
        }
        if let Some(s) = new_status {
            r.status = s as i32;
        }
        r.updated_at = Some(now_ts());
        Ok(r.clone())
    });
    let reward = result?;
    super::simulate::reward_webhook(&emu, &ctx, &reward);
    ok(&reward)
}

/// The marketing placement for a partner customer.
pub(super) async fn offer(State(emu): State<Emulator>, RawQuery(q): RawQuery) -> ApiResult {
    let path = "/v2/offers";
    let mut q = Query::parse(path, q.as_deref());
    let partner = q.required("partner_customer_id");
    q.finish()?;
    let customer = emu.store().with(|w| {
        w.customers
            .iter()
            .find(|c| c.customer.partner_customer_id.as_deref() == Some(partner.as_str()))
            .map(|c| c.customer.clone())
    });
    let Some(customer) = customer else {
        return Err(ApiError::not_found(
            "PARTNER_CUSTOMER_NOT_FOUND_ERROR",
            "Partner Customer",
            "partner_customer_id",
            &partner,
        ));
    };
    // Deterministic per customer: prescreened when the customer has a last name.
    let prescreened = customer.last_name.is_some();
    ok(&pb::Offer {
        id: format!("offer-{}", customer.id.to_lowercase()),
        is_prescreened: prescreened,
        title: "Welcome Offer: Earn $25".into(),
        description: "Sign up, accept your offer, and spend $500 in the first 90 days to unlock a $25 welcome bonus."
            .into(),
    })
}

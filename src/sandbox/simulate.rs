//! Sandbox simulations: reward processing, the REWARD webhook, and the
//! application outcome a new customer's last name decides. The transaction
//! lifecycle is `transaction_event`.

use std::time::Instant;

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Json},
    Extension,
};
use serde_json::json;

use super::{
    amount,
    clock::{now_rfc3339, now_ts},
    http::{req, validate_body, ApiError, ApiResult, Field, Ty},
    state::{Owned, RewardProgram},
    Ctx, Emulator,
};
use crate::pb::imprint::v2 as pb;

const REWARD: &[Field] = &[
    req("customer_id", Ty::Str),
    req("reward_type", Ty::Enum(&["STATEMENT", "DELAYED"])),
];
const STATEMENT_REWARD: &[Field] = &[req("customer_id", Ty::Str)];

pub(super) fn merchant_key(ctx: &Ctx) -> String {
    ctx.product
        .merchant_key
        .clone()
        .unwrap_or_else(|| ctx.product.name.clone())
}

/// Sends the REWARD webhook for `reward`'s current state.
pub(super) fn reward_webhook(emu: &Emulator, ctx: &Ctx, reward: &pb::Reward) {
    let customer_metadata = emu
        .store()
        .with(|w| {
            w.customer(&reward.customer_id)
                .map(|c| c.customer_metadata.clone())
        })
        .unwrap_or_default();
    emu.webhooks().send(
        "REWARD",
        json!({
            "merchant_key": merchant_key(ctx),
            "reward_id": reward.id,
            "customer_id": reward.customer_id,
            "transaction_id": reward.id.strip_prefix("RW-"),
            "type": crate::json::rest_name_of::<pb::RewardType>(reward.r#type),
            "amount": reward.amount,
            "status": crate::json::rest_name_of::<pb::RewardStatus>(reward.status),
            "currency": reward.currency,
            "created_at": crate::json::ser::format_timestamp(&reward.created_at.unwrap_or_default()).unwrap_or_default(),
            "metadata": {},
            "customer_metadata": customer_metadata,
        }),
    );
}

/// Starts a reward simulation for `customer_id`, or 409 if one is running.
fn start_simulation(emu: &Emulator, customer_id: &str) -> ApiResult<String> {
    if emu.store().with(|w| w.customer(customer_id).is_none()) {
        return Err(ApiError::enveloped(
            StatusCode::NOT_FOUND,
            "CUSTOMER_NOT_FOUND_ERROR",
            format!("Customer not found for provided ID: {customer_id}"),
        ));
    }
    let until = Instant::now() + emu.config().simulation_time;
    emu.store().with(|w| {
        let now = Instant::now();
        w.simulations.retain(|_, t| *t > now);
        if w.simulations.contains_key(customer_id) {
            return Err(ApiError::conflict(
                "SIMULATION_IN_PROGRESS",
                "A simulation is already in progress for this account",
            ));
        }
        w.simulations.insert(customer_id.to_string(), until);
        Ok(())
    })?;
    Ok(emu.store().id())
}

/// Runs a reward simulation: a new statement reward, or the pending rewards of
/// captured transactions made available. Refused, changing nothing, when the
/// customer's balance would leave the bound on amounts.
fn run_reward(
    emu: &Emulator,
    ctx: &Ctx,
    customer_id: &str,
    program: RewardProgram,
) -> ApiResult<Vec<pb::Reward>> {
    let product = ctx.product.name.clone();
    let now = now_ts();
    emu.store().with(|w| {
        // Pending rewards of settled (captured) transactions become available.
        let ready: Vec<String> = match program {
            RewardProgram::Statement => Vec::new(),
            RewardProgram::Delayed => {
                let captured: Vec<String> = w
                    .transactions
                    .iter()
                    .filter(|t| {
                        t.product == product
                            && t.item.customer_id == customer_id
                            && t.item.status == pb::TransactionStatus::Captured as i32
                    })
                    .map(|t| format!("RW-{}", t.item.id))
                    .collect();
                w.rewards
                    .iter()
                    .filter(|o| {
                        o.product == product
                            && captured.contains(&o.item.id)
                            && o.item.status == pb::RewardStatus::Pending as i32
                    })
                    .map(|o| o.item.id.clone())
                    .collect()
            }
        };
        let joining = match program {
            RewardProgram::Statement => amount::bounded(ctx.product.statement_reward),
            RewardProgram::Delayed => amount::sum(
                w.rewards
                    .iter()
                    .filter(|o| o.product == product && ready.contains(&o.item.id))
                    .map(|o| o.item.amount),
            ),
        };
        let balance = joining.and_then(|j| amount::add(w.balance(&product, customer_id)?, j));
        if balance.is_none() {
            // These endpoints answer 400 in the `ApiError` envelope (spec).
            return Err(ApiError::enveloped(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST_ERROR",
                format!(
                    "customer_id: the rewards balance it leads to {}",
                    super::amount::range_text()
                ),
            )
            .with("param", serde_json::Value::from("customer_id")));
        }
        Ok(match program {
            RewardProgram::Statement => {
                let reward = pb::Reward {
                    id: format!("RW-STMT-{}-{}", customer_id, w.rewards.len()),
                    customer_id: customer_id.to_string(),
                    transaction_event_id: None,
                    amount: ctx.product.statement_reward,
                    r#type: pb::RewardType::Statement as i32,
                    currency: Some(ctx.product.reward_currency.clone()),
                    status: pb::RewardStatus::Available as i32,
                    created_at: Some(now),
                    updated_at: Some(now),
                    metadata: None,
                };
                w.rewards.push(Owned {
                    product,
                    item: reward.clone(),
                });
                vec![reward]
            }
            RewardProgram::Delayed => w
                .rewards
                .iter_mut()
                .filter(|o| o.product == product && ready.contains(&o.item.id))
                .map(|o| {
                    o.item.status = pb::RewardStatus::Available as i32;
                    o.item.updated_at = Some(now);
                    o.item.clone()
                })
                .collect(),
        })
    })
}

async fn simulate(
    emu: Emulator,
    ctx: Ctx,
    customer_id: String,
    program: RewardProgram,
) -> ApiResult {
    if ctx.product.reward_program != program {
        return Err(ApiError::enveloped(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST_ERROR",
            format!(
                "product is not configured for {} rewards (it uses {})",
                program.rest_name(),
                ctx.product.reward_program.rest_name()
            ),
        ));
    }
    let debugging_id = start_simulation(&emu, &customer_id)?;
    let rewards = run_reward(&emu, &ctx, &customer_id, program).inspect_err(|_| {
        // A refused simulation is not one in progress.
        emu.store().with(|w| w.simulations.remove(&customer_id));
    })?;
    for reward in rewards {
        reward_webhook(&emu, &ctx, &reward);
    }
    Ok(Json(json!({ "debugging_id": debugging_id })).into_response())
}

pub(super) async fn reward(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let path = "/v2/simulate_reward";
    let b = validate_body(path, &body, REWARD)?;
    let program = match b["reward_type"].as_str() {
        Some("STATEMENT") => RewardProgram::Statement,
        _ => RewardProgram::Delayed,
    };
    let customer_id = b["customer_id"].as_str().unwrap_or_default().to_string();
    simulate(emu, ctx, customer_id, program).await
}

pub(super) async fn statement_reward(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let path = "/v2/simulate_statement_reward";
    let b = validate_body(path, &body, STATEMENT_REWARD)?;
    let customer_id = b["customer_id"].as_str().unwrap_or_default().to_string();
    simulate(emu, ctx, customer_id, RewardProgram::Statement).await
}

/// A new customer's application, decided by last name as in Imprint's
/// sandbox: `approve` → approved (a card is issued), `review`/`frozen` →
/// action required (no decision yet), anything else → rejected.
pub(super) fn application(emu: &Emulator, ctx: &Ctx, customer_id: &str) {
    let Some(record) = emu.store().with(|w| w.customer(customer_id).cloned()) else {
        return;
    };
    let last = record
        .customer
        .last_name
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let status = match last.as_str() {
        "approve" => "OFFER_ACCEPTED",
        "review" | "frozen" => return,
        _ => "REJECTED",
    };
    let now = now_rfc3339();
    emu.webhooks().send(
        "APPLICATION",
        json!({
            "merchant_key": merchant_key(ctx),
            "customer_id": customer_id,
            "partner_customer_id": record.customer.partner_customer_id,
            "status": status,
            "created_at": now,
            "updated_at": now,
            "customer_metadata": record.customer_metadata,
        }),
    );
    if status != "OFFER_ACCEPTED" {
        return;
    }
    let pm = super::seed::card(&emu.store().id(), customer_id, "4000056655665556", now_ts());
    emu.store().with(|w| {
        w.payment_methods.push(Owned {
            product: ctx.product.name.clone(),
            item: pm.clone(),
        })
    });
    emu.webhooks().send(
        "PAYMENT_METHOD",
        json!({
            "merchant_key": merchant_key(ctx),
            "payment_method_id": pm.id,
            "customer_id": customer_id,
            "partner_customer_id": record.customer.partner_customer_id,
            "previous_status": "INACTIVE",
            "new_status": "ACTIVE",
            "card_type": "VIRTUAL",
            "tokens": [],
            "created_at": now,
            "updated_at": now,
            "customer_metadata": record.customer_metadata,
        }),
    );
}

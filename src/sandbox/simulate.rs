//! Sandbox simulations: the transaction lifecycle, reward processing, and
//! the application outcome a new customer's last name decides.

use std::{collections::HashMap, time::Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Json},
    Extension,
};
use serde_json::{json, Value};

use super::{
    amount,
    body::{decode, ADDRESS},
    http::{ok, opt, req, validate_body, ApiError, ApiResult, Field, Ty},
    now_rfc3339, now_ts,
    state::{find, find_mut, Owned, RewardProgram, World},
    Ctx, Emulator,
};
use crate::pb::imprint::v2 as pb;

const STATUSES: &[&str] = &["APPROVED", "UPDATED", "VOIDED", "CAPTURED", "REFUNDED"];
const PURCHASE_METHODS: &[&str] = &[
    "CHIP",
    "CONTACTLESS",
    "KEYEDIN",
    "ONLINE",
    "SWIPE",
    "QRCODE",
    "OCR",
    "UNKNOWN",
];

const MERCHANT: &[Field] = &[
    opt("network_id", Ty::Str),
    opt("name", Ty::Str),
    opt("category", Ty::Str),
    opt("category_code", Ty::Str),
    opt("address", Ty::Nested(ADDRESS)),
];

const TRANSACTION_EVENT: &[Field] = &[
    opt("event_id", Ty::Str),
    opt("transaction_id", Ty::Str),
    req("payment_method_id", Ty::Str),
    req("status", Ty::Enum(STATUSES)),
    opt("amount", Ty::Amount),
    opt("currency", Ty::Str),
    opt("authorization_code", Ty::Str),
    opt("network_transaction_id", Ty::Str),
    opt("purchase_method", Ty::Enum(PURCHASE_METHODS)),
    opt("merchant", Ty::Nested(MERCHANT)),
];

const REWARD: &[Field] = &[
    req("customer_id", Ty::Str),
    req("reward_type", Ty::Enum(&["STATEMENT", "DELAYED"])),
];
const STATEMENT_REWARD: &[Field] = &[req("customer_id", Ty::Str)];

/// Which transitions the lifecycle allows: APPROVED → UPDATED/VOIDED/CAPTURED
/// (UPDATED may repeat), CAPTURED → REFUNDED.
fn allowed(from: pb::TransactionStatus, to: pb::TransactionStatus) -> bool {
    use pb::TransactionStatus::*;
    matches!(
        (from, to),
        (Approved | Updated, Updated | Voided | Captured) | (Captured, Refunded)
    )
}

/// The spec's ConflictError is flat: `{"type","message"}`.
fn conflict(message: String) -> ApiError {
    ApiError::Flat {
        status: StatusCode::CONFLICT,
        kind: "TRANSACTION_CONFLICT_ERROR",
        message,
        param: None,
    }
}

// === simulate_transaction_event ===
//
// One request, in the order a reader follows it: validate the body, draw the
// ids, then under one lock load the payment method and either open a new
// APPROVED transaction or apply a transition to an existing one (every check
// before any write), gather what the webhooks carry, and send them.

const TRANSACTION_EVENT_PATH: &str = "/v2/simulate_transaction_event";

/// A validated `simulate_transaction_event` body.
struct EventRequest {
    r: pb::SimulateTransactionEventRequest,
    status: pb::TransactionStatus,
    /// The status as the caller spelled it, for conflict messages.
    status_name: String,
}

/// Ids drawn from the seeded generator before the world is locked, in this
/// order, so that a seed keeps giving the same ids.
struct EventIds {
    event_id: String,
    /// The id of the transaction, if the event opens one.
    new_id: String,
}

/// What an event left in the world, and the customer facts its webhooks carry.
struct Applied {
    txn: pb::Transaction,
    reward: Option<pb::Reward>,
    customer_metadata: HashMap<String, String>,
    partner_customer_id: Option<String>,
}

pub(super) async fn transaction_event(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let req = validate_event(&body)?;
    let ids = EventIds {
        event_id: req.r.event_id.clone().unwrap_or_else(|| emu.store().id()),
        new_id: emu.store().id(),
    };
    let applied = emu.store().with(|w| {
        let pm = load_payment_method(w, &ctx, &req)?;
        let now = now_ts();
        let (txn, reward) = match &req.r.transaction_id {
            None => open_transaction(w, &ctx, &req, &pm, &ids, now)?,
            Some(tid) => advance_transaction(w, &ctx, &req, tid, now)?,
        };
        Ok(with_customer_facts(w, txn, reward))
    })?;
    transaction_webhook(&emu, &ctx, &ids.event_id, &applied);
    if let Some(reward) = &applied.reward {
        reward_webhook(&emu, &ctx, reward);
    }
    ok(&pb::TransactionEvent {
        transaction_id: Some(applied.txn.id),
        event_id: Some(ids.event_id),
        status: applied.txn.status,
    })
}

fn validate_event(body: &[u8]) -> ApiResult<EventRequest> {
    let b = validate_body(TRANSACTION_EVENT_PATH, body, TRANSACTION_EVENT)?;
    let r: pb::SimulateTransactionEventRequest = decode(&b);
    let status =
        pb::TransactionStatus::try_from(r.status).unwrap_or(pb::TransactionStatus::Unspecified);
    let status_name = b["status"].as_str().unwrap_or_default().to_string();
    Ok(EventRequest {
        r,
        status,
        status_name,
    })
}

fn load_payment_method(w: &World, ctx: &Ctx, req: &EventRequest) -> ApiResult<pb::PaymentMethod> {
    let id = &req.r.payment_method_id;
    find(&w.payment_methods, &ctx.product.name, |p| &p.id == id)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(
                "PAYMENT_METHOD_NOT_FOUND_ERROR",
                "Payment method",
                "payment_method_id",
                id,
            )
        })
}

/// The product's reward on `amount`, or a 400 naming `amount`.
fn reward_points(ctx: &Ctx, amount: i64) -> ApiResult<i64> {
    amount::share(amount, ctx.product.reward_rate_bps)
        .ok_or_else(|| ApiError::out_of_range(TRANSACTION_EVENT_PATH, "amount", "the reward on it"))
}

/// No `transaction_id`: a new APPROVED transaction, linked to a matching
/// intent, with a PENDING reward.
fn open_transaction(
    w: &mut World,
    ctx: &Ctx,
    req: &EventRequest,
    pm: &pb::PaymentMethod,
    ids: &EventIds,
    now: prost_types::Timestamp,
) -> ApiResult<(pb::Transaction, Option<pb::Reward>)> {
    if req.status != pb::TransactionStatus::Approved {
        return Err(conflict(format!(
            "a new transaction starts APPROVED; {} needs a transaction_id",
            req.status_name
        )));
    }
    let r = &req.r;
    let amount = r.amount.unwrap_or(5000);
    let points = reward_points(ctx, amount)?;
    let product = &ctx.product.name;
    let new_id = &ids.new_id;
    let txn = pb::Transaction {
        id: new_id.clone(),
        intent_id: link_intent(w, product, &pm.customer_id, amount),
        customer_id: pm.customer_id.clone(),
        authorization_code: r.authorization_code.clone(),
        payment_method_id: pm.id.clone(),
        purchase_method: r.purchase_method,
        amount,
        currency: r.currency.clone().unwrap_or_else(|| "USD".into()),
        status: req.status as i32,
        network_transaction_id: r
            .network_transaction_id
            .clone()
            .unwrap_or_else(|| format!("txn-{}", new_id.to_lowercase())),
        partner_transaction_id: None,
        created_at: Some(now),
        updated_at: Some(now),
        merchant: r.merchant.clone(),
        metadata: None,
    };
    w.transactions.push(Owned {
        product: product.clone(),
        item: txn.clone(),
    });
    let reward = pb::Reward {
        id: format!("RW-{new_id}"),
        customer_id: pm.customer_id.clone(),
        transaction_event_id: Some(ids.event_id.clone()),
        amount: points,
        r#type: pb::RewardType::Transaction as i32,
        currency: Some(ctx.product.reward_currency.clone()),
        status: pb::RewardStatus::Pending as i32,
        created_at: Some(now),
        updated_at: Some(now),
        metadata: None,
    };
    w.rewards.push(Owned {
        product: product.clone(),
        item: reward.clone(),
    });
    Ok((txn, Some(reward)))
}

/// Marks and returns the oldest open intent of this customer with this
/// amount, which the new transaction settles.
fn link_intent(w: &mut World, product: &str, customer_id: &str, amount: i64) -> Option<String> {
    let intent_id = w
        .intents
        .iter()
        .find(|i| {
            i.product == product
                && i.item.customer_id == customer_id
                && i.item.amount == amount
                && i.item.status == pb::TransactionIntentStatus::Confirmed as i32
                && !w.matched_intents.contains(&i.item.id)
        })
        .map(|i| i.item.id.clone())?;
    w.matched_intents.insert(intent_id.clone());
    Some(intent_id)
}

/// With a `transaction_id`: a lifecycle transition of that transaction, and
/// what it does to the transaction's reward.
fn advance_transaction(
    w: &mut World,
    ctx: &Ctx,
    req: &EventRequest,
    tid: &str,
    now: prost_types::Timestamp,
) -> ApiResult<(pb::Transaction, Option<pb::Reward>)> {
    let product = &ctx.product.name;
    let txn = find_mut(&mut w.transactions, product, |t| t.id == tid).ok_or_else(|| {
        ApiError::not_found(
            "TRANSACTION_NOT_FOUND_ERROR",
            "Transaction",
            "transaction_id",
            tid,
        )
    })?;
    check_transition(txn.status, req)?;
    // Checked before anything changes, so a refused update leaves no trace.
    let points = match req.status {
        pb::TransactionStatus::Updated => {
            Some(reward_points(ctx, req.r.amount.unwrap_or(txn.amount))?)
        }
        _ => None,
    };
    txn.status = req.status as i32;
    if let Some(a) = req.r.amount {
        txn.amount = a;
    }
    txn.updated_at = Some(now);
    let txn = txn.clone();
    let reward = update_reward(w, product, &txn.id, req.status, points, now);
    Ok((txn, reward))
}

/// A 409 unless the lifecycle allows going from `from` to the requested status.
fn check_transition(from: i32, req: &EventRequest) -> ApiResult<()> {
    let from = pb::TransactionStatus::try_from(from).unwrap_or(pb::TransactionStatus::Unspecified);
    if allowed(from, req.status) {
        return Ok(());
    }
    Err(conflict(format!(
        "illegal transition {} -> {}",
        crate::json::rest_name_of::<pb::TransactionStatus>(from as i32).unwrap_or("?"),
        req.status_name
    )))
}

/// The transaction's reward after `status`: UPDATED takes the new `points`,
/// VOIDED deducts it, REFUNDED deducts it or, once available, marks it
/// pending deduction.
fn update_reward(
    w: &mut World,
    product: &str,
    txn_id: &str,
    status: pb::TransactionStatus,
    points: Option<i64>,
    now: prost_types::Timestamp,
) -> Option<pb::Reward> {
    let o = w
        .rewards
        .iter_mut()
        .find(|o| o.product == product && o.item.id == format!("RW-{txn_id}"))?;
    let r = &mut o.item;
    match status {
        pb::TransactionStatus::Updated => r.amount = points.unwrap_or(r.amount),
        pb::TransactionStatus::Voided => r.status = pb::RewardStatus::Deducted as i32,
        pb::TransactionStatus::Refunded => {
            r.status = if r.status == pb::RewardStatus::Available as i32 {
                pb::RewardStatus::PendingDeduction as i32
            } else {
                pb::RewardStatus::Deducted as i32
            }
        }
        _ => {}
    }
    r.updated_at = Some(now);
    Some(r.clone())
}

fn with_customer_facts(w: &World, txn: pb::Transaction, reward: Option<pb::Reward>) -> Applied {
    let customer = w.customer(&txn.customer_id);
    Applied {
        customer_metadata: customer
            .map(|c| c.customer_metadata.clone())
            .unwrap_or_default(),
        partner_customer_id: customer.and_then(|c| c.customer.partner_customer_id.clone()),
        txn,
        reward,
    }
}

/// Sends the TRANSACTION webhook for the event `event_id`.
fn transaction_webhook(emu: &Emulator, ctx: &Ctx, event_id: &str, applied: &Applied) {
    let txn = &applied.txn;
    emu.webhooks().send(
        "TRANSACTION",
        json!({
            "merchant_key": merchant_key(ctx),
            "transaction_id": txn.id,
            "event_id": event_id,
            "intent_id": txn.intent_id,
            "payment_method_id": txn.payment_method_id,
            "customer_id": txn.customer_id,
            "partner_customer_id": applied.partner_customer_id,
            "status": crate::json::rest_name_of::<pb::TransactionStatus>(txn.status),
            "created_at": crate::json::ser::format_timestamp(&txn.created_at.unwrap_or_default()).unwrap_or_default(),
            "updated_at": now_rfc3339(),
            "amount": txn.amount,
            "currency": txn.currency,
            "authorization_code": txn.authorization_code,
            "network_transaction_id": txn.network_transaction_id,
            "purchase_method": crate::json::rest_name_of::<pb::PurchaseMethod>(txn.purchase_method),
            "merchant": serde_json::to_value(&txn.merchant).unwrap_or(Value::Null),
            "customer_metadata": applied.customer_metadata,
        }),
    );
}

// === Rewards and applications ===

fn merchant_key(ctx: &Ctx) -> String {
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
    path: &str,
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
            return Err(ApiError::out_of_range(
                path,
                "customer_id",
                "the rewards balance it leads to",
            ));
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
    path: &str,
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
    let rewards = run_reward(&emu, &ctx, path, &customer_id, program).inspect_err(|_| {
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
    simulate(emu, ctx, path, customer_id, program).await
}

pub(super) async fn statement_reward(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let path = "/v2/simulate_statement_reward";
    let b = validate_body(path, &body, STATEMENT_REWARD)?;
    let customer_id = b["customer_id"].as_str().unwrap_or_default().to_string();
    simulate(emu, ctx, path, customer_id, RewardProgram::Statement).await
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

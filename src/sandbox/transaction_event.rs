//! `simulate_transaction_event`: the transaction lifecycle.
//!
//! One request, in the order a reader follows it: validate the body, draw the
//! ids, then under one lock load the payment method and either open a new
//! APPROVED transaction or apply a transition to an existing one (every check
//! before any write), gather what the webhooks carry, and send them.

use std::collections::HashMap;

use axum::{body::Bytes, extract::State, http::StatusCode, Extension};
use serde_json::{json, Value};

use super::{
    amount,
    body::{decode, ADDRESS},
    clock::{now_rfc3339, now_ts},
    http::{ok, opt, req, validate_body, ApiError, ApiResult, Field, Ty},
    simulate::{merchant_key, reward_webhook},
    state::{find, find_mut, Owned, World},
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

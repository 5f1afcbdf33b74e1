//! Payment methods, transaction intents and transactions.

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    Extension,
};
use serde_json::{json, Value};

use super::{
    body::{decode, metadata_struct, ADDRESS},
    clock::now_ts,
    customers::customer_not_found,
    http::{ok, opt, opt_min, req, validate_body, ApiError, ApiResult, Field, Page, Query, Ty},
    state::{find, find_mut, select, Owned},
    Ctx, Emulator,
};
use crate::pb::imprint::v2 as pb;

const PM_TYPES: &[&str] = &["LOAN", "CARD", "BANK_ACCOUNT"];
const INTENT_STATUSES: &[&str] = &["CONFIRMED", "CANCELED"];

const PM_SEARCH: &[Field] = &[
    req("customer_id", Ty::Str),
    opt("type", Ty::Enum(PM_TYPES)),
    opt("pan", Ty::Str),
    opt_min("limit", Ty::Int, 1),
    opt("starting_after", Ty::Str),
];

const CREATE_INTENT: &[Field] = &[
    req("customer_id", Ty::Str),
    opt("payment_method_id", Ty::Str),
    req("amount", Ty::Amount),
    req("currency", Ty::Str),
    opt("network_transaction_id", Ty::Str),
    opt("merchant_name", Ty::Str),
    opt("merchant_address", Ty::Nested(ADDRESS)),
    opt("merchant_id", Ty::Str),
    opt("merchant_code", Ty::Str),
    opt("expected_date", Ty::DateOrDateTime),
    opt("metadata", Ty::Obj),
];

const UPDATE_INTENT: &[Field] = &[
    req("customer_id", Ty::Str),
    req("amount", Ty::Amount),
    req("status", Ty::Enum(INTENT_STATUSES)),
    req("created_at", Ty::DateTime),
    opt("currency", Ty::Str),
    opt("network_transaction_id", Ty::Str),
    opt("partner_transaction_id", Ty::Str),
    opt("metadata", Ty::Obj),
];

fn pm_type(name: &str) -> i32 {
    <pb::PaymentMethodType as crate::json::RestEnum>::from_rest(name).map_or(0, |t| t as i32)
}

fn search_payment_methods(
    emu: &Emulator,
    ctx: &Ctx,
    path: &str,
    customer_id: &str,
    kind: Option<String>,
    pan: Option<String>,
    page: Page,
) -> ApiResult {
    let kind = kind.map(|k| pm_type(&k));
    let found = emu.store().with(|w| {
        select(&w.payment_methods, &ctx.product.name, |p| {
            p.customer_id == customer_id
                && kind.is_none_or(|k| p.r#type == k)
                && pan.as_ref().is_none_or(|pan| {
                    p.card
                        .as_ref()
                        .and_then(|c| c.pci_details.as_ref())
                        .and_then(|d| d.pan.as_ref())
                        == Some(pan)
                })
        })
    });
    page.apply(path, found, |p| &p.id)
}

pub(super) async fn search_get(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let path = "/v2/payment_methods";
    let mut q = Query::parse(path, q.as_deref());
    let customer_id = q.required("customer_id");
    let kind = q.enumeration("type", PM_TYPES);
    let page = q.page();
    q.finish()?;
    search_payment_methods(&emu, &ctx, path, &customer_id, kind, None, page)
}

pub(super) async fn search_post(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let path = "/v2/payment_methods";
    let b = validate_body(path, &body, PM_SEARCH)?;
    let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
    let customer_id = s("customer_id").unwrap_or_default();
    search_payment_methods(
        &emu,
        &ctx,
        path,
        &customer_id,
        s("type"),
        s("pan"),
        Page::from_body(&b),
    )
}

pub(super) async fn get_payment_method(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let pm = emu
        .store()
        .with(|w| find(&w.payment_methods, &ctx.product.name, |p| p.id == id).cloned());
    ok(&pm.ok_or_else(|| {
        ApiError::not_found(
            "PAYMENT_METHOD_NOT_FOUND_ERROR",
            "Payment method",
            "payment_method_id",
            &id,
        )
    })?)
}

fn require_customer(emu: &Emulator, id: &str) -> ApiResult<()> {
    if emu.store().with(|w| w.customer(id).is_none()) {
        return Err(customer_not_found(id));
    }
    Ok(())
}

pub(super) async fn customer_payment_methods(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    require_customer(&emu, &id)?;
    let data = emu.store().with(|w| {
        select(&w.payment_methods, &ctx.product.name, |p| {
            p.customer_id == id
        })
    });
    ok(&json!({ "data": data }))
}

pub(super) async fn customer_intents(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    require_customer(&emu, &id)?;
    let data = emu
        .store()
        .with(|w| select(&w.intents, &ctx.product.name, |i| i.customer_id == id));
    ok(&json!({ "data": data }))
}

pub(super) async fn customer_transactions(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let path = format!("/v2/customers/{id}/transactions");
    let mut q = Query::parse(&path, q.as_deref());
    let page = q.page();
    q.finish()?;
    require_customer(&emu, &id)?;
    let data = emu
        .store()
        .with(|w| select(&w.transactions, &ctx.product.name, |t| t.customer_id == id));
    page.apply(&path, data, |t| &t.id)
}

pub(super) async fn create_intent(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let path = "/v2/transaction_intents";
    let b = validate_body(path, &body, CREATE_INTENT)?;
    let request: pb::CreateTransactionIntentRequest = decode(&b);
    if emu
        .store()
        .with(|w| w.customer(&request.customer_id).is_none())
    {
        return Err(ApiError::validation(
            path,
            vec![format!("customer_id: no customer {}", request.customer_id)],
        ));
    }
    if let Some(pm) = &request.payment_method_id {
        let known = emu.store().with(|w| {
            find(&w.payment_methods, &ctx.product.name, |p| {
                &p.id == pm && p.customer_id == request.customer_id
            })
            .is_some()
        });
        if !known {
            return Err(ApiError::validation(
                path,
                vec![format!(
                    "payment_method_id: no payment method {pm} for this customer"
                )],
            ));
        }
    }
    let now = now_ts();
    let intent = pb::TransactionIntent {
        id: emu.store().id(),
        customer_id: request.customer_id,
        payment_method_id: request.payment_method_id,
        // validate_body checked that `amount` is present.
        amount: request.amount.unwrap_or_default(),
        currency: request.currency,
        status: pb::TransactionIntentStatus::Confirmed as i32,
        network_transaction_id: request.network_transaction_id,
        partner_transaction_id: None,
        created_at: Some(now),
        updated_at: Some(now),
        metadata: metadata_struct(b.get("metadata")),
    };
    emu.store().with(|w| {
        w.intents.push(Owned {
            product: ctx.product.name.clone(),
            item: intent.clone(),
        })
    });
    ok(&intent)
}

pub(super) async fn list_intents(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let path = "/v2/transaction_intents";
    let mut q = Query::parse(path, q.as_deref());
    let status = q
        .enumeration("type", INTENT_STATUSES)
        .and_then(|s| <pb::TransactionIntentStatus as crate::json::RestEnum>::from_rest(&s))
        .map(|s| s as i32);
    let page = q.page();
    q.finish()?;
    let data = emu.store().with(|w| {
        select(&w.intents, &ctx.product.name, |i| {
            status.is_none_or(|s| i.status == s)
        })
    });
    page.apply(path, data, |i| &i.id)
}

fn intent_not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "TRANSACTION_INTENT_NOT_FOUND_ERROR",
        "Transaction intent",
        "intent_id",
        id,
    )
}

pub(super) async fn get_intent(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let i = emu
        .store()
        .with(|w| find(&w.intents, &ctx.product.name, |i| i.id == id).cloned());
    ok(&i.ok_or_else(|| intent_not_found(&id))?)
}

pub(super) async fn update_intent(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b = validate_body(
        &format!("/v2/transaction_intents/{id}"),
        &body,
        UPDATE_INTENT,
    )?;
    let u: pb::UpdateTransactionIntentRequest = decode(&b);
    let updated = emu.store().with(|w| {
        let i = find_mut(&mut w.intents, &ctx.product.name, |i| i.id == id)?;
        i.customer_id = u.customer_id;
        i.amount = u.amount.unwrap_or_default();
        i.status = u.status;
        i.created_at = u.created_at;
        if u.currency.is_some() {
            i.currency = u.currency.unwrap_or_default();
        }
        if u.network_transaction_id.is_some() {
            i.network_transaction_id = u.network_transaction_id;
        }
        if u.partner_transaction_id.is_some() {
            i.partner_transaction_id = u.partner_transaction_id;
        }
        if b.contains_key("metadata") {
            i.metadata = metadata_struct(b.get("metadata"));
        }
        i.updated_at = Some(now_ts());
        Some(i.clone())
    });
    ok(&updated.ok_or_else(|| intent_not_found(&id))?)
}

pub(super) async fn get_transaction(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let t = emu
        .store()
        .with(|w| find(&w.transactions, &ctx.product.name, |t| t.id == id).cloned());
    ok(&t.ok_or_else(|| {
        ApiError::not_found(
            "TRANSACTION_NOT_FOUND_ERROR",
            "Transaction",
            "transaction_id",
            &id,
        )
    })?)
}

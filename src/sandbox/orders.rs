//! Orders and order events.

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::IntoResponse,
    Extension,
};
use serde_json::{json, Map, Value};

use super::{
    amount::{self, range_text},
    body::{decode, ADDRESS},
    clock::now_ts,
    http::{ok, opt, req, validate_body, ApiError, ApiResult, Field, Query, Ty},
    state::{find, select, Owned},
    Ctx, Emulator,
};
use crate::pb::imprint::v2 as pb;

const ORDER_LINE: &[Field] = &[
    req("name", Ty::Str),
    opt("product_url", Ty::Str),
    req("quantity", Ty::Amount),
    req("rate", Ty::Amount),
    req("rewards_rate", Ty::Amount),
];

const ORDER: &[Field] = &[
    opt("id", Ty::Str),
    opt("customer_id", Ty::Str),
    req("payment_method_id", Ty::Str),
    req("partner_order_id", Ty::Str),
    opt("merchant_id", Ty::Str),
    opt("merchant_name", Ty::Str),
    opt("merchant_address", Ty::ArrayOf(ADDRESS)),
    opt("order_lines", Ty::ArrayOf(ORDER_LINE)),
    req("total_order_amount", Ty::Amount),
    opt("total_rewards_amount", Ty::Amount),
    opt("currency", Ty::Str),
    opt("created_at", Ty::DateTime),
    opt("updated_at", Ty::DateTime),
];

const ORDER_EVENT: &[Field] = &[
    opt("order_event_id", Ty::Str),
    req("order_id", Ty::Str),
    opt("partner_event_id", Ty::Str),
    req("type", Ty::Enum(&["CAPTURED", "REFUNDED"])),
    req("amount", Ty::Amount),
    opt("rewards_amount", Ty::Amount),
    opt("currency", Ty::Str),
    req("network_transaction_id", Ty::Str),
    opt("order_lines", Ty::ArrayOf(ORDER_LINE)),
];

/// When order lines are given, their rates must add up to the totals.
fn check_lines(
    path: &str,
    lines: &[pb::OrderLine],
    amount: i64,
    rewards: Option<i64>,
    names: (&str, &str),
) -> ApiResult<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    // A total out of range is reported as such; comparing it would only add noise.
    let sum = lines_total(lines, |l| l.rate.unwrap_or_default(), "rate", &mut problems);
    let rewards_sum = lines_total(
        lines,
        |l| l.rewards_rate.unwrap_or_default(),
        "rewards_rate",
        &mut problems,
    );
    if let Some(sum) = sum.filter(|s| *s != amount) {
        problems.push(format!(
            "{}: must equal the sum of order line rates ({sum})",
            names.0
        ));
    }
    if let Some(rewards_sum) = rewards_sum.filter(|s| rewards.is_some_and(|r| r != *s)) {
        problems.push(format!(
            "{}: must equal the sum of order line rewards rates ({rewards_sum})",
            names.1
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(path, problems))
    }
}

/// The sum of `rate × quantity` over `lines`, or `None` with a problem
/// naming the line (or the list) where it leaves the bound on amounts.
fn lines_total(
    lines: &[pb::OrderLine],
    rate: impl Fn(&pb::OrderLine) -> i64,
    rate_name: &str,
    problems: &mut Vec<String>,
) -> Option<i64> {
    let mut each = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let Some(total) = amount::mul(rate(line), line.quantity.unwrap_or_default()) else {
            problems.push(format!(
                "order_lines[{i}]: {rate_name} × quantity {}",
                range_text()
            ));
            return None;
        };
        each.push(total);
    }
    let total = amount::sum(each);
    if total.is_none() {
        problems.push(format!(
            "order_lines: the sum of {rate_name} × quantity {}",
            range_text()
        ));
    }
    total
}

fn order_from(
    emu: &Emulator,
    ctx: &Ctx,
    path: &str,
    b: &Map<String, Value>,
    id: String,
) -> ApiResult<pb::Order> {
    let mut order: pb::Order = decode(b);
    check_lines(
        path,
        &order.order_lines,
        order.total_order_amount,
        order.total_rewards_amount,
        ("total_order_amount", "total_rewards_amount"),
    )?;
    let pm = emu.store().with(|w| {
        find(&w.payment_methods, &ctx.product.name, |p| {
            p.id == order.payment_method_id
        })
        .cloned()
    });
    let Some(pm) = pm else {
        return Err(ApiError::validation(
            path,
            vec![format!(
                "payment_method_id: no payment method {}",
                order.payment_method_id
            )],
        ));
    };
    order.id = Some(id);
    order.customer_id.get_or_insert(pm.customer_id);
    Ok(order)
}

pub(super) async fn list(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse("/v2/orders", q.as_deref());
    let (id, partner) = (q.str("id"), q.str("partner_order_id"));
    q.finish()?;
    let data = emu.store().with(|w| {
        select(&w.orders, &ctx.product.name, |o| {
            id.as_ref().is_none_or(|i| o.id.as_ref() == Some(i))
                && partner.as_ref().is_none_or(|p| &o.partner_order_id == p)
        })
    });
    ok(&json!({ "data": data }))
}

pub(super) async fn create(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let path = "/v2/orders";
    let b = validate_body(path, &body, ORDER)?;
    let mut order = order_from(&emu, &ctx, path, &b, emu.store().id())?;
    let now = now_ts();
    order.created_at = Some(now);
    order.updated_at = Some(now);
    emu.store().with(|w| {
        w.orders.push(Owned {
            product: ctx.product.name.clone(),
            item: order.clone(),
        })
    });
    ok(&order)
}

fn order_not_found(id: &str) -> ApiError {
    ApiError::not_found("ORDER_NOT_FOUND_ERROR", "Order", "order_id", id)
}

pub(super) async fn replace(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v2/orders/{id}");
    let b = validate_body(&path, &body, ORDER)?;
    let created_at = emu
        .store()
        .with(|w| {
            find(&w.orders, &ctx.product.name, |o| {
                o.id.as_deref() == Some(id.as_str())
            })
            .map(|o| o.created_at)
        })
        .ok_or_else(|| order_not_found(&id))?;
    let mut order = order_from(&emu, &ctx, &path, &b, id.clone())?;
    order.created_at = created_at;
    order.updated_at = Some(now_ts());
    emu.store().with(|w| {
        if let Some(slot) = w
            .orders
            .iter_mut()
            .find(|o| o.product == ctx.product.name && o.item.id.as_deref() == Some(id.as_str()))
        {
            slot.item = order.clone();
        }
    });
    ok(&order)
}

pub(super) async fn delete(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let removed = emu.store().with(|w| {
        let before = w.orders.len();
        w.orders.retain(|o| {
            !(o.product == ctx.product.name && o.item.id.as_deref() == Some(id.as_str()))
        });
        before != w.orders.len()
    });
    if !removed {
        return Err(order_not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn list_events(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let path = "/v2/order_events";
    let mut q = Query::parse(path, q.as_deref());
    let f = |k: &str| q.str(k);
    let (event_id, order_id, partner, network) = (
        f("order_event_id"),
        f("order_id"),
        f("partner_event_id"),
        f("network_transaction_id"),
    );
    let page = q.page();
    q.finish()?;
    let data = emu.store().with(|w| {
        select(&w.order_events, &ctx.product.name, |e| {
            event_id
                .as_ref()
                .is_none_or(|x| e.order_event_id.as_ref() == Some(x))
                && order_id.as_ref().is_none_or(|x| &e.order_id == x)
                && partner
                    .as_ref()
                    .is_none_or(|x| e.partner_event_id.as_ref() == Some(x))
                && network
                    .as_ref()
                    .is_none_or(|x| &e.network_transaction_id == x)
        })
    });
    page.apply(path, data, |e| {
        e.order_event_id.as_deref().unwrap_or_default()
    })
}

pub(super) async fn create_event(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let path = "/v2/order_events";
    let b = validate_body(path, &body, ORDER_EVENT)?;
    let mut event: pb::OrderEvent = decode(&b);
    check_lines(
        path,
        &event.order_lines,
        event.amount,
        event.rewards_amount,
        ("amount", "rewards_amount"),
    )?;
    let order_known = emu.store().with(|w| {
        find(&w.orders, &ctx.product.name, |o| {
            o.id.as_deref() == Some(event.order_id.as_str())
        })
        .is_some()
    });
    if !order_known {
        return Err(ApiError::validation(
            path,
            vec![format!("order_id: no order {}", event.order_id)],
        ));
    }
    event.order_event_id = Some(emu.store().id());
    emu.store().with(|w| {
        w.order_events.push(Owned {
            product: ctx.product.name.clone(),
            item: event.clone(),
        })
    });
    ok(&event)
}

pub(super) async fn delete_event(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let removed = emu.store().with(|w| {
        let before = w.order_events.len();
        w.order_events.retain(|e| {
            !(e.product == ctx.product.name
                && e.item.order_event_id.as_deref() == Some(id.as_str()))
        });
        before != w.order_events.len()
    });
    if !removed {
        return Err(ApiError::not_found(
            "ORDER_EVENT_NOT_FOUND_ERROR",
            "Order event",
            "order_event_id",
            &id,
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

//! Customers, customer links and customer sessions.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::IntoResponse,
    Extension, Json,
};
use serde_json::{json, Value};

use super::{
    body::{decode, metadata_struct, ADDRESS},
    clock::now_ts,
    http::{
        ok, opt, opt_min, opt_range, req, validate_body, ApiError, ApiResult, Field, Page, Query,
        Ty,
    },
    state::{find, CustomerRecord, Owned},
    Ctx, Emulator,
};
use crate::pb::imprint::v2 as pb;

/// The spec's bounds; the year's maximum is its proto field's (`int32`).
const DATE_OF_BIRTH: &[Field] = &[
    opt_range("year", 1900, i32::MAX as i64),
    opt_range("month", 1, 12),
    opt_range("day", 1, 31),
];

pub(super) const HISTORY: &[Field] = &[
    opt("email", Ty::Str),
    opt("phone", Ty::Str),
    opt("first_name", Ty::Str),
    opt("last_name", Ty::Str),
    opt("preferred_language", Ty::Str),
    opt("address", Ty::Nested(ADDRESS)),
    opt("account_tenure", Ty::Amount),
    opt("ltv_amount", Ty::Amount),
    opt("ltv_currency", Ty::Str),
    opt("loyalty_tier", Ty::Str),
    opt("account_created_at", Ty::DateTime),
    opt("transaction_count", Ty::Amount),
];

const SEARCH: &[Field] = &[
    opt("partner_customer_id", Ty::Str),
    opt("ssn", Ty::Str),
    opt("date_of_birth", Ty::Nested(DATE_OF_BIRTH)),
    opt_min("limit", Ty::Int, 1),
    opt("starting_after", Ty::Str),
];

const UPDATE: &[Field] = &[
    opt("email", Ty::Str),
    opt("phone", Ty::Str),
    opt("first_name", Ty::Str),
    opt("last_name", Ty::Str),
    opt("preferred_language", Ty::Str),
    opt("street_line1", Ty::Str),
    opt("street_line2", Ty::Str),
    opt("city", Ty::Str),
    opt("state", Ty::Str),
    opt("postal_code", Ty::Str),
    opt("customer_history", Ty::Nested(HISTORY)),
    opt("metadata", Ty::Obj),
];

const LINK: &[Field] = &[
    req("partner_customer_id", Ty::Str),
    opt("metadata", Ty::Obj),
];

const SESSION: &[Field] = &[
    opt("customer_id", Ty::Str),
    opt("partner_customer_id", Ty::Str),
    opt("transaction_amount", Ty::Amount),
    opt("transaction_currency", Ty::Str),
    opt("customer_history", Ty::Nested(HISTORY)),
    opt("source", Ty::Str),
    opt("metadata", Ty::Obj),
    opt("customer_metadata", Ty::StrMap),
];

pub(super) fn customer_not_found(id: &str) -> ApiError {
    ApiError::not_found("CUSTOMER_NOT_FOUND_ERROR", "Customer", "customer_id", id)
}

/// Customers are the partner's, visible whichever product a call selects.
fn search(
    emu: &Emulator,
    path: &str,
    partner_id: Option<String>,
    ssn: Option<String>,
    dob: Option<pb::DateOfBirth>,
    page: Page,
) -> ApiResult {
    if let Some(ssn) = &ssn {
        if ssn.len() != 9 || !ssn.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::validation(
                path,
                vec!["ssn: must be 9 digits without hyphens".into()],
            ));
        }
    }
    let found: Vec<pb::Customer> = emu.store().with(|w| {
        w.customers
            .iter()
            .rev()
            .filter(|c| {
                partner_id
                    .as_ref()
                    .is_none_or(|p| c.customer.partner_customer_id.as_ref() == Some(p))
                    && ssn.as_ref().is_none_or(|s| c.ssn.as_ref() == Some(s))
                    && dob.as_ref().is_none_or(|d| {
                        let have = c.customer.date_of_birth.unwrap_or_default();
                        d.year.is_none_or(|y| have.year == Some(y))
                            && d.month.is_none_or(|m| have.month == Some(m))
                            && d.day.is_none_or(|x| have.day == Some(x))
                    })
            })
            .map(|c| c.customer.clone())
            .collect()
    });
    page.apply(path, found, |c| &c.id)
}

pub(super) async fn search_get(State(emu): State<Emulator>, RawQuery(q): RawQuery) -> ApiResult {
    let path = "/v2/customers";
    let mut q = Query::parse(path, q.as_deref());
    let page = q.page();
    let partner = q.str("partner_customer_id");
    q.finish()?;
    search(&emu, path, partner, None, None, page)
}

pub(super) async fn search_post(State(emu): State<Emulator>, body: Bytes) -> ApiResult {
    let path = "/v2/customers";
    let b = validate_body(path, &body, SEARCH)?;
    let page = Page::from_body(&b);
    let str_of = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
    let dob = b
        .get("date_of_birth")
        .and_then(Value::as_object)
        .map(decode::<pb::DateOfBirth>);
    search(
        &emu,
        path,
        str_of("partner_customer_id"),
        str_of("ssn"),
        dob,
        page,
    )
}

pub(super) async fn get(State(emu): State<Emulator>, Path(id): Path<String>) -> ApiResult {
    let c = emu
        .store()
        .with(|w| w.customer(&id).map(|c| c.customer.clone()));
    ok(&c.ok_or_else(|| customer_not_found(&id))?)
}

pub(super) async fn update(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b = validate_body(&format!("/v2/customers/{id}"), &body, UPDATE)?;
    let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
    let updated = emu.store().with(|w| {
        let rec = w.customer_mut(&id)?;
        let c = &mut rec.customer;
        for (field, slot) in [
            ("email", &mut c.email),
            ("phone", &mut c.phone),
            ("first_name", &mut c.first_name),
            ("last_name", &mut c.last_name),
            ("preferred_language", &mut c.preferred_language),
        ] {
            if let Some(v) = s(field) {
                *slot = Some(v);
            }
        }
        let address = c.address.get_or_insert_with(Default::default);
        for (field, slot) in [
            ("street_line1", &mut address.street_line1),
            ("street_line2", &mut address.street_line2),
            ("city", &mut address.city),
            ("state", &mut address.state),
            ("postal_code", &mut address.postal_code),
        ] {
            if let Some(v) = s(field) {
                *slot = Some(v);
            }
        }
        if let Some(m) = b.get("metadata").and_then(Value::as_object) {
            c.metadata = metadata_struct(Some(&Value::Object(m.clone())));
        }
        c.updated_at = Some(now_ts());
        Some(c.clone())
    });
    ok(&updated.ok_or_else(|| customer_not_found(&id))?)
}

pub(super) async fn link(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b = validate_body(&format!("/v2/customers/{id}/link"), &body, LINK)?;
    let partner_id = b["partner_customer_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let product = ctx.product.name.clone();
    let result = emu.store().with(|w| {
        if w.customer(&id).is_none() {
            return Err(customer_not_found(&id));
        }
        if let Some(existing) = find(&w.links, &product, |l| l.customer_id == id) {
            let existing = serde_json::to_value(existing).unwrap_or_default();
            return Err(ApiError::conflict(
                "CUSTOMER_ALREADY_LINKED",
                "Customer already linked to a partner account",
            )
            .with("existing_link", existing));
        }
        let now = now_ts();
        let link = pb::CustomerLink {
            customer_id: id.clone(),
            partner_customer_id: partner_id.clone(),
            status: pb::CustomerLinkStatus::Active as i32,
            created_at: Some(now),
            updated_at: Some(now),
            metadata: metadata_struct(b.get("metadata")),
        };
        w.links.push(Owned {
            product: product.clone(),
            item: link.clone(),
        });
        let rec = w.customer_mut(&id).expect("checked above");
        rec.customer.partner_customer_id = Some(partner_id.clone());
        Ok((link, rec.customer_metadata.clone()))
    });
    let (link, customer_metadata) = result?;
    emu.webhooks().send(
        "CUSTOMER_LINK",
        json!({
            "merchant_key": ctx.product.merchant_key.clone().unwrap_or_else(|| ctx.product.name.clone()),
            "customer_id": link.customer_id,
            "partner_customer_id": link.partner_customer_id,
            "status": "ACTIVE",
            "created_at": super::clock::now_rfc3339(),
            "updated_at": super::clock::now_rfc3339(),
            "customer_metadata": customer_metadata,
        }),
    );
    ok(&link)
}

pub(super) async fn create_session(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> ApiResult {
    let path = "/v2/customer_sessions";
    let b = validate_body(path, &body, SESSION)?;
    let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
    let history: Option<pb::CustomerAccountHistory> = b
        .get("customer_history")
        .and_then(Value::as_object)
        .map(decode);
    let customer_metadata: HashMap<String, String> = b
        .get("customer_metadata")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();

    let (customer_id, created) = match (s("customer_id"), s("partner_customer_id")) {
        (Some(id), _) => {
            if emu.store().with(|w| w.customer(&id).is_none()) {
                return Err(customer_not_found(&id));
            }
            (id, false)
        }
        (None, partner) => {
            let existing = partner.as_ref().and_then(|p| {
                emu.store().with(|w| {
                    w.customers
                        .iter()
                        .find(|c| c.customer.partner_customer_id.as_ref() == Some(p))
                        .map(|c| c.customer.id.clone())
                })
            });
            match existing {
                Some(id) => (id, false),
                None => {
                    let id = emu.store().id();
                    let h = history.clone().unwrap_or_default();
                    let now = now_ts();
                    let customer = pb::Customer {
                        id: id.clone(),
                        email: h.email.clone(),
                        phone: h.phone.clone(),
                        first_name: h.first_name.clone(),
                        last_name: h.last_name.clone(),
                        preferred_language: h.preferred_language.clone(),
                        address: h.address.clone(),
                        partner_customer_id: partner.clone(),
                        created_at: Some(now),
                        updated_at: Some(now),
                        ..Default::default()
                    };
                    emu.store().with(|w| {
                        w.customers.push(CustomerRecord {
                            customer,
                            ssn: None,
                            customer_metadata: customer_metadata.clone(),
                        })
                    });
                    (id, true)
                }
            }
        }
    };
    if !customer_metadata.is_empty() {
        emu.store().with(|w| {
            if let Some(c) = w.customer_mut(&customer_id) {
                c.customer_metadata.extend(customer_metadata.clone());
            }
        });
    }

    let ttl = emu.config().session_ttl;
    let expires = now_ts();
    // A TTL past the timestamp range is a configuration mistake: saturate
    // rather than wrap into the past.
    let ttl_seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let session = pb::CustomerSession {
        id: emu.store().id(),
        client_secret: emu.store().secret(""),
        expires_at: Some(prost_types::Timestamp {
            seconds: expires.seconds.saturating_add(ttl_seconds),
            nanos: expires.nanos,
        }),
        metadata: metadata_struct(b.get("metadata")),
        customer_metadata: customer_metadata.clone(),
        source: s("source"),
    };
    emu.store().with(|w| {
        w.sessions.push(Owned {
            product: ctx.product.name.clone(),
            item: session.clone(),
        })
    });
    if created {
        super::simulate::application(&emu, &ctx, &customer_id);
    }
    let value = serde_json::to_value(&session).unwrap_or_default();
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

pub(super) async fn get_session(
    State(emu): State<Emulator>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let s = emu
        .store()
        .with(|w| find(&w.sessions, &ctx.product.name, |s| s.id == id).cloned());
    ok(&s.ok_or_else(|| {
        ApiError::not_found("SESSION_NOT_FOUND_ERROR", "Session", "session_id", &id)
    })?)
}

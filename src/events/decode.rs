//! A verified webhook body → a typed [`Event`].
//!
//! Decoding is by hand from a `serde_json::Value` rather than through
//! build.rs-generated serde attributes: the notifications are few, their
//! enums live in two packages, and this keeps build.rs untouched while
//! another branch rewrites it. Fields reuse the lenient REST decoders of
//! [`crate::json::de`] (an odd value leaves the field unset, never fails).

use std::collections::{HashMap, HashSet};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::pb::{self, event::Payload, EventKind};
use crate::{json::de as lenient, json::RestEnum, pb::imprint::v2};

/// Why a body is refused before storing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body has a duplicate key {0:?}")]
    DuplicateKey(String),
    #[error("body is not a JSON object")]
    NotObject,
}

/// Parses `body`, refusing duplicate keys at any depth (two readers could
/// disagree on which value counts, so such a body cannot be trusted).
pub fn parse(body: &[u8]) -> Result<Value, BodyError> {
    let mut d = serde_json::Deserializer::from_slice(body);
    match NoDuplicates.deserialize(&mut d) {
        Ok(()) => {}
        Err(e) => {
            let msg = e.to_string();
            return Err(match msg.strip_prefix(DUP) {
                Some(rest) => BodyError::DuplicateKey(
                    rest.split(" at line").next().unwrap_or(rest).to_string(),
                ),
                None => BodyError::NotJson(msg),
            });
        }
    }
    d.end().map_err(|e| BodyError::NotJson(e.to_string()))?;
    let v: Value = serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(BodyError::NotObject);
    }
    Ok(v)
}

const DUP: &str = "duplicate key ";

/// Walks a JSON document, failing on a repeated key in any object.
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("{DUP}{k}")));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }
}

/// The kind named by `object`.
pub fn kind_of(object: &str) -> EventKind {
    match object {
        "APPLICATION" => EventKind::Application,
        "TRANSACTION" => EventKind::Transaction,
        "PAYMENT_METHOD" => EventKind::PaymentMethod,
        "CUSTOMER_LINK" => EventKind::CustomerLink,
        "REWARD" => EventKind::Reward,
        "STREAK" => EventKind::Streak,
        "ACCOUNT_STATUS" => EventKind::AccountStatus,
        _ => EventKind::Unspecified,
    }
}

/// Builds the event (without cursor and received_at) from a parsed body.
pub fn event(raw: &str, body: &Value) -> pb::Event {
    let kind = kind_of(body.get("object").and_then(Value::as_str).unwrap_or(""));
    let data = body.get("data").unwrap_or(&Value::Null);
    let payload = payload(kind, data);
    let event_id = match data.get("event_id").and_then(Value::as_str) {
        Some(id) if kind == EventKind::Transaction && !id.is_empty() => id.to_string(),
        _ => digest(body),
    };
    pb::Event {
        cursor: String::new(),
        kind: kind as i32,
        event_id,
        received_at: None,
        payload,
        raw_json: raw.to_string(),
    }
}

/// `sha256:<hex>` of the canonical (compact, sorted keys) form, so a
/// re-serialised copy of the same payload has the same id.
fn digest(body: &Value) -> String {
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
}

/// The customer an event names, for filtering.
pub fn customer_id(event: &pb::Event) -> String {
    match &event.payload {
        Some(Payload::Application(n)) => n.customer_id.clone(),
        Some(Payload::Transaction(n)) => n.customer_id.clone(),
        Some(Payload::PaymentMethod(n)) => n.customer_id.clone(),
        Some(Payload::CustomerLink(n)) => n.customer_id.clone(),
        Some(Payload::Reward(n)) => n.customer_id.clone(),
        Some(Payload::Streak(n)) => n.customer_id.clone(),
        Some(Payload::AccountStatus(n)) => n.customer_id.clone(),
        None => serde_json::from_str::<Value>(&event.raw_json)
            .ok()
            .and_then(|v| v["data"]["customer_id"].as_str().map(str::to_string))
            .unwrap_or_default(),
    }
}

fn payload(kind: EventKind, d: &Value) -> Option<Payload> {
    let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let o = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
    let ts = |k: &str| d.get(k).and_then(|v| lenient::timestamp(v).ok().flatten());
    let i64_ = |k: &str| d.get(k).and_then(Value::as_i64).unwrap_or(0);
    let i32_ = |k: &str| i64_(k).try_into().unwrap_or(0);
    let meta = || -> HashMap<String, String> {
        d.get("customer_metadata")
            .and_then(|v| lenient::string_map(v).ok())
            .unwrap_or_default()
    };
    let strukt = |k: &str| d.get(k).and_then(|v| lenient::structure(v).ok().flatten());
    Some(match kind {
        EventKind::Unspecified => return None,
        EventKind::Application => Payload::Application(pb::ApplicationNotification {
            merchant_key: s("merchant_key"),
            customer_id: s("customer_id"),
            partner_customer_id: o("partner_customer_id"),
            status: named(d, "status", "APPLICATION_STATUS_", |n| {
                pb::ApplicationStatus::from_str_name(n).map(|e| e as i32)
            }),
            created_at: ts("created_at"),
            updated_at: ts("updated_at"),
            customer_metadata: meta(),
        }),
        EventKind::Transaction => Payload::Transaction(pb::TransactionNotification {
            merchant_key: s("merchant_key"),
            transaction_id: s("transaction_id"),
            event_id: s("event_id"),
            intent_id: o("intent_id"),
            payment_method_id: s("payment_method_id"),
            customer_id: s("customer_id"),
            partner_customer_id: o("partner_customer_id"),
            status: rest::<v2::TransactionStatus>(d, "status"),
            created_at: ts("created_at"),
            updated_at: ts("updated_at"),
            amount: i64_("amount"),
            currency: s("currency"),
            authorization_code: o("authorization_code"),
            network_transaction_id: o("network_transaction_id"),
            purchase_method: rest::<v2::PurchaseMethod>(d, "purchase_method"),
            merchant: d
                .get("merchant")
                .and_then(|v| lenient::message::<v2::Merchant, _>(v).ok().flatten()),
            customer_metadata: meta(),
        }),
        EventKind::PaymentMethod => Payload::PaymentMethod(pb::PaymentMethodNotification {
            merchant_key: s("merchant_key"),
            payment_method_id: s("payment_method_id"),
            customer_id: s("customer_id"),
            partner_customer_id: o("partner_customer_id"),
            previous_status: rest::<v2::PaymentMethodStatus>(d, "previous_status"),
            new_status: rest::<v2::PaymentMethodStatus>(d, "new_status"),
            card_type: rest::<v2::CardType>(d, "card_type"),
            card_design_id: o("card_design_id"),
            tokens: d
                .get("tokens")
                .and_then(|v| lenient::messages::<v2::PaymentMethodToken, _>(v).ok())
                .unwrap_or_default(),
            created_at: ts("created_at"),
            updated_at: ts("updated_at"),
            customer_metadata: meta(),
        }),
        EventKind::CustomerLink => Payload::CustomerLink(pb::CustomerLinkNotification {
            merchant_key: s("merchant_key"),
            customer_id: s("customer_id"),
            partner_customer_id: o("partner_customer_id"),
            status: rest::<v2::CustomerLinkStatus>(d, "status"),
            created_at: ts("created_at"),
            updated_at: ts("updated_at"),
            customer_metadata: meta(),
        }),
        EventKind::Reward => Payload::Reward(pb::RewardNotification {
            merchant_key: s("merchant_key"),
            reward_id: s("reward_id"),
            customer_id: s("customer_id"),
            transaction_id: o("transaction_id"),
            r#type: rest::<v2::RewardType>(d, "type"),
            amount: i64_("amount"),
            status: rest::<v2::RewardStatus>(d, "status"),
            currency: s("currency"),
            created_at: ts("created_at"),
            metadata: strukt("metadata"),
            customer_metadata: meta(),
        }),
        EventKind::Streak => Payload::Streak(pb::StreakNotification {
            merchant_key: s("merchant_key"),
            customer_id: s("customer_id"),
            partner_customer_id: o("partner_customer_id"),
            streak_id: s("streak_id"),
            streak_config_id: s("streak_config_id"),
            event: named(d, "event", "STREAK_EVENT_", |n| {
                pb::StreakEvent::from_str_name(n).map(|e| e as i32)
            }),
            status: named(d, "status", "STREAK_STATUS_", |n| {
                pb::StreakStatus::from_str_name(n).map(|e| e as i32)
            }),
            period_type: s("period_type"),
            current_period: i32_("current_period"),
            completed_periods: i32_("completed_periods"),
            total_periods: i32_("total_periods"),
            current_period_start_at: ts("current_period_start_at"),
            current_period_end_at: ts("current_period_end_at"),
            benefits: d
                .get("benefits")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|b| b.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            created_at: ts("created_at"),
            metadata: strukt("metadata"),
            customer_metadata: meta(),
        }),
        EventKind::AccountStatus => Payload::AccountStatus(pb::AccountStatusNotification {
            merchant_key: s("merchant_key"),
            customer_id: s("customer_id"),
            partner_customer_id: o("partner_customer_id"),
            status: named(d, "status", "ACCOUNT_STATUS_", |n| {
                pb::AccountStatus::from_str_name(n).map(|e| e as i32)
            }),
            updated_at: ts("updated_at"),
            customer_metadata: meta(),
        }),
    })
}

/// An imprint.v2 enum from its REST spelling; unknown → UNSPECIFIED.
fn rest<E: RestEnum>(d: &Value, k: &str) -> i32 {
    d.get(k)
        .and_then(|v| lenient::enumeration::<E, _>(v).ok())
        .unwrap_or(0)
}

/// A gateway.v1 enum: REST value `X` is proto value `<PREFIX>X`.
fn named(d: &Value, k: &str, prefix: &str, from: impl Fn(&str) -> Option<i32>) -> i32 {
    d.get(k)
        .and_then(Value::as_str)
        .and_then(|v| from(&format!("{prefix}{v}")))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(matches!(
            parse(br#"{"a":1,"a":2}"#),
            Err(BodyError::DuplicateKey(k)) if k == "a"
        ));
        assert!(matches!(
            parse(br#"{"data":{"x":[{"k":1,"k":1}]}}"#),
            Err(BodyError::DuplicateKey(k)) if k == "k"
        ));
        assert!(matches!(parse(b"not json"), Err(BodyError::NotJson(_))));
        assert!(matches!(parse(b"[1]"), Err(BodyError::NotObject)));
        assert!(parse(br#"{"a":{"a":1}}"#).is_ok());
    }

    #[test]
    fn transaction_decodes_field_for_field() {
        let raw = r#"{"object":"TRANSACTION","data":{"merchant_key":"m","transaction_id":"t1","event_id":"e1","customer_id":"c1","status":"CAPTURED","amount":5000,"currency":"USD","purchase_method":"CHIP","created_at":"2025-02-27T18:11:32.358Z","merchant":{"name":"Shop"},"customer_metadata":{"tier":"gold"}}}"#;
        let ev = event(raw, &parse(raw.as_bytes()).unwrap());
        assert_eq!(ev.kind, EventKind::Transaction as i32);
        assert_eq!(ev.event_id, "e1");
        let Some(Payload::Transaction(t)) = &ev.payload else {
            panic!("{ev:?}")
        };
        assert_eq!(t.status, v2::TransactionStatus::Captured as i32);
        assert_eq!(t.purchase_method, v2::PurchaseMethod::Chip as i32);
        assert_eq!(t.amount, 5000);
        assert_eq!(t.merchant.as_ref().unwrap().name.as_deref(), Some("Shop"));
        assert_eq!(t.created_at.unwrap().seconds, 1_740_679_892);
        assert_eq!(t.customer_metadata["tier"], "gold");
        assert_eq!(customer_id(&ev), "c1");
    }

    #[test]
    fn unknown_kinds_keep_raw_json_and_get_a_stable_digest() {
        let a = r#"{"object":"NEW_THING","data":{"customer_id":"c9","b":1,"a":2}}"#;
        let b = r#"{"data":{"a":2,"b":1,"customer_id":"c9"},"object":"NEW_THING"}"#;
        let ea = event(a, &parse(a.as_bytes()).unwrap());
        let eb = event(b, &parse(b.as_bytes()).unwrap());
        assert_eq!(ea.kind, EventKind::Unspecified as i32);
        assert!(ea.payload.is_none());
        assert_eq!(ea.raw_json, a);
        assert_eq!(ea.event_id, eb.event_id);
        assert!(ea.event_id.starts_with("sha256:"));
        assert_eq!(customer_id(&ea), "c9");
    }

    #[test]
    fn streak_and_account_status_enums() {
        let raw = r#"{"object":"STREAK","data":{"customer_id":"c","event":"STREAK_COMPLETED","status":"COMPLETED","benefits":["B1"],"current_period":3}}"#;
        let ev = event(raw, &parse(raw.as_bytes()).unwrap());
        let Some(Payload::Streak(s)) = ev.payload else {
            panic!()
        };
        assert_eq!(s.event, pb::StreakEvent::StreakCompleted as i32);
        assert_eq!(s.status, pb::StreakStatus::Completed as i32);
        assert_eq!(s.benefits, vec!["B1"]);
        assert_eq!(s.current_period, 3);
        let raw = r#"{"object":"ACCOUNT_STATUS","data":{"customer_id":"c","status":"CLOSED"}}"#;
        let ev = event(raw, &parse(raw.as_bytes()).unwrap());
        let Some(Payload::AccountStatus(a)) = ev.payload else {
            panic!()
        };
        assert_eq!(a.status, pb::AccountStatus::Closed as i32);
    }
}

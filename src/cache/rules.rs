//! What each RPC reads and what each write changes, as resource tags.
//!
//! The routes are generated from the proto, but *which resources a write
//! changes* is not a property of the REST mapping, and proto options would
//! spread it over a dozen files: it is declared once, here, next to the
//! reads it invalidates, keyed by RPC name. A test checks that every
//! mutating route has a rule; a mutating RPC without one empties the whole
//! cache (safe, if blunt).
//!
//! An entry is tagged with what it was read by: `customer:C1` (one
//! resource, from a path, query or body field), `customer:[list]` (a list
//! or search that can return any customer), and for each kind it touches,
//! the kind itself (`customer`). A write invalidates every entry sharing a
//! tag with it.

use super::ResourceKind::{self, *};

/// One tag of a rule.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tag {
    /// One resource, its id taken from the named request field.
    Id(ResourceKind, &'static str),
    /// Lists and searches of the kind.
    List(ResourceKind),
    /// Every entry touching the kind (writes only).
    Every(ResourceKind),
}

/// The read RPCs and what their answers depend on.
pub(crate) const READS: &[(&str, &[Tag])] = &[
    ("GetCustomer", &[Tag::Id(Customer, "customer_id")]),
    ("SearchCustomers", &[Tag::List(Customer)]),
    (
        "GetRewardsBalance",
        &[Tag::Id(Customer, "customer_id"), Tag::List(Reward)],
    ),
    (
        "ListCustomerTransactionIntents",
        &[
            Tag::Id(Customer, "customer_id"),
            Tag::List(TransactionIntent),
        ],
    ),
    (
        "ListCustomerTransactions",
        &[Tag::Id(Customer, "customer_id"), Tag::List(Transaction)],
    ),
    (
        "ListCustomerRewards",
        &[Tag::Id(Customer, "customer_id"), Tag::List(Reward)],
    ),
    (
        "GetTransactionIntent",
        &[Tag::Id(TransactionIntent, "intent_id")],
    ),
    ("ListTransactionIntents", &[Tag::List(TransactionIntent)]),
    ("GetTransaction", &[Tag::Id(Transaction, "transaction_id")]),
    ("SearchRewards", &[Tag::List(Reward)]),
    ("GetReward", &[Tag::Id(Reward, "reward_id")]),
    ("GetOffer", &[Tag::List(Offer)]),
    ("ListOrders", &[Tag::List(Order)]),
    (
        "ListOrderEvents",
        &[Tag::List(OrderEvent), Tag::List(Order)],
    ),
];

const SIMULATE: &[Tag] = &[
    Tag::Id(Customer, "customer_id"),
    Tag::Every(Transaction),
    Tag::Every(TransactionIntent),
    Tag::Every(Reward),
    Tag::Every(Offer),
];

/// The write RPCs and what a completed one invalidates.
pub(crate) const WRITES: &[(&str, &[Tag])] = &[
    // API keys are no cached resource; entries are scoped by the key's
    // fingerprint, so a rotated key starts from an empty scope anyway.
    ("CreateKey", &[]),
    ("DeleteKey", &[]),
    (
        "UpdateCustomer",
        &[Tag::Id(Customer, "customer_id"), Tag::List(Customer)],
    ),
    (
        "LinkCustomer",
        &[Tag::Id(Customer, "customer_id"), Tag::List(Customer)],
    ),
    // Sessions are never cached.
    ("CreateCustomerSession", &[]),
    (
        "CreateTransactionIntent",
        &[
            Tag::List(TransactionIntent),
            Tag::Id(Customer, "customer_id"),
        ],
    ),
    (
        "UpdateTransactionIntent",
        &[
            Tag::Id(TransactionIntent, "intent_id"),
            Tag::List(TransactionIntent),
            Tag::Every(Transaction),
        ],
    ),
    (
        "UpdateReward",
        &[Tag::Id(Reward, "reward_id"), Tag::List(Reward)],
    ),
    ("CreateOrder", &[Tag::List(Order), Tag::List(OrderEvent)]),
    (
        "UpdateOrder",
        &[
            Tag::Id(Order, "order_id"),
            Tag::List(Order),
            Tag::List(OrderEvent),
        ],
    ),
    (
        "DeleteOrder",
        &[
            Tag::Id(Order, "order_id"),
            Tag::List(Order),
            Tag::List(OrderEvent),
        ],
    ),
    (
        "CreateOrderEvent",
        &[Tag::List(OrderEvent), Tag::List(Order)],
    ),
    (
        "DeleteOrderEvent",
        &[
            Tag::Id(OrderEvent, "order_event_id"),
            Tag::List(OrderEvent),
            Tag::List(Order),
        ],
    ),
    ("SimulateTransactionEvent", SIMULATE),
    ("SimulateStatementReward", SIMULATE),
    ("SimulateReward", SIMULATE),
];

/// `imprint.v2.CustomerService/GetCustomer` → `GetCustomer`.
pub(crate) fn short(rpc: &str) -> &str {
    rpc.rsplit_once('/').map_or(rpc, |(_, m)| m)
}

/// The rule of `rpc` in `table`.
pub(crate) fn lookup(table: &'static [(&str, &[Tag])], rpc: &str) -> Option<&'static [Tag]> {
    let name = short(rpc);
    table.iter().find(|(r, _)| *r == name).map(|(_, t)| *t)
}

/// The tag strings of `tags` for one request; `field` finds a request
/// field's value (path, query or top-level body field).
pub(crate) fn tag_strings<'a>(
    tags: &[Tag],
    field: impl Fn(&str) -> Option<std::borrow::Cow<'a, str>>,
    reads: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |t: String| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    for tag in tags {
        match tag {
            Tag::Id(kind, name) => {
                if let Some(id) = field(name).filter(|v| !v.is_empty()) {
                    push(id_tag(*kind, &id));
                }
                if reads {
                    push(kind.as_str().to_owned());
                }
            }
            Tag::List(kind) => {
                push(list_tag(*kind));
                if reads {
                    push(kind.as_str().to_owned());
                }
            }
            Tag::Every(kind) => push(kind.as_str().to_owned()),
        }
    }
    out
}

pub(crate) fn id_tag(kind: ResourceKind, id: &str) -> String {
    format!("{}:{id}", kind.as_str())
}

pub(crate) fn list_tag(kind: ResourceKind) -> String {
    format!("{}:[list]", kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::ROUTES;

    #[test]
    fn every_route_named_in_the_tables_exists_and_every_write_has_a_rule() {
        for (rpc, _) in READS.iter().chain(WRITES) {
            assert!(
                ROUTES.iter().any(|r| short(r.rpc) == *rpc),
                "{rpc} is not a route"
            );
        }
        for route in ROUTES {
            if route.mutating {
                assert!(
                    lookup(WRITES, route.rpc).is_some(),
                    "{} changes state but declares no invalidation",
                    route.rpc
                );
            } else {
                assert!(lookup(WRITES, route.rpc).is_none(), "{}", route.rpc);
            }
        }
        for (rpc, _) in READS {
            let route = ROUTES.iter().find(|r| short(r.rpc) == *rpc).unwrap();
            assert!(!route.mutating && route.secret_response_fields.is_empty());
        }
    }

    #[test]
    fn a_write_shares_a_tag_with_what_it_changes() {
        let field = |n: &str| (n == "customer_id").then(|| "C1".into());
        let get = tag_strings(lookup(READS, "GetCustomer").unwrap(), field, true);
        let search = tag_strings(lookup(READS, "SearchCustomers").unwrap(), field, true);
        let update = tag_strings(lookup(WRITES, "UpdateCustomer").unwrap(), field, false);
        assert!(get.iter().any(|t| update.contains(t)));
        assert!(search.iter().any(|t| update.contains(t)));
        let other = |n: &str| (n == "customer_id").then(|| "C2".into());
        let get_other = tag_strings(lookup(READS, "GetCustomer").unwrap(), other, true);
        assert!(!get_other.iter().any(|t| update.contains(t)));
        let balance = tag_strings(lookup(READS, "GetRewardsBalance").unwrap(), field, true);
        let simulate = tag_strings(lookup(WRITES, "SimulateReward").unwrap(), field, false);
        assert!(balance.iter().any(|t| simulate.contains(t)));
    }
}

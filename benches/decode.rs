//! JSON → proto decoding of Imprint answers, against the floor: serde_json
//! decoding the same bytes into plain Rust structs.
//!
//! Run: `cargo bench --bench decode`. Results: docs/BENCHMARKS.md.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imprint_gateway::pb::imprint::v2::{Customer, ListCustomerTransactionsResponse};
use serde::Deserialize;

const CUSTOMER: &str = r#"{"id":"9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4","email":"customer@example.com","phone":"+14155552671",
"statuses":{"Card Program Name":"OPEN","Other Program":"CLOSED"},"first_name":"John","last_name":"Doe",
"preferred_language":"en","ssn4":"1234","date_of_birth":{"year":1990,"month":1,"day":2},
"address":{"street_line1":"123 Main St","street_line2":"Apt 4B","city":"San Francisco","state":"CA","postal_code":"94105","country":"USA"},
"partner_customer_id":"PARTNER_USER_456","metadata":{"preferred_language":"en","tier":3,"vip":true},
"created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z"}"#;

fn transaction(i: usize) -> String {
    format!(
        r#"{{"id":"E777214A-{i:04}","intent_id":"5B30532B","customer_id":"9B5E1EE0","authorization_code":"ABCD",
        "payment_method_id":"DCBFC736","purchase_method":"CONTACTLESS","amount":{amount},"currency":"USD","status":"CAPTURED",
        "network_transaction_id":"txn-{i}","partner_transaction_id":"ptx-{i}",
        "created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z",
        "merchant":{{"network_id":"234923454545","name":"Target","category":"Grocery Stores","category_code":"5411",
          "address":{{"street_line1":"1 Market St","city":"San Francisco","state":"CA","postal_code":"94105","country":"USA"}}}},
        "metadata":{{"platform_version":"2.1.0"}}}}"#,
        amount = 1000 + i
    )
}

fn transaction_list() -> String {
    let items: Vec<String> = (0..100).map(transaction).collect();
    format!(
        r#"{{"data":[{}],"has_more":true,"total":1000}}"#,
        items.join(",")
    )
}

// === The floor: plain structs, timestamps left as strings ===

#[derive(Deserialize)]
#[allow(dead_code)]
struct PlainAddress {
    street_line1: Option<String>,
    street_line2: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct PlainDob {
    year: Option<i32>,
    month: Option<i32>,
    day: Option<i32>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct PlainCustomer {
    id: String,
    email: Option<String>,
    phone: Option<String>,
    statuses: HashMap<String, String>,
    first_name: Option<String>,
    last_name: Option<String>,
    preferred_language: Option<String>,
    ssn4: Option<String>,
    date_of_birth: Option<PlainDob>,
    address: Option<PlainAddress>,
    partner_customer_id: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct PlainMerchant {
    network_id: Option<String>,
    name: Option<String>,
    category: Option<String>,
    category_code: Option<String>,
    address: Option<PlainAddress>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct PlainTransaction {
    id: String,
    intent_id: Option<String>,
    customer_id: String,
    authorization_code: Option<String>,
    payment_method_id: String,
    purchase_method: Option<String>,
    amount: i64,
    currency: String,
    status: String,
    network_transaction_id: String,
    partner_transaction_id: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    merchant: Option<PlainMerchant>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct PlainList {
    data: Vec<PlainTransaction>,
    has_more: bool,
    total: i64,
}

fn bench(c: &mut Criterion) {
    let customer = CUSTOMER.as_bytes();
    let list = transaction_list();
    let list = list.as_bytes();

    let mut g = c.benchmark_group("customer");
    g.throughput(Throughput::Bytes(customer.len() as u64));
    g.bench_function("gateway_proto", |b| {
        b.iter(|| serde_json::from_slice::<Customer>(std::hint::black_box(customer)).unwrap())
    });
    g.bench_function("serde_plain_floor", |b| {
        b.iter(|| serde_json::from_slice::<PlainCustomer>(std::hint::black_box(customer)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("transactions_100");
    g.throughput(Throughput::Bytes(list.len() as u64));
    g.bench_function("gateway_proto", |b| {
        b.iter(|| {
            serde_json::from_slice::<ListCustomerTransactionsResponse>(std::hint::black_box(list))
                .unwrap()
        })
    });
    g.bench_function("serde_plain_floor", |b| {
        b.iter(|| serde_json::from_slice::<PlainList>(std::hint::black_box(list)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Full upstream JSON for each resource, and the proto the caller must get.

use std::collections::HashMap;

use imprint_gateway::pb::imprint::v2::*;
use prost_types::{Struct, Timestamp};

/// 2025-02-13T19:08:07.000Z
pub const T1: i64 = 1_739_473_687;
/// 2025-02-14T10:00:00.250Z (with 250 ms)
pub const T2: i64 = 1_739_527_200;

pub fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

/// A `google.protobuf.Struct` from a JSON object.
pub fn st(v: serde_json::Value) -> Option<Struct> {
    fn val(v: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(val).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(Struct {
                fields: o.into_iter().map(|(k, v)| (k, val(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match val(v).kind {
        Some(prost_types::value::Kind::StructValue(s)) => Some(s),
        _ => panic!("not an object"),
    }
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

pub fn address_json() -> &'static str {
    r#"{"street_line1":"123 Main St","street_line2":"Apt 4B","city":"San Francisco","state":"CA","postal_code":"94105","country":"USA"}"#
}

pub fn address() -> Address {
    Address {
        street_line1: s("123 Main St"),
        street_line2: s("Apt 4B"),
        city: s("San Francisco"),
        state: s("CA"),
        postal_code: s("94105"),
        country: s("USA"),
    }
}

pub fn customer_json() -> String {
    format!(
        r#"{{"id":"9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4","email":"customer@example.com","phone":"+14155552671",
        "statuses":{{"Card Program Name":"OPEN","Other Program":"CLOSED"}},"first_name":"John","last_name":"Doe",
        "preferred_language":"en","ssn4":"1234","date_of_birth":{{"year":1990,"month":1,"day":2}},
        "address":{addr},"partner_customer_id":"PARTNER_USER_456",
        "metadata":{{"preferred_language":"en","tier":3,"vip":true,"tags":["a","b"],"nested":{{"x":null}}}},
        "created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z"}}"#,
        addr = address_json()
    )
}

pub fn customer() -> Customer {
    Customer {
        id: "9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4".into(),
        email: s("customer@example.com"),
        phone: s("+14155552671"),
        statuses: HashMap::from([
            (
                "Card Program Name".to_string(),
                CustomerProgramStatus::Open as i32,
            ),
            (
                "Other Program".to_string(),
                CustomerProgramStatus::Closed as i32,
            ),
        ]),
        first_name: s("John"),
        last_name: s("Doe"),
        preferred_language: s("en"),
        ssn4: s("1234"),
        date_of_birth: Some(DateOfBirth {
            year: Some(1990),
            month: Some(1),
            day: Some(2),
        }),
        address: Some(address()),
        partner_customer_id: s("PARTNER_USER_456"),
        metadata: st(
            serde_json::json!({"preferred_language":"en","tier":3,"vip":true,"tags":["a","b"],"nested":{"x":null}}),
        ),
        created_at: ts(T1, 0),
        updated_at: ts(T2, 250_000_000),
    }
}

pub fn card_payment_method_json() -> &'static str {
    r#"{"id":"DCBFC736-2286-42DD-897D-160DCA80AED2","type":"CARD","customer_id":"B40A789E",
    "card":{"last4":"1234","brand":"VISA","network":"VISA","card_type":"VIRTUAL","card_design_id":"3b9c1f3e",
      "exp_month":"06","exp_year":"2027",
      "pci_details":{"pan":"5105105105105100","exp_month":"06","exp_year":"27","cvv":"123"},
      "tokens":[{"type":"APPLE_WALLET","token":"tok_1","pan_reference_id":"ref_1",
                 "created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-13T19:08:07.000Z"}]},
    "created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z","status":"ACTIVE",
    "metadata":{"platform_version":"2.1.0"}}"#
}

pub fn card_payment_method() -> PaymentMethod {
    PaymentMethod {
        id: "DCBFC736-2286-42DD-897D-160DCA80AED2".into(),
        r#type: PaymentMethodType::Card as i32,
        customer_id: "B40A789E".into(),
        card: Some(Card {
            last4: "1234".into(),
            brand: s("VISA"),
            network: CardNetwork::Visa as i32,
            card_type: CardType::Virtual as i32,
            card_design_id: s("3b9c1f3e"),
            exp_month: s("06"),
            exp_year: s("2027"),
            pci_details: Some(PciDetails {
                pan: s("5105105105105100"),
                exp_month: s("06"),
                exp_year: s("27"),
                cvv: s("123"),
            }),
            tokens: vec![PaymentMethodToken {
                r#type: PaymentMethodTokenType::AppleWallet as i32,
                token: "tok_1".into(),
                pan_reference_id: s("ref_1"),
                created_at: ts(T1, 0),
                updated_at: ts(T1, 0),
            }],
        }),
        bank_account: None,
        loan: None,
        created_at: ts(T1, 0),
        updated_at: ts(T2, 250_000_000),
        status: PaymentMethodStatus::Active as i32,
        metadata: st(serde_json::json!({"platform_version":"2.1.0"})),
    }
}

pub fn bank_payment_method_json() -> &'static str {
    r#"{"id":"PM-BANK","type":"BANK_ACCOUNT","customer_id":"C1",
    "bank_account":{"last4":"6789","routing_number":"121000248","bank_name":"Wells Fargo","account_type":"SAVINGS"},
    "created_at":"2025-02-13T19:08:07.000Z","status":"INACTIVE","metadata":{}}"#
}

pub fn bank_payment_method() -> PaymentMethod {
    PaymentMethod {
        id: "PM-BANK".into(),
        r#type: PaymentMethodType::BankAccount as i32,
        customer_id: "C1".into(),
        bank_account: Some(BankAccount {
            last4: "6789".into(),
            routing_number: "121000248".into(),
            bank_name: "Wells Fargo".into(),
            account_type: BankAccountType::Savings as i32,
        }),
        created_at: ts(T1, 0),
        status: PaymentMethodStatus::Inactive as i32,
        metadata: st(serde_json::json!({})),
        ..Default::default()
    }
}

pub fn loan_payment_method_json() -> &'static str {
    r#"{"id":"PM-LOAN","type":"LOAN","customer_id":"C1",
    "loan":{"amount":10000,"currency":"USD","remaining_balance":2500,"term_months":12,"apr":"5.89","loan_status":"ACTIVE"},
    "created_at":"2025-02-13T19:08:07.000Z","status":"CANCELED","metadata":{"k":"v"}}"#
}

pub fn loan_payment_method() -> PaymentMethod {
    PaymentMethod {
        id: "PM-LOAN".into(),
        r#type: PaymentMethodType::Loan as i32,
        customer_id: "C1".into(),
        loan: Some(Loan {
            amount: 10000,
            currency: s("USD"),
            remaining_balance: Some(2500),
            term_months: 12,
            apr: s("5.89"),
            loan_status: LoanStatus::Active as i32,
        }),
        created_at: ts(T1, 0),
        status: PaymentMethodStatus::Canceled as i32,
        metadata: st(serde_json::json!({"k":"v"})),
        ..Default::default()
    }
}

pub fn intent_json() -> &'static str {
    r#"{"id":"5B30532B","customer_id":"9B5E1EE0","payment_method_id":"DCBFC736","amount":10000,"currency":"USD",
    "status":"CONFIRMED","network_transaction_id":"txn-1","partner_transaction_id":"ptx-1",
    "created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z","metadata":{"platform_version":"2.1.0"}}"#
}

pub fn intent() -> TransactionIntent {
    TransactionIntent {
        id: "5B30532B".into(),
        customer_id: "9B5E1EE0".into(),
        payment_method_id: s("DCBFC736"),
        amount: 10000,
        currency: "USD".into(),
        status: TransactionIntentStatus::Confirmed as i32,
        network_transaction_id: s("txn-1"),
        partner_transaction_id: s("ptx-1"),
        created_at: ts(T1, 0),
        updated_at: ts(T2, 250_000_000),
        metadata: st(serde_json::json!({"platform_version":"2.1.0"})),
    }
}

pub fn transaction_json() -> String {
    format!(
        r#"{{"id":"E777214A","intent_id":"5B30532B","customer_id":"9B5E1EE0","authorization_code":"ABCD",
        "payment_method_id":"DCBFC736","purchase_method":"CONTACTLESS","amount":5000,"currency":"USD","status":"CAPTURED",
        "network_transaction_id":"txn-789","partner_transaction_id":"ptx-9",
        "created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z",
        "merchant":{{"network_id":"234923454545","name":"Target","category":"Grocery Stores","category_code":"5411","address":{addr}}},
        "metadata":{{"platform_version":"2.1.0"}}}}"#,
        addr = address_json()
    )
}

pub fn transaction() -> Transaction {
    Transaction {
        id: "E777214A".into(),
        intent_id: s("5B30532B"),
        customer_id: "9B5E1EE0".into(),
        authorization_code: s("ABCD"),
        payment_method_id: "DCBFC736".into(),
        purchase_method: PurchaseMethod::Contactless as i32,
        amount: 5000,
        currency: "USD".into(),
        status: TransactionStatus::Captured as i32,
        network_transaction_id: "txn-789".into(),
        partner_transaction_id: s("ptx-9"),
        created_at: ts(T1, 0),
        updated_at: ts(T2, 250_000_000),
        merchant: Some(Merchant {
            network_id: s("234923454545"),
            name: s("Target"),
            category: s("Grocery Stores"),
            category_code: s("5411"),
            address: Some(address()),
        }),
        metadata: st(serde_json::json!({"platform_version":"2.1.0"})),
    }
}

pub fn reward_json() -> &'static str {
    r#"{"id":"2EE24580","customer_id":"9B5E1EE0","transaction_event_id":"E777214A","amount":120000,"type":"TRANSACTION",
    "currency":"POINTS","status":"PENDING","created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z",
    "metadata":{"campaign":"spring"}}"#
}

pub fn reward() -> Reward {
    Reward {
        id: "2EE24580".into(),
        customer_id: "9B5E1EE0".into(),
        transaction_event_id: s("E777214A"),
        amount: 120000,
        r#type: RewardType::Transaction as i32,
        currency: s("POINTS"),
        status: RewardStatus::Pending as i32,
        created_at: ts(T1, 0),
        updated_at: ts(T2, 250_000_000),
        metadata: st(serde_json::json!({"campaign":"spring"})),
    }
}

pub fn link_json() -> &'static str {
    r#"{"customer_id":"9B5E1EE0","partner_customer_id":"PARTNER_USER_456","status":"ACTIVE",
    "created_at":"2025-02-13T19:08:07.000Z","updated_at":"2025-02-14T10:00:00.250Z",
    "metadata":{"store_id":"store_789","platform_version":"2.1.0"}}"#
}

pub fn link() -> CustomerLink {
    CustomerLink {
        customer_id: "9B5E1EE0".into(),
        partner_customer_id: "PARTNER_USER_456".into(),
        status: CustomerLinkStatus::Active as i32,
        created_at: ts(T1, 0),
        updated_at: ts(T2, 250_000_000),
        metadata: st(serde_json::json!({"store_id":"store_789","platform_version":"2.1.0"})),
    }
}

pub fn session_json() -> &'static str {
    r#"{"id":"SESS-1","client_secret":"QzMyNzg4QzgtNEUwOS00QkU4","expires_at":"2025-02-13T19:08:07.000Z",
    "metadata":{"store_number":"123"},"customer_metadata":{"loyalty_id":"840012345678","membership_tier":"gold"},
    "source":"web_signup"}"#
}

pub fn session() -> CustomerSession {
    CustomerSession {
        id: "SESS-1".into(),
        client_secret: "QzMyNzg4QzgtNEUwOS00QkU4".into(),
        expires_at: ts(T1, 0),
        metadata: st(serde_json::json!({"store_number":"123"})),
        customer_metadata: HashMap::from([
            ("loyalty_id".to_string(), "840012345678".to_string()),
            ("membership_tier".to_string(), "gold".to_string()),
        ]),
        source: s("web_signup"),
    }
}

pub fn order_json() -> String {
    format!(
        r#"{{"id":"77f60af4","customer_id":"1bb0ab64","payment_method_id":"0144ea84","partner_order_id":"o-c8a1",
        "merchant_id":"m-123","merchant_name":"Rest Assured","merchant_address":[{addr}],
        "order_lines":[{{"name":"Couch Supreme","product_url":"www.restassured.com/couch","quantity":1,"rate":274999,"rewards_rate":2500}}],
        "total_order_amount":274999,"total_rewards_amount":2500,"currency":"USD",
        "created_at":"2025-02-13T19:08:07Z","updated_at":null}}"#,
        addr = address_json()
    )
}

pub fn order_line() -> OrderLine {
    OrderLine {
        name: "Couch Supreme".into(),
        product_url: s("www.restassured.com/couch"),
        quantity: Some(1),
        rate: Some(274999),
        rewards_rate: Some(2500),
    }
}

pub fn order() -> Order {
    Order {
        id: s("77f60af4"),
        customer_id: s("1bb0ab64"),
        payment_method_id: "0144ea84".into(),
        partner_order_id: "o-c8a1".into(),
        merchant_id: s("m-123"),
        merchant_name: s("Rest Assured"),
        merchant_address: vec![address()],
        order_lines: vec![order_line()],
        total_order_amount: 274999,
        total_rewards_amount: Some(2500),
        currency: s("USD"),
        created_at: ts(T1, 0),
        updated_at: None,
    }
}

pub fn order_event_json() -> &'static str {
    r#"{"order_event_id":"7622c07d","order_id":"77f60af4","partner_event_id":"pe-1","type":"REFUNDED","amount":274999,
    "rewards_amount":2500,"currency":"USD","network_transaction_id":"615e3ba0",
    "order_lines":[{"name":"Couch Supreme","product_url":"www.restassured.com/couch","quantity":1,"rate":274999,"rewards_rate":2500}]}"#
}

pub fn order_event() -> OrderEvent {
    OrderEvent {
        order_event_id: s("7622c07d"),
        order_id: "77f60af4".into(),
        partner_event_id: s("pe-1"),
        r#type: OrderEventType::Refunded as i32,
        amount: 274999,
        rewards_amount: Some(2500),
        currency: s("USD"),
        network_transaction_id: "615e3ba0".into(),
        order_lines: vec![order_line()],
    }
}

/// `{"data":[items],"has_more":..,"total":..}`
pub fn page(items: &[&str], has_more: bool, total: i64) -> String {
    format!(
        r#"{{"data":[{}],"has_more":{has_more},"total":{total}}}"#,
        items.join(",")
    )
}

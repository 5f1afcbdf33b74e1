//! Deterministic seed data, so the first call returns something real.
//!
//! Ids are fixed (they appear in the README's examples); everything else
//! the emulator creates later gets ids from the seeded generator.

use std::collections::HashMap;

use prost_types::Timestamp;

use super::state::{CustomerRecord, Owned, Store};
use crate::pb::imprint::v2 as pb;

/// John Approve: linked, a card and a bank account, two transactions.
pub const JOHN: &str = "9B5E1EE0-2E1C-46E7-81B9-3C3917204BE4";
/// Jane Review: a card.
pub const JANE: &str = "2EE24580-B97B-4949-A65C-929CCB9B9B8D";
/// Sam Reject: no payment method.
pub const SAM: &str = "B40A789E-BD46-4BB9-B63E-F9919582694C";
pub const JOHN_CARD: &str = "DCBFC736-2286-42DD-897D-160DCA80AED2";
pub const JOHN_BANK: &str = "9ED4FE47-8E9C-48E9-BBEF-094DF1789012";
pub const JANE_CARD: &str = "7F754378-DD84-4A9A-B1CE-0646BB769C29";

const DAY: i64 = 86_400;
/// 2025-02-13T19:08:07Z
const T0: i64 = 1_739_473_687;

fn at(days: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: T0 + days * DAY,
        nanos: 0,
    })
}

/// An active virtual VISA card.
pub(crate) fn card(
    id: &str,
    customer_id: &str,
    pan: &str,
    created: Timestamp,
) -> pb::PaymentMethod {
    pb::PaymentMethod {
        id: id.to_string(),
        r#type: pb::PaymentMethodType::Card as i32,
        customer_id: customer_id.to_string(),
        card: Some(pb::Card {
            last4: pan[pan.len() - 4..].to_string(),
            brand: Some(
                if pan.starts_with('5') {
                    "MASTERCARD"
                } else {
                    "VISA"
                }
                .into(),
            ),
            network: if pan.starts_with('5') {
                pb::CardNetwork::Mastercard as i32
            } else {
                pb::CardNetwork::Visa as i32
            },
            card_type: pb::CardType::Virtual as i32,
            card_design_id: Some("3b9c1f3e-52a0-44c1-b131-a7ab0099a214".into()),
            exp_month: Some("06".into()),
            exp_year: Some("2029".into()),
            pci_details: Some(pb::PciDetails {
                pan: Some(pan.to_string()),
                exp_month: Some("06".into()),
                exp_year: Some("29".into()),
                cvv: Some("123".into()),
            }),
            tokens: Vec::new(),
        }),
        created_at: Some(created),
        updated_at: Some(created),
        status: pb::PaymentMethodStatus::Active as i32,
        metadata: Some(prost_types::Struct::default()),
        ..Default::default()
    }
}

fn customer(
    id: &str,
    first: &str,
    last: &str,
    partner: &str,
    ssn: &str,
    year: i32,
) -> CustomerRecord {
    CustomerRecord {
        customer: pb::Customer {
            id: id.into(),
            email: Some(format!("{}@example.com", first.to_lowercase())),
            phone: Some("+14155552671".into()),
            statuses: HashMap::from([(
                "Imprint Rewards Card".to_string(),
                pb::CustomerProgramStatus::Open as i32,
            )]),
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            preferred_language: Some("en".into()),
            ssn4: Some(ssn[5..].to_string()),
            date_of_birth: Some(pb::DateOfBirth {
                year: Some(year),
                month: Some(1),
                day: Some(15),
            }),
            address: Some(pb::Address {
                street_line1: Some("123 Main St".into()),
                street_line2: None,
                city: Some("San Francisco".into()),
                state: Some("CA".into()),
                postal_code: Some("94105".into()),
                country: Some("USA".into()),
            }),
            partner_customer_id: Some(partner.into()),
            metadata: None,
            created_at: at(0),
            updated_at: at(0),
        },
        ssn: Some(ssn.into()),
        customer_metadata: HashMap::from([("loyalty_id".to_string(), format!("84{ssn}"))]),
    }
}

fn transaction(id: &str, status: pb::TransactionStatus, amount: i64, days: i64) -> pb::Transaction {
    pb::Transaction {
        id: id.into(),
        intent_id: None,
        customer_id: JOHN.into(),
        authorization_code: Some("645432".into()),
        payment_method_id: JOHN_CARD.into(),
        purchase_method: pb::PurchaseMethod::Contactless as i32,
        amount,
        currency: "USD".into(),
        status: status as i32,
        network_transaction_id: format!("txn-{}", &id[..8].to_lowercase()),
        partner_transaction_id: None,
        created_at: at(days),
        updated_at: at(days),
        merchant: Some(pb::Merchant {
            network_id: Some("234923454545".into()),
            name: Some("Target".into()),
            category: Some("Grocery Stores".into()),
            category_code: Some("5411".into()),
            address: None,
        }),
        metadata: None,
    }
}

fn reward(txn: &pb::Transaction, status: pb::RewardStatus) -> pb::Reward {
    pb::Reward {
        id: format!("RW-{}", txn.id),
        customer_id: txn.customer_id.clone(),
        transaction_event_id: Some(format!("EV-{}", txn.id)),
        amount: txn.amount * 500 / 10_000,
        r#type: pb::RewardType::Transaction as i32,
        currency: Some("POINTS".into()),
        status: status as i32,
        created_at: txn.created_at,
        updated_at: txn.updated_at,
        metadata: None,
    }
}

pub(crate) fn populate(store: &Store) {
    let product = store.default_product().name.clone();
    let own = |item| Owned {
        product: product.clone(),
        item,
    };
    store.with(|w| {
        w.customers.push(customer(
            JOHN,
            "John",
            "Approve",
            "PARTNER_USER_456",
            "123456789",
            1990,
        ));
        w.customers.push(customer(
            JANE,
            "Jane",
            "Review",
            "PARTNER_USER_457",
            "987654321",
            1985,
        ));
        w.customers.push(customer(
            SAM,
            "Sam",
            "Reject",
            "PARTNER_USER_458",
            "555443333",
            1978,
        ));

        w.links.push(own(pb::CustomerLink {
            customer_id: JOHN.into(),
            partner_customer_id: "PARTNER_USER_456".into(),
            status: pb::CustomerLinkStatus::Active as i32,
            created_at: at(0),
            updated_at: at(0),
            metadata: None,
        }));
    });
    store.with(|w| {
        w.payment_methods.push(Owned {
            product: product.clone(),
            item: card(
                JOHN_CARD,
                JOHN,
                "4242424242424242",
                at(1).unwrap_or_default(),
            ),
        });
        w.payment_methods.push(Owned {
            product: product.clone(),
            item: pb::PaymentMethod {
                id: JOHN_BANK.into(),
                r#type: pb::PaymentMethodType::BankAccount as i32,
                customer_id: JOHN.into(),
                bank_account: Some(pb::BankAccount {
                    last4: "6789".into(),
                    routing_number: "121000248".into(),
                    bank_name: "Wells Fargo".into(),
                    account_type: pb::BankAccountType::Checking as i32,
                }),
                created_at: at(1),
                updated_at: at(1),
                status: pb::PaymentMethodStatus::Active as i32,
                metadata: Some(prost_types::Struct::default()),
                ..Default::default()
            },
        });
        w.payment_methods.push(Owned {
            product: product.clone(),
            item: card(
                JANE_CARD,
                JANE,
                "5105105105105100",
                at(2).unwrap_or_default(),
            ),
        });

        let captured = transaction(
            "E777214A-2D11-4CAD-9E8F-E1BD71D9FE67",
            pb::TransactionStatus::Captured,
            5000,
            3,
        );
        let approved = transaction(
            "4E6FE207-53E5-4EC0-BF51-5923BE5CEE2F",
            pb::TransactionStatus::Approved,
            1999,
            4,
        );
        w.rewards.push(Owned {
            product: product.clone(),
            item: reward(&captured, pb::RewardStatus::Available),
        });
        w.rewards.push(Owned {
            product: product.clone(),
            item: reward(&approved, pb::RewardStatus::Pending),
        });
        w.transactions.push(Owned {
            product: product.clone(),
            item: captured,
        });
        w.transactions.push(Owned {
            product: product.clone(),
            item: approved,
        });

        w.intents.push(Owned {
            product: product.clone(),
            item: pb::TransactionIntent {
                id: "5B30532B-5B5B-4826-8DE2-429C57B705FD".into(),
                customer_id: JOHN.into(),
                payment_method_id: Some(JOHN_CARD.into()),
                amount: 10000,
                currency: "USD".into(),
                status: pb::TransactionIntentStatus::Confirmed as i32,
                network_transaction_id: None,
                partner_transaction_id: Some("ptx-0001".into()),
                created_at: at(5),
                updated_at: at(5),
                metadata: None,
            },
        });
        w.orders.push(Owned {
            product: product.clone(),
            item: pb::Order {
                id: Some("77F60AF4-185E-4867-B113-34E3CF7C6ACD".into()),
                customer_id: Some(JOHN.into()),
                payment_method_id: JOHN_CARD.into(),
                partner_order_id: "o-0001".into(),
                merchant_id: Some("m-123456789".into()),
                merchant_name: Some("Rest Assured".into()),
                merchant_address: Vec::new(),
                order_lines: vec![pb::OrderLine {
                    name: "Couch Supreme".into(),
                    product_url: Some("www.restassured.com/couch-supreme".into()),
                    quantity: Some(1),
                    rate: Some(274_999),
                    rewards_rate: Some(2500),
                }],
                total_order_amount: 274_999,
                total_rewards_amount: Some(2500),
                currency: Some("USD".into()),
                created_at: at(6),
                updated_at: at(6),
            },
        });
    });
}

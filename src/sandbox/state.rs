//! The emulator's in-memory world. One lock, held only for short,
//! non-async critical sections.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use parking_lot::Mutex;
use rand::{rngs::SmallRng, Rng, SeedableRng};

use super::amount;
use crate::pb::imprint::v2 as pb;

/// How a product's rewards are processed (`simulate_reward`'s reward_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardProgram {
    Statement,
    Delayed,
}

impl RewardProgram {
    pub(crate) fn rest_name(self) -> &'static str {
        match self {
            RewardProgram::Statement => "STATEMENT",
            RewardProgram::Delayed => "DELAYED",
        }
    }
}

/// A co-branded product of the partner, selected by its merchant key.
#[derive(Debug, Clone)]
pub struct Product {
    pub name: String,
    /// `x-imprint-merchant-key` value; `None` for the default product.
    pub merchant_key: Option<String>,
    pub reward_program: RewardProgram,
    /// Reward per transaction, in basis points of the amount.
    pub reward_rate_bps: i64,
    /// Reward currency or unit, e.g. "POINTS".
    pub reward_currency: String,
    /// Symbol shown with the balance.
    pub reward_symbol: String,
    /// Amount of a simulated statement reward.
    pub statement_reward: i64,
}

impl Product {
    pub fn new(name: &str, merchant_key: Option<&str>, reward_program: RewardProgram) -> Self {
        Self {
            name: name.to_string(),
            merchant_key: merchant_key.map(str::to_string),
            reward_program,
            reward_rate_bps: 500,
            reward_currency: "POINTS".into(),
            reward_symbol: "points".into(),
            statement_reward: 2500,
        }
    }
}

/// A stored resource and the product it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Owned<T> {
    pub(crate) product: String,
    pub(crate) item: T,
}

#[derive(Debug, Clone)]
pub(crate) struct CustomerRecord {
    pub(crate) customer: pb::Customer,
    /// Full SSN, kept only to answer searches; never returned.
    pub(crate) ssn: Option<String>,
    pub(crate) customer_metadata: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub(crate) struct KeyRecord {
    pub(crate) created_at: prost_types::Timestamp,
}

/// Everything the emulator knows.
#[derive(Default)]
pub(crate) struct World {
    pub(crate) keys: HashMap<String, KeyRecord>,
    /// Customers exist across products (one person, several cards).
    pub(crate) customers: Vec<CustomerRecord>,
    pub(crate) links: Vec<Owned<pb::CustomerLink>>,
    pub(crate) sessions: Vec<Owned<pb::CustomerSession>>,
    pub(crate) payment_methods: Vec<Owned<pb::PaymentMethod>>,
    pub(crate) intents: Vec<Owned<pb::TransactionIntent>>,
    pub(crate) transactions: Vec<Owned<pb::Transaction>>,
    pub(crate) rewards: Vec<Owned<pb::Reward>>,
    pub(crate) orders: Vec<Owned<pb::Order>>,
    pub(crate) order_events: Vec<Owned<pb::OrderEvent>>,
    /// Customers with a reward simulation running, until when.
    pub(crate) simulations: HashMap<String, Instant>,
    /// Intents already matched to a transaction.
    pub(crate) matched_intents: HashSet<String>,
}

pub(crate) struct Store {
    world: Mutex<World>,
    rng: Mutex<SmallRng>,
    products: Vec<Arc<Product>>,
}

impl Store {
    /// The world of `seed` with these keys and products. It takes the
    /// settings rather than the `EmulatorConfig`, so that the state below
    /// `mod` does not import it back.
    pub(crate) fn new(seed: u64, api_keys: &[String], products: &[Product]) -> Self {
        let created_at = prost_types::Timestamp {
            seconds: 1_735_689_600, // 2025-01-01T00:00:00Z
            nanos: 0,
        };
        let world = World {
            keys: api_keys
                .iter()
                .map(|k| (k.clone(), KeyRecord { created_at }))
                .collect(),
            ..Default::default()
        };
        Self {
            world: Mutex::new(world),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            products: products.iter().cloned().map(Arc::new).collect(),
        }
    }

    /// Runs `f` with the world locked. Never hold it across an await.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.world.lock())
    }

    /// A fresh id in Imprint's style (an uppercase UUID), from the seed.
    pub(crate) fn id(&self) -> String {
        let mut rng = self.rng.lock();
        let a: u32 = rng.gen();
        let b: u16 = rng.gen();
        let c: u16 = (rng.gen::<u16>() & 0x0fff) | 0x4000;
        let d: u16 = (rng.gen::<u16>() & 0x3fff) | 0x8000;
        let e: u64 = rng.gen::<u64>() & 0xffff_ffff_ffff;
        format!("{a:08X}-{b:04X}-{c:04X}-{d:04X}-{e:012X}")
    }

    /// Random bytes as URL-safe base64 (keys, client secrets).
    pub(crate) fn secret(&self, prefix: &str) -> String {
        use base64::Engine as _;
        let bytes: [u8; 24] = self.rng.lock().gen();
        format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// A number in `0.0..1.0` from the seeded generator (fault injection).
    pub(crate) fn chance(&self) -> f64 {
        self.rng.lock().gen()
    }

    pub(crate) fn key_is_valid(&self, key: &str) -> bool {
        self.world.lock().keys.contains_key(key)
    }

    /// The product a merchant key selects; no key selects the default.
    pub(crate) fn product_for(&self, merchant_key: Option<&str>) -> Option<Arc<Product>> {
        match merchant_key {
            Some(k) => self
                .products
                .iter()
                .find(|p| p.merchant_key.as_deref() == Some(k))
                .cloned(),
            None => self
                .products
                .iter()
                .find(|p| p.merchant_key.is_none())
                .or(self.products.first())
                .cloned(),
        }
    }

    pub(crate) fn default_product(&self) -> Arc<Product> {
        self.product_for(None).expect("at least one product")
    }
}

impl World {
    pub(crate) fn customer(&self, id: &str) -> Option<&CustomerRecord> {
        self.customers.iter().find(|c| c.customer.id == id)
    }

    pub(crate) fn customer_mut(&mut self, id: &str) -> Option<&mut CustomerRecord> {
        self.customers.iter_mut().find(|c| c.customer.id == id)
    }

    /// A customer's rewards balance in `product`: the sum of its AVAILABLE
    /// rewards. Every change that makes a reward available checks this stays
    /// within the bound on amounts, so `None` means a broken invariant.
    pub(crate) fn balance(&self, product: &str, customer_id: &str) -> Option<i64> {
        amount::sum(
            self.rewards
                .iter()
                .filter(|o| {
                    o.product == product
                        && o.item.customer_id == customer_id
                        && o.item.status == pb::RewardStatus::Available as i32
                })
                .map(|o| o.item.amount),
        )
    }
}

/// Finds an owned item of `product` by a key.
pub(crate) fn find<'a, T>(
    items: &'a [Owned<T>],
    product: &str,
    pred: impl Fn(&T) -> bool,
) -> Option<&'a T> {
    items
        .iter()
        .find(|o| o.product == product && pred(&o.item))
        .map(|o| &o.item)
}

pub(crate) fn find_mut<'a, T>(
    items: &'a mut [Owned<T>],
    product: &str,
    pred: impl Fn(&T) -> bool,
) -> Option<&'a mut T> {
    items
        .iter_mut()
        .find(|o| o.product == product && pred(&o.item))
        .map(|o| &mut o.item)
}

/// All items of `product` matching `pred`, cloned, newest first.
pub(crate) fn select<T: Clone>(
    items: &[Owned<T>],
    product: &str,
    pred: impl Fn(&T) -> bool,
) -> Vec<T> {
    items
        .iter()
        .rev()
        .filter(|o| o.product == product && pred(&o.item))
        .map(|o| o.item.clone())
        .collect()
}

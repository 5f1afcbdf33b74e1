//! The Imprint API credentials the gateway holds, and the layer that puts
//! them on upstream requests.
//!
//! Keys live only here: callers never see them, and they are held as
//! [`SecretString`]s whose `Debug` prints nothing. The active credential sits
//! behind an [`ArcSwap`] so that a reload or rotation swaps it atomically
//! while calls are in flight (each attempt keeps the one it started with).
//!
//! Several products may be configured (API key and merchant key each); each
//! has its own slot, one of them named [`DEFAULT_PRODUCT`]. A rotation swaps
//! one product's slot; the replaced key is kept as *retiring* while its
//! deletion upstream is pending.

mod layer;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::HeaderValue;
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use layer::{Credentials, CredentialsLayer};

/// How the key is presented to Imprint; Imprint accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// `Authorization: Basic base64(<key>:)`, the key as user name.
    #[default]
    Basic,
    /// `Authorization: Bearer <key>`.
    Bearer,
}

/// The product used when a call names none (`x-imprint-product` unset): the
/// single-credential configuration (`IMPRINT_API_KEY`...) is this product.
pub const DEFAULT_PRODUCT: &str = "default";

/// One Imprint API key and (optionally) the merchant key selecting a product.
pub struct Credential {
    api_key: SecretString,
    merchant_key: Option<SecretString>,
    scheme: AuthScheme,
    /// Precomputed header values, marked sensitive so `Debug` hides them.
    authorization: HeaderValue,
    merchant_header: Option<HeaderValue>,
    fingerprint: String,
    /// `<key fingerprint>/<merchant key fingerprint or ->`.
    product_fingerprint: Arc<str>,
    merchant_fingerprint: Option<String>,
    product: Arc<str>,
    /// When a rotation created the key; `None` for a configured key.
    created_at: Option<SystemTime>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("product", &self.product)
            .field("fingerprint", &self.fingerprint)
            .field("scheme", &self.scheme)
            .field(
                "merchant_key",
                &self.merchant_key.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

/// A key that cannot be put in a header.
#[derive(Debug, thiserror::Error)]
#[error("{0} contains characters that are not allowed in an HTTP header")]
pub struct InvalidKey(&'static str);

/// The `authorization` value presenting `key` with `scheme`, marked sensitive.
pub fn authorization(key: &SecretString, scheme: AuthScheme) -> Result<HeaderValue, InvalidKey> {
    let key = key.expose_secret();
    let value = match scheme {
        AuthScheme::Basic => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        ),
        AuthScheme::Bearer => format!("Bearer {key}"),
    };
    let mut header = HeaderValue::from_str(&value).map_err(|_| InvalidKey("the API key"))?;
    header.set_sensitive(true);
    Ok(header)
}

impl Credential {
    /// A credential of the default product.
    pub fn new(
        api_key: SecretString,
        merchant_key: Option<SecretString>,
        scheme: AuthScheme,
    ) -> Result<Self, InvalidKey> {
        Self::for_product(DEFAULT_PRODUCT, api_key, merchant_key, scheme)
    }

    /// A credential of the named product.
    pub fn for_product(
        product: &str,
        api_key: SecretString,
        merchant_key: Option<SecretString>,
        scheme: AuthScheme,
    ) -> Result<Self, InvalidKey> {
        let authorization = authorization(&api_key, scheme)?;
        let merchant_header = match &merchant_key {
            Some(m) => {
                let mut v = HeaderValue::from_str(m.expose_secret())
                    .map_err(|_| InvalidKey("the merchant key"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let fingerprint = fingerprint(api_key.expose_secret());
        let merchant_fingerprint = merchant_key
            .as_ref()
            .map(|m| self::fingerprint(m.expose_secret()));
        let product_fingerprint = format!(
            "{fingerprint}/{}",
            merchant_fingerprint.as_deref().unwrap_or("-")
        );
        Ok(Self {
            product_fingerprint: product_fingerprint.into(),
            merchant_fingerprint,
            api_key,
            merchant_key,
            scheme,
            authorization,
            merchant_header,
            fingerprint,
            product: Arc::from(product),
            created_at: None,
        })
    }

    /// The same product (merchant key, scheme) with another API key: what a
    /// rotation makes of a new key.
    pub fn with_key(
        &self,
        api_key: SecretString,
        created_at: Option<SystemTime>,
    ) -> Result<Self, InvalidKey> {
        let mut c = Self::for_product(
            &self.product,
            api_key,
            self.merchant_key.clone(),
            self.scheme,
        )?;
        c.created_at = created_at;
        Ok(c)
    }

    /// A short, non-reversible id of the key, safe to log and show.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Fingerprints of the key and of the merchant key: which credential
    /// and product an answer was fetched with (the response cache's scope).
    pub fn product_fingerprint(&self) -> &Arc<str> {
        &self.product_fingerprint
    }

    /// The merchant key's fingerprint, if the product has one.
    pub fn merchant_fingerprint(&self) -> Option<&str> {
        self.merchant_fingerprint.as_deref()
    }

    /// The stable id shown to operators: `cred_` and the fingerprint's digits.
    pub fn id(&self) -> String {
        format!("cred_{}", self.fingerprint.trim_start_matches("sha256:"))
    }

    /// The configured product this credential belongs to.
    pub fn product(&self) -> &str {
        &self.product
    }

    /// When a rotation created the key (`None`: a configured key).
    pub fn created_at(&self) -> Option<SystemTime> {
        self.created_at
    }

    pub fn scheme(&self) -> AuthScheme {
        self.scheme
    }

    /// The key itself, for the few places that must compare or persist keys.
    pub fn api_key(&self) -> &SecretString {
        &self.api_key
    }
}

/// `sha256:` and the first 12 hex digits of the key's SHA-256.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..12])
}

/// A credential of a product the configuration does not name.
#[derive(Debug, thiserror::Error)]
#[error("no product '{0}' is configured")]
pub struct UnknownProduct(pub String);

/// The credentials in use, one swappable slot per configured product, and
/// the keys being retired.
#[derive(Debug)]
pub struct CredentialStore {
    slots: BTreeMap<Arc<str>, ArcSwap<Option<Arc<Credential>>>>,
    retiring: Mutex<Vec<Arc<Credential>>>,
}

impl CredentialStore {
    /// A store with the default product only (`None`: no key configured;
    /// calls fail before anything is sent).
    pub fn new(initial: Option<Credential>) -> Self {
        let mut slots = BTreeMap::new();
        slots.insert(
            Arc::from(DEFAULT_PRODUCT),
            ArcSwap::from_pointee(initial.map(Arc::new)),
        );
        Self {
            slots,
            retiring: Mutex::new(Vec::new()),
        }
    }

    /// A store with one slot per credential's product (and a default slot,
    /// empty when no credential is of the default product).
    pub fn with_products(credentials: Vec<Credential>) -> Self {
        let mut store = Self::new(None);
        for c in credentials {
            store
                .slots
                .insert(c.product.clone(), ArcSwap::from_pointee(Some(Arc::new(c))));
        }
        store
    }

    /// The default product's credential.
    pub fn current(&self) -> Option<Arc<Credential>> {
        self.get(DEFAULT_PRODUCT)
    }

    /// The credential calls of `product` should use now.
    pub fn get(&self, product: &str) -> Option<Arc<Credential>> {
        self.slots.get(product)?.load().as_ref().clone()
    }

    /// Whether `product` is configured.
    pub fn knows(&self, product: &str) -> bool {
        self.slots.contains_key(product)
    }

    /// The configured products, by name.
    pub fn products(&self) -> Vec<Arc<str>> {
        self.slots.keys().cloned().collect()
    }

    /// Makes `credential` its product's active one and returns the one it
    /// replaced; in-flight attempts finish with the old. A credential of an
    /// unconfigured product is refused.
    pub fn swap(&self, credential: Credential) -> Result<Option<Arc<Credential>>, UnknownProduct> {
        let Some(slot) = self.slots.get(credential.product()) else {
            return Err(UnknownProduct(credential.product().to_owned()));
        };
        Ok(slot
            .swap(Arc::new(Some(Arc::new(credential))))
            .as_ref()
            .clone())
    }

    /// [`CredentialStore::swap`], ignoring what was replaced.
    pub fn replace(&self, credential: Credential) {
        if let Err(UnknownProduct(product)) = self.swap(credential) {
            tracing::warn!(product, "credential of an unknown product ignored");
        }
    }

    /// Keeps a replaced key whose upstream deletion is pending.
    pub fn retire(&self, credential: Arc<Credential>) {
        let mut r = self.retiring.lock();
        if !r.iter().any(|c| c.fingerprint == credential.fingerprint) {
            r.push(credential);
        }
    }

    /// Keys replaced but not deleted upstream yet.
    pub fn retiring(&self) -> Vec<Arc<Credential>> {
        self.retiring.lock().clone()
    }

    /// Forgets a retiring key (deleted upstream).
    pub fn forget_retiring(&self, fingerprint: &str) {
        self.retiring
            .lock()
            .retain(|c| c.fingerprint != fingerprint);
    }

    /// Waits until no call holds `old` any more (the caller's own reference
    /// aside), or `timeout` passed; whether it drained.
    pub async fn drained(old: &Arc<Credential>, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if Arc::strong_count(old) <= 1 {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

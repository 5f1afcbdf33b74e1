//! The Imprint API credentials the gateway holds, and the layer that puts
//! them on upstream requests.
//!
//! Keys live only here: callers never see them, and they are held as
//! [`SecretString`]s whose `Debug` prints nothing. The active credential sits
//! behind an [`ArcSwap`] so that a reload or rotation swaps it atomically
//! while calls are in flight (each call keeps the one it started with).

mod layer;

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::HeaderValue;
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
    product_fingerprint: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
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

impl Credential {
    pub fn new(
        api_key: SecretString,
        merchant_key: Option<SecretString>,
        scheme: AuthScheme,
    ) -> Result<Self, InvalidKey> {
        let key = api_key.expose_secret();
        let value = match scheme {
            AuthScheme::Basic => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
            ),
            AuthScheme::Bearer => format!("Bearer {key}"),
        };
        let mut authorization =
            HeaderValue::from_str(&value).map_err(|_| InvalidKey("the API key"))?;
        authorization.set_sensitive(true);
        let merchant_header = match &merchant_key {
            Some(m) => {
                let mut v = HeaderValue::from_str(m.expose_secret())
                    .map_err(|_| InvalidKey("the merchant key"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let fingerprint = fingerprint(key);
        let product_fingerprint = format!(
            "{fingerprint}/{}",
            merchant_key
                .as_ref()
                .map_or_else(|| "-".to_owned(), |m| self::fingerprint(m.expose_secret()))
        );
        Ok(Self {
            product_fingerprint,
            api_key,
            merchant_key,
            scheme,
            authorization,
            merchant_header,
            fingerprint,
        })
    }

    /// A short, non-reversible id of the key, safe to log and show.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Fingerprints of the key and of the merchant key: which credential
    /// and product an answer was fetched with (the response cache's scope).
    pub fn product_fingerprint(&self) -> &str {
        &self.product_fingerprint
    }

    /// The key itself, for the few places that must compare keys.
    pub fn api_key(&self) -> &SecretString {
        &self.api_key
    }
}

/// `sha256:` and the first 12 hex digits of the key's SHA-256.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..12])
}

/// The credential in use, swappable at run time.
#[derive(Debug)]
pub struct CredentialStore {
    active: ArcSwap<Option<Arc<Credential>>>,
}

impl CredentialStore {
    pub fn new(initial: Option<Credential>) -> Self {
        Self {
            active: ArcSwap::from_pointee(initial.map(Arc::new)),
        }
    }

    /// The credential calls should use now.
    pub fn current(&self) -> Option<Arc<Credential>> {
        self.active.load().as_ref().clone()
    }

    /// Makes `credential` the active one; in-flight calls finish with the old.
    pub fn replace(&self, credential: Credential) {
        self.active.store(Arc::new(Some(Arc::new(credential))));
    }
}

//! Who is calling, and what they may call. Denied by default.
//!
//! A caller is identified by a bearer token (`authorization: Bearer
//! <token>`) or, on a TLS listener with a client CA, by its client
//! certificate's SPIFFE ID (URI SAN `spiffe://...`) or DNS SAN. Every
//! caller and its policy is listed in the caller policy file (TOML,
//! `GATEWAY_CALLER_TOKENS_FILE`):
//!
//! ```toml
//! [[callers]]
//! name = "checkout"
//! token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! allow = ["imprint.v2.CustomerService/*", "imprint.v2.TransactionIntentService/CreateTransactionIntent"]
//!
//! [[callers]]
//! name = "card-vault"
//! spiffe_id = "spiffe://payments.internal/card-vault"
//! allow = ["imprint.v2.PaymentMethodService/GetPaymentMethod"]
//! pci = true
//! rate_per_sec = 20
//! burst = 40
//! ```
//!
//! `token_sha256` keeps plaintext tokens out of the file; `token = "..."` is
//! accepted too. The registry keeps only digests either way. A caller has
//! at least one of `token`/`token_sha256`, `spiffe_id`, `dns_san`.
//! `admin = true` (default false) is required, on top of the allow list,
//! for `imprint.gateway.v1.AdminService/*`, `imprint.v2.KeyService/*` and
//! `imprint.gateway.v1.KeyManagementService/*`. `products = ["default",
//! "cobrand-b"]` lists the configured products the caller may pick with
//! `x-imprint-product` (`"*"`: all; absent: the default product only),
//! however it identified itself (token or certificate). `pci = true`
//! (default false) lets the caller receive card data (`pci_details`);
//! without it the gateway strips it from every answer. `rate_per_sec`/
//! `burst` override `[limits] caller_rate_per_sec`/`caller_burst` for this
//! caller.

mod layer;

use std::{collections::HashMap, fmt::Write as _, net::IpAddr, path::Path, sync::Arc};

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use layer::{CallerAuth, CallerAuthLayer};

use crate::tls::CertIdentity;

/// An authenticated caller, available to handlers in request extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// Shared: every call carries it (logs, metrics, idempotency records).
    pub name: Arc<str>,
    allow: Vec<Pattern>,
    /// May call admin-only services (`admin = true` in the tokens file).
    pub admin: bool,
    /// Products (`x-imprint-product`) it may use; `None`: the default one only.
    products: Option<Vec<String>>,
    /// May receive card data under PCI scope (`pci = true`).
    pub pci: bool,
    /// This caller's sustained calls per second, if its policy sets one
    /// (else `[limits] caller_rate_per_sec`; 0 = unlimited).
    pub rate_per_sec: Option<f64>,
    /// This caller's burst, if its policy sets one (else `[limits] caller_burst`).
    pub burst: Option<f64>,
    /// How it may identify itself, for `check-config` (no secrets).
    identities: Vec<String>,
}

/// Services only admin callers may call, whatever their allow list says.
const ADMIN_ONLY: &[&str] = &[
    "imprint.gateway.v1.AdminService/",
    "imprint.v2.KeyService/",
    "imprint.gateway.v1.KeyManagementService/",
];

impl Caller {
    /// The caller let in by `allow_unauthenticated`: may call anything.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            allow: vec![Pattern::Any],
            admin: false,
            products: Some(vec!["*".into()]),
            pci: false,
            rate_per_sec: None,
            burst: None,
            identities: Vec::new(),
        }
    }

    /// Whether this caller may use the configured product `name`
    /// (`products = [...]` in the tokens file, `"*"` for all; absent: only
    /// the default product).
    pub fn may_use_product(&self, name: &str) -> bool {
        match &self.products {
            None => name == crate::credentials::DEFAULT_PRODUCT,
            Some(list) => list.iter().any(|p| p == "*" || p == name),
        }
    }

    /// Whether `method` belongs to an admin-only service.
    pub fn is_admin_method(method: &str) -> bool {
        ADMIN_ONLY.iter().any(|svc| method.starts_with(svc))
    }

    /// Whether this caller may call `method` (`package.Service/Method`).
    pub fn may_call(&self, method: &str) -> bool {
        if !self.admin && ADMIN_ONLY.iter().any(|svc| method.starts_with(svc)) {
            return false;
        }
        self.allow.iter().any(|p| p.matches(method))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Service(String),
    Method(String),
}

impl Pattern {
    fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Pattern::Any);
        }
        match s.split_once('/') {
            Some((svc, "*")) if !svc.is_empty() => Ok(Pattern::Service(svc.to_owned())),
            Some((svc, m)) if !svc.is_empty() && !m.is_empty() && !m.contains('*') => {
                Ok(Pattern::Method(s.to_owned()))
            }
            _ => Err(format!(
                "'{s}' is not '*', 'package.Service/*' or 'package.Service/Method'"
            )),
        }
    }

    fn as_text(&self) -> String {
        match self {
            Pattern::Any => "*".into(),
            Pattern::Service(svc) => format!("{svc}/*"),
            Pattern::Method(m) => m.clone(),
        }
    }

    fn matches(&self, method: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Service(svc) => method
                .strip_prefix(svc.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
            Pattern::Method(m) => m == method,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    callers: Vec<CallerEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallerEntry {
    name: String,
    #[serde(default)]
    token: Option<SecretString>,
    #[serde(default)]
    token_sha256: Option<String>,
    allow: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    products: Option<Vec<String>>,
    /// Client certificate identity: a URI SAN `spiffe://...`.
    #[serde(default)]
    spiffe_id: Option<String>,
    /// Client certificate identity: a DNS SAN.
    #[serde(default)]
    dns_san: Option<String>,
    #[serde(default)]
    pci: bool,
    #[serde(default)]
    rate_per_sec: Option<f64>,
    #[serde(default)]
    burst: Option<f64>,
}

/// Callers by token digest and by certificate identity.
#[derive(Debug, Default)]
pub struct CallerTable {
    by_digest: HashMap<[u8; 32], Arc<Caller>>,
    by_spiffe_id: HashMap<String, Arc<Caller>>,
    by_dns_san: HashMap<String, Arc<Caller>>,
    /// Every caller, in file order.
    callers: Vec<Arc<Caller>>,
}

impl CallerTable {
    /// Parses a caller policy file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut table = Self::default();
        for entry in file.callers {
            let name = &entry.name;
            let mut identities = Vec::new();
            let digest = match (&entry.token, &entry.token_sha256) {
                (Some(t), None) => Some(digest(t.expose_secret())),
                (None, Some(h)) => Some(
                    hex::decode(h.trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| {
                            format!("caller '{name}': token_sha256 is not 64 hex digits")
                        })?,
                ),
                (None, None) => None,
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "caller '{name}': set one of token, token_sha256, not both"
                    ))
                }
            };
            if digest.is_some() {
                identities.push("bearer token".to_string());
            }
            let spiffe_id = match &entry.spiffe_id {
                Some(id) => {
                    let id = id.trim();
                    if !id.starts_with("spiffe://") || id.len() <= "spiffe://".len() {
                        return Err(format!(
                            "caller '{name}': spiffe_id must be a spiffe://trust-domain/path URI"
                        ));
                    }
                    identities.push(format!("spiffe_id {id}"));
                    Some(id.to_owned())
                }
                None => None,
            };
            let dns_san = match &entry.dns_san {
                Some(d) => {
                    let d = d.trim().to_ascii_lowercase();
                    if d.is_empty() || d.contains(char::is_whitespace) {
                        return Err(format!("caller '{name}': dns_san is not a DNS name"));
                    }
                    identities.push(format!("dns_san {d}"));
                    Some(d)
                }
                None => None,
            };
            if identities.is_empty() {
                return Err(format!(
                    "caller '{name}': set a token (token or token_sha256), a spiffe_id or a dns_san"
                ));
            }
            if let Some(rate) = entry.rate_per_sec {
                if !(rate == 0.0 || (rate.is_finite() && (0.001..=1e9).contains(&rate))) {
                    return Err(format!(
                        "caller '{name}': rate_per_sec must be 0 (unlimited) or between 0.001 and 1000000000"
                    ));
                }
            }
            if let Some(burst) = entry.burst {
                if !(burst.is_finite() && (1.0..=1e9).contains(&burst)) {
                    return Err(format!(
                        "caller '{name}': burst must be between 1 and 1000000000"
                    ));
                }
            }
            let allow = entry
                .allow
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("caller '{name}': {e}"))?;
            if table.callers.iter().any(|c| *c.name == **name) {
                return Err(format!("caller '{name}': name already used"));
            }
            let caller = Arc::new(Caller {
                name: entry.name.as_str().into(),
                allow,
                admin: entry.admin,
                products: entry.products.clone(),
                pci: entry.pci,
                rate_per_sec: entry.rate_per_sec,
                burst: entry.burst,
                identities,
            });
            if let Some(digest) = digest {
                if table.by_digest.insert(digest, caller.clone()).is_some() {
                    return Err(format!(
                        "caller '{name}': token already used by another caller"
                    ));
                }
            }
            if let Some(id) = spiffe_id {
                if table.by_spiffe_id.insert(id, caller.clone()).is_some() {
                    return Err(format!(
                        "caller '{name}': spiffe_id already used by another caller"
                    ));
                }
            }
            if let Some(d) = dns_san {
                if table.by_dns_san.insert(d, caller.clone()).is_some() {
                    return Err(format!(
                        "caller '{name}': dns_san already used by another caller"
                    ));
                }
            }
            table.callers.push(caller);
        }
        Ok(table)
    }

    /// The caller a verified client certificate names: its SPIFFE ID
    /// first, then its DNS SANs.
    fn by_certificate(&self, cert: &CertIdentity) -> Option<Arc<Caller>> {
        cert.spiffe_ids
            .iter()
            .find_map(|id| self.by_spiffe_id.get(id))
            .or_else(|| {
                cert.dns_names
                    .iter()
                    .find_map(|d| self.by_dns_san.get(&d.to_ascii_lowercase()))
            })
            .cloned()
    }

    /// Each caller's effective policy, for `check-config`: name,
    /// identities, allowed methods, products, admin, PCI and rate limit (the
    /// defaults are `[limits]`'s). Never a token or its digest.
    pub fn describe(&self, default_rate: f64, default_burst: f64) -> String {
        let mut out = String::new();
        for c in &self.callers {
            let rate = c.rate_per_sec.unwrap_or(default_rate);
            let burst = c.burst.unwrap_or(default_burst);
            let limit = if rate > 0.0 {
                format!("{rate}/s, burst {burst}")
            } else {
                "unlimited".into()
            };
            let allow: Vec<String> = c.allow.iter().map(Pattern::as_text).collect();
            let products = match &c.products {
                None => format!("{} (default)", crate::credentials::DEFAULT_PRODUCT),
                Some(list) => list.join(", "),
            };
            let _ = writeln!(
                out,
                "caller {:?}\n  identified by: {}\n  allow: {}\n  products: {products}\n  admin: {}\n  pci: {}\n  rate limit: {limit}",
                c.name,
                c.identities.join(", "),
                allow.join(", "),
                c.admin,
                c.pci,
            );
        }
        out
    }

    /// Reads and parses a caller tokens file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.callers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.callers.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Who may call without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    /// Nobody: a token is required (the default).
    Denied,
    /// Anyone (`GATEWAY_ALLOW_UNAUTHENTICATED=true`, development only).
    Allowed,
    /// Callers on a loopback address only (the `sandbox` command).
    LoopbackOnly,
}

/// The policy the auth layer applies; swappable on reload.
#[derive(Debug)]
pub struct CallerRegistry {
    table: ArcSwap<CallerTable>,
    anonymous: Anonymous,
}

/// Why a call was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credential, or one we do not know.
    Unauthenticated(&'static str),
    /// Known caller, method not allowed.
    NotAllowed { caller: String },
}

impl CallerRegistry {
    pub fn new(table: CallerTable, anonymous: Anonymous) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            anonymous,
        }
    }

    /// Swaps in a reloaded table; calls in flight keep their decision.
    pub fn replace(&self, table: CallerTable) {
        self.table.store(Arc::new(table));
    }

    /// Who is calling, from the `authorization` value (if any), the
    /// peer address (if known) and the identity of the client certificate
    /// the TLS handshake verified (if any).
    ///
    /// A known certificate identity is the caller; a bearer token sent
    /// alongside must name the same caller. A certificate whose identity
    /// is not in the policy needs a token. Anonymous access never applies
    /// to a connection with a client certificate.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
        cert: Option<&CertIdentity>,
    ) -> Result<Arc<Caller>, Denied> {
        let table = self.table.load();
        let by_cert = cert.and_then(|c| table.by_certificate(c));
        let Some(value) = authorization else {
            if let Some(caller) = by_cert {
                return Ok(caller);
            }
            if cert.is_some() {
                return Err(Denied::Unauthenticated(
                    "the client certificate's identity is not in the caller policy, and no bearer token was sent",
                ));
            }
            let let_in = match self.anonymous {
                Anonymous::Denied => false,
                Anonymous::Allowed => true,
                Anonymous::LoopbackOnly => peer.is_some_and(|ip| ip.is_loopback()),
            };
            if let_in {
                return Ok(Arc::new(Caller::anonymous()));
            }
            return Err(Denied::Unauthenticated(
                "missing caller credential (authorization: Bearer <token>)",
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Unauthenticated(
                "authorization must be 'Bearer <token>'",
            ))?;
        let caller = table
            .by_digest
            .get(&digest(token))
            .cloned()
            .ok_or(Denied::Unauthenticated("unknown caller token"))?;
        match by_cert {
            Some(c) if !Arc::ptr_eq(&c, &caller) => Err(Denied::Unauthenticated(
                "the client certificate and the bearer token name different callers",
            )),
            _ => Ok(caller),
        }
    }

    /// Decides a call to `method` carrying `authorization` (if any).
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
        cert: Option<&CertIdentity>,
        method: &str,
    ) -> Result<Arc<Caller>, Denied> {
        let caller = self.authenticate(authorization, peer, cert)?;
        if caller.may_call(method) {
            Ok(caller)
        } else {
            Err(Denied::NotAllowed {
                caller: caller.name.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[callers]]
        name = "checkout"
        token = "tok-checkout"
        allow = ["imprint.v2.CustomerService/*", "imprint.v2.OrderService/CreateOrder"]

        [[callers]]
        name = "admin"
        token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        allow = ["*"]
    "#;

    #[test]
    fn denied_by_default_and_scoped() {
        let reg = CallerRegistry::new(CallerTable::parse(FILE).unwrap(), Anonymous::Denied);
        assert!(matches!(
            reg.authorize(None, None, None, "imprint.v2.CustomerService/GetCustomer"),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            reg.authorize(
                Some("Bearer nope"),
                None,
                None,
                "imprint.v2.CustomerService/GetCustomer"
            ),
            Err(Denied::Unauthenticated(_))
        ));
        let c = reg
            .authorize(
                Some("Bearer tok-checkout"),
                None,
                None,
                "imprint.v2.CustomerService/GetCustomer",
            )
            .unwrap();
        assert_eq!(&*c.name, "checkout");
        assert!(reg
            .authorize(
                Some("Bearer tok-checkout"),
                None,
                None,
                "imprint.v2.OrderService/CreateOrder"
            )
            .is_ok());
        assert_eq!(
            reg.authorize(
                Some("Bearer tok-checkout"),
                None,
                None,
                "imprint.v2.OrderService/DeleteOrder"
            ),
            Err(Denied::NotAllowed {
                caller: "checkout".into()
            })
        );
        // A service-prefix pattern must not match a longer service name.
        assert!(reg
            .authorize(
                Some("Bearer tok-checkout"),
                None,
                None,
                "imprint.v2.CustomerServiceX/Get"
            )
            .is_err());
        // sha256("test")
        assert!(reg
            .authorize(Some("Bearer test"), None, None, "anything/At")
            .is_ok());
    }

    #[test]
    fn loopback_only_anonymous_access() {
        let reg = CallerRegistry::new(CallerTable::default(), Anonymous::LoopbackOnly);
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let remote = Some(IpAddr::from([192, 0, 2, 7]));
        assert!(reg
            .authorize(None, local, None, "imprint.v2.CustomerService/GetCustomer")
            .is_ok());
        assert!(reg
            .authorize(
                None,
                Some(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
                None,
                "a/b"
            )
            .is_ok());
        assert!(reg
            .authorize(None, remote, None, "imprint.v2.CustomerService/GetCustomer")
            .is_err());
        assert!(reg
            .authorize(None, None, None, "imprint.v2.CustomerService/GetCustomer")
            .is_err());
    }

    #[test]
    fn rejects_bad_files() {
        assert!(CallerTable::parse("[[callers]]\nname='a'\nallow=['*']").is_err());
        assert!(CallerTable::parse("[[callers]]\nname='a'\ntoken='x'\nallow=['foo']").is_err());
        assert!(
            CallerTable::parse("[[callers]]\nname='a'\ntoken_sha256='zz'\nallow=['*']").is_err()
        );
    }
}

#[cfg(test)]
mod admin_tests {
    use super::*;

    fn caller(text: &str) -> Arc<Caller> {
        let table = CallerTable::parse(text).unwrap();
        table.by_digest.values().next().unwrap().clone()
    }

    #[test]
    fn admin_services_need_the_admin_flag_whatever_the_allow_list() {
        let plain = caller("[[callers]]\nname = \"a\"\ntoken = \"t\"\nallow = [\"*\"]\n");
        assert!(!plain.admin);
        assert!(!plain.may_call("imprint.gateway.v1.AdminService/ListUpstreamCalls"));
        assert!(plain.may_call("imprint.v2.CustomerService/GetCustomer"));
        let explicit = caller(
            "[[callers]]\nname = \"a\"\ntoken = \"t\"\nallow = [\"imprint.gateway.v1.AdminService/*\"]\n",
        );
        assert!(!explicit.may_call("imprint.gateway.v1.AdminService/ListUpstreamCalls"));
        let admin = caller(
            "[[callers]]\nname = \"ops\"\ntoken = \"t\"\nadmin = true\nallow = [\"imprint.gateway.v1.AdminService/*\"]\n",
        );
        assert!(admin.may_call("imprint.gateway.v1.AdminService/ListUpstreamCalls"));
        assert!(!admin.may_call("imprint.v2.CustomerService/GetCustomer"));
        assert!(!Caller::anonymous().may_call("imprint.gateway.v1.AdminService/PurgeCache"));
        assert!(!plain.may_call("imprint.v2.KeyService/CreateKey"));
        assert!(!plain.may_call("imprint.gateway.v1.KeyManagementService/RotateCredential"));
    }

    #[test]
    fn products_default_to_the_default_product_only() {
        let plain = caller("[[callers]]\nname = \"a\"\ntoken = \"t\"\nallow = [\"*\"]\n");
        assert!(plain.may_use_product("default"));
        assert!(!plain.may_use_product("cobrand-b"));
        let listed = caller(
            "[[callers]]\nname = \"a\"\ntoken = \"t\"\nallow = [\"*\"]\nproducts = [\"cobrand-b\"]\n",
        );
        assert!(listed.may_use_product("cobrand-b"));
        assert!(!listed.may_use_product("default"));
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    const POLICY: &str = r#"
        [[callers]]
        name = "vault"
        spiffe_id = "spiffe://pay.internal/vault"
        allow = ["imprint.v2.PaymentMethodService/*"]
        pci = true
        rate_per_sec = 5
        burst = 10

        [[callers]]
        name = "ledger"
        dns_san = "Ledger.Internal"
        token = "tok-ledger"
        allow = ["imprint.v2.OrderService/GetOrder"]

        [[callers]]
        name = "legacy"
        token = "tok-legacy"
        allow = ["*"]
    "#;

    fn cert(spiffe: &[&str], dns: &[&str]) -> CertIdentity {
        CertIdentity {
            spiffe_ids: spiffe.iter().map(|s| s.to_string()).collect(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn certificate_identities_name_callers() {
        let reg = CallerRegistry::new(CallerTable::parse(POLICY).unwrap(), Anonymous::Denied);
        let vault = cert(&["spiffe://pay.internal/vault"], &["ignored.example"]);
        let c = reg
            .authorize(
                None,
                None,
                Some(&vault),
                "imprint.v2.PaymentMethodService/GetPaymentMethod",
            )
            .unwrap();
        assert_eq!(&*c.name, "vault");
        assert!(c.pci);
        assert_eq!((c.rate_per_sec, c.burst), (Some(5.0), Some(10.0)));
        assert_eq!(
            reg.authorize(None, None, Some(&vault), "imprint.v2.OrderService/GetOrder"),
            Err(Denied::NotAllowed {
                caller: "vault".into()
            })
        );
        // DNS SANs compare case-insensitively.
        let ledger = cert(&[], &["ledger.internal"]);
        assert_eq!(
            reg.authenticate(None, None, Some(&ledger)).unwrap().name,
            "ledger".into()
        );
        // Certificate and token agreeing is fine; disagreeing is refused.
        assert!(reg
            .authenticate(Some("Bearer tok-ledger"), None, Some(&ledger))
            .is_ok());
        assert!(matches!(
            reg.authenticate(Some("Bearer tok-legacy"), None, Some(&ledger)),
            Err(Denied::Unauthenticated(_))
        ));
        // An unknown certificate needs a token, and never gets anonymous access.
        let stranger = cert(&["spiffe://elsewhere/x"], &[]);
        assert!(matches!(
            reg.authenticate(None, None, Some(&stranger)),
            Err(Denied::Unauthenticated(_))
        ));
        assert_eq!(
            reg.authenticate(Some("Bearer tok-legacy"), None, Some(&stranger))
                .unwrap()
                .name,
            "legacy".into()
        );
        let open = CallerRegistry::new(CallerTable::default(), Anonymous::Allowed);
        assert!(open.authenticate(None, None, Some(&stranger)).is_err());
        assert!(!open.authenticate(None, None, None).unwrap().pci);
    }

    #[test]
    fn policy_errors_and_description() {
        for bad in [
            "[[callers]]\nname='a'\nspiffe_id='http://x'\nallow=['*']",
            "[[callers]]\nname='a'\ntoken='x'\nrate_per_sec=-1.0\nallow=['*']",
            "[[callers]]\nname='a'\ntoken='x'\nburst=0.5\nallow=['*']",
            "[[callers]]\nname='a'\ndns_san='a.b'\nallow=['*']\n[[callers]]\nname='b'\ndns_san='A.B'\nallow=['*']",
            "[[callers]]\nname='a'\ntoken='x'\nallow=['*']\n[[callers]]\nname='a'\ntoken='y'\nallow=['*']",
        ] {
            assert!(CallerTable::parse(bad).is_err(), "{bad}");
        }
        let text = CallerTable::parse(POLICY).unwrap().describe(100.0, 200.0);
        assert!(!text.contains("tok-"), "{text}");
        assert!(
            text.contains("spiffe_id spiffe://pay.internal/vault"),
            "{text}"
        );
        assert!(text.contains("rate limit: 5/s, burst 10"), "{text}");
        assert!(text.contains("rate limit: 100/s, burst 200"), "{text}");
        assert!(
            text.contains("identified by: bearer token, dns_san ledger.internal"),
            "{text}"
        );
        assert!(text.contains("pci: true"), "{text}");
        assert!(text.contains("products: default (default)"), "{text}");
    }
}

//! Who is calling, and what they may call. Denied by default.
//!
//! Callers present `authorization: Bearer <token>`. Tokens are listed in the
//! caller tokens file (TOML), each with the gRPC methods it may call:
//!
//! ```toml
//! [[callers]]
//! name = "checkout"
//! token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! allow = ["imprint.v2.CustomerService/*", "imprint.v2.TransactionIntentService/CreateTransactionIntent"]
//! ```
//!
//! `token_sha256` keeps plaintext tokens out of the file; `token = "..."` is
//! accepted too. The registry keeps only digests either way. `admin = true`
//! (default false) is required, on top of the allow list, for
//! `imprint.gateway.v1.AdminService/*`, `imprint.v2.KeyService/*` and
//! `imprint.gateway.v1.KeyManagementService/*`. `products = ["default",
//! "cobrand-b"]` lists the configured products the caller may pick with
//! `x-imprint-product` (`"*"`: all; absent: the default product only).

mod layer;

use std::{collections::HashMap, net::IpAddr, path::Path, sync::Arc};

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use layer::{CallerAuth, CallerAuthLayer};

/// An authenticated caller, available to handlers in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    allow: Vec<Pattern>,
    /// May call admin-only services (`admin = true` in the tokens file).
    pub admin: bool,
    /// Products (`x-imprint-product`) it may use; `None`: the default one only.
    products: Option<Vec<String>>,
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
}

/// Callers by token digest.
#[derive(Debug, Default)]
pub struct CallerTable {
    by_digest: HashMap<[u8; 32], Arc<Caller>>,
}

impl CallerTable {
    /// Parses a caller tokens file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut by_digest = HashMap::new();
        for entry in file.callers {
            let digest = match (&entry.token, &entry.token_sha256) {
                (Some(t), None) => digest(t.expose_secret()),
                (None, Some(h)) => {
                    let bytes = hex::decode(h.trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| {
                            format!("caller '{}': token_sha256 is not 64 hex digits", entry.name)
                        })?;
                    bytes
                }
                _ => {
                    return Err(format!(
                        "caller '{}': set exactly one of token, token_sha256",
                        entry.name
                    ))
                }
            };
            let allow = entry
                .allow
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("caller '{}': {e}", entry.name))?;
            let caller = Arc::new(Caller {
                name: entry.name.clone(),
                allow,
                admin: entry.admin,
                products: entry.products.clone(),
            });
            if by_digest.insert(digest, caller).is_some() {
                return Err(format!(
                    "caller '{}': token already used by another caller",
                    entry.name
                ));
            }
        }
        Ok(Self { by_digest })
    }

    /// Reads and parses a caller tokens file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
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

    /// Who is calling, from the `authorization` value (if any) and the
    /// peer address (if known).
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Caller>, Denied> {
        let Some(value) = authorization else {
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
        self.table
            .load()
            .by_digest
            .get(&digest(token))
            .cloned()
            .ok_or(Denied::Unauthenticated("unknown caller token"))
    }

    /// Decides a call to `method` carrying `authorization` (if any).
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
        method: &str,
    ) -> Result<Arc<Caller>, Denied> {
        let caller = self.authenticate(authorization, peer)?;
        if caller.may_call(method) {
            Ok(caller)
        } else {
            Err(Denied::NotAllowed {
                caller: caller.name.clone(),
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
            reg.authorize(None, None, "imprint.v2.CustomerService/GetCustomer"),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            reg.authorize(
                Some("Bearer nope"),
                None,
                "imprint.v2.CustomerService/GetCustomer"
            ),
            Err(Denied::Unauthenticated(_))
        ));
        let c = reg
            .authorize(
                Some("Bearer tok-checkout"),
                None,
                "imprint.v2.CustomerService/GetCustomer",
            )
            .unwrap();
        assert_eq!(c.name, "checkout");
        assert!(reg
            .authorize(
                Some("Bearer tok-checkout"),
                None,
                "imprint.v2.OrderService/CreateOrder"
            )
            .is_ok());
        assert_eq!(
            reg.authorize(
                Some("Bearer tok-checkout"),
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
                "imprint.v2.CustomerServiceX/Get"
            )
            .is_err());
        // sha256("test")
        assert!(reg
            .authorize(Some("Bearer test"), None, "anything/At")
            .is_ok());
    }

    #[test]
    fn loopback_only_anonymous_access() {
        let reg = CallerRegistry::new(CallerTable::default(), Anonymous::LoopbackOnly);
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let remote = Some(IpAddr::from([192, 0, 2, 7]));
        assert!(reg
            .authorize(None, local, "imprint.v2.CustomerService/GetCustomer")
            .is_ok());
        assert!(reg
            .authorize(
                None,
                Some(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
                "a/b"
            )
            .is_ok());
        assert!(reg
            .authorize(None, remote, "imprint.v2.CustomerService/GetCustomer")
            .is_err());
        assert!(reg
            .authorize(None, None, "imprint.v2.CustomerService/GetCustomer")
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

//! A reusable scanner for secrets in anything the gateway produces: seed
//! calls with [`SECRETS`], collect what came out (logs, spans, metrics, the
//! request log, error statuses) and [`assert_clean`] it. Later issues add
//! their own secrets to the list.

use crate::{
    harness::{API_KEY, MERCHANT_KEY, TOKEN},
    keys::{
        ADMIN_TOKEN, COBRAND_KEY, COBRAND_MERCHANT, COBRAND_TOKEN, CREATED_KEY, MASTER_KEY_HEX,
    },
};

pub const SSN: &str = "123456789";
pub const DOB_YEAR: i32 = 1937;
pub const PAN: &str = "4111111111111111";
pub const CVV: &str = "9731";
pub const CLIENT_SECRET: &str = "QzMyNzg4QzgtNEUwOS00QkU4";
/// The webhook secret: seeded by the binary test, which posts a signed and a
/// forged webhook.
pub const WEBHOOK_SECRET: &str = "whsec_scan_only_never_emitted";

/// (what, needle): every needle is distinctive enough not to occur by
/// chance (short values are matched with their JSON/Debug quoting).
pub fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("Imprint API key", API_KEY.into()),
        ("merchant key", MERCHANT_KEY.into()),
        ("caller token", TOKEN.into()),
        ("SSN", SSN.into()),
        ("date of birth (JSON)", format!("\"year\":{DOB_YEAR}")),
        ("date of birth (Debug)", format!("year: Some({DOB_YEAR})")),
        ("PAN", PAN.into()),
        ("CVV", format!("\"{CVV}\"")),
        ("client_secret", CLIENT_SECRET.into()),
        ("webhook secret", WEBHOOK_SECRET.into()),
        // Key management (#12).
        ("second product's API key", COBRAND_KEY.into()),
        ("second product's merchant key", COBRAND_MERCHANT.into()),
        ("created/rotated key", CREATED_KEY.into()),
        ("master key", MASTER_KEY_HEX.into()),
        ("admin caller token", ADMIN_TOKEN.into()),
        ("product caller token", COBRAND_TOKEN.into()),
    ]
}

/// Panics naming each (source, secret) found.
pub fn assert_clean(sources: &[(&str, &str)]) {
    assert_clean_with(sources, &[]);
}

/// [`assert_clean`] with secrets made at run time too (TLS private keys:
/// one seed per base64 line of the PEM).
pub fn assert_clean_with(sources: &[(&str, &str)], extra: &[(&'static str, String)]) {
    let mut found = Vec::new();
    for (source, text) in sources {
        for (what, needle) in secrets().into_iter().chain(extra.iter().cloned()) {
            let n = text.matches(needle.as_str()).count();
            if n > 0 {
                found.push(format!("{what} ×{n} in {source}"));
            }
        }
    }
    assert!(found.is_empty(), "secrets leaked: {found:#?}");
}

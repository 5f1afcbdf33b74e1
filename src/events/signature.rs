//! Verification of `X-IMPRINT-HMAC-SIGNATURE: t=<timestamp>,s=<hex>`.
//!
//! Imprint's page is ambiguous in two ways, and both readings are accepted:
//! `t` may be Unix seconds or milliseconds (told apart by size), and the
//! signed message is `t + "." + raw body` or, failing that, `t + "."` + the
//! body re-serialised compactly with sorted keys. The comparison is constant
//! time and the timestamp must be within a tolerance of now.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a signature was refused. Messages never include the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-IMPRINT-HMAC-SIGNATURE header")]
    Missing,
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    #[error("signature timestamp is outside the {0:?} tolerance")]
    Stale(Duration),
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks `header` for `body` with `secret`, at time `now`.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let (mut t, mut sigs) = (None, Vec::new());
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("s", v)) => sigs.push(v.trim()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no t= timestamp"))?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed("no s= signature"));
    }
    let n: u64 = t
        .parse()
        .map_err(|_| SignatureError::Malformed("t is not a number"))?;
    // Seconds are 10 digits until the year 2286; milliseconds are 13.
    let at = if n >= 100_000_000_000 {
        UNIX_EPOCH + Duration::from_millis(n)
    } else {
        UNIX_EPOCH + Duration::from_secs(n)
    };
    let skew = now.duration_since(at).unwrap_or_else(|e| e.duration());
    if skew > tolerance {
        return Err(SignatureError::Stale(tolerance));
    }
    let expected: Vec<Vec<u8>> = sigs.iter().filter_map(|s| hex::decode(s).ok()).collect();
    if expected.is_empty() {
        return Err(SignatureError::Malformed("s is not hex"));
    }
    let matches = |message_body: &[u8]| {
        expected.iter().any(|sig| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(message_body);
            mac.verify_slice(sig).is_ok()
        })
    };
    if matches(body) {
        return Ok(());
    }
    if let Some(canonical) = canonical(body) {
        if matches(&canonical) {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// Checks `header` against each of `secrets` (several during a rotation);
/// accepted when any one matches. Every comparison is constant time; a
/// refusal never says which secret was tried.
pub fn verify_any<S: AsRef<[u8]>>(
    secrets: &[S],
    header: Option<&str>,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut last = SignatureError::Mismatch;
    for secret in secrets {
        match verify(secret.as_ref(), header, body, now, tolerance) {
            Ok(()) => return Ok(()),
            Err(SignatureError::Mismatch) => last = SignatureError::Mismatch,
            // Missing, malformed or stale: the same for every secret.
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The body re-serialised compactly with sorted keys (serde_json's maps are
/// sorted without the `preserve_order` feature).
fn canonical(body: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::sign;

    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"object":"TRANSACTION","data":{"b":1,"a":2}}"#;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_760_000_000)
    }

    #[test]
    fn seconds_and_milliseconds() {
        let tol = Duration::from_secs(300);
        let t = "1760000000";
        let h = format!("t={t},s={}", sign(SECRET, t, BODY));
        assert_eq!(verify(SECRET, Some(&h), BODY, now(), tol), Ok(()));
        let t = "1760000000123";
        let h = format!("t={t},s={}", sign(SECRET, t, BODY));
        assert_eq!(verify(SECRET, Some(&h), BODY, now(), tol), Ok(()));
    }

    #[test]
    fn canonical_body_is_accepted() {
        let t = "1760000000";
        let canonical = br#"{"data":{"a":2,"b":1},"object":"TRANSACTION"}"#;
        let h = format!("t={t},s={}", sign(SECRET, t, canonical));
        assert_eq!(
            verify(SECRET, Some(&h), BODY, now(), Duration::from_secs(300)),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_secrets_during_a_rotation() {
        let tol = Duration::from_secs(300);
        let t = "1760000000";
        let h = format!("t={t},s={}", sign(b"new", t, BODY));
        assert_eq!(
            verify_any(&[b"old".as_slice(), b"new"], Some(&h), BODY, now(), tol),
            Ok(())
        );
        assert_eq!(
            verify_any(&[b"old".as_slice()], Some(&h), BODY, now(), tol),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refusals() {
        let tol = Duration::from_secs(300);
        let t = "1760000000";
        let good = format!("t={t},s={}", sign(SECRET, t, BODY));
        assert_eq!(
            verify(SECRET, None, BODY, now(), tol),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(b"other", Some(&good), BODY, now(), tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(&good), b"{\"tampered\":1}", now(), tol),
            Err(SignatureError::Mismatch)
        );
        let old = format!("t=1759999000,s={}", sign(SECRET, "1759999000", BODY));
        assert_eq!(
            verify(SECRET, Some(&old), BODY, now(), tol),
            Err(SignatureError::Stale(tol))
        );
        let future = format!("t=1760001000,s={}", sign(SECRET, "1760001000", BODY));
        assert!(matches!(
            verify(SECRET, Some(&future), BODY, now(), tol),
            Err(SignatureError::Stale(_))
        ));
        assert!(matches!(
            verify(SECRET, Some("s=abc"), BODY, now(), tol),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(SECRET, Some("t=1760000000,s=zz"), BODY, now(), tol),
            Err(SignatureError::Malformed(_))
        ));
    }
}

//! The request log: the last N upstream calls, in memory, bounded by count
//! and bytes, with every sensitive field redacted before it is stored.
//!
//! Redaction is by field name at any depth, driven by the generated lists
//! (`Route::sensitive_request_fields`, `Route::secret_response_fields`) plus
//! [`ALWAYS_REDACTED`]; values of the request's sensitive fields are also
//! scrubbed wherever they appear (an error message echoing its input).

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, SystemTime},
};

use parking_lot::Mutex;
use secrecy::{ExposeSecret as _, SecretString};

/// Redacted whatever the route declares: secrets some answers carry.
pub const ALWAYS_REDACTED: &[&str] = &["client_secret", "pci_details"];

/// What replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";

/// One upstream call, as recorded.
#[derive(Debug, Clone)]
pub struct UpstreamCall {
    /// Position in the log: the paging cursor.
    pub seq: u64,
    pub at: SystemTime,
    pub rpc: &'static str,
    pub method: String,
    pub template: &'static str,
    /// Imprint's HTTP status; 0 when it did not answer.
    pub status: u16,
    /// Why the call failed without an HTTP status (`circuit open`, ...).
    pub error: Option<String>,
    pub latency: Duration,
    pub attempts: u32,
    pub caller: Arc<str>,
    pub request_id: Arc<str>,
    pub trace_id: String,
    pub request_body: String,
    pub response_body: String,
}

impl UpstreamCall {
    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.method.len()
            + self.error.as_ref().map_or(0, String::len)
            + self.trace_id.len()
            + self.request_body.len()
            + self.response_body.len()
    }
}

/// Filters of a listing; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub rpc: Option<String>,
    /// 2, 4 or 5 for 2xx/4xx/5xx; 0 for calls Imprint did not answer.
    pub status_class: Option<u16>,
    pub caller: Option<String>,
    pub since: Option<SystemTime>,
    /// Only calls older than this cursor (newest first paging).
    pub before: Option<u64>,
    pub limit: usize,
}

#[derive(Default)]
struct Inner {
    calls: VecDeque<Arc<UpstreamCall>>,
    bytes: usize,
    next_seq: u64,
}

/// The log; see the module docs.
pub struct RequestLog {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

impl RequestLog {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_entries,
            max_bytes,
        }
    }

    /// Stores `call` (its `seq` is assigned here), evicting the oldest
    /// beyond the bounds.
    pub fn record(&self, mut call: UpstreamCall) {
        let mut inner = self.inner.lock();
        call.seq = inner.next_seq;
        inner.next_seq += 1;
        let size = call.size();
        if size > self.max_bytes || self.max_entries == 0 {
            return;
        }
        inner.bytes += size;
        inner.calls.push_back(Arc::new(call));
        while inner.calls.len() > self.max_entries || inner.bytes > self.max_bytes {
            match inner.calls.pop_front() {
                Some(old) => inner.bytes -= old.size(),
                None => break,
            }
        }
    }

    /// Newest first; the cursor of the next page when there is more.
    pub fn list(&self, q: &Query) -> (Vec<Arc<UpstreamCall>>, Option<u64>) {
        let inner = self.inner.lock();
        let limit = q.limit.clamp(1, 1000);
        let mut out = Vec::new();
        for call in inner.calls.iter().rev() {
            if q.before.is_some_and(|b| call.seq >= b) {
                continue;
            }
            if q.since.is_some_and(|s| call.at < s) {
                break;
            }
            let matches = q.rpc.as_deref().is_none_or(|r| r == call.rpc)
                && q.caller.as_deref().is_none_or(|c| c == &*call.caller)
                && q.status_class.is_none_or(|c| call.status / 100 == c);
            if !matches {
                continue;
            }
            if out.len() == limit {
                return (out, Some(call.seq + 1));
            }
            out.push(call.clone());
        }
        (out, None)
    }

    /// Whether anything is kept (a zero bound turns the log off).
    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }

    pub fn len(&self) -> usize {
        self.inner.lock().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `body` as JSON text with every field named in `fields` or
/// [`ALWAYS_REDACTED`] replaced, at any depth, and every value in `values`
/// scrubbed from what remains. A body that is not JSON is not kept.
pub fn redact(body: &[u8], fields: &[&str], values: &[SecretString]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let not_kept = || format!("[{} bytes, not JSON: not kept]", body.len());
    let mut text = match std::str::from_utf8(body) {
        // The common case, a body holding none of the names: checked
        // without building a tree, kept as sent. An escape could spell a
        // name (`"ss\u006e"`), so a body with one takes the slow path.
        Ok(text) if !text.contains('\\') && !names_any(text, fields) => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                return not_kept();
            }
            text.to_owned()
        }
        _ => {
            let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(body) else {
                return not_kept();
            };
            redact_value(&mut json, fields);
            json.to_string()
        }
    };
    for v in values {
        let v = v.expose_secret();
        if !v.is_empty() {
            text = text.replace(v, REDACTED);
        }
    }
    text
}

/// Whether `text` holds a name in `fields` or [`ALWAYS_REDACTED`] as a
/// JSON string (a key, or a value that happens to equal it: the slow path
/// then sorts it out).
fn names_any(text: &str, fields: &[&str]) -> bool {
    fields.iter().chain(ALWAYS_REDACTED).any(|name| {
        text.match_indices(name)
            .any(|(at, _)| text[..at].ends_with('"') && text[at + name.len()..].starts_with('"'))
    })
}

fn redact_value(v: &mut serde_json::Value, fields: &[&str]) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if fields.contains(&k.as_str()) || ALWAYS_REDACTED.contains(&k.as_str()) {
                    *v = serde_json::Value::String(REDACTED.into());
                } else {
                    redact_value(v, fields);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| redact_value(i, fields)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(rpc: &'static str, status: u16) -> UpstreamCall {
        UpstreamCall {
            seq: 0,
            at: SystemTime::now(),
            rpc,
            method: "GET".into(),
            template: "/v2/x",
            status,
            error: None,
            latency: Duration::from_millis(1),
            attempts: 1,
            caller: "c".into(),
            request_id: "r".into(),
            trace_id: String::new(),
            request_body: String::new(),
            response_body: String::new(),
        }
    }

    #[test]
    fn redacts_by_name_at_any_depth_and_by_value() {
        let body = br#"{"ssn":"123-45-6789","a":[{"pan":"4111111111111111","ok":1}],
            "pci_details":{"cvv":"123"},"x":{"client_secret":"cs_1"},"m":"echo 123-45-6789"}"#;
        let out = redact(body, &["ssn", "pan"], &[SecretString::from("123-45-6789")]);
        for secret in ["123-45-6789", "4111111111111111", "123\"", "cs_1"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("\"ok\":1"), "{out}");
        // Without a name to redact, the body is kept as sent; an escaped
        // name still takes the careful path.
        let plain = br#"{"id": "c_1", "tags": ["ssn-like"]}"#;
        assert_eq!(
            redact(plain, &["ssn"], &[]),
            std::str::from_utf8(plain).unwrap()
        );
        let escaped = br#"{"ss\u006e":"123-45-6789"}"#;
        assert!(!redact(escaped, &["ssn"], &[]).contains("123-45-6789"));
        assert_eq!(
            redact(b"{\"a\":", &[], &[]),
            "[5 bytes, not JSON: not kept]"
        );
        assert_eq!(
            redact(b"not json 123-45-6789", &[], &[]),
            "[20 bytes, not JSON: not kept]"
        );
    }

    #[test]
    fn bounded_by_count_and_bytes_and_pages_newest_first() {
        let log = RequestLog::new(3, 1 << 20);
        for i in 0..5 {
            log.record(call(if i % 2 == 0 { "a" } else { "b" }, 200 + i));
        }
        assert_eq!(log.len(), 3);
        let (page, next) = log.list(&Query {
            limit: 2,
            ..Query::default()
        });
        assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), [4, 3]);
        let (page, next) = log.list(&Query {
            limit: 2,
            before: next,
            ..Query::default()
        });
        assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(next, None);
        let (only_a, _) = log.list(&Query {
            rpc: Some("a".into()),
            limit: 10,
            ..Query::default()
        });
        assert!(only_a.iter().all(|c| c.rpc == "a"));
        let small = RequestLog::new(100, 2 * call("a", 200).size());
        for _ in 0..10 {
            small.record(call("a", 200));
        }
        assert_eq!(small.len(), 2);
    }
}

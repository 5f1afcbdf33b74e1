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

/// One upstream call, as recorded and as listed.
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
    /// The call's texts, in the order they sit in the log's bytes.
    fn texts(&self) -> [&str; TEXTS] {
        [
            &self.method,
            self.error.as_deref().unwrap_or_default(),
            &self.request_id,
            &self.trace_id,
            &self.request_body,
            &self.response_body,
        ]
    }
}

/// The largest body kept ([`redact`]); a larger one is kept as a note of
/// its size, so that any one call fits a `ListUpstreamCalls` page under
/// gRPC's default 4 MiB message limit.
pub const MAX_KEPT_BODY: usize = 1 << 20;

/// How many texts a call has (see [`UpstreamCall::texts`]).
const TEXTS: usize = 6;

/// A call as kept: its fixed fields, and where its texts sit in the
/// log's bytes. The texts are copied into one byte ring rather than kept
/// as allocations of their own: 10 000 calls' bodies held as separate
/// allocations and freed oldest first hand every later allocation of the
/// same size a chunk untouched for 10 000 calls, which made each call's
/// own short-lived allocations slow (`docs/BENCHMARKS.md`).
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    at: SystemTime,
    rpc: &'static str,
    template: &'static str,
    status: u16,
    has_error: bool,
    attempts: u32,
    latency: Duration,
    caller: Arc<str>,
    /// Offset of its first text byte, counted from the log's beginning.
    start: u64,
    lens: [u32; TEXTS],
}

impl Entry {
    fn text_len(&self) -> usize {
        self.lens.iter().map(|&l| l as usize).sum()
    }

    /// What it counts against `max_bytes`.
    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.text_len()
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
    entries: VecDeque<Entry>,
    /// The kept calls' texts, oldest first, back to back.
    texts: VecDeque<u8>,
    /// The offset of `texts[0]` since the log began.
    base: u64,
    next_seq: u64,
}

impl Inner {
    /// What the kept calls count against `max_bytes`: the sum of their
    /// [`Entry::size`].
    fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>() + self.texts.len()
    }

    fn evict_oldest(&mut self) -> bool {
        let Some(old) = self.entries.pop_front() else {
            return false;
        };
        let len = old.text_len();
        // The oldest call's texts are the ring's front: dropping them
        // moves its head and copies nothing.
        self.texts.drain(..len);
        self.base += len as u64;
        true
    }

    /// Appends `entry`'s texts to `out`; false (and nothing appended) if
    /// they are not in the ring, which would be a bug.
    fn copy_texts(&self, entry: &Entry, out: &mut Vec<u8>) -> bool {
        let span = entry
            .start
            .checked_sub(self.base)
            .and_then(|from| usize::try_from(from).ok())
            .and_then(|from| Some(from..from.checked_add(entry.text_len())?))
            .filter(|span| span.end <= self.texts.len());
        let Some(span) = span else {
            debug_assert!(false, "call {} is not in the ring", entry.seq);
            return false;
        };
        let (front, back) = self.texts.as_slices();
        let split = front.len();
        if span.start < split {
            out.extend_from_slice(&front[span.start..span.end.min(split)]);
        }
        if span.end > split {
            out.extend_from_slice(&back[span.start.max(split) - split..span.end - split]);
        }
        true
    }
}

/// `entry` as a listed call, its texts cut from `texts` (what
/// [`Inner::copy_texts`] copied for it).
fn expand(entry: Entry, texts: &[u8]) -> UpstreamCall {
    let mut at = 0;
    let mut texts = entry.lens.map(|len| {
        let text = texts.get(at..at + len as usize).unwrap_or_default();
        at += len as usize;
        // Written from `&str`s and cut at their boundaries: never lossy.
        String::from_utf8_lossy(text).into_owned()
    });
    let mut take = |i: usize| std::mem::take(&mut texts[i]);
    UpstreamCall {
        seq: entry.seq,
        at: entry.at,
        rpc: entry.rpc,
        method: take(0),
        template: entry.template,
        status: entry.status,
        error: entry.has_error.then(|| take(1)),
        latency: entry.latency,
        attempts: entry.attempts,
        caller: entry.caller,
        request_id: take(2).into(),
        trace_id: take(3),
        request_body: take(4),
        response_body: take(5),
    }
}

/// The most text one listing copies (the page ends early, with a cursor,
/// beyond it): bounds the time the log is locked against recording, and
/// keeps a page under gRPC's default 4 MiB message limit.
const PAGE_BYTES: usize = 2 << 20;

/// Grows `deque` to hold `more`, by a quarter at a time rather than by
/// doubling: a ring's head travels its whole capacity, so every byte of
/// slack becomes resident.
fn reserve<T>(deque: &mut VecDeque<T>, more: usize) {
    let free = deque.capacity() - deque.len();
    if free < more {
        deque.reserve_exact(more.max(deque.capacity() / 4).max(64));
    }
}

/// Gives back what a burst of large calls grew `deque` to, once it holds
/// far less: the ring's head would otherwise keep all of it resident.
/// `more` is about to be added.
fn shrink<T>(deque: &mut VecDeque<T>, floor: usize, more: usize) {
    if deque.capacity() > 4 * deque.len() + floor + more {
        deque.shrink_to(2 * deque.len() + more);
    }
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
    /// beyond the bounds. Its bodies are what [`redact`] made of them.
    pub fn record(&self, call: UpstreamCall) {
        let texts = call.texts();
        let lens = texts.map(|t| u32::try_from(t.len()).unwrap_or(u32::MAX));
        let mut inner = self.inner.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let entry = Entry {
            seq,
            at: call.at,
            rpc: call.rpc,
            template: call.template,
            status: call.status,
            has_error: call.error.is_some(),
            attempts: call.attempts,
            latency: call.latency,
            caller: call.caller.clone(),
            start: 0,
            lens,
        };
        let size = entry.size();
        if size > self.max_bytes || self.max_entries == 0 || lens.contains(&u32::MAX) {
            return;
        }
        // Room first, so the new texts go where the oldest were.
        while inner.entries.len() >= self.max_entries || inner.bytes() + size > self.max_bytes {
            if !inner.evict_oldest() {
                break;
            }
        }
        shrink(&mut inner.texts, 1 << 20, entry.text_len());
        shrink(&mut inner.entries, 4096, 1);
        let entry = Entry {
            start: inner.base + inner.texts.len() as u64,
            ..entry
        };
        reserve(&mut inner.texts, entry.text_len());
        for text in texts {
            inner.texts.extend(text.as_bytes());
        }
        reserve(&mut inner.entries, 1);
        inner.entries.push_back(entry);
    }

    /// Newest first; the cursor of the next page when there is more. A
    /// page ends early once it holds [`PAGE_BYTES`] of text.
    pub fn list(&self, q: &Query) -> (Vec<UpstreamCall>, Option<u64>) {
        let limit = q.limit.clamp(1, 1000);
        let mut found = Vec::new();
        let mut texts = Vec::new();
        let mut next = None;
        {
            let inner = self.inner.lock();
            for entry in inner.entries.iter().rev() {
                if q.before.is_some_and(|b| entry.seq >= b) {
                    continue;
                }
                if q.since.is_some_and(|s| entry.at < s) {
                    break;
                }
                let matches = q.rpc.as_deref().is_none_or(|r| r == entry.rpc)
                    && q.caller.as_deref().is_none_or(|c| c == &*entry.caller)
                    && q.status_class.is_none_or(|c| entry.status / 100 == c);
                if !matches {
                    continue;
                }
                let full = texts.len() + entry.text_len() > PAGE_BYTES && !found.is_empty();
                if found.len() == limit || full {
                    next = Some(entry.seq + 1);
                    break;
                }
                if inner.copy_texts(entry, &mut texts) {
                    found.push(entry.clone());
                }
            }
        }
        // Cut into strings after the lock is released.
        let mut at = 0;
        let calls = found
            .into_iter()
            .map(|entry| {
                let len = entry.text_len();
                let call = expand(entry, texts.get(at..at + len).unwrap_or_default());
                at += len;
                call
            })
            .collect();
        (calls, next)
    }

    /// Whether anything is kept (a zero bound turns the log off).
    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }

    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `body` as JSON text with every field named in `fields` or
/// [`ALWAYS_REDACTED`] replaced, at any depth, and every value in `values`
/// scrubbed from what remains. A body that is not JSON is not kept, nor one
/// over [`MAX_KEPT_BODY`] (not parsed either): a note of its size instead.
pub fn redact(body: &[u8], fields: &[&str], values: &[SecretString]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let too_big = || {
        format!(
            "[{} bytes, over the request log's {MAX_KEPT_BODY}: not kept]",
            body.len()
        )
    };
    if body.len() > MAX_KEPT_BODY {
        return too_big();
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
    // Redaction can lengthen a body a little.
    if text.len() > MAX_KEPT_BODY {
        return too_big();
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
        // Each `call` holds "GET" and "r": 4 bytes of text.
        let small = RequestLog::new(100, 2 * (std::mem::size_of::<Entry>() + 4));
        for _ in 0..10 {
            small.record(call("a", 200));
        }
        assert_eq!(small.len(), 2);
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_and_a_burst_is_given_back() {
        let log = RequestLog::new(100, 64 << 20);
        let big = "x".repeat(PAGE_BYTES / 3);
        for _ in 0..7 {
            let mut c = call("r", 200);
            c.response_body = big.clone();
            log.record(c);
        }
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let (page, next) = log.list(&Query {
                limit: 100,
                before,
                ..Query::default()
            });
            assert!(!page.is_empty() && page.len() <= 3, "{} calls", page.len());
            assert!(page.iter().all(|c| c.response_body == big));
            seen.extend(page.iter().map(|c| c.seq));
            match next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (0..7).rev().collect::<Vec<u64>>());
        // A body over MAX_KEPT_BODY is kept as a note of its size.
        let mut huge = call("r", 200);
        let body = format!("{{\"y\":\"{}\"}}", "y".repeat(MAX_KEPT_BODY));
        huge.response_body = redact(body.as_bytes(), &[], &[]);
        log.record(huge);
        let (page, _) = log.list(&Query {
            limit: 1,
            ..Query::default()
        });
        assert_eq!(
            page[0].response_body,
            format!(
                "[{} bytes, over the request log's {MAX_KEPT_BODY}: not kept]",
                body.len()
            )
        );
        // Small calls push the burst out; the ring shrinks back.
        for _ in 0..100 {
            log.record(call("r", 200));
        }
        let inner = log.inner.lock();
        assert!(
            inner.texts.capacity() <= 4 * inner.texts.len() + (1 << 20),
            "capacity {}",
            inner.texts.capacity()
        );
    }

    #[test]
    fn texts_come_back_whole_after_the_ring_wraps_and_it_stays_small() {
        let log = RequestLog::new(50, 1 << 20);
        let body = |i: usize| format!("{{\"id\":\"c_{i}\",\"pad\":\"{}\"}}", "x".repeat(i % 97));
        for i in 0..1000 {
            let mut c = call("r", if i % 3 == 0 { 0 } else { 200 });
            c.error = (i % 3 == 0).then(|| format!("reset {i}"));
            c.request_id = format!("req-{i}").into();
            c.trace_id = format!("{i:032x}");
            c.request_body = if i % 2 == 0 {
                body(i + 1)
            } else {
                String::new()
            };
            c.response_body = body(i);
            log.record(c);
        }
        let (page, _) = log.list(&Query {
            limit: 1000,
            ..Query::default()
        });
        assert_eq!(page.len(), 50);
        for c in page {
            let i = usize::try_from(c.seq).unwrap();
            assert_eq!(c.method, "GET");
            assert_eq!(c.error, (i % 3 == 0).then(|| format!("reset {i}")));
            assert_eq!(&*c.request_id, format!("req-{i}"));
            assert_eq!(c.trace_id, format!("{i:032x}"));
            let req = if i % 2 == 0 {
                body(i + 1)
            } else {
                String::new()
            };
            assert_eq!(c.request_body, req);
            assert_eq!(c.response_body, body(i));
        }
        let inner = log.inner.lock();
        let live = inner.texts.len();
        // Grown a quarter at a time: little slack for the ring to touch.
        assert!(
            inner.texts.capacity() <= live + live / 2 + 256,
            "{live} live, capacity {}",
            inner.texts.capacity()
        );
        assert_eq!(
            inner.bytes(),
            inner.entries.iter().map(Entry::size).sum::<usize>()
        );
    }
}

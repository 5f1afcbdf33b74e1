//! The emulator's clock, as Imprint writes it. A leaf, so that the error
//! envelopes in `http` can stamp their time without reaching up into `mod`.

/// Now, as Imprint writes timestamps.
pub(super) fn now_rfc3339() -> String {
    crate::json::ser::format_timestamp(&now_ts()).unwrap_or_default()
}

pub(super) fn now_ts() -> prost_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Millisecond precision, like Imprint.
    prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: (now.subsec_millis() * 1_000_000) as i32,
    }
}

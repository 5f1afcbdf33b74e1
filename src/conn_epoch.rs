//! A count of the gRPC server's connection I/O, process-wide: bumped each
//! time a connection task reads or writes its socket (the connection types
//! of [`crate::server`] and [`crate::tls`]), read by the event streams
//! (`events::subscribe`) to tell whether a connection task has run since
//! one of them last pushed it back in the run queue.
//!
//! A scheduling hint only: nothing depends on it for correctness. It is a
//! plain load and store, not an atomic add: two bumps racing may count as
//! one, and all a reader asks is whether it changed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static POLLS: AtomicU64 = AtomicU64::new(0);

/// A connection task is touching its socket.
#[inline]
pub fn bump() {
    POLLS.store(POLLS.load(Relaxed).wrapping_add(1), Relaxed);
}

/// The count now.
#[inline]
pub fn now() -> u64 {
    POLLS.load(Relaxed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bump_changes_the_count() {
        let before = super::now();
        super::bump();
        assert_ne!(super::now(), before);
    }
}

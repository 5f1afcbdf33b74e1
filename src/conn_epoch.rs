//! A count of the gRPC server's connection tasks touching their sockets,
//! process-wide: bumped when a connection reads or writes (the connection
//! types of [`crate::server`] and [`crate::tls`]), read by the event
//! streams (`events::subscribe`) to tell whether a connection task may have
//! run since a stream on their thread last pushed it back in the run queue.
//!
//! A scheduling hint only: nothing depends on it for correctness. The
//! count moves only once a stream has seen its current value, so a server
//! with no event streams pays two loads per socket operation, and never
//! writes the shared line; plain loads and stores, no atomic read-modify-
//! write: two bumps racing may count as one, and a reader only asks whether
//! the count changed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static COUNT: AtomicU64 = AtomicU64::new(0);
/// The last value a stream saw.
static SEEN: AtomicU64 = AtomicU64::new(0);

/// A connection task is touching its socket.
#[inline]
pub fn bump() {
    let now = COUNT.load(Relaxed);
    if SEEN.load(Relaxed) == now {
        COUNT.store(now.wrapping_add(1), Relaxed);
    }
}

/// The count now, marked as seen (so that the next socket operation moves
/// it).
#[inline]
pub fn see() -> u64 {
    let now = COUNT.load(Relaxed);
    if SEEN.load(Relaxed) != now {
        SEEN.store(now, Relaxed);
    }
    now
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_socket_operation_after_a_look_moves_the_count() {
        let seen = super::see();
        super::bump();
        assert_ne!(super::see(), seen);
    }
}

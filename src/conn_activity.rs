//! Whether a gRPC connection's task has touched its socket since one of its
//! Subscribe streams last looked: set by the connection's I/O type
//! ([`crate::server::Unvectored`], [`crate::tls::TlsConn`]), carried in its
//! connect info ([`crate::tls::PeerInfo`], on either listener), taken by the
//! event streams (`events::subscribe`) to tell whether their frame is the
//! one that wakes the HTTP/2 connection task, which they then push back in
//! tokio's run queue.
//!
//! A scheduling hint only: nothing depends on it for correctness. Plain
//! loads and stores, no atomic read-modify-write: the connection only
//! writes the flag when a stream has cleared it, so a connection without
//! event streams pays one load per socket operation.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// One connection's flag; see the module docs.
#[derive(Debug)]
pub struct Activity {
    touched: AtomicBool,
}

impl Default for Activity {
    /// Touched: the first stream to look pushes the connection back.
    fn default() -> Self {
        Self {
            touched: AtomicBool::new(true),
        }
    }
}

impl Activity {
    /// The connection task is reading or writing its socket.
    #[inline]
    pub fn touch(&self) {
        if !self.touched.load(Relaxed) {
            self.touched.store(true, Relaxed);
        }
    }

    /// Whether the connection touched its socket since the last `take`.
    #[inline]
    pub fn take(&self) -> bool {
        let touched = self.touched.load(Relaxed);
        if touched {
            self.touched.store(false, Relaxed);
        }
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::Activity;

    #[test]
    fn taken_once_per_touch() {
        let a = Activity::default();
        assert!(a.take(), "a new connection counts as touched");
        assert!(!a.take());
        a.touch();
        a.touch();
        assert!(a.take());
        assert!(!a.take());
    }
}

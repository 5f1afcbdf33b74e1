//! Whether a gRPC connection's task has touched its socket since one of its
//! Subscribe streams last looked: set by the connection's I/O type
//! ([`crate::server::Unvectored`], [`crate::tls::TlsConn`]), taken by the
//! event streams (`events::subscribe`) to tell whether their frame is the
//! one that wakes the HTTP/2 connection task, which they then push back in
//! tokio's run queue.
//!
//! A scheduling hint only: nothing depends on it for correctness. Plain
//! loads and stores, no atomic read-modify-write: the connection only
//! writes the flag when a stream has cleared it, so a connection without
//! event streams pays one load per socket operation.

use std::sync::{
    atomic::{AtomicBool, Ordering::Relaxed},
    Arc,
};

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

/// The connect info of a plaintext gRPC connection (in every request's
/// extensions): tonic's, and the connection's activity. TLS connections
/// carry theirs in [`crate::tls::PeerInfo`]. tonic's
/// `Request::remote_addr()` looks for `TcpConnectInfo` itself and so finds
/// nothing on these connections: read the peer from `tcp` here (as the
/// auth layer does).
#[derive(Debug, Clone)]
pub struct TcpPeer {
    pub tcp: tonic::transport::server::TcpConnectInfo,
    pub activity: Arc<Activity>,
}

/// How a Subscribe stream finds its connection's activity in the request's
/// extensions (set by the server, which knows the connect info types).
pub type Finder = fn(&http::Extensions) -> Option<Arc<Activity>>;

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

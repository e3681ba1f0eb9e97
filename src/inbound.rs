//! Ways requests come in besides our own listener: a socket we open to the chat platform
//! (Slack's Socket Mode). Whether it is wanted and how many of its connections are up, for
//! `/readyz` and the metrics; the edge that owns the socket keeps it current.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Inbound {
    /// Whether a socket is configured at all.
    wanted: bool,
    /// Connections that have said hello and not yet ended.
    live: AtomicUsize,
}

impl Inbound {
    pub fn new(wanted: bool) -> Self {
        Self {
            wanted,
            live: AtomicUsize::new(0),
        }
    }

    pub fn wanted(&self) -> bool {
        self.wanted
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// One more connection is up, until the returned guard is dropped.
    pub fn connected(&self) -> Connected<'_> {
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("pantheon_socket_connections").set(now as f64);
        Connected(self)
    }
}

/// A live connection, counted in [`Inbound::live`] while it is held.
#[derive(Debug)]
pub struct Connected<'a>(&'a Inbound);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        let now = self.0.live.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        metrics::gauge!("pantheon_socket_connections").set(now as f64);
    }
}

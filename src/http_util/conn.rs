//! What one client connection tells every request it carries: the peer and what the IO
//! sniffer saw. The server fills it in; the cache, coalescing and forwarding read it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::time::Instant;

/// Per-connection facts handed to every request in its extensions.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// What the IO sniffer saw.
    pub state: Arc<ConnState>,
    /// The client's IP as a header value, formatted once per connection (`X-Forwarded-For`).
    pub peer_value: http::HeaderValue,
}

/// What the sniffer has seen on one connection; shared with the connection's requests.
#[derive(Debug)]
pub struct ConnState {
    /// A header block had both Transfer-Encoding and Content-Length.
    pub te_and_cl: AtomicBool,
    /// The connection speaks HTTP/2.
    pub h2: AtomicBool,
    /// Milliseconds since `epoch` of the last read or write.
    last_io_ms: AtomicU64,
    /// Asks the connection's task to close it at once (a reader cut off for lagging).
    pub close: tokio::sync::Notify,
    /// Requests of this connection waiting for their response head.
    pub requests: AtomicUsize,
    /// Fetches this connection's clients left that go on to be stored.
    pub detached: AtomicUsize,
    /// Requests and detached fetches together at most (`http2_max_concurrent_streams`).
    pub stream_limit: AtomicUsize,
    /// The listener's count of HTTP/2 streams reset by their client.
    pub streams_reset: Arc<AtomicU64>,
    epoch: Instant,
}

impl ConnState {
    /// A fresh state.
    pub fn new() -> Self {
        Self {
            te_and_cl: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            last_io_ms: AtomicU64::new(0),
            close: tokio::sync::Notify::new(),
            requests: AtomicUsize::new(0),
            detached: AtomicUsize::new(0),
            stream_limit: AtomicUsize::new(usize::MAX),
            streams_reset: Arc::default(),
            epoch: Instant::now(),
        }
    }

    /// Notes that a byte moved now.
    pub(crate) fn touch(&self) {
        self.last_io_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A fresh state counting reset streams in `resets` (the listener's counter).
    pub fn counting_resets_in(resets: Arc<AtomicU64>) -> Self {
        Self {
            streams_reset: resets,
            ..Self::new()
        }
    }

    /// Takes a slot for a fetch that goes on after its last client on this connection left;
    /// false when the connection's requests and such fetches already fill its stream limit.
    pub fn detach(&self) -> bool {
        let limit = self.stream_limit.load(Ordering::Relaxed);
        let busy = self.requests.load(Ordering::Relaxed);
        self.detached
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d.saturating_add(busy) < limit).then_some(d + 1)
            })
            .is_ok()
    }

    /// Time since the last byte moved.
    pub fn idle_for(&self) -> std::time::Duration {
        let last = self.last_io_ms.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(last))
    }
}

impl Default for ConnState {
    fn default() -> Self {
        Self::new()
    }
}

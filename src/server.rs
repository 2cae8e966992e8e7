//! Data-plane accept loops: HTTP/1.1 + h2c in cleartext, HTTP/2 or HTTP/1.1 by ALPN over TLS
//! (`tls`), connection cap, idle timeout, slowloris and rapid-reset guards, and the drain phases.

pub(crate) mod sniff;
pub(crate) mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use crate::body::ProxyBody;
use crate::config::file::ServerSection;
use crate::telemetry::metrics::{OnScrape, set_counter};
use sniff::{ConnState, Sniff};
pub(crate) use tls::TlsServer;

/// Lifecycle phase shared by the listener, the connections and `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Normal operation.
    Serving,
    /// Not ready; still accepting; HTTP/1 responses carry `Connection: close`, HTTP/2 gets GOAWAY.
    Draining,
    /// Drained without exiting (`POST /admin/drain`): open connections were asked to close;
    /// new ones are still served, one request each. `POST /admin/drain/cancel` goes back to
    /// `Serving` from here or from `Draining`.
    Drained,
    /// No longer accepting; connections are asked to finish.
    Closing,
}

/// The phase channel, and the listener's counters.
#[derive(Debug)]
pub struct Lifecycle {
    tx: watch::Sender<Phase>,
    /// Set once shutdown began (SIGTERM): a drain that ends in exit cannot be cancelled.
    exiting: AtomicBool,
    /// Bumped by each cancelled drain, so a cancelled drain's delay timer does nothing.
    epoch: AtomicU64,
    /// HTTP/2 request streams the client reset before their response ended.
    pub h2_streams_reset: Arc<AtomicU64>,
}

/// Why `Lifecycle::cancel_drain` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShuttingDown;

impl Lifecycle {
    /// Starts in `Serving`.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(Phase::Serving),
            exiting: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            h2_streams_reset: Arc::default(),
        }
    }

    /// Registers `seawall_h2_streams_reset_total`, read from the listener's counter at scrape
    /// time.
    pub(crate) fn register_metrics(&self, r: &prometheus::Registry) -> prometheus::Result<()> {
        let h2_streams_reset = prometheus::IntCounter::new(
            "seawall_h2_streams_reset_total",
            "HTTP/2 request streams the client reset (RST_STREAM) before their response ended.",
        )?;
        let resets = self.h2_streams_reset.clone();
        OnScrape::register(r, vec![Box::new(h2_streams_reset.clone())], move || {
            set_counter(&h2_streams_reset, resets.load(Ordering::Relaxed));
        })
    }

    /// Begins the shutdown that ends in exit (`Draining`, never cancelled).
    pub fn begin_shutdown(&self) {
        self.exiting.store(true, Ordering::SeqCst);
        self.advance(Phase::Draining);
    }

    /// The current drain epoch, for `advance_in_epoch`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Like `advance`, unless a drain was cancelled since `epoch` was read.
    pub fn advance_in_epoch(&self, epoch: u64, p: Phase) {
        self.tx.send_if_modified(|cur| {
            // Under the channel's lock, so a cancel cannot slip between check and change.
            if self.epoch.load(Ordering::SeqCst) != epoch || p as u8 <= *cur as u8 {
                return false;
            }
            *cur = p;
            true
        });
    }

    /// Undoes a drain started by `POST /admin/drain`: back to `Serving`. Returns the phase it
    /// left (`None` when nothing was draining), or `ShuttingDown` once shutdown began.
    pub fn cancel_drain(&self) -> Result<Option<Phase>, ShuttingDown> {
        let mut result = Ok(None);
        self.tx.send_if_modified(|cur| {
            if self.exiting.load(Ordering::SeqCst) || *cur == Phase::Closing {
                result = Err(ShuttingDown);
                return false;
            }
            if *cur == Phase::Serving {
                return false;
            }
            self.epoch.fetch_add(1, Ordering::SeqCst);
            result = Ok(Some(*cur));
            *cur = Phase::Serving;
            true
        });
        result
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    /// Moves forward to `p` (never backwards; only `cancel_drain` goes back).
    pub fn advance(&self, p: Phase) {
        self.tx.send_if_modified(|cur| {
            let rank = |p: Phase| p as u8;
            if rank(p) > rank(*cur) {
                *cur = p;
                true
            } else {
                false
            }
        });
    }

    /// A receiver for phase changes.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.tx.subscribe()
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) use crate::http_util::conn::ConnInfo;

/// Counts an HTTP/2 request dropped before its response head.
struct StreamGuard {
    h2: bool,
    open: bool,
    conn: Arc<ConnState>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.conn.requests.fetch_sub(1, Ordering::Relaxed);
        // The client reset the stream (RST_STREAM, RFC 9113 §5.4.2, §8.7) or dropped its
        // connection before the response head: hyper drops the request's service future.
        if self.h2 && self.open {
            self.conn.streams_reset.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn builder(cfg: &ServerSection, keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(keep_alive)
        .max_buf_size((cfg.max_header_size as usize).max(8192))
        .max_headers(cfg.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(cfg.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(1024))
        .max_header_list_size(cfg.max_header_size as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves `listener` until the lifecycle reaches `Closing`, then waits for the connections
/// (the caller bounds that wait with the grace period). With `tls`, each connection's task
/// runs the TLS handshake first, so a slow handshake never holds up the accept loop.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    svc: S,
    cfg: ServerSection,
    lifecycle: Arc<Lifecycle>,
    tls: Option<Arc<TlsServer>>,
) -> TaskTracker
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conns = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let normal = builder(&cfg, true);
    let draining = builder(&cfg, false);
    let mut phase = lifecycle.subscribe();
    let listener_ctx = |b: &auto::Builder<TokioExecutor>, rx, one_shot: bool| Listener {
        builder: b.clone(),
        svc: svc.clone(),
        rx,
        idle_timeout: cfg.keepalive_timeout,
        stream_limit: cfg.http2_max_concurrent_streams as usize,
        one_shot,
        resets: lifecycle.h2_streams_reset.clone(),
        tls: tls.clone(),
    };
    loop {
        if *phase.borrow() == Phase::Closing {
            break;
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = phase.changed() => continue,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = phase.changed() => continue,
        };
        let serving = *phase.borrow() == Phase::Serving;
        let b = if serving { &normal } else { &draining };
        spawn_conn(
            &conns,
            stream,
            peer,
            Some(permit),
            listener_ctx(b, phase.clone(), !serving),
        );
    }
    // Connections the kernel already completed would be reset if the listener just went away:
    // serve each of them one request (they asked before we stopped). Accepted straight from
    // the socket until it would block: the reactor may not have reported them yet, and a
    // tokio accept would then say "pending" and leave them to be reset.
    let backlog = listener
        .into_std()
        .map(|l| std::iter::from_fn(move || l.accept().ok()));
    for (stream, peer) in backlog.into_iter().flatten() {
        let Ok(stream) = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        else {
            continue;
        };
        spawn_conn(
            &conns,
            stream,
            peer,
            None,
            listener_ctx(&draining, phase.clone(), true),
        );
    }
    conns.close();
    conns
}

/// What every connection of one listener is served with.
struct Listener<S> {
    builder: auto::Builder<TokioExecutor>,
    svc: S,
    rx: watch::Receiver<Phase>,
    idle_timeout: Duration,
    stream_limit: usize,
    /// Accepted while draining: answer one HTTP/1 request with `Connection: close`, and never
    /// shut down before that request was read.
    one_shot: bool,
    resets: Arc<AtomicU64>,
    tls: Option<Arc<TlsServer>>,
}

/// Serves one connection in its own task: the TLS handshake first on a TLS listener (HTTP/2
/// when ALPN chose `h2`, else HTTP/1.1), then the same HTTP serving as a cleartext one.
fn spawn_conn<S>(
    conns: &TaskTracker,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    l: Listener<S>,
) where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _ = stream.set_nodelay(true);
    conns.spawn(async move {
        let _permit = permit;
        match l.tls.clone() {
            None => serve_conn(stream, peer, None, l).await,
            Some(tls) => {
                let Some((stream, facts)) = tls.handshake(stream, peer).await else {
                    return;
                };
                let mut l = l;
                l.builder = if facts.alpn == "h2" {
                    l.builder.http2_only()
                } else {
                    l.builder.http1_only()
                };
                serve_conn(stream, peer, Some(Arc::new(facts)), l).await;
            }
        }
    });
}

/// Serves HTTP on one (cleartext or decrypted) stream until it ends, the drain closes it or
/// it stays idle past the keep-alive timeout.
async fn serve_conn<I, S>(
    io: I,
    peer: SocketAddr,
    tls: Option<Arc<crate::http_util::conn::TlsConn>>,
    l: Listener<S>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Listener {
        builder: b,
        svc,
        mut rx,
        idle_timeout,
        stream_limit,
        one_shot,
        resets,
        tls: _,
    } = l;
    let state = Arc::new(ConnState::counting_resets_in(resets));
    state.stream_limit.store(stream_limit, Ordering::Relaxed);
    let state_for_requests = state.clone();
    let info = ConnInfo {
        peer,
        state: state.clone(),
        peer_value: crate::http_util::ip_value(peer.ip()),
        tls,
    };
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let h2 = req.version() == http::Version::HTTP_2;
        let fut = svc.clone().oneshot(req);
        let conn = state_for_requests.clone();
        conn.requests.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut stream = StreamGuard {
                h2,
                open: true,
                conn,
            };
            let res = fut.await;
            stream.open = false;
            res
        }
    });
    let io = TokioIo::new(Sniff::new(io, state.clone()));
    let conn = b.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut watching = true;
    let mut shut = false;
    let tick = idle_timeout.clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, peer = %peer, "Connection ended with an error.");
                }
                break;
            }
            c = rx.changed(), if watching => {
                if c.is_err() {
                    watching = false;
                    continue;
                }
                let p = *rx.borrow();
                let h2 = state.h2.load(std::sync::atomic::Ordering::Relaxed);
                // A one-shot HTTP/1 connection closes by itself after its answer; shutting
                // it down early would reset a request already on the wire.
                let closes_itself = one_shot && !h2;
                if !shut
                    && !closes_itself
                    && (p == Phase::Closing || p == Phase::Drained || (p == Phase::Draining && h2))
                {
                    shut = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            // Its client stopped reading a shared body and fell too far behind.
            _ = state.close.notified() => break,
            _ = tokio::time::sleep(tick), if !shut => {
                if state.idle_for() >= idle_timeout {
                    shut = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

//! Extra helpers for the cache and coalescing tests: configs with route and section options,
//! waiting for fills and stores to settle, `Cache-Status` parsing, concurrent bursts, and an
//! origin whose streamed body is held at a gate the test opens.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::support::{Answer, MockResponse, TestProxy, WAIT, bounded, request};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A config with sections before the upstream (`top`, e.g. `[cache]` lines), lines in the
/// `[[upstreams]]` table (`upstream_extra`) and lines in the catch-all `[[routes]]` table
/// (`route_extra`). The breaker is off unless `upstream_extra` configures it, so tests that
/// make the origin fail a few times are not disturbed by it.
pub fn config(origin_url: &str, top: &str, upstream_extra: &str, route_extra: &str) -> String {
    let breaker = if upstream_extra.contains("[upstreams.breaker]") {
        String::new()
    } else {
        "[upstreams.breaker]\nenabled = false\n".to_string()
    };
    format!(
        "{top}\n\n[[upstreams]]\nname = \"origin\"\nendpoints = [{origin_url:?}]\n\
         {upstream_extra}\n{breaker}\n[[routes]]\nupstream = \"origin\"\n{route_extra}\n"
    )
}

/// The origin's `Date`, kept in step with the proxy's freshness clock. `advance` moves only
/// Seawall's clock; an origin stamping real time would then look that much behind, and every
/// response it sends afterwards would arrive already aged (RFC 9111 §4.2.3 apparent age).
/// Routes wrapped in [`dated`] stamp the proxy's clock instead, as if time passed for both.
#[derive(Clone, Default)]
pub struct OriginDate(Arc<std::sync::OnceLock<Arc<seawall::state::AppState>>>);

impl OriginDate {
    /// Follows `proxy`'s clock from now on.
    pub fn link(&self, proxy: &TestProxy) {
        let _ = self.0.set(proxy.running().state.clone());
    }

    /// `Date` value for now on the proxy's clock (real time before `link`).
    pub fn now(&self) -> String {
        let t = self
            .0
            .get()
            .map_or_else(std::time::SystemTime::now, |s| s.cache().clock.now());
        httpdate::fmt_http_date(t)
    }
}

/// `route` with a `Date` from `date`.
pub fn dated<F>(
    date: &OriginDate,
    route: F,
) -> impl Fn(&http::request::Parts, &Bytes) -> MockResponse + Send + Sync + 'static
where
    F: Fn(&http::request::Parts, &Bytes) -> MockResponse + Send + Sync + 'static,
{
    let date = date.clone();
    move |parts, body| route(parts, body).header("date", &date.now())
}

/// Polls `cond` every 5 ms until it holds; panics after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Waits until no coalesced fetch is in flight: every fill has ended and, when it was
/// storable, its entry is in the store (the flight is removed only after that).
pub async fn settle(proxy: &TestProxy) {
    let st = proxy.running().state.clone();
    wait_until("no flights in progress", || st.coalesce().flights() == 0).await;
}

/// The primary cache key of `path_and_query` requested through `proxy` with the default Host.
pub fn key_of(proxy: &TestProxy, path_and_query: &str) -> Arc<str> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    seawall::cache::key::build_key(&proxy.addr.to_string(), path, query, &[])
}

/// Whether something is stored for `path_and_query` (default Host).
pub fn is_stored(proxy: &TestProxy, path_and_query: &str) -> bool {
    proxy
        .running()
        .state
        .cache()
        .store
        .variants(&key_of(proxy, path_and_query))
        .is_some()
}

/// Waits (bounded) until something is stored for `path_and_query`.
pub async fn wait_stored(proxy: &TestProxy, path_and_query: &str) {
    wait_until(&format!("{path_and_query} stored"), || {
        is_stored(proxy, path_and_query)
    })
    .await;
}

/// The stored body for `path_and_query` (first variant), if any.
pub fn stored_body(proxy: &TestProxy, path_and_query: &str) -> Option<Bytes> {
    proxy
        .running()
        .state
        .cache()
        .store
        .variants(&key_of(proxy, path_and_query))
        .and_then(|v| v.entries.first().map(|e| e.body.clone()))
}

/// Moves the proxy's freshness clock forward.
pub fn advance(proxy: &TestProxy, secs: u64) {
    proxy
        .running()
        .state
        .cache()
        .clock
        .advance(Duration::from_secs(secs));
}

/// GET `url` over HTTP/1.1 with extra request headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    request(b.body(Full::default()).unwrap()).await
}

/// A header as text, or "" when absent.
pub fn hv(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The `ttl=` of a `Cache-Status` value.
pub fn ttl_of(cache_status: &str) -> i64 {
    cache_status
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl in {cache_status:?}"))
        .parse()
        .unwrap()
}

/// The `Age` header as a number (panics when absent).
pub fn age_of(h: &HeaderMap) -> u64 {
    h.get("age")
        .unwrap_or_else(|| panic!("no Age: {h:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `n` copies of `f(i)` concurrently and returns their outputs in index order; the whole
/// burst is bounded by [`WAIT`] times three.
pub async fn burst<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let all = async {
        let mut out = Vec::with_capacity(n);
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    };
    match tokio::time::timeout(WAIT * 3, all).await {
        Ok(v) => v,
        Err(_) => panic!("burst of {n} requests timed out"),
    }
}

/// An origin serving one streamed body: `before` chunks at once, then nothing until the test
/// opens the gate, then `after` chunks. Counts requests and records when the last chunk was
/// handed to the connection.
pub struct GatedOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicU64>,
    /// Set when the last chunk has been produced.
    pub finished: Arc<AtomicBool>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GatedOrigin {
    /// Starts it on 127.0.0.1:0 with `headers` on every response.
    pub async fn start(
        before: Vec<Bytes>,
        after: Vec<Bytes>,
        headers: Vec<(&'static str, &'static str)>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        let (gate, _) = watch::channel(false);
        let (h, f, g) = (hits.clone(), finished.clone(), gate.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((stream, _)) = r else { continue };
                        let (h, f, g) = (h.clone(), f.clone(), g.clone());
                        let (before, after, headers) =
                            (before.clone(), after.clone(), headers.clone());
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |_req| {
                                h.fetch_add(1, Ordering::SeqCst);
                                let res = gated_response(
                                    before.clone(),
                                    after.clone(),
                                    &headers,
                                    g.subscribe(),
                                    f.clone(),
                                );
                                async move { Ok::<_, Infallible>(res) }
                            });
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self {
            addr,
            hits,
            finished,
            gate,
            task,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets the rest of the body go.
    pub fn open(&self) {
        self.gate.send_replace(true);
    }
}

impl Drop for GatedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn gated_response(
    before: Vec<Bytes>,
    after: Vec<Bytes>,
    headers: &[(&'static str, &'static str)],
    gate: watch::Receiver<bool>,
    finished: Arc<AtomicBool>,
) -> Response<BoxBody<Bytes, BoxError>> {
    let n_before = before.len();
    let chunks: Vec<Bytes> = before.into_iter().chain(after).collect();
    let total = chunks.len();
    let stream = futures_util::stream::unfold(
        (chunks.into_iter(), 0usize, gate),
        move |(mut it, i, mut gate)| {
            let finished = finished.clone();
            async move {
                if i == n_before {
                    // Bounded: a test that never opens the gate fails instead of hanging.
                    let _ = tokio::time::timeout(WAIT, gate.wait_for(|o| *o)).await;
                }
                let c = it.next()?;
                if i + 1 == total {
                    finished.store(true, Ordering::SeqCst);
                }
                Some((Ok::<_, BoxError>(Frame::data(c)), (it, i + 1, gate)))
            }
        },
    );
    let mut res = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    for (k, v) in headers {
        res.headers_mut().append(*k, v.parse().unwrap());
    }
    res
}

/// Stops `origin` and waits (bounded) until its port refuses connections.
pub async fn stop(origin: crate::support::MockOrigin) {
    let addr = origin.addr();
    drop(origin);
    crate::support::bounded("origin port closed", async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

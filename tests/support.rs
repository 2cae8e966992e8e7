//! Shared helpers for the integration tests: a scriptable mock origin, raw-TCP origins, a started
//! Seawall on loopback, small HTTP clients (HTTP/1.1 and h2c) and a raw-bytes exchange.
//! Every network wait is bounded with `tokio::time::timeout`.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use seawall::app::Running;
use seawall::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound for any single network wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Upper bound for a raw exchange (read until close or this long).
pub const RAW_WAIT: Duration = Duration::from_secs(3);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Awaits `f` for at most [`WAIT`], panicking with `what` on timeout.
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=seawall=debug`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

// ---------------------------------------------------------------------------------------------
// Mock origin
// ---------------------------------------------------------------------------------------------

/// One scripted answer of the mock origin.
#[derive(Clone, Debug)]
pub struct MockResponse {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    delay: Duration,
    chunks: Option<(Vec<Bytes>, Duration)>,
    reset_after: Option<usize>,
}

impl MockResponse {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            chunks: None,
            reset_after: None,
        }
    }

    /// Empty body with `status`.
    pub fn with_status(status: u16) -> Self {
        Self::ok(Bytes::new()).status(status)
    }

    /// Sets the status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = StatusCode::from_u16(status).unwrap();
        self
    }

    /// Appends a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        ));
        self
    }

    /// Waits `ms` milliseconds before sending the response head.
    pub fn delay(mut self, ms: u64) -> Self {
        self.delay = Duration::from_millis(ms);
        self
    }

    /// Streams `chunks` (chunked encoding, no Content-Length) with `gap_ms` between chunks.
    pub fn chunked(mut self, chunks: Vec<Bytes>, gap_ms: u64) -> Self {
        self.chunks = Some((chunks, Duration::from_millis(gap_ms)));
        self
    }

    /// Announces the full body's Content-Length, sends only its first `n` bytes, then drops
    /// the connection.
    pub fn reset_after(mut self, n: usize) -> Self {
        self.reset_after = Some(n);
        self
    }

    fn into_response(self) -> Response<BoxBody<Bytes, BoxError>> {
        let body: BoxBody<Bytes, BoxError> = if let Some(n) = self.reset_after {
            let prefix = self.body.slice(..n.min(self.body.len()));
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let prefix = prefix.clone();
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(prefix)), 1)),
                        1 => {
                            // Let the prefix reach the wire before the connection is dropped.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Some((Err::<Frame<Bytes>, BoxError>("mock reset".into()), 2))
                        }
                        _ => None,
                    }
                }
            });
            BodyExt::boxed(StreamBody::new(stream))
        } else if let Some((chunks, gap)) = self.chunks {
            let stream = futures_util::stream::unfold(
                (chunks.into_iter(), true),
                move |(mut it, first)| async move {
                    let c = it.next()?;
                    if !first && !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    Some((Ok::<_, BoxError>(Frame::data(c)), (it, false)))
                },
            );
            BodyExt::boxed(StreamBody::new(stream))
        } else {
            Full::new(self.body.clone())
                .map_err(|e: Infallible| match e {})
                .boxed()
        };
        let mut res = Response::new(body);
        *res.status_mut() = self.status;
        for (k, v) in self.headers {
            res.headers_mut().append(k, v);
        }
        if self.reset_after.is_some() {
            res.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(self.body.len()),
            );
        }
        res
    }
}

type Handler = Arc<dyn Fn(&http::request::Parts, &Bytes) -> MockResponse + Send + Sync>;

/// What a route answers: a fixed response or a closure over the request.
#[derive(Clone)]
pub enum MockRoute {
    /// Always the same answer.
    Fixed(MockResponse),
    /// Computed per request.
    Dynamic(Handler),
}

/// Anything usable as a route.
pub trait IntoRoute {
    /// The route.
    fn into_route(self) -> MockRoute;
}

impl IntoRoute for MockResponse {
    fn into_route(self) -> MockRoute {
        MockRoute::Fixed(self)
    }
}

impl<F> IntoRoute for F
where
    F: Fn(&http::request::Parts, &Bytes) -> MockResponse + Send + Sync + 'static,
{
    fn into_route(self) -> MockRoute {
        MockRoute::Dynamic(Arc::new(self))
    }
}

/// A request as the origin received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: Method,
    /// Request target.
    pub uri: Uri,
    /// Version on the origin's side.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body (empty when reading it failed).
    pub body: Bytes,
    /// Whether reading the body failed.
    pub body_error: bool,
}

struct OriginState {
    routes: HashMap<String, MockRoute>,
    hits: Mutex<HashMap<String, u64>>,
    total: watch::Sender<u64>,
    received: Mutex<Vec<Recorded>>,
    connections: std::sync::atomic::AtomicU64,
}

/// Builder for [`MockOrigin`].
#[derive(Default)]
pub struct MockOriginBuilder {
    routes: HashMap<String, MockRoute>,
}

impl MockOriginBuilder {
    /// Answers `path` (exact match, query ignored) with `route`.
    pub fn route(mut self, path: &str, route: impl IntoRoute) -> Self {
        self.routes.insert(path.to_string(), route.into_route());
        self
    }

    /// Binds 127.0.0.1:0 and starts serving (HTTP/1.1 and h2c).
    pub async fn start(self) -> MockOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState {
            routes: self.routes,
            hits: Mutex::new(HashMap::new()),
            total: watch::Sender::new(0),
            received: Mutex::new(Vec::new()),
            connections: std::sync::atomic::AtomicU64::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task ends them too.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((stream, _)) = r else { continue };
                        st.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let st = st.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let st = st.clone();
                                async move { Ok::<_, Infallible>(handle(&st, req).await) }
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
        MockOrigin { addr, state, task }
    }
}

/// A mock origin and a Seawall in front of it: the fixture most tests start from.
pub struct Scene {
    /// The origin (counts what reached it).
    pub origin: MockOrigin,
    /// The proxy.
    pub proxy: TestProxy,
}

impl MockOriginBuilder {
    /// Starts the origin, then a proxy in front of it on the default test config.
    pub async fn behind_proxy(self) -> Scene {
        let origin = self.start().await;
        let proxy = TestProxy::start(&origin.url()).await;
        Scene { origin, proxy }
    }

    /// Starts the origin, then a proxy on the config `config` builds from the origin's URL.
    pub async fn behind_proxy_with(self, config: impl FnOnce(&str) -> String) -> Scene {
        let origin = self.start().await;
        let proxy = TestProxy::with_config(&config(&origin.url())).await;
        Scene { origin, proxy }
    }
}

async fn handle(st: &OriginState, req: Request<Incoming>) -> Response<BoxBody<Bytes, BoxError>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    {
        let mut hits = st.hits.lock().unwrap();
        *hits.entry(path.clone()).or_insert(0) += 1;
    }
    st.total.send_modify(|n| *n += 1);
    let (body, body_error) = match body.collect().await {
        Ok(b) => (b.to_bytes(), false),
        Err(_) => (Bytes::new(), true),
    };
    st.received.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
        body_error,
    });
    let answer = match st.routes.get(&path) {
        Some(MockRoute::Fixed(r)) => r.clone(),
        Some(MockRoute::Dynamic(f)) => f(&parts, &body),
        None => MockResponse::ok("not found\n").status(404),
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    answer.into_response()
}

/// A running mock origin on 127.0.0.1; stops when dropped.
pub struct MockOrigin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    task: JoinHandle<()>,
}

impl MockOrigin {
    /// Starts building an origin.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> MockOriginBuilder {
        MockOriginBuilder::default()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> u64 {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Connections accepted in all.
    pub fn connections(&self) -> u64 {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests received in all.
    pub fn total_hits(&self) -> u64 {
        *self.state.total.borrow()
    }

    /// Headers of every completed request for `path`, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<HeaderMap> {
        self.received(path).into_iter().map(|r| r.headers).collect()
    }

    /// Every completed request for `path`, in arrival order.
    pub fn received(&self, path: &str) -> Vec<Recorded> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.uri.path() == path)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until `path` was hit at least `n` times.
    pub async fn wait_hits(&self, path: &str, n: u64) {
        let mut rx = self.state.total.subscribe();
        bounded(&format!("{n} hits on {path}"), async {
            while self.hits(path) < n {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        assert!(
            self.hits(path) >= n,
            "origin stopped before {n} hits on {path}"
        );
    }
}

impl Drop for MockOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Raw-TCP origins
// ---------------------------------------------------------------------------------------------

/// Reads one request head (and a Content-Length body, if any); `None` at EOF or error.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..end + 4 + len);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An origin that answers every request with exactly `response_bytes` (keeping the
/// connection open for the next request). For responses hyper would never produce, such as
/// a `103 Early Hints` before the final response, or a response without `Date`.
pub async fn raw_origin(response_bytes: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request(&mut stream, &mut buf).await.is_some() {
                    if stream.write_all(response_bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An origin that answers `101 Switching Protocols` to any request and then echoes every
/// byte back. Returns its address and the request heads it received.
pub async fn upgrade_echo_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let h = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let Some(head) = read_request(&mut stream, &mut buf).await else {
                    return;
                };
                h.lock().unwrap().push(head);
                let answer = b"HTTP/1.1 101 Switching Protocols\r\n\
                    Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                if !buf.is_empty() && stream.write_all(&buf).await.is_err() {
                    return;
                }
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// An address on 127.0.0.1 where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Seawall under test
// ---------------------------------------------------------------------------------------------

/// A config with one upstream `origin` at `origin_url` (plus `upstream_extra` lines in its
/// `[[upstreams]]` table) and one catch-all route.
pub fn upstream_config(origin_url: &str, upstream_extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"origin\"\nendpoints = [{origin_url:?}]\n{upstream_extra}\n\n\
         [[routes]]\nupstream = \"origin\"\n"
    )
}

/// The admin token every [`TestProxy::with_config`] instance uses; [`send`] adds it to any
/// request for such an instance's admin listener that carries no `Authorization` of its own.
pub const TEST_ADMIN_TOKEN: &str = "seawall-test-admin-token";

/// Admin listeners started with [`TEST_ADMIN_TOKEN`] by default.
static DEFAULT_TOKEN_ADMINS: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());

/// Registers an admin listener whose callers get [`TEST_ADMIN_TOKEN`] unless they send one.
pub fn register_test_admin(addr: SocketAddr) {
    DEFAULT_TOKEN_ADMINS.lock().unwrap().push(addr);
}

/// Adds the test token to a request for a registered admin listener without `Authorization`.
fn with_test_token<B>(mut req: Request<B>) -> Request<B> {
    let target = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    if let Some(addr) = target
        && !req.headers().contains_key(http::header::AUTHORIZATION)
        && DEFAULT_TOKEN_ADMINS.lock().unwrap().contains(&addr)
    {
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {TEST_ADMIN_TOKEN}")).unwrap(),
        );
    }
    req
}

/// A started Seawall on 127.0.0.1:0 (data and admin listeners).
pub struct TestProxy {
    /// Data listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin_addr: SocketAddr,
    running: Option<Running>,
}

impl TestProxy {
    /// Seawall in front of `origin_url` with default settings.
    pub async fn start(origin_url: &str) -> Self {
        Self::with_config(&upstream_config(origin_url, "")).await
    }

    /// Seawall with `toml_src`; `[server]` listeners default to 127.0.0.1:0 and the drain to
    /// 200 ms delay / 2 s grace unless the source sets them. The admin token is
    /// [`TEST_ADMIN_TOKEN`], which the client helpers send by themselves.
    pub async fn with_config(toml_src: &str) -> Self {
        let p = Self::with_config_and_token(toml_src, Some(TEST_ADMIN_TOKEN)).await;
        register_test_admin(p.admin_addr);
        p
    }

    /// Like `with_config`, with an admin bearer token that callers must send themselves
    /// (`None`: Seawall generates one, as it does when none is configured).
    pub async fn with_config_and_token(toml_src: &str, token: Option<&str>) -> Self {
        init_tracing();
        let mut doc: toml::Table = toml::from_str(toml_src).unwrap();
        let server = doc
            .entry("server")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(server) = server else {
            panic!("[server] must be a table");
        };
        for (k, v) in [
            ("listen", "127.0.0.1:0"),
            ("admin_listen", "127.0.0.1:0"),
            ("drain_delay", "200ms"),
            ("grace_period", "2s"),
        ] {
            server
                .entry(k)
                .or_insert_with(|| toml::Value::String(v.into()));
        }
        let src = toml::to_string(&doc).unwrap();
        let config = Config::parse(&src, "test.toml", std::iter::empty())
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{src}"));
        Self::from_config(config, token).await
    }

    /// Seawall with the config file at `path` (so reloads re-read it), admin token
    /// [`TEST_ADMIN_TOKEN`]; the file sets its own listeners.
    pub async fn from_file(path: &std::path::Path) -> Self {
        init_tracing();
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let p = Self::from_config(config, Some(TEST_ADMIN_TOKEN)).await;
        register_test_admin(p.admin_addr);
        p
    }

    async fn from_config(config: Config, token: Option<&str>) -> Self {
        let running = bounded(
            "seawall start",
            seawall::app::start_with_token(config, token.map(str::to_string)),
        )
        .await
        .unwrap();
        Self {
            addr: running.addr,
            admin_addr: running.admin_addr,
            running: Some(running),
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://admin_addr{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// The running instance.
    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// Starts the drain (as SIGTERM does).
    pub fn shutdown(&self) {
        self.running().shutdown();
    }

    /// Waits (bounded) until Seawall stopped; true when every connection finished in time.
    pub async fn wait(mut self) -> bool {
        let running = self.running.take().unwrap();
        bounded("seawall stop", running.wait()).await
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Status, headers and the whole body.
pub type Answer = (StatusCode, HeaderMap, Bytes);

fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .http2_only(true)
        .build_http()
}

/// Sends `req` over a fresh HTTP/1.1 connection; the response head (bounded), body not read.
pub async fn send(req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
    bounded("response head", h1_client().request(with_test_token(req)))
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Like [`send`] over h2c with prior knowledge.
pub async fn h2_send(req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
    bounded(
        "h2 response head",
        h2_client().request(with_test_token(req)),
    )
    .await
    .map_err(|e| format!("{e:?}"))
}

/// Reads a whole body (bounded).
pub async fn read_body(body: Incoming) -> Result<Bytes, String> {
    bounded("response body", body.collect())
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("{e:?}"))
}

async fn answer(res: Result<Response<Incoming>, String>) -> Answer {
    let res = res.unwrap();
    let (parts, body) = res.into_parts();
    let body = read_body(body).await.unwrap();
    (parts.status, parts.headers, body)
}

/// Sends `req` over HTTP/1.1 and reads the whole answer; panics on transport errors.
pub async fn request(req: Request<Full<Bytes>>) -> Answer {
    answer(send(req).await).await
}

/// GET `url` over HTTP/1.1.
pub async fn get(url: &str) -> Answer {
    request(Request::get(url).body(Full::default()).unwrap()).await
}

/// Sends `req` over h2c (prior knowledge) and reads the whole answer.
pub async fn h2_request(req: Request<Full<Bytes>>) -> Answer {
    answer(h2_send(req).await).await
}

/// GET `url` over h2c (prior knowledge).
pub async fn h2_get(url: &str) -> Answer {
    h2_request(Request::get(url).body(Full::default()).unwrap()).await
}

/// What [`raw_exchange_detail`] saw.
#[derive(Debug)]
pub struct RawReply {
    /// Everything read, lossily decoded.
    pub text: String,
    /// The peer closed (or reset) the connection before the read deadline.
    pub closed: bool,
}

impl RawReply {
    /// How many HTTP/1.x status lines the reply holds.
    pub fn responses(&self) -> usize {
        self.text.matches("HTTP/1.1 ").count() + self.text.matches("HTTP/1.0 ").count()
    }
}

/// Writes `bytes` on a new connection to `addr` and reads until the peer closes or
/// [`RAW_WAIT`] passes.
pub async fn raw_exchange_detail(addr: SocketAddr, bytes: &[u8]) -> RawReply {
    let mut stream = bounded("raw connect", TcpStream::connect(addr))
        .await
        .unwrap();
    // The server may answer and close before it read everything; that's fine.
    let _ = bounded("raw write", stream.write_all(bytes)).await;
    let deadline = tokio::time::Instant::now() + RAW_WAIT;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    RawReply {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Writes `bytes` on a new connection to `addr` and returns what came back before the peer
/// closed or [`RAW_WAIT`] passed.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_exchange_detail(addr, bytes).await.text
}

/// Reads from `stream` until `needle` appears (bounded); returns everything read.
pub async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    bounded("read until marker", async {
        let mut buf = [0u8; 4096];
        while find(&out, needle).is_none() {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// The `Cache-Status` header as text (empty when absent).
pub fn cache_status(h: &HeaderMap) -> String {
    h.get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A header as text (panics when absent or not text).
pub fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing header {name}: {h:?}"))
        .to_str()
        .unwrap()
}

/// Deterministic non-repeating-ish test payload of `len` bytes.
pub fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect::<Vec<u8>>()
        .into()
}

//! The cache layer (over the coalescing layer, as in the stack) on a scripted mock upstream on
//! tokio's paused clock: one test per rule, no sockets, no real sleeps. The fixture is shared
//! with the coalescing tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use super::{Cache, CacheLayer, CacheShared};
use crate::body::ProxyBody;
use crate::cache::coalesce::{Coalesce, CoalesceLayer, CoalesceShared};
use crate::config::Config;
use crate::error::ProxyError;
use crate::route::Router;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9091"

[[upstreams]]
name = "app"
endpoints = ["http://127.0.0.1:3000"]

[[routes]]
upstream = "app"
"#;

/// What the mock upstream answers: status, header fields, body, after `delay`.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

impl Reply {
    /// 200 with `body` and this `Cache-Control`.
    pub(crate) fn ok(body: impl Into<String>, cache_control: &str) -> Self {
        Self {
            status: StatusCode::OK,
            headers: vec![("cache-control", cache_control.to_string())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer after `d` (on the paused clock).
    pub(crate) fn after(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

type Handler = dyn Fn(&Request<ProxyBody>, usize) -> Result<Reply, ProxyError> + Send + Sync;

/// A mock upstream: answers through `handler` (given the request and its 1-based call
/// number), counting calls and recording the method and path of each.
#[derive(Clone)]
pub(crate) struct Upstream {
    handler: Arc<Handler>,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(Method, String)>>>,
}

impl Upstream {
    pub(crate) fn new(
        handler: impl Fn(&Request<ProxyBody>, usize) -> Result<Reply, ProxyError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            handler: Arc::new(handler),
            calls: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// Calls that reached the upstream.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Method and path of every call, in order.
    pub(crate) fn seen(&self) -> Vec<(Method, String)> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Service<Request<ProxyBody>> for Upstream {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen
            .lock()
            .expect("seen")
            .push((req.method().clone(), req.uri().path().to_string()));
        let reply = (self.handler)(&req, n);
        Box::pin(async move {
            let reply = reply?;
            tokio::time::sleep(reply.delay).await;
            let mut res = Response::new(ProxyBody::full(reply.body));
            *res.status_mut() = reply.status;
            for (k, v) in reply.headers {
                res.headers_mut()
                    .append(k, v.parse().expect("header value"));
            }
            Ok(res)
        })
    }
}

/// The cache and coalescing layers over a mock upstream, as the stack orders them.
pub(crate) struct Fixture {
    pub(crate) svc: Cache<Coalesce<Upstream>>,
    pub(crate) upstream: Upstream,
    pub(crate) cache: Arc<CacheShared>,
    pub(crate) coalesce: Arc<CoalesceShared>,
    router: Router,
}

pub(crate) fn fixture(upstream: Upstream) -> Fixture {
    let cfg = Config::parse(CONFIG, "t.toml", Vec::new()).expect("valid config");
    let cache = Arc::new(CacheShared::new(&cfg));
    let coalesce = Arc::new(CoalesceShared::new(&cfg, None));
    let svc = CacheLayer::new(cache.clone())
        .layer(CoalesceLayer::new(coalesce.clone()).layer(upstream.clone()));
    Fixture {
        svc,
        upstream,
        cache,
        coalesce,
        router: Router::new(&cfg),
    }
}

/// An answer as a client sees it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Fixture {
    /// A request as the router hands it to the cache.
    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Request<ProxyBody> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "example.test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(ProxyBody::empty()).expect("request");
        req.extensions_mut().insert(self.router.routes()[0].clone());
        req
    }

    pub(crate) async fn send(&self, req: Request<ProxyBody>) -> Answer {
        let res = self
            .svc
            .clone()
            .oneshot(req)
            .await
            .expect("the cache answers");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("full body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).expect("utf-8"),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path, &[])).await
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_miss_is_forwarded_and_stored() {
    let f = fixture(Upstream::new(|_, n| {
        Ok(Reply::ok(format!("v{n}"), "max-age=60"))
    }));
    let a = f.get("/a").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "v1");
    // Streamed as it arrives: the head cannot say `stored` yet.
    assert_eq!(a.cache_status(), "seawall; fwd=uri-miss");
    assert_eq!(f.upstream.calls(), 1);
    // The fill stores once the whole body is in (its task may need one more turn).
    for _ in 0..100 {
        if f.cache.stats.stored.load(Ordering::Relaxed) == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(f.cache.stats.stored.load(Ordering::Relaxed), 1);
    let b = f.get("/a").await;
    assert_eq!(b.body, "v1");
    assert!(b.cache_status().starts_with("seawall; hit;"), "{b:?}");
    assert_eq!(f.upstream.calls(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_fresh_hit_never_calls_the_upstream() {
    let f = fixture(Upstream::new(|_, n| {
        Ok(Reply::ok(format!("v{n}"), "max-age=60"))
    }));
    f.get("/a").await;
    f.cache.clock.advance(Duration::from_secs(30));
    for _ in 0..3 {
        let a = f.get("/a").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "v1");
        assert!(a.cache_status().starts_with("seawall; hit; ttl="), "{a:?}");
    }
    assert_eq!(f.upstream.calls(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    // The refresh takes 10 s upstream: stale answers must not wait for it.
    let f = fixture(Upstream::new(|_, n| {
        let r = Reply::ok(format!("v{n}"), "max-age=1, stale-while-revalidate=60");
        Ok(if n == 1 {
            r
        } else {
            r.after(Duration::from_secs(10))
        })
    }));
    f.get("/a").await;
    f.cache.clock.advance(Duration::from_secs(5));
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        let a = f.get("/a").await;
        assert_eq!(a.body, "v1", "the stale copy, at once");
        assert!(
            a.cache_status().contains("detail=stale-while-revalidate"),
            "{a:?}"
        );
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "a stale answer waited");
    // Let the background refresh finish (the paused clock jumps over its 10 s).
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(f.upstream.calls(), 2, "one refresh for three stale answers");
    let a = f.get("/a").await;
    assert_eq!(a.body, "v2");
    assert!(a.cache_status().starts_with("seawall; hit;"), "{a:?}");
    assert_eq!(f.upstream.calls(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_no_store_response_is_not_stored() {
    let f = fixture(Upstream::new(|_, n| {
        Ok(Reply::ok(format!("v{n}"), "no-store"))
    }));
    for n in 1..=3 {
        let a = f.get("/a").await;
        assert_eq!(a.body, format!("v{n}"));
        assert!(!a.cache_status().contains("stored"), "{a:?}");
    }
    assert_eq!(f.upstream.calls(), 3);
    assert_eq!(f.cache.stats.stored.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_unsafe_method_invalidates_the_stored_response() {
    let f = fixture(Upstream::new(|_, n| {
        Ok(Reply::ok(format!("v{n}"), "max-age=60"))
    }));
    f.get("/a").await;
    assert!(f.get("/a").await.cache_status().contains("hit"));
    let post = f.send(f.request(Method::POST, "/a", &[])).await;
    assert_eq!(post.status, StatusCode::OK);
    let a = f.get("/a").await;
    assert_eq!(a.body, "v3", "a fresh copy after the POST");
    assert!(a.cache_status().contains("fwd=uri-miss"), "{a:?}");
    assert_eq!(
        f.upstream.seen(),
        vec![
            (Method::GET, "/a".to_string()),
            (Method::POST, "/a".to_string()),
            (Method::GET, "/a".to_string()),
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_internal_failure_below_answers_500_detail_internal() {
    let f = fixture(Upstream::new(|_, _| {
        Err(ProxyError::Internal("fetch task ended"))
    }));
    let a = f.get("/a").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.cache_status(), "seawall; fwd=uri-miss; detail=internal");
    assert_eq!(a.headers["cache-control"], "no-store");
    assert_eq!(a.body, "500 internal: internal error\n");
    // Nothing was stored: the next request asks again.
    f.get("/a").await;
    assert_eq!(f.upstream.calls(), 2);
}

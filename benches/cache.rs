//! Criterion micro-benchmarks of the hit path: Cache-Control parsing, key building with Vary,
//! a full hit through the cache service (policy evaluation and header rendering included),
//! and store lookups under contention.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response};
use seawall::body::ProxyBody;
use seawall::cache::cache_control::CacheControl;
use seawall::cache::{CacheLayer, CacheShared, key, policy};
use seawall::config::Config;
use seawall::error::ProxyError;
use seawall::route::Router;
use tower::{Layer, ServiceExt, service_fn};

const CFG: &str = r#"
[[upstreams]]
name = "app"
endpoints = ["http://127.0.0.1:9"]
[[routes]]
upstream = "app"
"#;

fn origin() -> impl tower::Service<
    Request<ProxyBody>,
    Response = Response<ProxyBody>,
    Error = ProxyError,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(|_req: Request<ProxyBody>| async {
        let mut r = Response::new(ProxyBody::full(Bytes::from(vec![b'x'; 1024])));
        r.headers_mut().insert(
            "cache-control",
            HeaderValue::from_static("public, max-age=3600"),
        );
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        r.headers_mut()
            .insert("etag", HeaderValue::from_static("\"v1\""));
        r.headers_mut()
            .insert("content-length", HeaderValue::from_static("1024"));
        Ok::<_, ProxyError>(r)
    })
}

fn request(router: &Router, path: &str) -> Request<ProxyBody> {
    let mut req = Request::get(path)
        .header("host", "bench.example")
        .header("accept-encoding", "gzip, br")
        .header("user-agent", "criterion")
        .body(ProxyBody::empty())
        .unwrap_or_default();
    if let Some(r) = router.route(Some("bench.example"), path) {
        req.extensions_mut().insert(r.clone());
    }
    req
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config::parse(CFG, "bench", std::iter::empty::<(String, String)>())
        .unwrap_or_else(|e| panic!("{e}"));
    let router = Router::new(&cfg);
    let shared = Arc::new(CacheShared::new(&cfg));
    let coalesce = Arc::new(seawall::cache::coalesce::CoalesceShared::new(&cfg, None));
    let svc = CacheLayer::new(shared.clone())
        .layer(seawall::cache::coalesce::CoalesceLayer::new(coalesce).layer(origin()));

    // Prime one entry through the real miss path, then wait for the fill to store it.
    rt.block_on(async {
        let _ = svc
            .clone()
            .oneshot(request(&router, "/hot"))
            .await
            .map(|r| r.into_body());
        for _ in 0..100 {
            if shared.store.variants("http://bench.example/hot").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(
        shared.store.variants("http://bench.example/hot").is_some(),
        "entry was not stored"
    );

    c.bench_function("cache_control_parse", |b| {
        let v = HeaderValue::from_static("public, max-age=600, s-maxage=60, stale-while-revalidate=30, no-cache=\"set-cookie, x-a\"");
        b.iter(|| CacheControl::parse(std::iter::once(std::hint::black_box(&v))))
    });

    c.bench_function("key_build_with_vary", |b| {
        let req = request(&router, "/a/b/c?x=1&y=2");
        let rules = &router.routes()[0].cache;
        let fields = [
            http::header::ACCEPT_ENCODING,
            http::HeaderName::from_static("accept-language"),
        ];
        b.iter(|| {
            let k = key::primary_key(std::hint::black_box(&req), rules);
            let v = key::vary_key(req.headers(), &fields, true);
            (k, v)
        })
    });

    c.bench_function("policy_evaluate", |b| {
        let mut h = HeaderMap::new();
        h.insert(
            "cache-control",
            HeaderValue::from_static("max-age=600, stale-while-revalidate=30"),
        );
        let now = std::time::SystemTime::now();
        let f = policy::freshness(
            http::StatusCode::OK,
            &HeaderMap::new(),
            &h,
            policy::effective_cc(&h, &[]),
            now,
            now,
            &router.routes()[0].cache,
        );
        let req_cc = CacheControl::default();
        b.iter(|| {
            policy::evaluate(
                std::hint::black_box(&f),
                &req_cc,
                now + Duration::from_secs(10),
            )
        })
    });

    c.bench_function("full_hit_1k", |b| {
        b.to_async(&rt).iter(|| {
            let svc = svc.clone();
            let req = request(&router, "/hot");
            async move {
                let res = svc.oneshot(req).await;
                std::hint::black_box(res.map(|r| r.status()))
            }
        })
    });

    c.bench_function("store_lookup_contended_2_threads", |b| {
        let headers = request(&router, "/hot").headers().clone();
        // Criterion's custom timing is on the wall clock by design.
        #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let shared = &shared;
                    let headers = &headers;
                    s.spawn(move || {
                        for _ in 0..iters {
                            std::hint::black_box(
                                shared.store.lookup("http://bench.example/hot", headers),
                            );
                        }
                    });
                }
            });
            start.elapsed() / 2
        })
    });
}

criterion_group! {
    name = cache;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(cache);

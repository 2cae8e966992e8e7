//! The memory governor, seen through its counters and the store's size (never through this
//! process's resident memory, which is noisy on a shared machine): the resident reading is
//! injected through `MemoryProbe`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use seawall::body::ProxyBody;
use seawall::cache::coalesce::{CoalesceLayer, CoalesceShared};
use seawall::cache::governor::{Governor, MemoryProbe};
use seawall::cache::{CacheLayer, CacheShared};
use seawall::config::Config;
use seawall::error::ProxyError;
use seawall::route::Router;
use seawall::telemetry::memory::{Limit, LimitSource};
use tower::{Layer, ServiceExt, service_fn};

use crate::support::*;

const MIB: u64 = 1 << 20;

fn probe(limit: u64, interval: Duration, resident: &Arc<AtomicU64>) -> MemoryProbe {
    let r = resident.clone();
    MemoryProbe::new(
        Some(Limit {
            bytes: limit,
            source: LimitSource::CgroupV2,
        }),
        interval,
        move || Some(r.load(Ordering::SeqCst)),
    )
}

/// 100,000 distinct small objects through the cache and coalescing layers (in process, the
/// governor ticked every 1,000 requests as its task would every second): below the watermark
/// nothing happens; above it the store is evicted down and stays within the shrunken budget
/// while new objects are refused; below it again the budget grows back to `max_size`.
#[tokio::test]
async fn the_governor_bounds_the_store_through_100k_objects() {
    let src = "[cache]\nmax_size = \"256KiB\"\nmax_object_size = \"4KiB\"\nmemory_high_watermark = \"50%\"\n\n\
               [[upstreams]]\nname = \"app\"\nendpoints = [\"http://127.0.0.1:9\"]\n\
               [[routes]]\nupstream = \"app\"\n";
    let cfg = Config::parse(src, "t.toml", std::iter::empty()).unwrap();
    let cache = Arc::new(CacheShared::new(&cfg));
    let coalesce = Arc::new(CoalesceShared::new(&cfg, None));
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let origin = service_fn(move |req: Request<ProxyBody>| {
        c.fetch_add(1, Ordering::Relaxed);
        let body = format!("object {:>56}", req.uri().path());
        async move {
            let mut r = Response::new(ProxyBody::full(Bytes::from(body)));
            let h = r.headers_mut();
            h.insert("cache-control", HeaderValue::from_static("max-age=600"));
            h.insert("content-type", HeaderValue::from_static("text/plain"));
            Ok::<_, ProxyError>(r)
        }
    });
    let svc = CacheLayer::new(cache.clone()).layer(CoalesceLayer::new(coalesce).layer(origin));
    let router = Router::new(&cfg);
    let route = router.routes()[0].clone();
    let resident = Arc::new(AtomicU64::new(16 * MIB));
    // A 128 MiB limit: the watermark is 64 MiB.
    let gov = Governor::new(
        &cache,
        probe(128 * MIB, Duration::from_secs(1), &resident),
        cfg.raw.cache.memory_high_watermark,
    )
    .unwrap();
    let store = &cache.store;
    let capacity = store.capacity();
    assert_eq!(capacity, 256 * 1024);
    let view = || cache.memory.view(store);
    assert_eq!(view().high_watermark_bytes, Some(64 * MIB));
    assert_eq!(view().limit_bytes, Some(128 * MIB));

    let (mut peak_before, mut refused_when_grown) = (0, None);
    for i in 0..100_000u64 {
        match i {
            20_000 => resident.store(80 * MIB, Ordering::SeqCst),
            80_000 => resident.store(16 * MIB, Ordering::SeqCst),
            _ => {}
        }
        let path = format!("/o/{i}");
        let mut req = Request::get(&path)
            .header("host", "gov.test")
            .body(ProxyBody::empty())
            .unwrap();
        req.extensions_mut().insert(route.clone());
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.ends_with(path.as_bytes()), "{i}");
        if i % 100 == 99 {
            store.run_pending_tasks();
            let size = store.weighted_size();
            assert!(size <= capacity, "{i}: {size} over max_size");
            assert!(
                size <= store.budget(),
                "{i}: {size} over {}",
                store.budget()
            );
        }
        if i % 1000 == 999 {
            let step = gov.tick().unwrap();
            store.run_pending_tasks();
            let size = store.weighted_size();
            assert!(size <= step.budget, "{i}: {size} over {}", step.budget);
            let v = view();
            match i {
                ..20_000 => {
                    peak_before = peak_before.max(size);
                    assert!(!step.shed, "{i}");
                    assert_eq!(step.budget, capacity, "{i}");
                    assert_eq!(
                        (v.actions.evict, v.actions.refuse_store, v.actions.drop_fill),
                        (0, 0, 0),
                        "{i}"
                    );
                }
                20_000..80_000 => {
                    assert!(step.shed, "{i}");
                    assert!(v.shedding, "{i}");
                    assert_eq!(step.budget, capacity / 64, "{i}: at the floor at once");
                    assert!(v.actions.evict > 0, "{i}");
                }
                _ => {
                    assert!(!step.shed, "{i}");
                    if step.budget == capacity && refused_when_grown.is_none() {
                        refused_when_grown = Some(v.actions.refuse_store);
                    }
                }
            }
            if i == 79_999 {
                // Nearly every object of the pressure phase was refused.
                assert!(v.actions.refuse_store > 50_000, "{:?}", v.actions);
                assert!(size <= capacity / 64, "{size}");
            }
        }
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        100_000,
        "every object fetched once"
    );
    assert!(
        peak_before > capacity / 2,
        "the store filled before: {peak_before}"
    );
    // The budget grew back a sixteenth per tick; past that nothing more was refused.
    let refused = refused_when_grown.expect("the budget grew back to max_size");
    let v = view();
    assert_eq!(v.actions.refuse_store, refused);
    assert_eq!(v.cache_budget_bytes, capacity);
    assert!(
        v.cache_bytes > capacity / 2,
        "the store filled again: {v:?}"
    );
}

/// Through the real proxy, with the governor's own task: above the watermark it evicts,
/// refuses stores and skips a background revalidation (the stale copy is still served), and
/// the status page and metrics say so.
#[tokio::test]
async fn the_real_proxy_sheds_above_the_watermark_and_reports_it() {
    let origin = MockOrigin::new()
        .route(
            "/o",
            MockResponse::ok(Bytes::from(vec![b'o'; 200])).header("cache-control", "max-age=600"),
        )
        .route(
            "/swr",
            MockResponse::ok("stale-able")
                .header("cache-control", "max-age=1, stale-while-revalidate=600"),
        )
        .start()
        .await;
    let src = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [cache]\nmax_size = \"256KiB\"\nmax_object_size = \"4KiB\"\nmemory_high_watermark = \"32MiB\"\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let cfg = Config::parse(&src, "t.toml", std::iter::empty()).unwrap();
    let resident = Arc::new(AtomicU64::new(8 * MIB));
    let running = bounded(
        "seawall start",
        seawall::app::start_with_probe(
            cfg,
            Some(TEST_ADMIN_TOKEN.into()),
            probe(64 * MIB, Duration::from_millis(20), &resident),
        ),
    )
    .await
    .unwrap();
    register_test_admin(running.admin_addr);
    let url = |p: &str| format!("http://{}{p}", running.addr);
    let status = || async {
        let (s, _, b) = get(&format!("http://{}/admin/status", running.admin_addr)).await;
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["memory"].clone()
    };

    // The stale-while-revalidate object, made hot so it is the last to be evicted.
    for _ in 0..5 {
        let (s, _, b) = get(&url("/swr")).await;
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"stale-able"[..]));
    }
    // About 180 KB: within max_size, so moka itself evicts nothing.
    for i in 0..100 {
        let (s, _, _) = get(&url(&format!("/o?i={i}"))).await;
        assert_eq!(s, StatusCode::OK);
    }
    let swr_key = seawall::cache::key::build_key(&running.addr.to_string(), "/swr", None, &[]);
    let cache = running.state.cache();
    assert!(cache.store.variants(&swr_key).is_some(), "/swr stored");
    let m = status().await;
    assert_eq!(m["limit_bytes"], 64 * MIB);
    assert_eq!(m["high_watermark_bytes"], 32 * MIB);
    assert_eq!(m["shedding"], false);
    assert_eq!(m["actions"]["evict"], 0);
    let before = m["cache_bytes"].as_u64().unwrap();
    assert!(before > 128 * 1024, "{m}");

    resident.store(48 * MIB, Ordering::SeqCst);
    let mut m = status().await;
    for _ in 0..500 {
        if m["shedding"] == true && m["actions"]["evict"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = status().await;
    }
    assert_eq!(m["shedding"], true, "{m}");
    assert!(m["actions"]["evict"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["resident_bytes"], 48 * MIB);
    assert_eq!(m["cache_budget_bytes"], 256 * 1024 / 64);

    for i in 100..400 {
        let (s, _, _) = get(&url(&format!("/o?i={i}"))).await;
        assert_eq!(s, StatusCode::OK);
        let m = status().await;
        let (budget, bytes) = (
            m["cache_budget_bytes"].as_u64().unwrap(),
            m["cache_bytes"].as_u64().unwrap(),
        );
        assert!(bytes <= budget, "{i}: {m}");
    }
    assert!(
        cache.store.variants(&swr_key).is_some(),
        "/swr kept: the hottest"
    );
    // Stale now: served from the store, and the refresh is not started.
    running.state.cache().clock.advance(Duration::from_secs(30));
    let (s, h, b) = get(&url("/swr")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"stale-able"[..]));
    assert!(
        cache_status(&h).contains("stale-while-revalidate"),
        "{}",
        cache_status(&h)
    );
    let m = status().await;
    assert!(m["actions"]["refuse_store"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["actions"]["drop_fill"], 1, "{m}");
    assert_eq!(origin.hits("/swr"), 1, "no background revalidation");

    let (_, _, text) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    let text = String::from_utf8_lossy(&text);
    let value = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} missing:\n{text}"))
    };
    assert_eq!(value("seawall_memory_limit_bytes "), (64 * MIB) as f64);
    assert_eq!(
        value("seawall_memory_high_watermark_bytes "),
        (32 * MIB) as f64
    );
    assert!(value("seawall_memory_governor_actions_total{action=\"evict\"} ") > 0.0);
    assert!(value("seawall_memory_governor_actions_total{action=\"refuse_store\"} ") > 0.0);
    assert_eq!(
        value("seawall_memory_governor_actions_total{action=\"drop_fill\"} "),
        1.0
    );
    assert!(value("seawall_cache_evictions_total{cause=\"memory\"} ") > 0.0);

    running.shutdown();
    assert!(running.wait().await);
}

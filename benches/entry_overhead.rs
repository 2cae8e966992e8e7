//! What a stored entry costs beyond its body: 10,000 distinct 4 KiB responses through the
//! cache and coalescing layers (so entries are built as in production), live heap bytes
//! counted by an instrumented global allocator before and after. Also prints what the weigher
//! charges per entry. Run: `cargo bench --bench entry_overhead`.

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use seawall::body::ProxyBody;
use seawall::cache::coalesce::{CoalesceLayer, CoalesceShared};
use seawall::cache::{CacheLayer, CacheShared};
use seawall::config::Config;
use seawall::error::ProxyError;
use seawall::route::Router;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, ServiceExt, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 10_000;
const BODY: usize = 4096;

const CFG: &str = r#"
[cache]
max_size = "1GiB"
[[upstreams]]
name = "app"
endpoints = ["http://127.0.0.1:9"]
[[routes]]
upstream = "app"
"#;

/// A response head like a typical origin's (nginx serving a static file).
fn origin_response(path: &str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(Bytes::from(vec![b'x'; BODY])));
    let h = r.headers_mut();
    let s = HeaderValue::from_static;
    h.insert("server", s("nginx/1.22.1"));
    h.insert("date", s("Sun, 06 Dec 2026 22:00:00 GMT"));
    h.insert("content-type", s("application/octet-stream"));
    h.insert("content-length", s("4096"));
    h.insert("last-modified", s("Sun, 06 Dec 2026 21:00:00 GMT"));
    h.insert("cache-control", s("public, max-age=3600"));
    h.insert("accept-ranges", s("bytes"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{:x}-1000\"", path.len() * 7919)) {
        h.insert("etag", etag);
    }
    r
}

fn live(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    // `realloc` already moves `bytes_allocated` / `bytes_deallocated` by its difference.
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

fn main() {
    // Test runners list targets first (`--list`, libtest's format): one benchmark, none ignored.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("entry_overhead: benchmark");
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config::parse(CFG, "bench", std::iter::empty::<(String, String)>())
        .unwrap_or_else(|e| panic!("{e}"));
    let router = Router::new(&cfg);
    let route = router.routes()[0].clone();
    let cache = Arc::new(CacheShared::new(&cfg));
    let coalesce = Arc::new(CoalesceShared::new(&cfg, None));
    let origin = service_fn(|req: Request<ProxyBody>| async move {
        Ok::<_, ProxyError>(origin_response(req.uri().path()))
    });
    let svc = CacheLayer::new(cache.clone()).layer(CoalesceLayer::new(coalesce).layer(origin));
    let fetch = |i: usize| {
        let mut req = Request::get(format!("/assets/v3/object-{i:05}.bin"))
            .header("host", "static.example.com")
            .header("accept-encoding", "gzip, br")
            .header("user-agent", "bench")
            .body(ProxyBody::empty())
            .unwrap_or_default();
        req.extensions_mut().insert(route.clone());
        let svc = svc.clone();
        async move {
            let res = svc.oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
            let _ = res.into_body().collect().await;
        }
    };
    rt.block_on(async {
        // Warm the paths (one-time allocations: routes, maps, metrics) before counting.
        for i in 0..64 {
            fetch(1_000_000 + i).await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        cache.store.run_pending_tasks();
        let fill_region = Region::new(GLOBAL);
        let entries_before = cache.store.entry_count();
        let weight_before = cache.store.weighted_size();
        for i in 0..N {
            fetch(i).await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        cache.store.run_pending_tasks();
        let stored = (cache.store.entry_count() - entries_before) as usize;
        let weight = cache.store.weighted_size() - weight_before;
        let bytes = live(&fill_region);
        assert_eq!(stored, N, "every response stored");
        let per = bytes as f64 / N as f64;
        println!("entries stored:               {stored}");
        println!("live heap bytes per entry:    {per:.0}");
        println!("  of which body:              {BODY}");
        println!("  overhead beyond the body:   {:.0}", per - BODY as f64);
        println!(
            "weigher charge per entry:     {:.0} (overhead charged: {:.0})",
            weight as f64 / N as f64,
            weight as f64 / N as f64 - BODY as f64
        );
        // The store's own share: the same entries inserted into a second, empty store.
        let entries: Vec<_> = cache
            .store
            .iter()
            .filter_map(|(_, v)| v.entries.first().cloned())
            .collect();
        let other = seawall::cache::store::Store::new(1 << 30, 16);
        let region = Region::new(GLOBAL);
        for e in &entries {
            other.insert(e.clone(), Duration::from_secs(3600));
        }
        other.run_pending_tasks();
        let store = live(&region) as f64 / entries.len() as f64;
        println!("  store (moka node, key, variant list, index): {store:.0}");
        drop(other);
        let e = entries[0].clone();
        let keys: Vec<_> = cache.store.iter().map(|(k, _)| k.to_string()).collect();
        for k in &keys {
            cache.store.remove(k);
        }
        drop(keys);
        drop(entries);
        cache.store.run_pending_tasks();
        let without = live(&fill_region) as f64 / N as f64;
        let headers: usize = e
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        println!(
            "  entry struct: {} bytes + key {} + {} header fields ({} bytes of names and values)",
            std::mem::size_of::<seawall::cache::entry::Entry>(),
            e.key.len(),
            e.headers.len(),
            headers
        );
        println!("  still live once every entry is removed (not the store's): {without:.0}");
        println!(
            "  tasks alive: {}",
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        );
    });
}

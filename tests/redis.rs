//! The Redis shared tier (L2) seen from outside: replicas answer each other's fills, one fetch
//! per cold key across the fleet, 304s that refresh the shared copy, purges that reach every
//! replica (also one that was cut off, and ones journalled while Redis was down), Redis paused
//! or killed without a failed request, corrupt or foreign keys, Sentinel failover (a purge just
//! before it holds), a Redis restarted from a snapshot older than a purge, Redis Cluster
//! (redis/cluster.rs, a primary failover too) and Sentinel and Cluster over TLS (redis/tls.rs).
//! Needs `redis-server`, `redis-sentinel` and `redis-cli` on PATH; every instance is started
//! and removed here.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "redis/support.rs"]
mod redis_support;

#[path = "redis/cluster.rs"]
mod cluster;

#[path = "redis/tls.rs"]
mod tls;

#[path = "redis/sentinel.rs"]
mod sentinel;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use redis_support::*;
use support::*;
use tokio::sync::Barrier;

type Parts = http::request::Parts;

/// The 900-client test takes the machine; the others share it.
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const STORED: &str = "seawall; fwd=uri-miss; stored";

/// A fixed 200 `body` fresh for `max_age` seconds.
fn fresh(body: &str, max_age: u32) -> MockResponse {
    MockResponse::ok(body.to_string()).header("cache-control", &format!("max-age={max_age}"))
}

/// 200 `m:{query}`, fresh for a minute: one route, many keys.
fn by_query(parts: &Parts, _: &Bytes) -> MockResponse {
    let q = parts.uri.query().unwrap_or_default();
    fresh(&format!("m:{q}"), 60)
}

fn hv(h: &http::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Asserts the `shared` object of a purge or clear answer.
fn assert_fanned_out(answer: &serde_json::Value, replicas: u64) {
    let shared = &answer["shared"];
    assert_eq!(shared["live_replicas"], replicas, "{answer}");
    assert_eq!(shared["delivered"], replicas, "{answer}");
}

// ---------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn harness_redis_server_and_cut_proxy_work() {
    let _shared = HEAVY.read().await;
    let mut redis = RedisServer::start().await;
    assert_eq!(redis.cli(&["PING"]).await, "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]).await, "OK");
    assert_eq!(redis.cli(&["GET", "k"]).await, "v");
    assert_eq!(redis.keys("*").await, vec!["k".to_string()]);
    assert!(redis.url().ends_with(&format!(":{}/0", redis.port())));

    let cut = CutProxy::start(redis.port()).await;
    assert!(
        pings(cut.port(), CLI_WAIT).await,
        "PING through the forwarder"
    );
    assert_eq!(
        redis_cli_raw(cut.port(), &["GET", "k"], CLI_WAIT)
            .await
            .unwrap(),
        b"v"
    );

    // A connection held open through the forwarder is closed by the cut.
    let mut held = tokio::net::TcpStream::connect(cut.addr).await.unwrap();
    let poll = Poll::new("held connection forwarded", Duration::from_secs(5));
    while cut.open_connections() == 0 {
        poll.tick().await;
    }
    cut.cut().await;
    assert_eq!(cut.open_connections(), 0);
    let mut buf = [0u8; 16];
    let read = bounded("held connection closed", async {
        use tokio::io::AsyncReadExt;
        held.read(&mut buf).await
    })
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // New connections are closed at once while cut; Redis itself is fine.
    let before = cut.accepted();
    assert!(!pings(cut.port(), Duration::from_secs(2)).await);
    assert!(cut.accepted() > before, "the forwarder accepted and closed");
    assert_eq!(cut.open_connections(), 0);
    assert!(pings(redis.port(), CLI_WAIT).await);

    cut.restore();
    assert!(pings(cut.port(), CLI_WAIT).await, "PING after restore");

    // Paused: connections are accepted by the kernel but nothing answers.
    redis.pause();
    assert!(!pings(redis.port(), Duration::from_millis(500)).await);
    assert!(!pings(cut.port(), Duration::from_millis(500)).await);
    redis.resume();
    assert!(pings(redis.port(), CLI_WAIT).await, "PING after resume");
    assert_eq!(redis.cli(&["GET", "k"]).await, "v", "data survives a pause");

    // Killed and restarted on the same port: empty (no persistence), reachable again, also
    // through the forwarder.
    let port = redis.port();
    redis.kill();
    assert!(!pings(port, Duration::from_secs(2)).await);
    redis.restart().await;
    assert_eq!(redis.port(), port);
    assert!(redis.keys("*").await.is_empty(), "a restart starts empty");
    assert!(pings(cut.port(), CLI_WAIT).await);
    let fields = ["HSET", "h", "-", "x"];
    assert_eq!(redis.cli(&fields).await, "1");
    assert_eq!(redis.hkeys("h").await, vec!["-".to_string()]);

    // Paused then killed (SIGKILL ends a stopped process too).
    redis.pause();
    redis.kill();
    assert!(!pings(port, Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metric_sums_cover_every_label_value() {
    let text = "# HELP x_total X.\n# TYPE x_total counter\n\
                x_total{op=\"get\"} 2\nx_total{op=\"set\",kind=\"a b\"} 3\n\
                x_total_other 7\nup 0\n";
    assert_eq!(metric_sum(text, "x_total"), Some(5.0));
    assert_eq!(metric_with(text, "x_total", "op", "set"), 3.0);
    assert_eq!(metric_sum(text, "up"), Some(0.0));
    assert_eq!(metric_sum(text, "absent"), None);
}

// ---------------------------------------------------------------------------------------------
// Sharing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_stored_by_one_replica_is_a_shared_hit_on_another() {
    let _shared = HEAVY.read().await;
    let redis = RedisServer::start().await;
    let origin = MockOrigin::new()
        .route("/shared", fresh("shared body", 60))
        .start()
        .await;
    let fleet = Fleet::start(&origin.url(), &redis, 2).await;
    let (a, b) = (&fleet[0], &fleet[1]);

    let (status, h, body) = shared_get(a, "/shared").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "shared body");
    assert_eq!(cache_status(&h), STORED);

    // Written behind the response: one hash, the no-Vary field `-`.
    redis.wait_entry("/shared").await;
    let k = entry_key("/shared");
    assert_eq!(redis.cli(&["TYPE", &k]).await, "hash");
    assert_eq!(redis.hkeys(&k).await, vec!["-".to_string()]);
    assert_eq!(
        redis.keys(&ns_key("e:*")).await,
        vec![k.clone()],
        "one entry, under the v2 namespace"
    );

    let (status, h, body) = shared_get(b, "/shared").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "shared body");
    let cs = cache_status(&h);
    assert!(is_shared_hit(&cs), "{cs}");
    let ttl = ttl_of(&cs);
    assert!((1..=60).contains(&ttl), "{cs}");
    assert_eq!(hv(&h, "x-cache"), "HIT");
    assert_eq!(origin.hits("/shared"), 1, "B was answered from Redis");

    // Now in B's memory: a plain hit.
    let (status, h, body) = shared_get(b, "/shared").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "shared body");
    let cs = cache_status(&h);
    assert!(is_l1_hit(&cs), "{cs}");
    assert_eq!(hv(&h, "x-cache"), "HIT");
    assert_eq!(origin.hits("/shared"), 1);

    let (ma, mb) = (metrics_text(a).await, metrics_text(b).await);
    assert!(
        metric_with(&ma, "seawall_redis_writes_total", "result", "stored") >= 1.0,
        "{ma}"
    );
    assert!(
        metric_with(&mb, "seawall_redis_l2_lookups_total", "result", "hit") >= 1.0,
        "{mb}"
    );
    assert_eq!(metric_sum(&mb, "seawall_redis_up"), Some(1.0), "{mb}");
}

/// `/r`: 200 with `ETag: "v1"` fresh for one second; a request that carries the tag is
/// answered 304 with a new lifetime of a minute.
fn revalidated(parts: &Parts, _: &Bytes) -> MockResponse {
    if parts.headers.contains_key("if-none-match") {
        MockResponse::with_status(304)
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=60")
            .header("x-refreshed", "yes")
    } else {
        MockResponse::ok("r body")
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=1")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_304_on_one_replica_refreshes_the_shared_copy_for_the_others() {
    let _shared = HEAVY.read().await;
    let redis = RedisServer::start().await;
    let origin = MockOrigin::new().route("/r", revalidated).start().await;
    let fleet = Fleet::start(&origin.url(), &redis, 2).await;
    let (a, b) = (&fleet[0], &fleet[1]);

    let (status, h, _) = shared_get(a, "/r").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_status(&h), STORED);
    redis.wait_entry("/r").await;

    // Stale everywhere now; A revalidates and the origin says it is still good for a minute.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, h, body) = shared_get(a, "/r").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "r body");
    assert_eq!(hv(&h, "x-refreshed"), "yes", "{h:?}");
    assert_eq!(origin.hits("/r"), 2, "one fill, one revalidation");
    let revalidation = origin.requests("/r");
    assert!(revalidation[1].contains_key("if-none-match"));

    // The refreshed head reaches Redis behind the response.
    let k = entry_key("/r");
    let poll = Poll::new("the refreshed head written to Redis", EVENTUALLY);
    while !redis
        .cli_bytes(&["HGET", &k, "-"])
        .await
        .windows(11)
        .any(|w| w == b"x-refreshed")
    {
        poll.tick().await;
    }

    // B never held /r: it reads the refreshed copy from Redis, fresh, without the origin.
    let (status, h, body) = shared_get(b, "/r").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "r body");
    let cs = cache_status(&h);
    assert!(is_shared_hit(&cs), "{cs}");
    assert!(ttl_of(&cs) > 30, "the new lifetime, not the old one: {cs}");
    assert_eq!(hv(&h, "x-refreshed"), "yes");
    assert_eq!(origin.hits("/r"), 2, "B did not contact the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nine_hundred_clients_on_three_replicas_make_one_origin_request() {
    const PER_REPLICA: usize = 300;
    const REPLICAS: usize = 3;
    let _heavy = HEAVY.write().await;
    let redis = RedisServer::start().await;
    let body = payload(16 * 1024);
    let origin = MockOrigin::new()
        .route(
            "/hot",
            MockResponse::ok(body.clone())
                .header("cache-control", "max-age=60")
                .delay(500),
        )
        .start()
        .await;
    let fleet = Arc::new(Fleet::start(&origin.url(), &redis, REPLICAS).await);
    redis.wait_heartbeats(REPLICAS).await;

    let n = PER_REPLICA * REPLICAS;
    let start = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (fleet, start) = (fleet.clone(), start.clone());
            tokio::spawn(async move {
                get_when(&fleet[i % REPLICAS], "/hot", async {
                    start.wait().await;
                })
                .await
            })
        })
        .collect();
    let answers = match tokio::time::timeout(WAIT * 3, async {
        let mut out = Vec::with_capacity(n);
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    })
    .await
    {
        Ok(v) => v,
        Err(_) => panic!("{n} clients did not finish within {:?}", WAIT * 3),
    };

    let mut shared = 0;
    for (i, (status, h, b)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "client {i}: {h:?}");
        assert!(*b == body, "client {i} got another body");
        if is_shared_hit(&cache_status(h)) {
            shared += 1;
        }
    }
    eprintln!("{n} clients: {shared} answered from Redis");
    let mut seen = String::new();
    for (r, id) in fleet.replicas.iter().zip(REPLICA_IDS) {
        let m = metrics_text(r).await;
        for l in m.lines().filter(|l| l.starts_with("seawall_redis_")) {
            seen.push_str(&format!("{id}: {l}\n"));
        }
    }
    assert_eq!(
        origin.hits("/hot"),
        1,
        "one origin request for the fleet; the replicas' Redis metrics:\n{seen}"
    );
}

// ---------------------------------------------------------------------------------------------
// Purges
// ---------------------------------------------------------------------------------------------

/// Fills `paths` on A, waits for each L2 entry, then reads each on every other replica so that
/// every replica holds every path in memory.
async fn fill_everywhere(fleet: &Fleet, redis: &RedisServer, paths: &[&str]) {
    for p in paths {
        let (status, h, _) = shared_get(&fleet[0], p).await;
        assert_eq!(status, StatusCode::OK, "{p}: {h:?}");
        redis.wait_entry(p).await;
    }
    for r in &fleet.replicas[1..] {
        for p in paths {
            let (status, h, _) = shared_get(r, p).await;
            assert_eq!(status, StatusCode::OK, "{p}: {h:?}");
            let cs = cache_status(&h);
            assert!(is_shared_hit(&cs), "{p} on {}: {cs}", r.addr);
        }
    }
    for r in &fleet.replicas {
        for p in paths {
            wait_l1(r, p, true).await;
        }
    }
}

/// After a purge of `gone`: no replica holds them, Redis has no entry, and a request on the
/// last replica goes to the origin. `kept` is still held everywhere and in Redis.
async fn assert_purged_everywhere(
    fleet: &Fleet,
    redis: &RedisServer,
    origin: &MockOrigin,
    gone: &[&str],
    kept: &[&str],
) {
    for p in gone {
        redis.wait_gone(&entry_key(p)).await;
        for r in &fleet.replicas {
            wait_l1(r, p, false).await;
        }
    }
    for p in kept {
        assert!(redis.exists(&entry_key(p)).await, "{p} left in Redis");
        for r in &fleet.replicas {
            assert!(in_l1(r, p).await, "{p} left on {}", r.addr);
        }
    }
    let last = fleet.replicas.last().unwrap();
    for p in gone {
        let before = origin.hits(p);
        let (status, h, _) = shared_get(last, p).await;
        assert_eq!(status, StatusCode::OK);
        let cs = cache_status(&h);
        assert!(is_miss(&cs), "{p} after the purge: {cs}");
        assert_eq!(origin.hits(p), before + 1, "{p} fetched again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purges_by_url_prefix_and_tag_reach_every_replica_and_redis() {
    let _shared = HEAVY.read().await;
    let redis = RedisServer::start().await;
    let origin = MockOrigin::new()
        .route("/u", fresh("u", 300))
        .route("/p/one", fresh("p1", 300))
        .route("/p/two", fresh("p2", 300))
        .route("/t", fresh("t", 300).header("surrogate-key", "t1 t2"))
        .route("/keep", fresh("keep", 300))
        .start()
        .await;
    let fleet = Fleet::start(&origin.url(), &redis, 3).await;
    let b = &fleet[1];
    redis.wait_heartbeats(3).await;
    for id in ["a", "b", "c"] {
        assert!(
            redis.exists(&shared_key(&format!("hb:{id}"))).await,
            "hb:{id}"
        );
    }

    fill_everywhere(&fleet, &redis, &["/u", "/p/one", "/p/two", "/t", "/keep"]).await;
    let poll = Poll::new("tag index t1 written", EVENTUALLY);
    while redis.cli(&["TYPE", &shared_key("t:t1")]).await != "set" {
        poll.tick().await;
    }

    // By URL.
    let answer = purge(b, &format!(r#"{{"url": "{}"}}"#, key("/u"))).await;
    assert_fanned_out(&answer, 3);
    assert!(answer["purged"].as_u64().unwrap() >= 1, "{answer}");
    assert_purged_everywhere(&fleet, &redis, &origin, &["/u"], &["/p/one", "/t", "/keep"]).await;

    // By prefix.
    let answer = purge(b, r#"{"prefix": "/p/"}"#).await;
    assert_fanned_out(&answer, 3);
    assert!(answer["purged"].as_u64().unwrap() >= 2, "{answer}");
    assert_purged_everywhere(
        &fleet,
        &redis,
        &origin,
        &["/p/one", "/p/two"],
        &["/t", "/keep"],
    )
    .await;

    // By tag (from `Surrogate-Key`).
    let answer = purge(b, r#"{"tag": "t1"}"#).await;
    assert_fanned_out(&answer, 3);
    assert!(answer["purged"].as_u64().unwrap() >= 1, "{answer}");
    assert_purged_everywhere(&fleet, &redis, &origin, &["/t"], &["/keep"]).await;

    assert_eq!(origin.hits("/keep"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_redis_applies_missed_purges_after_reconnecting() {
    let _shared = HEAVY.read().await;
    let redis = RedisServer::start().await;
    let cut = CutProxy::start(redis.port()).await;
    let origin = MockOrigin::new().route("/x", fresh("x", 300)).start().await;
    let fleet = Fleet::start_with(&origin.url(), &[cut.url(), redis.url()]).await;
    let (a, b) = (&fleet[0], &fleet[1]);
    redis.wait_heartbeats(2).await;

    let (status, h, _) = shared_get(a, "/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_status(&h), STORED);
    redis.wait_entry("/x").await;
    wait_l1(a, "/x", true).await;
    assert!(
        cut.open_connections() > 0,
        "A talks to Redis through the forwarder"
    );

    cut.cut().await;
    let answer = purge(b, &format!(r#"{{"url": "{}"}}"#, key("/x"))).await;
    assert!(answer["shared"].is_object(), "{answer}");
    redis.wait_gone(&entry_key("/x")).await;
    // A could not hear of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(in_l1(a, "/x").await, "A got the purge while cut off");

    cut.restore();
    // Replayed from the purge stream after reconnecting; A is never asked for /x meanwhile.
    wait_l1(a, "/x", false).await;
    assert_eq!(origin.hits("/x"), 1);

    let (status, h, body) = shared_get(a, "/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "x");
    let cs = cache_status(&h);
    assert!(is_miss(&cs), "{cs}");
    assert_eq!(origin.hits("/x"), 2, "A fetched /x again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_missed_more_purges_than_the_stream_keeps_marks_its_entries_stale() {
    let _shared = HEAVY.read().await;
    let redis = RedisServer::start().await;
    let cut = CutProxy::start(redis.port()).await;
    let origin = MockOrigin::new()
        .route("/x", fresh("x", 300))
        .route("/y", fresh("y", 300))
        .start()
        .await;
    // The stream keeps one purge: two purges while A is away trim the first it needed.
    let config = |url: &str, id: &str| {
        replica_config(&origin.url(), url, id, TIMEOUT)
            .replace("purge_stream_max_len = 10000", "purge_stream_max_len = 1")
    };
    let a = TestProxy::with_config(&config(&cut.url(), "a")).await;
    let b = TestProxy::with_config(&config(&redis.url(), "b")).await;
    redis.wait_heartbeats(2).await;
    for p in ["/x", "/y"] {
        let (status, h, _) = shared_get(&a, p).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cache_status(&h), STORED);
        wait_l1(&a, p, true).await;
    }

    // One purge A hears live, so it knows where it is in the stream's numbering.
    purge(&b, r#"{"tag": "first"}"#).await;
    bounded("A applies a live purge", async {
        while metric_with(
            &metrics_text(&a).await,
            "seawall_redis_purges_applied_total",
            "source",
            "live",
        ) < 1.0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    cut.cut().await;
    purge(&b, &format!(r#"{{"url": "{}"}}"#, key("/x"))).await;
    purge(&b, r#"{"tag": "nothing-carries-this"}"#).await;
    cut.restore();

    // A cannot know what it missed: everything it holds is stale now, nothing is trusted.
    let text = bounded("A notices the gap", async {
        loop {
            let text = metrics_text(&a).await;
            if metric_with(&text, "seawall_redis_purges_applied_total", "source", "gap") >= 1.0 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        metric_with(&text, "seawall_redis_purges_applied_total", "source", "gap") >= 1.0,
        "{text}"
    );
    assert!(
        in_l1(&a, "/y").await,
        "a soft purge keeps the entry for stale use"
    );
    // /y is not trusted from memory any more; Redis (which the purges did reach) still has it.
    let (status, h, body) = shared_get(&a, "/y").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "y");
    let cs = cache_status(&h);
    assert!(is_shared_hit(&cs), "{cs}");
    assert_eq!(origin.hits("/y"), 1);
    // /x, whose purge A never saw, is not served from A's memory: fetched again.
    let (status, h, body) = shared_get(&a, "/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "x");
    let cs = cache_status(&h);
    assert!(!is_l1_hit(&cs) && !is_shared_hit(&cs), "{cs}");
    assert_eq!(origin.hits("/x"), 2, "the purged /x was fetched again");
}

/// How long a purge journalled during an outage may take to reach the other replicas once
/// Redis is back: the tier's breaker open time (500 ms here, up to 4× after repeated trips)
/// plus a few heartbeats, with room for a debug build on two cores.
const JOURNAL_DELIVERY: Duration = Duration::from_secs(15);

/// The `seawall_redis_purge_journal_depth` gauge of `proxy`.
async fn journal_depth(proxy: &TestProxy) -> f64 {
    let text = metrics_text(proxy).await;
    metric_sum(&text, "seawall_redis_purge_journal_depth")
        .unwrap_or_else(|| panic!("no journal depth gauge:\n{text}"))
}

/// Waits (bounded by [`JOURNAL_DELIVERY`]) until no replica of `replicas` holds `path`.
async fn wait_dropped_by(replicas: &[&TestProxy], path: &str) {
    let poll = Poll::new(
        format!("{path} dropped by every replica after Redis came back"),
        JOURNAL_DELIVERY,
    );
    for r in replicas {
        while in_l1(r, path).await {
            poll.tick().await;
        }
    }
}

/// Asserts that a purge answer says the purge was journalled, `depth` deep.
fn assert_queued(answer: &serde_json::Value, depth: u64) {
    let shared = &answer["shared"];
    assert!(shared.is_object(), "{answer}");
    assert_eq!(shared["queued"], true, "{answer}");
    assert_eq!(shared["journal_depth"], depth, "{answer}");
    assert!(shared["error"].is_string(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_accepted_while_redis_is_down_reaches_every_replica_once_it_is_back() {
    let _shared = HEAVY.read().await;
    let mut redis = RedisServer::start().await;
    let origin = MockOrigin::new()
        .route("/p", fresh("p", 300))
        .route("/keep", fresh("keep", 300))
        .start()
        .await;
    let fleet = Fleet::start(&origin.url(), &redis, 3).await;
    let (a, b, c) = (&fleet[0], &fleet[1], &fleet[2]);
    redis.wait_heartbeats(3).await;
    fill_everywhere(&fleet, &redis, &["/p", "/keep"]).await;
    assert_eq!(journal_depth(a).await, 0.0);

    redis.kill();
    // The failing heartbeats open A's tier breaker: the purge is not even tried against Redis.
    let poll = Poll::new("A's tier breaker open", JOURNAL_DELIVERY);
    while metric_sum(&metrics_text(a).await, "seawall_redis_rejected_total") == Some(0.0) {
        poll.tick().await;
    }
    let answer = purge(a, &format!(r#"{{"url": "{}"}}"#, key("/p"))).await;
    assert_queued(&answer, 1);
    let error = answer["shared"]["error"].as_str().unwrap();
    assert!(error.contains("breaker open"), "{answer}");
    assert_eq!(answer["purged"], 1, "applied here at once: {answer}");
    assert!(!in_l1(a, "/p").await);
    assert_eq!(journal_depth(a).await, 1.0);
    // Nobody else can hear of it yet.
    assert!(in_l1(b, "/p").await && in_l1(c, "/p").await);

    redis.restart().await;
    wait_dropped_by(&[b, c], "/p").await;
    let poll = Poll::new("A's journal empty", JOURNAL_DELIVERY);
    while journal_depth(a).await != 0.0 {
        poll.tick().await;
    }
    let text = metrics_text(a).await;
    assert_eq!(
        metric_sum(&text, "seawall_redis_purge_journal_oldest_seconds"),
        Some(0.0),
        "{text}"
    );
    assert!(in_l1(b, "/keep").await && in_l1(c, "/keep").await);
    let (status, h, body) = shared_get(c, "/p").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "p");
    let cs = cache_status(&h);
    assert!(is_miss(&cs), "{cs}");
    assert_eq!(origin.hits("/p"), 2, "C fetched /p again");
    assert_eq!(origin.hits("/keep"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_journalled_purge_survives_a_restart_of_its_replica() {
    let _shared = HEAVY.read().await;
    let mut redis = RedisServer::start().await;
    let origin = MockOrigin::new().route("/p", fresh("p", 300)).start().await;
    let dir = unique_dir("seawall-journal-test");
    let journal = dir.join("purges.jsonl");
    let a_config = replica_config(&origin.url(), &redis.url(), "a", TIMEOUT).replace(
        "replica_id = \"a\"\n",
        &format!(
            "replica_id = \"a\"\njournal_file = {:?}\n",
            journal.display().to_string()
        ),
    );
    let a = TestProxy::with_config(&a_config).await;
    let b =
        TestProxy::with_config(&replica_config(&origin.url(), &redis.url(), "b", TIMEOUT)).await;
    redis.wait_heartbeats(2).await;
    let (status, _, _) = shared_get(&a, "/p").await;
    assert_eq!(status, StatusCode::OK);
    redis.wait_entry("/p").await;
    let (_, h, _) = shared_get(&b, "/p").await;
    assert!(is_shared_hit(&cache_status(&h)), "{h:?}");
    wait_l1(&b, "/p", true).await;

    redis.kill();
    let answer = purge(&a, &format!(r#"{{"url": "{}"}}"#, key("/p"))).await;
    assert_queued(&answer, 1);
    let on_disk = std::fs::read_to_string(&journal).unwrap();
    assert!(on_disk.contains(&key("/p")), "{on_disk}");

    a.shutdown();
    a.wait().await;
    let a = TestProxy::with_config(&a_config).await;
    assert_eq!(journal_depth(&a).await, 1.0, "reloaded from {journal:?}");
    assert!(in_l1(&b, "/p").await);

    redis.restart().await;
    wait_dropped_by(&[&b], "/p").await;
    let poll = Poll::new("the restarted A's journal empty", JOURNAL_DELIVERY);
    while journal_depth(&a).await != 0.0 {
        poll.tick().await;
    }
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        "",
        "published, then forgotten"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_journal_drops_the_oldest_purge_and_every_replica_marks_its_cache_stale() {
    let _shared = HEAVY.read().await;
    let mut redis = RedisServer::start().await;
    let origin = MockOrigin::new()
        .route("/x", fresh("x", 300))
        .route("/y", fresh("y", 300))
        .route("/z", fresh("z", 300))
        .start()
        .await;
    let config = |id: &str| {
        replica_config(&origin.url(), &redis.url(), id, TIMEOUT)
            .replace("replica_id", "journal_max = 2\nreplica_id")
    };
    let fleet = Fleet {
        replicas: vec![
            TestProxy::with_config(&config("a")).await,
            TestProxy::with_config(&config("b")).await,
        ],
    };
    let (a, b) = (&fleet[0], &fleet[1]);
    redis.wait_heartbeats(2).await;
    fill_everywhere(&fleet, &redis, &["/x", "/y", "/z"]).await;

    redis.kill();
    for (p, depth) in [("/x", 1), ("/y", 2), ("/z", 3)] {
        let answer = purge(a, &format!(r#"{{"url": "{}"}}"#, key(p))).await;
        // The third drops /x's purge: two purges and the gap marker wait.
        assert_queued(&answer, depth);
    }

    redis.restart().await;
    wait_dropped_by(&[b], "/y").await;
    wait_dropped_by(&[b], "/z").await;
    let text = metrics_text(b).await;
    assert!(
        metric_with(&text, "seawall_redis_purges_applied_total", "source", "gap") >= 1.0,
        "{text}"
    );
    // /x's own purge was dropped, but B trusts nothing it held: /x is not served from memory.
    assert!(
        in_l1(b, "/x").await,
        "a soft purge keeps the entry for stale use"
    );
    let (status, h, body) = shared_get(b, "/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "x");
    let cs = cache_status(&h);
    assert!(!is_l1_hit(&cs), "{cs}");
    assert_eq!(origin.hits("/x"), 2, "B fetched /x again");
}

// ---------------------------------------------------------------------------------------------
// Redis trouble
// ---------------------------------------------------------------------------------------------

/// A phase of traffic may meet a replica waiting `lock_wait` (5 s) for a fill whose outcome
/// was never published because Redis froze; more than one such wait fits in this bound.
const PHASE: Duration = Duration::from_secs(45);

/// Awaits `f` for at most `limit`, panicking with `what` on timeout.
async fn within<F: std::future::Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// GETs `/m?i={i % urls}` alternately on each replica, `batch` at a time; every answer must be
/// 200 with the origin's body. Counts answers in `done`.
async fn traffic(
    fleet: Arc<Fleet>,
    from: usize,
    count: usize,
    urls: usize,
    batch: usize,
    done: Arc<AtomicU64>,
) {
    let mut i = from;
    while i < from + count {
        let mut set = tokio::task::JoinSet::new();
        for j in i..(i + batch).min(from + count) {
            let fleet = fleet.clone();
            let done = done.clone();
            set.spawn(async move {
                let q = format!("i={}", j % urls);
                let r = &fleet[j % fleet.replicas.len()];
                let (status, h, body) = shared_get(r, &format!("/m?{q}")).await;
                assert_eq!(status, StatusCode::OK, "request {j} on {}: {h:?}", r.addr);
                assert_eq!(body, format!("m:{q}"), "request {j}");
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        i += batch;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_paused_then_killed_never_fails_a_request_and_sharing_resumes_after_restart() {
    let _shared = HEAVY.read().await;
    let mut redis = RedisServer::start().await;
    let origin = MockOrigin::new().route("/m", by_query).start().await;
    // A production-like timeout: the frozen Redis's calls are cut at it.
    let urls = vec![redis.url(); 2];
    let fleet = Arc::new(Fleet::start_with_timeout(&origin.url(), &urls, "100ms").await);
    let (a, b) = (&fleet[0], &fleet[1]);
    redis.wait_heartbeats(2).await;
    for r in [a, b] {
        let (status, v) = readyz(r).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["shared_tier"], "ok", "{v}");
    }

    // Traffic is in flight when Redis freezes.
    let done = Arc::new(AtomicU64::new(0));
    let before = tokio::spawn(traffic(fleet.clone(), 0, 60, 20, 10, done.clone()));
    let poll = Poll::new("first requests answered", WAIT);
    while done.load(Ordering::SeqCst) < 10 {
        poll.tick().await;
    }
    redis.pause();
    within(PHASE, "traffic around the pause", before)
        .await
        .unwrap();

    // 200 more while Redis is frozen, over 30 URLs (10 never seen before).
    let paused = Arc::new(AtomicU64::new(0));
    within(
        PHASE,
        "traffic while Redis is paused",
        traffic(fleet.clone(), 60, 200, 30, 10, paused.clone()),
    )
    .await;
    assert_eq!(paused.load(Ordering::SeqCst), 200);

    for r in [a, b] {
        let poll = Poll::new(
            format!("{} reports Redis down with timeouts", r.addr),
            EVENTUALLY,
        );
        loop {
            let m = metrics_text(r).await;
            let timeouts = metric_sum(&m, "seawall_redis_timeouts_total").unwrap_or(0.0);
            let errors = metric_sum(&m, "seawall_redis_errors_total").unwrap_or(0.0);
            if timeouts > 0.0
                && errors >= timeouts
                && metric_sum(&m, "seawall_redis_up") == Some(0.0)
            {
                break;
            }
            if poll.expired() {
                panic!("{} never reported Redis down:\n{m}", r.addr);
            }
            poll.tick().await;
        }
        let poll = Poll::new(format!("{} readyz degraded", r.addr), EVENTUALLY);
        loop {
            let (status, v) = readyz(r).await;
            assert_eq!(status, StatusCode::OK, "ready while Redis is down: {v}");
            if v["shared_tier"] == "degraded" {
                break;
            }
            if poll.expired() {
                panic!("{} readyz while Redis is paused: {v}", r.addr);
            }
            poll.tick().await;
        }
    }

    // Killed while frozen, then a fresh (empty) Redis on the same port.
    redis.kill();
    let down = Arc::new(AtomicU64::new(0));
    within(
        PHASE,
        "traffic while Redis is gone",
        traffic(fleet.clone(), 260, 20, 30, 10, down.clone()),
    )
    .await;
    assert_eq!(down.load(Ordering::SeqCst), 20);
    redis.restart().await;

    // Sharing resumes: a URL neither replica has seen, fetched on A, is a shared hit on B.
    let poll = Poll::new(
        "a new URL shared again after the restart",
        Duration::from_secs(20),
    );
    let mut n = 0;
    'outer: loop {
        n += 1;
        let path = format!("/m?new={n}");
        let (status, h, body) = shared_get(a, &path).await;
        assert_eq!(status, StatusCode::OK, "{h:?}");
        assert_eq!(body, format!("m:new={n}"));
        // Give the write a moment to land; a replica still reconnecting may not write it (then
        // try another URL).
        let landing = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < landing {
            if redis.cli(&["HLEN", &entry_key(&path)]).await != "0" {
                let (status, h, body) = shared_get(b, &path).await;
                assert_eq!(status, StatusCode::OK, "{h:?}");
                assert_eq!(body, format!("m:new={n}"));
                let cs = cache_status(&h);
                if is_shared_hit(&cs) {
                    break 'outer;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        poll.tick().await;
    }
    for r in [a, b] {
        let poll = Poll::new(format!("{} reports Redis up again", r.addr), EVENTUALLY);
        loop {
            let m = metrics_text(r).await;
            let (status, v) = readyz(r).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            if metric_sum(&m, "seawall_redis_up") == Some(1.0) && v["shared_tier"] == "ok" {
                break;
            }
            if poll.expired() {
                panic!("{} after the restart: readyz {v}\n{m}", r.addr);
            }
            poll.tick().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_reports_the_shared_tier_disabled_without_redis() {
    let _shared = HEAVY.read().await;
    let origin = MockOrigin::new().route("/d", fresh("d", 60)).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let (status, v) = readyz(&proxy).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["shared_tier"], "disabled", "{v}");
}

// ---------------------------------------------------------------------------------------------
// What is in Redis
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_entry_is_refetched_and_replaced_and_foreign_keys_are_never_touched() {
    let _shared = HEAVY.read().await;
    let redis = RedisServer::start().await;
    let origin = MockOrigin::new()
        .route("/c", fresh("c body", 300))
        .start()
        .await;
    let fleet = Fleet::start(&origin.url(), &redis, 3).await;
    let (a, b, c) = (&fleet[0], &fleet[1], &fleet[2]);
    redis.wait_heartbeats(3).await;

    let (status, _, body) = shared_get(a, "/c").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "c body");
    redis.wait_entry("/c").await;
    let k = entry_key("/c");
    let fields = redis.hkeys(&k).await;
    assert!(!fields.is_empty());
    for f in &fields {
        redis.cli(&["HSET", &k, f, "garbage"]).await;
        assert_eq!(redis.cli(&["HGET", &k, f]).await, "garbage");
    }
    let old = format!("{NS}:v0:e:whatever");
    assert_eq!(redis.cli(&["SET", &old, "old"]).await, "OK");
    assert_eq!(redis.cli(&["SET", "other:key", "x"]).await, "OK");

    // B ignores the garbage and asks the origin.
    let (status, h, body) = shared_get(b, "/c").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "c body");
    let cs = cache_status(&h);
    assert!(is_miss(&cs), "{cs}");
    assert_eq!(origin.hits("/c"), 2);
    let m = metrics_text(b).await;
    assert!(
        metric_sum(&m, "seawall_redis_corrupt_entries_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );

    // B's fresh store replaces the garbage; C can decode it.
    let poll = Poll::new(format!("{k} rewritten"), EVENTUALLY);
    loop {
        let fields = redis.hkeys(&k).await;
        let mut clean = !fields.is_empty();
        for f in &fields {
            clean &= redis.cli_bytes(&["HGET", &k, f]).await != b"garbage";
        }
        if clean {
            break;
        }
        poll.tick().await;
    }
    let (status, h, body) = shared_get(c, "/c").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "c body");
    let cs = cache_status(&h);
    assert!(is_shared_hit(&cs), "{cs}");
    assert_eq!(origin.hits("/c"), 2);

    assert_eq!(redis.cli(&["GET", &old]).await, "old");
    assert_eq!(redis.cli(&["GET", "other:key"]).await, "x");

    // Clear removes every v2 entry and nothing else.
    let answer = clear(a).await;
    assert_fanned_out(&answer, 3);
    let poll = Poll::new("no v2 entry left after clear", EVENTUALLY);
    while !redis.keys(&ns_key("e:*")).await.is_empty() {
        poll.tick().await;
    }
    for r in &fleet.replicas {
        wait_l1(r, "/c", false).await;
    }
    assert_eq!(redis.cli(&["GET", &old]).await, "old");
    assert_eq!(redis.cli(&["GET", "other:key"]).await, "x");
}

// ---------------------------------------------------------------------------------------------
// Write limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_over_l2_max_object_size_stay_in_memory_only() {
    let _shared = HEAVY.read().await;
    let redis = RedisServer::start().await;
    let big = "b".repeat(4096);
    let origin = MockOrigin::new()
        .route("/big", fresh(&big, 60))
        .route("/small", fresh("s", 60))
        .start()
        .await;
    let config = replica_config(&origin.url(), &redis.url(), "a", TIMEOUT).replace(
        "l2_max_object_size = \"1MiB\"",
        "l2_max_object_size = \"1KiB\"",
    );
    let a = TestProxy::with_config(&config).await;
    redis.wait_heartbeats(1).await;

    let (status, h, body) = shared_get(&a, "/big").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, big.as_str());
    assert_eq!(cache_status(&h), STORED);
    let (_, h, _) = shared_get(&a, "/big").await;
    assert!(is_l1_hit(&cache_status(&h)), "kept in memory");
    // A small one written after it is in Redis: the big one was refused, not pending.
    shared_get(&a, "/small").await;
    redis.wait_entry("/small").await;
    assert_eq!(redis.cli(&["EXISTS", &entry_key("/big")]).await, "0");
    let m = metrics_text(&a).await;
    assert_eq!(
        metric_with(&m, "seawall_redis_writes_total", "result", "too_large"),
        1.0,
        "{m}"
    );
    assert_eq!(origin.hits("/big"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_write_queue_drops_and_counts_writes_and_serves_everyone() {
    let _shared = HEAVY.read().await;
    let redis = RedisServer::start().await;
    let origin = MockOrigin::new().route("/m", by_query).start().await;
    // One write may wait; Redis frozen: each write waits out the timeout until the breaker opens.
    let config = replica_config(&origin.url(), &redis.url(), "a", "300ms")
        .replace("write_queue = 1024", "write_queue = 1")
        .replace("breaker_failures = 5", "breaker_failures = 50");
    let a = Arc::new(TestProxy::with_config(&config).await);
    redis.wait_heartbeats(1).await;
    // Warm the connection, then freeze Redis: the bus notices at its next ping; until then
    // lookups and locks time out too, and every request still gets its answer.
    shared_get(&a, "/m?i=warm").await;
    redis.pause();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let a = a.clone();
        set.spawn(async move {
            let (status, _, body) = shared_get(&a, &format!("/m?i={i}")).await;
            assert_eq!(status, StatusCode::OK, "request {i}");
            assert_eq!(body, format!("m:i={i}"));
        });
    }
    bounded("20 requests with Redis frozen", async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await;
    let m = metrics_text(&a).await;
    redis.resume();
    assert!(
        metric_with(&m, "seawall_redis_writes_total", "result", "dropped") >= 1.0,
        "{m}"
    );
    assert_eq!(origin.total_hits(), 21, "every key fetched once");
}

// ---------------------------------------------------------------------------------------------
// Redis Sentinel
// ---------------------------------------------------------------------------------------------

/// A data node's config: no persistence, loopback only.
fn data_node_conf(port: u16, dir: &std::path::Path) -> String {
    format!(
        "port {port}\nbind 127.0.0.1\nprotected-mode no\nsave \"\"\nappendonly no\ndir {}\n",
        dir.display()
    )
}

/// How long a failover may take here: the sentinels notice after 1 s, agree, elect, promote;
/// the replicas then find the new primary (generous for a debug build on two cores).
const FAILOVER: Duration = Duration::from_secs(30);

/// A primary, a standby replicating it and three sentinels watching it as `main` (quorum 2,
/// down after 1 s), once the standby is in sync and the sentinels know each other and it.
async fn sentinel_group() -> (RedisNode, RedisNode, Vec<RedisNode>) {
    let primary = RedisNode::start("redis-server", data_node_conf).await;
    let p = primary.port();
    let standby = RedisNode::start("redis-server", move |port, dir| {
        format!("{}replicaof 127.0.0.1 {p}\n", data_node_conf(port, dir))
    })
    .await;
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(
            RedisNode::start("redis-sentinel", move |port, dir| {
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                     sentinel monitor main 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds main 1000\n\
                     sentinel failover-timeout main 5000\n",
                    dir.display()
                )
            })
            .await,
        );
    }
    // A failover needs the standby in sync and the sentinels aware of each other and of it.
    let poll = Poll::new("standby in sync, sentinels acquainted", FAILOVER);
    loop {
        let mut ready = standby
            .cli(&["INFO", "replication"])
            .await
            .contains("master_link_status:up");
        for s in &sentinels {
            ready &= s
                .cli(&["INFO", "sentinel"])
                .await
                .contains("slaves=1,sentinels=3");
        }
        if ready {
            return (primary, standby, sentinels);
        }
        poll.tick().await;
    }
}

/// Two Seawall replicas (`a`, `b`) that find the primary through `sentinels`.
async fn sentinel_fleet(origin: &MockOrigin, sentinels: &[RedisNode]) -> Fleet {
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let config = |id: &str| {
        replica_config(&origin.url(), "redis://unused:1", id, TIMEOUT).replace(
            "url = \"redis://unused:1\"\n",
            &format!("sentinels = {nodes:?}\nmaster_name = \"main\"\n"),
        )
    };
    let fleet = Fleet {
        replicas: vec![
            TestProxy::with_config(&config("a")).await,
            TestProxy::with_config(&config("b")).await,
        ],
    };
    for r in &fleet.replicas {
        wait_shared_ok(r, FAILOVER).await;
    }
    fleet
}

/// Fills `/after?n=…` on A until one reaches the node on `port` and B answers it as a shared
/// hit (bounded by [`FAILOVER`]); that path.
async fn share_through(fleet: &Fleet, port: u16, sentinels: &[RedisNode]) -> String {
    let (a, b) = (&fleet[0], &fleet[1]);
    let poll = Poll::new(format!("sharing through the node on port {port}"), FAILOVER);
    let mut i = 0;
    loop {
        i += 1;
        let path = format!("/after?n={i}");
        let (status, _, _) = shared_get(a, &path).await;
        assert_eq!(status, StatusCode::OK);
        let k = entry_key(&path);
        let mut stored = false;
        for _ in 0..20 {
            if redis_cli_raw(port, &["HLEN", &k], CLI_WAIT).await == Ok(b"1".to_vec()) {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if stored {
            let (_, h, _) = shared_get(b, &path).await;
            if is_shared_hit(&cache_status(&h)) {
                return path;
            }
        }
        if poll.expired() {
            let logs: Vec<String> = sentinels.iter().map(RedisNode::log).collect();
            panic!(
                "no sharing through port {port}; sentinel logs:\n{}",
                logs.join("\n---\n")
            );
        }
        poll.tick().await;
    }
}

/// A purge on A after the failover reaches B (through the new primary's stream).
async fn purge_reaches_b(fleet: &Fleet, path: &str) {
    let (a, b) = (&fleet[0], &fleet[1]);
    wait_l1(b, path, true).await;
    let answer = purge(a, &format!(r#"{{"url": "{}"}}"#, key(path))).await;
    assert!(answer["shared"]["queued"].is_null(), "{answer}");
    let poll = Poll::new("B drops the purged entry", FAILOVER);
    while in_l1(b, path).await {
        poll.tick().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_sentinel_the_replicas_follow_a_failover_and_keep_sharing_and_purging() {
    let _alone = HEAVY.write().await;
    let (mut primary, standby, sentinels) = sentinel_group().await;
    let p = primary.port();
    let origin = MockOrigin::new()
        .route("/before", fresh("before", 300))
        .route("/after", by_query)
        .start()
        .await;
    let fleet = sentinel_fleet(&origin, &sentinels).await;
    let (a, b) = (&fleet[0], &fleet[1]);

    // Found through the sentinels: A's fill is B's shared hit.
    let poll = Poll::new("A's fill in the primary", FAILOVER);
    loop {
        let (status, _, _) = shared_get(a, "/before").await;
        assert_eq!(status, StatusCode::OK);
        if redis_cli_raw(p, &["HLEN", &entry_key("/before")], CLI_WAIT).await == Ok(b"1".to_vec()) {
            break;
        }
        poll.tick().await;
    }
    let (_, h, _) = shared_get(b, "/before").await;
    let cs = cache_status(&h);
    assert!(is_shared_hit(&cs), "{cs}");

    // Sharing resumes once the standby is promoted and both replicas moved there.
    primary.kill();
    let path = share_through(&fleet, standby.port(), &sentinels).await;
    assert!(
        standby.cli(&["ROLE"]).await.starts_with("master"),
        "the standby was promoted"
    );
    purge_reaches_b(&fleet, &path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_sentinel_a_graceful_failover_moves_the_replicas_off_the_demoted_primary() {
    let _alone = HEAVY.write().await;
    let (primary, standby, sentinels) = sentinel_group().await;
    let origin = MockOrigin::new().route("/after", by_query).start().await;
    let fleet = sentinel_fleet(&origin, &sentinels).await;
    share_through(&fleet, primary.port(), &sentinels).await;

    // The old primary stays up (as a replica, refusing writes): only the sentinels' word, or
    // its READONLY answers, can move the replicas.
    let answer = sentinels[0].cli(&["SENTINEL", "FAILOVER", "main"]).await;
    assert_eq!(answer, "OK", "SENTINEL FAILOVER: {answer}");
    let poll = Poll::new("the standby promoted", FAILOVER);
    while !standby.cli(&["ROLE"]).await.starts_with("master") {
        poll.tick().await;
    }
    // Writes now succeed on the promoted standby only: A's fill landing there means A moved.
    let path = share_through(&fleet, standby.port(), &sentinels).await;
    purge_reaches_b(&fleet, &path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_sentinel_a_purge_right_before_the_primary_dies_holds_on_the_promoted_standby() {
    let _alone = HEAVY.write().await;
    let (mut primary, standby, sentinels) = sentinel_group().await;
    let p = primary.port();
    let origin = MockOrigin::new()
        .route("/gone", fresh("gone", 300))
        .route("/after", by_query)
        .start()
        .await;
    let fleet = sentinel_fleet(&origin, &sentinels).await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let k = entry_key("/gone");
    let poll = Poll::new("A's fill in the primary", FAILOVER);
    loop {
        let (status, _, _) = shared_get(a, "/gone").await;
        assert_eq!(status, StatusCode::OK);
        if redis_cli_raw(p, &["HLEN", &k], CLI_WAIT).await == Ok(b"1".to_vec()) {
            break;
        }
        poll.tick().await;
    }
    let (_, h, _) = shared_get(b, "/gone").await;
    assert!(is_shared_hit(&cache_status(&h)), "{}", cache_status(&h));
    let sk = standby.port();
    let poll = Poll::new("the entry replicated to the standby", FAILOVER);
    while redis_cli_raw(sk, &["EXISTS", &k], CLI_WAIT).await != Ok(b"1".to_vec()) {
        poll.tick().await;
    }

    // The answer comes once the standby holds the purge (WAIT), so killing the primary at
    // once loses nothing.
    let answer = purge(a, &format!(r#"{{"url": "{}"}}"#, key("/gone"))).await;
    assert!(answer["shared"]["queued"].is_null(), "{answer}");
    assert_eq!(
        redis_cli_raw(sk, &["EXISTS", &k], CLI_WAIT).await,
        Ok(b"0".to_vec()),
        "the standby holds the purge when the answer comes"
    );
    wait_l1(b, "/gone", false).await;
    primary.kill();
    let killed = tokio::time::Instant::now();
    share_through(&fleet, sk, &sentinels).await;
    eprintln!(
        "failover: sharing resumed {} ms after the primary was killed",
        killed.elapsed().as_millis()
    );

    // The new primary never held the purged response: A fetches it again, and B shares that.
    let (status, h, _) = shared_get(a, "/gone").await;
    assert_eq!(status, StatusCode::OK);
    let cs = cache_status(&h);
    assert!(!is_l1_hit(&cs) && !is_shared_hit(&cs), "{cs}");
    assert_eq!(
        origin.hits("/gone"),
        2,
        "one fill before the purge, one after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_no_replica_confirms_stays_journalled_until_one_does() {
    let _shared = HEAVY.read().await;
    let primary = RedisNode::start("redis-server", data_node_conf).await;
    let p = primary.port();
    let standby = RedisNode::start("redis-server", move |port, dir| {
        format!("{}replicaof 127.0.0.1 {p}\n", data_node_conf(port, dir))
    })
    .await;
    let poll = Poll::new("standby in sync", EVENTUALLY);
    while !standby
        .cli(&["INFO", "replication"])
        .await
        .contains("master_link_status:up")
    {
        poll.tick().await;
    }
    let url = format!("redis://127.0.0.1:{p}");
    let origin = MockOrigin::new().route("/w", fresh("w", 300)).start().await;
    let fleet = Fleet::start_with(&origin.url(), &[url]).await;
    let a = &fleet[0];

    // A frozen standby never acknowledges (WAIT 1 answers 0): the purge is applied to Redis
    // but stays journalled, since a failover now would lose it.
    standby.pause();
    let answer = purge(a, &format!(r#"{{"url": "{}"}}"#, key("/w"))).await;
    standby.resume();
    assert_queued(&answer, 1);
    assert!(
        answer["shared"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no replica")),
        "{answer}"
    );
    // Once the standby acknowledges, the journal is published again and empties.
    let poll = Poll::new(
        "the journal empties once the standby acknowledges",
        EVENTUALLY,
    );
    while journal_depth(a).await > 0.0 {
        poll.tick().await;
    }
}

/// A data node that persists only when told to (`SAVE`), into its own directory.
fn snapshot_node_conf(port: u16, dir: &std::path::Path) -> String {
    format!(
        "port {port}\nbind 127.0.0.1\nprotected-mode no\nsave \"\"\nappendonly no\n\
         dbfilename dump.rdb\ndir {}\n",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_redis_restarts_from_a_snapshot_older_than_a_purge_the_purged_entry_is_not_served() {
    let _shared = HEAVY.read().await;
    let mut redis = RedisNode::start("redis-server", snapshot_node_conf).await;
    let url = format!("redis://127.0.0.1:{}", redis.port());
    let origin = MockOrigin::new().route("/r", fresh("r", 300)).start().await;
    let fleet = Fleet::start_with(&origin.url(), &[url.clone(), url]).await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let k = entry_key("/r");
    let (status, _, _) = shared_get(a, "/r").await;
    assert_eq!(status, StatusCode::OK);
    let poll = Poll::new("A's fill in Redis", EVENTUALLY);
    while redis.cli(&["HLEN", &k]).await != "1" {
        poll.tick().await;
    }
    // The snapshot holds the entry; the purge after it is never persisted.
    assert_eq!(redis.cli(&["SAVE"]).await, "OK");
    let answer = purge(a, &format!(r#"{{"url": "{}"}}"#, key("/r"))).await;
    assert!(answer["shared"]["queued"].is_null(), "{answer}");
    let poll = Poll::new("B applied A's purge", EVENTUALLY);
    while metric_with(
        &metrics_text(b).await,
        "seawall_redis_purges_applied_total",
        "source",
        "live",
    ) < 1.0
    {
        poll.tick().await;
    }

    redis.restart().await;
    assert_eq!(
        redis.cli(&["HLEN", &k]).await,
        "1",
        "the purged entry is back from the snapshot"
    );
    // B's listener is back: it saw another run_id and a stream behind its cursor.
    let poll = Poll::new("B noticed the restart", EVENTUALLY);
    while metric_with(
        &metrics_text(b).await,
        "seawall_redis_purges_applied_total",
        "source",
        "gap",
    ) < 1.0
    {
        poll.tick().await;
    }
    let misses = || async {
        metric_with(
            &metrics_text(b).await,
            "seawall_redis_l2_lookups_total",
            "result",
            "miss",
        )
    };
    let before = misses().await;
    let (status, h, _) = shared_get(b, "/r").await;
    assert_eq!(status, StatusCode::OK);
    let cs = cache_status(&h);
    assert!(
        !is_shared_hit(&cs),
        "the purged entry was served again: {cs}"
    );
    assert!(
        misses().await > before,
        "B read Redis and refused the entry"
    );
    assert_eq!(origin.hits("/r"), 2, "B fetched it again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_sentinel_with_passwords_the_replicas_log_in_to_sentinels_and_data_nodes() {
    let _alone = HEAVY.write().await;
    const DATA_PW: &str = "data-secret";
    const SENTINEL_PW: &str = "sentinel-secret";
    let auth = format!("requirepass {DATA_PW}\nmasterauth {DATA_PW}\n");
    let primary = RedisNode::start_as("redis-server", Some(DATA_PW), |port, dir| {
        format!("{}{auth}", data_node_conf(port, dir))
    })
    .await;
    let p = primary.port();
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(
            RedisNode::start_as("redis-sentinel", Some(SENTINEL_PW), move |port, dir| {
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                     requirepass {SENTINEL_PW}\nsentinel sentinel-pass {SENTINEL_PW}\n\
                     sentinel monitor main 127.0.0.1 {p} 2\n\
                     sentinel auth-pass main {DATA_PW}\n\
                     sentinel down-after-milliseconds main 1000\n",
                    dir.display()
                )
            })
            .await,
        );
    }
    let secrets = unique_dir("seawall-sentinel-secrets");
    let (data_file, sentinel_file) = (secrets.join("data"), secrets.join("sentinel"));
    std::fs::write(&data_file, format!("{DATA_PW}\n")).unwrap();
    std::fs::write(&sentinel_file, format!("{SENTINEL_PW}\n")).unwrap();

    let origin = MockOrigin::new().route("/s", fresh("s", 300)).start().await;
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let config = |id: &str| {
        replica_config(&origin.url(), "redis://unused:1", id, TIMEOUT).replace(
            "url = \"redis://unused:1\"\n",
            &format!(
                "sentinels = {nodes:?}\nmaster_name = \"main\"\npassword_file = {:?}\n\
                 sentinel_password_file = {:?}\n",
                data_file.display().to_string(),
                sentinel_file.display().to_string()
            ),
        )
    };
    let a = TestProxy::with_config(&config("a")).await;
    let b = TestProxy::with_config(&config("b")).await;
    wait_shared_ok(&a, FAILOVER).await;
    wait_shared_ok(&b, FAILOVER).await;

    let k = entry_key("/s");
    let poll = Poll::new("A's fill in the password-protected primary", FAILOVER);
    loop {
        let (status, _, _) = shared_get(&a, "/s").await;
        assert_eq!(status, StatusCode::OK);
        if primary.cli(&["HLEN", &k]).await == "1" {
            break;
        }
        if poll.expired() {
            panic!(
                "A never wrote to the primary; primary log:\n{}",
                primary.log()
            );
        }
        poll.tick().await;
    }
    let (_, h, _) = shared_get(&b, "/s").await;
    let cs = cache_status(&h);
    assert!(is_shared_hit(&cs), "{cs}");
    assert_eq!(origin.hits("/s"), 1);
    let _ = std::fs::remove_dir_all(&secrets);
}

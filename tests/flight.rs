//! One upstream fetch seen from the clients that share it: a leader's own request never
//! switches coalescing off for the others, large downloads never stall any reader that keeps
//! reading, and a fetch nobody waits for any more is cancelled at the origin.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "cache/support.rs"]
mod cache_support;

#[path = "admin/support.rs"]
mod admin_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use admin_support::{must, parse_exposition, sample, scrape};
use bytes::Bytes;
use cache_support::{burst, config, get_with, is_stored, settle, wait_until};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Parts = http::request::Parts;

async fn metrics(proxy: &TestProxy) -> Vec<admin_support::Sample> {
    parse_exposition(&scrape(&proxy.admin_url("/metrics")).await)
}

// ---------------------------------------------------------------------------------------------
// Item 6: one request cannot switch off coalescing for everyone
// ---------------------------------------------------------------------------------------------

/// An origin path whose answer depends on the request as origins' often do: `X-Bad` gets a
/// 400 without freshness, `Authorization` a personal 200, anything else a public 200 numbered
/// by how many public answers were given. Every answer takes `delay_ms`.
fn request_dependent(delay_ms: u64) -> impl Fn(&Parts, &Bytes) -> MockResponse + Send + Sync {
    let n = Arc::new(AtomicU64::new(0));
    move |parts, _| {
        let h = &parts.headers;
        if h.contains_key("x-bad") {
            MockResponse::ok("bad request").status(400).delay(delay_ms)
        } else if h.contains_key("authorization") {
            MockResponse::ok("for the attacker only")
                .header("cache-control", "max-age=60")
                .delay(delay_ms)
        } else {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            MockResponse::ok(format!("public{i}"))
                .header("cache-control", "max-age=60")
                .delay(delay_ms)
        }
    }
}

/// Leaders whose own request makes their response unshareable.
const PERSONAL_LEADERS: [(&str, &str); 3] = [
    ("authorization", "Bearer attacker"),
    ("cache-control", "no-store"),
    ("x-bad", "1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_own_request_is_personal_does_not_send_its_followers_upstream() {
    const FOLLOWERS: usize = 50;
    let mut origin = MockOrigin::new();
    for i in 0..PERSONAL_LEADERS.len() {
        origin = origin.route(&format!("/p{i}"), request_dependent(400));
    }
    let origin = origin.start().await;
    let proxy = TestProxy::with_config(&config(&origin.url(), "", "", "")).await;

    for (i, (name, value)) in PERSONAL_LEADERS.iter().enumerate() {
        let path = format!("/p{i}");
        let url = proxy.url(&path);
        // The attacker's request reaches the origin first...
        let u = url.clone();
        let (n, v) = (name.to_string(), value.to_string());
        let attacker = tokio::spawn(async move { get_with(&u, &[(&n, &v)]).await });
        origin.wait_hits(&path, 1).await;
        // ...while fifty innocent clients ask for the same URL.
        let answers = burst(FOLLOWERS, |_| {
            let u = url.clone();
            async move { get(&u).await }
        })
        .await;
        let (_, _, mine) = bounded("attacker", attacker).await.unwrap();
        let public = answers[0].2.clone();
        assert!(public.starts_with(b"public"), "{name}: {public:?}");
        assert_ne!(
            public, mine,
            "{name}: the victims never get the attacker's answer"
        );
        for (s, h, b) in &answers {
            assert_eq!(*s, StatusCode::OK, "{name}: {h:?}");
            assert_eq!(
                *b, public,
                "{name}: every victim gets the one public answer"
            );
        }
        assert!(
            origin.hits(&path) <= 2,
            "{name}: {} origin requests for one attacker and {FOLLOWERS} victims",
            origin.hits(&path)
        );

        // The key was not switched to hit-for-pass: a later burst is served from the cache.
        settle(&proxy).await;
        let before = origin.hits(&path);
        let later = burst(20, |_| {
            let u = url.clone();
            async move { get(&u).await }
        })
        .await;
        for (s, h, b) in &later {
            assert_eq!(*s, StatusCode::OK);
            assert_eq!(*b, public, "{name}");
            assert!(
                cache_status(h).starts_with("seawall; hit;"),
                "{name}: {h:?}"
            );
        }
        assert_eq!(origin.hits(&path), before, "{name}");
    }
    let s = metrics(&proxy).await;
    for reason in [
        "no-store",
        "private",
        "set-cookie",
        "vary-star",
        "vary-not-allowed",
        "must-understand",
    ] {
        assert_eq!(
            must(
                &s,
                "seawall_hit_for_pass_marked_total",
                &[("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }
    for reason in ["request-no-store", "authorization", "no-freshness"] {
        assert_eq!(
            sample(
                &s,
                "seawall_hit_for_pass_marked_total",
                &[("reason", reason)]
            ),
            None,
            "{reason} is never a hit-for-pass reason"
        );
    }
}

/// Responses unshareable by their own fields, and the reason each is counted under.
fn personal_responses() -> Vec<(&'static str, MockResponse)> {
    let ok = |cc: &str| MockResponse::ok("mine").header("cache-control", cc);
    vec![
        ("no-store", ok("no-store")),
        ("private", ok("private, max-age=60")),
        ("set-cookie", ok("max-age=60").header("set-cookie", "s=1")),
        ("vary-star", ok("max-age=60").header("vary", "*")),
        (
            "vary-not-allowed",
            ok("max-age=60").header("vary", "x-tenant"),
        ),
        (
            "must-understand",
            MockResponse::ok("mine")
                .status(299)
                .header("cache-control", "must-understand, no-store, max-age=60"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_is_personal_by_its_own_fields_marks_the_key_and_is_counted() {
    let cases = personal_responses();
    let mut origin = MockOrigin::new();
    for (reason, res) in &cases {
        origin = origin.route(&format!("/{reason}"), res.clone().delay(300));
    }
    let origin = origin.start().await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "",
        "",
        "vary_allowlist = [\"accept-encoding\"]",
    ))
    .await;

    for (reason, _) in &cases {
        let path = format!("/{reason}");
        let url = proxy.url(&path);
        let u = url.clone();
        let leader = tokio::spawn(async move { get(&u).await });
        origin.wait_hits(&path, 1).await;
        let answers = burst(5, |_| {
            let u = url.clone();
            async move { get(&u).await }
        })
        .await;
        bounded("leader", leader).await.unwrap();
        for (_, h, _) in &answers {
            assert!(!cache_status(h).contains("collapsed"), "{reason}: {h:?}");
        }
        // Each follower fetched its own; the next request goes straight upstream.
        assert_eq!(origin.hits(&path), 6, "{reason}");
        let passes = proxy
            .running()
            .state
            .coalesce()
            .stats
            .hit_for_pass
            .load(Ordering::SeqCst);
        get(&url).await;
        let after = proxy
            .running()
            .state
            .coalesce()
            .stats
            .hit_for_pass
            .load(Ordering::SeqCst);
        assert_eq!(after, passes + 1, "{reason}: the key is hit-for-pass");
        let s = metrics(&proxy).await;
        assert_eq!(
            must(
                &s,
                "seawall_hit_for_pass_marked_total",
                &[("reason", reason)]
            ),
            1.0,
            "{reason}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Item 8: a large cacheable download never stalls
// ---------------------------------------------------------------------------------------------

/// A cacheable `body` in 64 KiB chunks, `gap_ms` apart, with or without Content-Length.
fn download(body: &Bytes, gap_ms: u64, content_length: bool) -> MockResponse {
    let chunks: Vec<Bytes> = body.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    let mut r = MockResponse::ok(Bytes::new())
        .header("cache-control", "max-age=60")
        .delay(200)
        .chunked(chunks, gap_ms);
    if content_length {
        r = r.header("content-length", &body.len().to_string());
    }
    r
}

/// GETs `url` and reads the body at full speed; status, Cache-Status and the body.
async fn read_all(url: String) -> (StatusCode, String, Bytes) {
    let res = send(Request::get(&url).body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let cs = cache_status(res.headers());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, cs, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cacheable_download_above_max_object_size_completes_for_every_reader() {
    // (max_object_size setting, its size): a small limit and the default one.
    let limits: [(&str, usize); 2] = [("\"64KiB\"", 64 * 1024), ("\"8MiB\"", 8 << 20)];
    for (limit, size) in limits {
        let body = payload(size + 512 * 1024);
        let mut origin = MockOrigin::new();
        let mut paths = Vec::new();
        for (speed, gap) in [("fast", 0), ("slow", 2)] {
            for (framing, cl) in [("chunked", false), ("length", true)] {
                let path = format!("/{speed}-{framing}");
                origin = origin.route(&path, download(&body, gap, cl));
                paths.push(path);
            }
        }
        let origin = origin.start().await;
        let proxy = TestProxy::with_config(&config(
            &origin.url(),
            &format!("[cache]\nmax_object_size = {limit}"),
            "",
            "",
        ))
        .await;
        for path in &paths {
            for readers in [1usize, 4] {
                let url = proxy.url(&format!("{path}?r={readers}"));
                let before = origin.hits(path);
                let first = tokio::spawn(read_all(url.clone()));
                origin.wait_hits(path, before + 1).await;
                // The others join while the first is under way.
                let mut rest = Vec::new();
                for _ in 1..readers {
                    rest.push(tokio::spawn(read_all(url.clone())));
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                let mut all = vec![bounded("first reader", first).await.unwrap()];
                for r in rest {
                    all.push(bounded("joining reader", r).await.unwrap());
                }
                for (s, cs, b) in &all {
                    assert_eq!(*s, StatusCode::OK, "{limit} {path} x{readers}");
                    assert_eq!(b.len(), body.len(), "{limit} {path} x{readers}");
                    assert!(*b == body, "{limit} {path} x{readers}: body intact");
                    assert!(
                        !cs.contains("stored"),
                        "{limit} {path} x{readers}: dropped body reported as {cs:?}"
                    );
                }
                settle(&proxy).await;
                assert!(!is_stored(&proxy, &format!("{path}?r={readers}")));
            }
        }
    }
}

/// A client that sends a GET, reads the response head and then stops reading.
async fn stalled_reader(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_until(&mut s, b"\r\n\r\n").await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_cut_off_and_the_others_finish() {
    const SIZE: usize = 64 << 20;
    let body = payload(SIZE);
    let origin = MockOrigin::new()
        .route("/big", download(&body, 0, true))
        .route("/big-chunked", download(&body, 0, false))
        .start()
        .await;
    // A lag wide enough that a reading client starved of CPU by a busy test machine is never
    // taken for the stopped one (the stopped reader stalls a few MiB in, far behind it).
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[coalesce]\nmax_reader_lag = \"24MiB\"",
        "",
        "",
    ))
    .await;
    for (i, path) in ["/big", "/big-chunked"].into_iter().enumerate() {
        let url = proxy.url(path);
        let before = origin.hits(path);
        let fast = tokio::spawn(read_all(url.clone()));
        origin.wait_hits(path, before + 1).await;
        let mut stopped = stalled_reader(proxy.addr, path).await;
        let more = tokio::spawn(read_all(url.clone()));
        let (s, _, b) = bounded("fast reader", fast).await.unwrap();
        assert_eq!(s, StatusCode::OK);
        assert!(b == body, "{path}: the fast reader gets the whole body");
        let (s, _, b) = bounded("second fast reader", more).await.unwrap();
        assert_eq!(s, StatusCode::OK);
        assert!(b == body, "{path}: so does the other one");

        // The stopped reader was disconnected: reading on, it sees the end well short of
        // the whole body.
        let mut got = 0usize;
        bounded("stopped reader sees the end", async {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match stopped.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        assert!(got < SIZE, "{path}: the stopped reader got {got} bytes");
        let s = metrics(&proxy).await;
        assert_eq!(
            must(
                &s,
                "seawall_coalesce_rejected_total",
                &[("reason", "slow_reader")]
            ),
            (i + 1) as f64
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Item 9: work nobody waits for is cancelled
// ---------------------------------------------------------------------------------------------

/// What an origin connection saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    closed: AtomicU64,
}

/// An origin that reads each request and answers `head` after `head_delay` (never when
/// `None`), then `body_len` bytes of body, 1 KiB every 20 ms; it counts connections the
/// proxy closed before the body was sent in full.
async fn watching_origin(
    head_delay: Option<Duration>,
    head: &'static str,
    body_len: usize,
) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let st = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let st = st.clone();
            tokio::spawn(async move {
                let (mut rd, mut wr) = stream.into_split();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                st.requests.fetch_add(1, Ordering::SeqCst);
                let writer = tokio::spawn(async move {
                    let Some(d) = head_delay else {
                        return std::future::pending::<()>().await;
                    };
                    tokio::time::sleep(d).await;
                    let _ = wr.write_all(head.as_bytes()).await;
                    let mut left = body_len;
                    while left > 0 {
                        let n = left.min(1024);
                        if wr.write_all(&vec![b'x'; n]).await.is_err() {
                            return;
                        }
                        left -= n;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    std::future::pending::<()>().await
                });
                // The proxy closing its side ends the read with 0 (or an error).
                loop {
                    match rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                writer.abort();
                st.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

async fn wait_count(what: &str, c: &AtomicU64, n: u64) {
    wait_until(what, || c.load(Ordering::SeqCst) >= n).await;
}

fn cancelled(s: &[admin_support::Sample], reason: &str) -> f64 {
    sample(s, "seawall_fetches_cancelled_total", &[("reason", reason)]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_head_cancels_the_fetch() {
    let (addr, seen) = watching_origin(None, "", 0).await;
    let proxy = TestProxy::with_config(&config(&format!("http://{addr}"), "", "", "")).await;

    // HTTP/1: the client closes its connection.
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"GET /h1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    wait_count("origin got the request", &seen.requests, 1).await;
    drop(c);
    wait_count("origin sees the fetch closed", &seen.closed, 1).await;

    // HTTP/2: the client resets the stream and keeps the connection.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn_task = tokio::spawn(conn);
    let req = Request::get(format!("http://{}/h2", proxy.addr))
        .body(Full::<Bytes>::default())
        .unwrap();
    let pending = tokio::spawn(sender.send_request(req));
    wait_count("origin got the h2 request", &seen.requests, 2).await;
    pending.abort();
    wait_count("origin sees the h2 fetch closed", &seen.closed, 2).await;
    assert!(!conn_task.is_finished(), "the h2 connection stays open");

    // The reset stream's request is dropped by its own task; wait (bounded) for it.
    wait_until("the reset is counted", || {
        proxy
            .running()
            .state
            .lifecycle()
            .h2_streams_reset
            .load(Ordering::SeqCst)
            >= 1
    })
    .await;
    let s = metrics(&proxy).await;
    assert_eq!(cancelled(&s, "before_head"), 2.0);
    assert_eq!(must(&s, "seawall_h2_streams_reset_total", &[]), 1.0);
    conn_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_with_a_storable_head_continues_and_an_oversized_one_is_cancelled() {
    // Storable within max_object_size: the body is still fetched and stored.
    const SMALL: &str =
        "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 8192\r\n\r\n";
    let (addr, seen) = watching_origin(Some(Duration::from_millis(100)), SMALL, 8192).await;
    let proxy = TestProxy::with_config(&config(&format!("http://{addr}"), "", "", "")).await;
    let c = stalled_reader(proxy.addr, "/kept").await;
    drop(c);
    settle(&proxy).await;
    assert!(is_stored(&proxy, "/kept"), "the fetch went on and stored");
    let (s, h, b) = get(&proxy.url("/kept")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.len(), 8192);
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);

    // Above max_object_size: nobody will get it, so the origin sees the fetch closed.
    const BIG: &str =
        "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 1048576\r\n\r\n";
    let (addr, seen) = watching_origin(Some(Duration::from_millis(100)), BIG, 1 << 20).await;
    let proxy = TestProxy::with_config(&config(
        &format!("http://{addr}"),
        "[cache]\nmax_object_size = \"64KiB\"",
        "",
        "",
    ))
    .await;
    let c = stalled_reader(proxy.addr, "/big").await;
    drop(c);
    wait_count("origin sees the oversized fetch closed", &seen.closed, 1).await;
    let s = metrics(&proxy).await;
    assert_eq!(cancelled(&s, "not_storable"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_followers_wait_for_outlives_its_leaders_client() {
    const HEAD: &str =
        "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 2048\r\n\r\n";
    let (addr, seen) = watching_origin(Some(Duration::from_millis(600)), HEAD, 2048).await;
    let proxy = TestProxy::with_config(&config(&format!("http://{addr}"), "", "", "")).await;
    let mut leader = TcpStream::connect(proxy.addr).await.unwrap();
    leader
        .write_all(b"GET /f HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    wait_count("origin got the request", &seen.requests, 1).await;
    let url = format!("http://{}/f", proxy.addr);
    let follower = tokio::spawn(async move { get_with(&url, &[("host", "a")]).await });
    wait_until("the follower waits", || {
        proxy.running().state.coalesce().waiters() > 0
    })
    .await;
    leader.shutdown().await.unwrap();
    drop(leader);
    let (s, _, b) = bounded("follower", follower).await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.len(), 2048);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    assert_eq!(seen.closed.load(Ordering::SeqCst), 0);
    let s = metrics(&proxy).await;
    assert_eq!(cancelled(&s, "before_head"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_a_connection_leaves_behind_count_against_its_stream_limit() {
    // A storable 64 KiB body that takes about 1.3 s after its head.
    const HEAD: &str =
        "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 65536\r\n\r\n";
    let (addr, seen) = watching_origin(Some(Duration::ZERO), HEAD, 65536).await;
    let proxy = TestProxy::with_config(&config(
        &format!("http://{addr}"),
        "[server]\nhttp2_max_concurrent_streams = 2",
        "",
        "",
    ))
    .await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn_task = tokio::spawn(conn);
    // One client connection asks for five storable bodies and resets each stream as soon as
    // the head arrived: two fetches go on to be stored, which fills its two streams; the
    // other requests are refused without reaching the origin.
    for i in 0..5 {
        let req = Request::get(format!("http://{}/s{i}", proxy.addr))
            .body(Full::<Bytes>::default())
            .unwrap();
        let res = bounded(&format!("h2 head /s{i}"), sender.send_request(req))
            .await
            .unwrap();
        if i < 2 {
            assert_eq!(res.status(), StatusCode::OK);
            drop(res);
            // The proxy sees the reset (and leaves the fetch running) before the next request.
            wait_until("the reset reached the proxy", || {
                proxy
                    .running()
                    .state
                    .lifecycle()
                    .h2_streams_reset
                    .load(Ordering::SeqCst)
                    > i as u64
            })
            .await;
            continue;
        } else {
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "/s{i}");
            assert_eq!(
                cache_status(res.headers()),
                "seawall; fwd=bypass; detail=too-many-streams"
            );
            assert_eq!(res.headers()["retry-after"], "1");
        }
        drop(res);
    }
    settle(&proxy).await;
    let stored: Vec<usize> = (0..5)
        .filter(|i| is_stored(&proxy, &format!("/s{i}")))
        .collect();
    assert_eq!(stored, [0, 1]);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    assert_eq!(seen.closed.load(Ordering::SeqCst), 0);
    // Once they are stored, the connection is served again.
    let req = Request::get(format!("http://{}/s0", proxy.addr))
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = bounded("h2 head", sender.send_request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(cache_status(res.headers()).starts_with("seawall; hit;"));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 65536);
    let s = metrics(&proxy).await;
    assert_eq!(must(&s, "seawall_h2_streams_reset_total", &[]), 2.0);
    conn_task.abort();
}

/// The origin answers requests that carry a session cookie with a rolled session cookie (a
/// 304 to a revalidation, a 500 to a fresh fetch), and everyone else anonymously.
fn session_origin(status_for_cookie: u16) -> impl IntoRoute {
    move |parts: &http::request::Parts, _: &Bytes| {
        let cookie = parts
            .headers
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let conditional = parts.headers.contains_key("if-none-match");
        match (cookie, conditional, status_for_cookie) {
            (Some(c), true, 304) => MockResponse::with_status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=60")
                .header("set-cookie", &format!("{c}-rolled"))
                .delay(400),
            (Some(c), false, s) if s != 304 => MockResponse::ok("personal error")
                .status(s)
                .header("set-cookie", &format!("{c}-rolled"))
                .delay(400),
            _ => MockResponse::ok("public")
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=60"),
        }
    }
}

#[tokio::test]
async fn a_cookie_on_a_shared_revalidation_reaches_only_its_own_client() {
    let origin = MockOrigin::new()
        .route("/r", session_origin(304))
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(&origin.url(), "", "", "")).await;
    let (status, _, _) = get_with(&proxy.url("/r"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    settle(&proxy).await;
    cache_support::advance(&proxy, 61);

    // Alice's request leads the revalidation; the victims arrive while it is in flight.
    let url = proxy.url("/r");
    let alice = tokio::spawn(async move { get_with(&url, &[("cookie", "sid=alice")]).await });
    origin.wait_hits("/r", 2).await;
    let url = proxy.url("/r");
    let victims = burst(20, |_| {
        let url = url.clone();
        async move { get_with(&url, &[]).await }
    })
    .await;
    let (status, headers, _) = alice.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_str(&headers, "set-cookie"), "sid=alice-rolled");
    let mut collapsed = 0;
    for (status, headers, body) in victims {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "public");
        assert!(
            !headers.contains_key("set-cookie"),
            "a victim got Alice's session: {headers:?}"
        );
        collapsed += usize::from(cache_status(&headers).contains("collapsed"));
    }
    assert!(collapsed > 0, "no victim shared the revalidation");
    assert_eq!(origin.hits("/r"), 2, "one fill, one shared revalidation");
}

#[tokio::test]
async fn a_server_error_a_credentialed_leader_provoked_stays_with_it() {
    let origin = MockOrigin::new()
        .route("/p", session_origin(500))
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(&origin.url(), "", "", "")).await;
    let url = proxy.url("/p");
    let alice = tokio::spawn(async move { get_with(&url, &[("cookie", "sid=alice")]).await });
    origin.wait_hits("/p", 1).await;
    let url = proxy.url("/p");
    let victims = burst(20, |_| {
        let url = url.clone();
        async move { get_with(&url, &[]).await }
    })
    .await;
    let (status, headers, _) = alice.await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header_str(&headers, "set-cookie"), "sid=alice-rolled");
    for (status, headers, body) in victims {
        assert_eq!(status, StatusCode::OK, "a victim got Alice's error");
        assert_eq!(body, "public");
        assert!(!headers.contains_key("set-cookie"), "{headers:?}");
    }
    // The victims elected a leader of their own: one more origin request, not twenty.
    assert_eq!(origin.hits("/p"), 2);
}

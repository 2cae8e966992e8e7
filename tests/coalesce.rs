//! Request coalescing seen from outside: one upstream fetch per cache key however many clients
//! ask at once, with the edge cases (personal responses, failures, timeouts, caps, deadlines,
//! streaming to followers) checked against the mock origin's request counts.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "cache/support.rs"]
mod cache_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cache_support::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

type Parts = http::request::Parts;

const STORED: &str = "seawall; fwd=uri-miss; stored";
const COLLAPSED: &str = "seawall; fwd=uri-miss; stored; collapsed";
/// A body of unknown length (chunked) is stored once complete, but `stored` is only said
/// when the head shows it will fit `max_object_size`.
const STREAMED: &str = "seawall; fwd=uri-miss";
const STREAMED_COLLAPSED: &str = "seawall; fwd=uri-miss; collapsed";

/// The thousand-client tests take the machine; the others share it.
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn stats(proxy: &TestProxy) -> &seawall::cache::coalesce::CoalesceStats {
    &proxy.running().state.coalesce().stats
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::SeqCst)
}

/// A route answering `{prefix}{n}` (n counts its requests) with `headers`, after `delay_ms`.
fn counted(
    prefix: &'static str,
    headers: &'static [(&'static str, &'static str)],
    delay_ms: u64,
) -> impl Fn(&Parts, &Bytes) -> MockResponse + Send + Sync + 'static {
    let n = Arc::new(AtomicU64::new(0));
    move |_, _| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut r = MockResponse::ok(format!("{prefix}{i}")).delay(delay_ms);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    }
}

/// `n` concurrent GETs of `url`.
async fn get_burst(url: &str, n: usize) -> Vec<Answer> {
    burst(n, |_| {
        let url = url.to_string();
        async move { get(&url).await }
    })
    .await
}

/// One GET that reaches the origin first, then `followers` concurrent GETs while it is
/// still there. The leader's answer comes first.
async fn leader_then_followers(
    origin: &MockOrigin,
    path: &str,
    url: &str,
    followers: usize,
) -> Vec<Answer> {
    let before = origin.hits(path);
    let u = url.to_string();
    let leader = tokio::spawn(async move { get(&u).await });
    origin.wait_hits(path, before + 1).await;
    let rest = get_burst(url, followers).await;
    let mut all = vec![bounded("leader answer", leader).await.unwrap()];
    all.extend(rest);
    all
}

// ---------------------------------------------------------------------------------------------
// One fetch for many clients
// ---------------------------------------------------------------------------------------------

/// `N` concurrent clients for one cold key of `route`, whose body is `body`: the origin is
/// asked once and every client gets the same status and body. Followers carry `; collapsed`;
/// clients that connect only after the fill completed get a hit.
async fn thousand_clients_share_one_fetch(
    route: MockResponse,
    body: Bytes,
    (stored, collapsed_status): (&str, &str),
) {
    const N: usize = 1000;
    let _heavy = HEAVY.write().await;
    let origin = MockOrigin::new().route("/hot", route).start().await;
    let proxy = TestProxy::start(&origin.url()).await;

    let answers = get_burst(&proxy.url("/hot"), N).await;
    let (mut leaders, mut collapsed, mut hits) = (0, 0, 0);
    for (s, h, b) in &answers {
        assert_eq!(*s, StatusCode::OK);
        assert!(*b == body, "every client gets the same body");
        let cs = cache_status(h);
        if cs == stored {
            leaders += 1;
        } else if cs == collapsed_status {
            collapsed += 1;
        } else if cs.starts_with("seawall; hit;") {
            // Connected after the fill had completed and was stored.
            hits += 1;
        } else {
            panic!("unexpected Cache-Status {cs:?}");
        }
    }
    eprintln!("{N} clients: {leaders} fetched upstream, {collapsed} collapsed, {hits} hits");
    assert_eq!(origin.hits("/hot"), 1, "{leaders} clients fetched upstream");
    assert_eq!(leaders, 1);
    assert!(collapsed >= 1, "no follower was coalesced");
    assert_eq!(leaders + collapsed + hits, N);
    assert_eq!(load(&stats(&proxy).leaders), 1);
    assert_eq!(load(&stats(&proxy).coalesced), collapsed as u64);
    assert_eq!(load(&stats(&proxy).released), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_for_one_cold_key_make_one_origin_request() {
    // The body takes a few hundred milliseconds after the head, so the fill is still open
    // while the woken followers attach (see the small-body variant below for what happens
    // otherwise).
    let body = payload(4096);
    let chunks = body.chunks(1024).map(Bytes::copy_from_slice).collect();
    let route = MockResponse::ok(Bytes::new())
        .header("cache-control", "max-age=60")
        .delay(500)
        .chunked(chunks, 150);
    thousand_clients_share_one_fetch(route, body, (STREAMED, STREAMED_COLLAPSED)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_for_a_small_body_make_one_origin_request() {
    let body = payload(4096);
    let route = MockResponse::ok(body.clone())
        .header("cache-control", "max-age=60")
        .delay(500);
    thousand_clients_share_one_fetch(route, body, (STORED, COLLAPSED)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_are_served_when_the_leaders_client_disconnects() {
    let _shared = HEAVY.read().await;
    let origin = MockOrigin::new()
        .route(
            "/slow",
            MockResponse::ok(Bytes::new())
                .header("cache-control", "max-age=60")
                .delay(1000)
                .chunked(vec![Bytes::from("sha"), Bytes::from("red")], 300),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/slow");

    let u = url.clone();
    let leader = tokio::spawn(async move { get(&u).await });
    origin.wait_hits("/slow", 1).await;
    let u = url.clone();
    let followers = tokio::spawn(async move { get_burst(&u, 10).await });
    // Give the followers time to attach, then the leader's client goes away mid-fetch.
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());

    let answers = bounded("followers", followers).await.unwrap();
    let mut collapsed = 0;
    for (s, h, b) in &answers {
        assert_eq!(*s, StatusCode::OK);
        assert_eq!(b, "shared");
        let cs = cache_status(h);
        if cs == STREAMED_COLLAPSED {
            collapsed += 1;
        } else {
            assert!(cs.starts_with("seawall; hit;"), "{cs}");
        }
    }
    assert!(collapsed >= 1);
    assert_eq!(origin.hits("/slow"), 1);

    // The abandoned leader's fetch was still stored.
    settle(&proxy).await;
    let (_, h, b) = get(&url).await;
    assert_eq!(b, "shared");
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");
    assert_eq!(origin.hits("/slow"), 1);
}

// ---------------------------------------------------------------------------------------------
// Personal responses
// ---------------------------------------------------------------------------------------------

/// A personal response (`headers`) is never handed to another client; later bursts go
/// straight upstream.
async fn personal_response_is_never_shared(
    headers: &'static [(&'static str, &'static str)],
    detail: &str,
) {
    const N: usize = 10;
    let origin = MockOrigin::new()
        .route("/me", counted("user-", headers, 500))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/me");

    let answers = leader_then_followers(&origin, "/me", &url, N - 1).await;
    let mut bodies = std::collections::HashSet::new();
    for (s, h, b) in &answers {
        assert_eq!(*s, StatusCode::OK);
        assert_eq!(
            cache_status(h),
            format!("seawall; fwd=uri-miss; detail={detail}"),
            "no follower is marked collapsed"
        );
        assert!(bodies.insert(b.clone()), "body {b:?} went to two clients");
    }
    assert_eq!(origin.hits("/me"), N as u64);
    let st = stats(&proxy);
    assert_eq!(load(&st.coalesced), 0);
    assert_eq!(load(&st.released) + load(&st.hit_for_pass), N as u64 - 1);
    assert!(load(&st.released) >= 1, "no follower waited for the leader");

    // The key is now hit-for-pass: the next burst goes straight upstream, nobody waits.
    let hfp_before = load(&st.hit_for_pass);
    let released_before = load(&st.released);
    let answers = get_burst(&url, N).await;
    for (s, _, b) in &answers {
        assert_eq!(*s, StatusCode::OK);
        assert!(bodies.insert(b.clone()), "body {b:?} went to two clients");
    }
    assert_eq!(origin.hits("/me"), 2 * N as u64);
    assert_eq!(load(&st.hit_for_pass) - hfp_before, N as u64);
    assert_eq!(load(&st.released), released_before);
    assert_eq!(load(&st.leaders), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_response_is_never_shared_with_followers() {
    let _shared = HEAVY.read().await;
    personal_response_is_never_shared(&[("cache-control", "private, max-age=60")], "private").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_response_is_never_shared_with_followers() {
    let _shared = HEAVY.read().await;
    personal_response_is_never_shared(
        &[("cache-control", "max-age=60"), ("set-cookie", "sid=1")],
        "set-cookie",
    )
    .await;
}

#[tokio::test]
async fn storable_response_is_stored_while_the_key_is_hit_for_pass() {
    let _shared = HEAVY.read().await;
    let public = Arc::new(AtomicBool::new(false));
    let p = public.clone();
    let route = move |_: &Parts, _: &Bytes| {
        if p.load(Ordering::SeqCst) {
            MockResponse::ok("public").header("cache-control", "max-age=60")
        } else {
            MockResponse::ok("private").header("cache-control", "private, max-age=60")
        }
    };
    let origin = MockOrigin::new().route("/hfp", route).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/hfp");

    let (_, h, b) = get(&url).await;
    assert_eq!(b, "private");
    assert_eq!(cache_status(&h), "seawall; fwd=uri-miss; detail=private");
    settle(&proxy).await;

    public.store(true, Ordering::SeqCst);
    let (_, h, b) = get(&url).await;
    assert_eq!(b, "public");
    assert_eq!(cache_status(&h), STORED);
    assert_eq!(
        load(&stats(&proxy).hit_for_pass),
        1,
        "went straight upstream"
    );
    wait_stored(&proxy, "/hfp").await;

    let (_, h, b) = get(&url).await;
    assert_eq!(b, "public");
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");
    assert_eq!(origin.hits("/hfp"), 2);
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_503_goes_to_every_follower() {
    let _shared = HEAVY.read().await;
    const N: usize = 10;
    let origin = MockOrigin::new()
        .route("/err", MockResponse::ok("down").status(503).delay(1000))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;

    let answers = leader_then_followers(&origin, "/err", &proxy.url("/err"), N - 1).await;
    for (i, (s, h, b)) in answers.iter().enumerate() {
        assert_eq!(*s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b, "down");
        let expected = if i == 0 {
            "seawall; fwd=uri-miss"
        } else {
            "seawall; fwd=uri-miss; collapsed"
        };
        assert_eq!(cache_status(h), expected);
    }
    assert_eq!(origin.hits("/err"), 1);
    assert_eq!(load(&stats(&proxy).coalesced), N as u64 - 1);
    settle(&proxy).await;
    assert!(!is_stored(&proxy, "/err"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_503_with_a_stale_copy_gives_followers_the_stale_copy() {
    let _shared = HEAVY.read().await;
    const N: usize = 10;
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let route = move |_: &Parts, _: &Bytes| {
        if f.load(Ordering::SeqCst) {
            MockResponse::ok("down").status(503).delay(1000)
        } else {
            MockResponse::ok("good").header("cache-control", "max-age=10, stale-if-error=600")
        }
    };
    let origin = MockOrigin::new().route("/sie", route).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/sie");
    get(&url).await;
    settle(&proxy).await;

    failing.store(true, Ordering::SeqCst);
    proxy
        .running()
        .state
        .cache()
        .clock
        .advance(Duration::from_secs(20));
    let answers = leader_then_followers(&origin, "/sie", &url, N - 1).await;
    for (s, h, b) in &answers {
        assert_eq!(*s, StatusCode::OK);
        assert_eq!(b, "good");
        assert_eq!(
            cache_status(h),
            "seawall; fwd=stale; fwd-status=503; detail=stale-if-error"
        );
        assert_eq!(hv(h, "x-cache"), "STALE");
    }
    assert_eq!(origin.hits("/sie"), 2);
    assert_eq!(load(&stats(&proxy).leaders), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revalidations_share_one_conditional_request() {
    let _shared = HEAVY.read().await;
    const N: usize = 10;
    let route = |parts: &Parts, _: &Bytes| {
        if parts
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"e1\"")
        {
            MockResponse::with_status(304)
                .header("etag", "\"e1\"")
                .header("cache-control", "max-age=60")
                .delay(1000)
        } else {
            MockResponse::ok("body-1")
                .header("etag", "\"e1\"")
                .header("cache-control", "max-age=60")
        }
    };
    let origin = MockOrigin::new().route("/rv", route).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/rv");
    get(&url).await;
    settle(&proxy).await;
    proxy
        .running()
        .state
        .cache()
        .clock
        .advance(Duration::from_secs(61));

    let answers = leader_then_followers(&origin, "/rv", &url, N - 1).await;
    for (i, (s, h, b)) in answers.iter().enumerate() {
        assert_eq!(*s, StatusCode::OK);
        assert_eq!(b, "body-1");
        let cs = cache_status(h);
        assert!(cs.starts_with("seawall; fwd=stale; fwd-status=304"), "{cs}");
        assert_eq!(i > 0, cs.ends_with("; collapsed"), "{i}: {cs}");
    }
    assert_eq!(origin.hits("/rv"), 2, "one conditional request for all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_timeout_gives_followers_504() {
    let _shared = HEAVY.read().await;
    const N: usize = 10;
    let origin = MockOrigin::new()
        .route(
            "/late",
            MockResponse::ok("too late")
                .header("cache-control", "max-age=60")
                .delay(3000),
        )
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&config(&origin.url(), "", "ttfb_timeout = \"1s\"", "")).await;

    let answers = leader_then_followers(&origin, "/late", &proxy.url("/late"), N - 1).await;
    for (s, h, _) in &answers {
        assert_eq!(*s, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            cache_status(h),
            "seawall; fwd=uri-miss; detail=upstream-timeout"
        );
    }
    assert_eq!(origin.hits("/late"), 1);
    assert_eq!(load(&stats(&proxy).coalesced), N as u64 - 1);
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_past_the_cap_get_503_with_retry_after() {
    let _shared = HEAVY.read().await;
    const N: usize = 20;
    let origin = MockOrigin::new()
        .route(
            "/capped",
            MockResponse::ok(Bytes::new())
                .header("cache-control", "max-age=60")
                .delay(1000)
                .chunked(vec![Bytes::from("cap"), Bytes::from("ped")], 300),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[coalesce]\nmax_waiters = 5",
        "",
        "",
    ))
    .await;

    let answers = leader_then_followers(&origin, "/capped", &proxy.url("/capped"), N - 1).await;
    let (mut ok, mut refused, mut collapsed) = (0, 0, 0);
    for (s, h, b) in &answers {
        match *s {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(b, "capped");
                if cache_status(h) == STREAMED_COLLAPSED {
                    collapsed += 1;
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert_eq!(header_str(h, "retry-after"), "1");
                assert_eq!(
                    cache_status(h),
                    "seawall; fwd=uri-miss; detail=too-many-waiters"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    eprintln!("{ok} served ({collapsed} collapsed), {refused} refused");
    assert!(refused >= 1);
    assert!(collapsed <= 5, "{collapsed} followers past the cap");
    assert_eq!(ok + refused, N);
    assert_eq!(load(&stats(&proxy).waiter_cap), refused as u64);
    assert_eq!(origin.hits("/capped"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_give_up_at_the_wait_timeout() {
    let _shared = HEAVY.read().await;
    const N: usize = 10;
    let origin = MockOrigin::new()
        .route(
            "/wt",
            MockResponse::ok("slow")
                .header("cache-control", "max-age=60")
                .delay(1000),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[coalesce]\nwait_timeout = \"200ms\"",
        "",
        "",
    ))
    .await;
    let url = proxy.url("/wt");

    let answers = leader_then_followers(&origin, "/wt", &url, N - 1).await;
    let (s, h, b) = &answers[0];
    assert_eq!(*s, StatusCode::OK, "the leader waits for the origin");
    assert_eq!(b, "slow");
    assert_eq!(cache_status(h), STORED);
    for (s, h, _) in &answers[1..] {
        assert_eq!(*s, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            cache_status(h),
            "seawall; fwd=uri-miss; detail=wait-timeout"
        );
    }
    assert_eq!(load(&stats(&proxy).wait_timeouts), N as u64 - 1);
    assert_eq!(origin.hits("/wt"), 1);

    settle(&proxy).await;
    let (_, h, b) = get(&url).await;
    assert_eq!(b, "slow");
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");
    assert_eq!(origin.hits("/wt"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_coalescing_sends_every_client_upstream() {
    let _shared = HEAVY.read().await;
    const N: usize = 10;
    let origin = MockOrigin::new()
        .route(
            "/solo",
            counted("v", &[("cache-control", "max-age=60")], 1000),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[coalesce]\nenabled = false",
        "",
        "",
    ))
    .await;

    let answers = get_burst(&proxy.url("/solo"), N).await;
    let mut bodies = std::collections::HashSet::new();
    for (s, h, b) in &answers {
        assert_eq!(*s, StatusCode::OK);
        assert_eq!(cache_status(h), STORED);
        bodies.insert(b.clone());
    }
    assert_eq!(bodies.len(), N);
    assert_eq!(origin.hits("/solo"), N as u64);
    assert_eq!(load(&stats(&proxy).leaders), 0);
    assert_eq!(load(&stats(&proxy).coalesced), 0);
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_streams_before_the_origin_has_finished() {
    let _shared = HEAVY.read().await;
    const CHUNK: usize = 64 * 1024;
    let whole = payload(2 * 1024 * 1024);
    let chunks: Vec<Bytes> = whole.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
    let (before, after) = chunks.split_at(4);
    let origin = GatedOrigin::start(
        before.to_vec(),
        after.to_vec(),
        vec![("cache-control", "max-age=60")],
    )
    .await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/stream");
    let get_req = || {
        Request::get(url.as_str())
            .body(Full::<Bytes>::default())
            .unwrap()
    };

    let mut leader = send(get_req()).await.unwrap();
    assert_eq!(leader.status(), StatusCode::OK);
    assert_eq!(cache_status(leader.headers()), STREAMED);
    let first = bounded("leader's first frame", leader.body_mut().frame())
        .await
        .unwrap()
        .unwrap();
    let first_len = first.into_data().unwrap().len();
    assert!(first_len > 0);

    // The origin holds the rest of the body until the follower got bytes.
    let mut follower = send(get_req()).await.unwrap();
    assert_eq!(follower.status(), StatusCode::OK);
    assert_eq!(cache_status(follower.headers()), STREAMED_COLLAPSED);
    let mut got = bounded("follower's first frame", follower.body_mut().frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    assert!(!got.is_empty());
    assert!(
        !origin.finished.load(Ordering::SeqCst),
        "the follower got bytes before the origin sent its last chunk"
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);

    origin.open();
    let rest = read_body(follower.into_body()).await.unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(got.len(), whole.len());
    assert!(got == whole, "follower body intact");
    let leader_rest = read_body(leader.into_body()).await.unwrap();
    assert_eq!(first_len + leader_rest.len(), whole.len());
    assert!(origin.finished.load(Ordering::SeqCst));
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);

    settle(&proxy).await;
    let (_, h, b) = get(&url).await;
    assert!(b == whole);
    assert!(cache_status(&h).starts_with("seawall; hit;"), "{h:?}");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
}

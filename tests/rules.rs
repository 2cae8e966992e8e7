//! Caching rules seen from the victim's side (issues 14 and 15): operator lifetimes only for
//! cacheable statuses, no borrowed freshness for credentialed requests, `Age`, targeted fields,
//! HTTP-dates, `Accept-Language` variants and serving stale when the origin cannot be reached.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "cache/support.rs"]
mod cache_support;

#[path = "redis/support.rs"]
mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cache_support::*;
use http::StatusCode;
use support::*;

type Parts = http::request::Parts;

fn req_header(p: &Parts, name: &str) -> Option<String> {
    p.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// 200 `fine {n}` (n counts requests) unless the request carries `x-provoke: <status>`, which
/// the origin answers with that status: what a client provokes with an odd request.
fn provokable() -> impl Fn(&Parts, &Bytes) -> MockResponse + Send + Sync + 'static {
    let n = Arc::new(AtomicU64::new(0));
    move |p, _| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        match req_header(p, "x-provoke").and_then(|s| s.parse::<u16>().ok()) {
            Some(s) => MockResponse::ok(format!("provoked {s}")).status(s),
            None => MockResponse::ok(format!("fine {i}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 14.4: errors provoked by a request do not stick
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn provoked_errors_never_get_an_operator_lifetime() {
    for lifetime in ["default_ttl = \"5m\"", "ttl_override = \"5m\""] {
        let statuses = [400u16, 403, 413, 431, 409, 422];
        let mut b = MockOrigin::new();
        for s in statuses {
            b = b.route(&format!("/e{s}"), provokable());
        }
        let origin = b
            .route("/missing", MockResponse::with_status(404))
            .start()
            .await;
        let proxy = TestProxy::with_config(&config(&origin.url(), "", "", lifetime)).await;
        for s in statuses {
            let path = format!("/e{s}");
            let (st, h, _) = get_with(&proxy.url(&path), &[("x-provoke", &s.to_string())]).await;
            assert_eq!(st.as_u16(), s, "{lifetime}");
            assert_eq!(
                cache_status(&h),
                "seawall; fwd=uri-miss; detail=operator-ttl-status",
                "{lifetime} {s}"
            );
            settle(&proxy).await;
            // The victim asks the same URL without the odd request field.
            let (st, h, b) = get(&proxy.url(&path)).await;
            assert_eq!(
                st,
                StatusCode::OK,
                "{lifetime}: victim got the provoked {s}"
            );
            assert_eq!(b, "fine 2");
            assert!(cache_status(&h).contains("fwd=uri-miss; stored"), "{h:?}");
            assert_eq!(origin.hits(&path), 2);
        }
        // A heuristically cacheable status still gets the operator's lifetime.
        get(&proxy.url("/missing")).await;
        settle(&proxy).await;
        let (st, h, _) = get(&proxy.url("/missing")).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert!(cache_status(&h).starts_with("seawall; hit"), "{h:?}");
        assert_eq!(origin.hits("/missing"), 1);
    }
}

#[tokio::test]
async fn a_route_may_list_more_statuses_for_its_lifetimes() {
    let origin = MockOrigin::new()
        .route("/gone", provokable())
        .route("/bad", provokable())
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "",
        "",
        "default_ttl = \"5m\"\nttl_statuses = [403]",
    ))
    .await;
    let (st, h, _) = get_with(&proxy.url("/gone"), &[("x-provoke", "403")]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(cache_status(&h), "seawall; fwd=uri-miss; stored");
    settle(&proxy).await;
    let (st, h, _) = get(&proxy.url("/gone")).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the operator chose to keep 403s");
    assert!(cache_status(&h).starts_with("seawall; hit"), "{h:?}");
    assert_eq!(origin.hits("/gone"), 1);
    // Statuses it does not list still do not stick.
    get_with(&proxy.url("/bad"), &[("x-provoke", "400")]).await;
    settle(&proxy).await;
    let (st, _, _) = get(&proxy.url("/bad")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(origin.hits("/bad"), 2);
}

#[tokio::test]
async fn ttl_statuses_that_can_never_be_stored_are_refused() {
    for bad in ["[304]", "[206]", "[99]", "[600]"] {
        let src = config(
            "http://127.0.0.1:1",
            "",
            "",
            &format!("ttl_statuses = {bad}"),
        );
        let err = seawall::config::Config::parse(&src, "t.toml", std::iter::empty())
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"))
            .to_string();
        assert!(err.contains("routes[0].ttl_statuses"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 14.5: personal pages are not deceived into the cache
// ---------------------------------------------------------------------------------------------

/// A page naming who asked (cookie, credentials or nobody), with only `Last-Modified` (so a
/// heuristic lifetime) plus `extra` response fields.
fn personal(
    extra: &'static [(&'static str, &'static str)],
) -> impl Fn(&Parts, &Bytes) -> MockResponse + Send + Sync + 'static {
    move |p, _| {
        let who = req_header(p, "cookie")
            .or_else(|| req_header(p, "authorization"))
            .unwrap_or_else(|| "anonymous".into());
        let lm = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(86_400));
        let mut r = MockResponse::ok(format!("page for {who}")).header("last-modified", &lm);
        for (k, v) in extra {
            r = r.header(k, v);
        }
        r
    }
}

#[tokio::test]
async fn credentialed_requests_never_borrow_a_lifetime() {
    for route in ["", "default_ttl = \"5m\"", "ttl_override = \"5m\""] {
        let origin = MockOrigin::new()
            .route("/cookie", personal(&[]))
            .route("/auth", personal(&[("cache-control", "must-revalidate")]))
            .route("/public", personal(&[("cache-control", "public")]))
            .start()
            .await;
        let proxy = TestProxy::with_config(&config(&origin.url(), "", "", route)).await;
        for (path, field, value) in [
            ("/cookie", "cookie", "session=attacker"),
            ("/auth", "authorization", "Bearer attacker"),
        ] {
            let (st, h, b) = get_with(&proxy.url(path), &[(field, value)]).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(b, format!("page for {value}"));
            assert_eq!(
                cache_status(&h),
                "seawall; fwd=uri-miss; detail=credentialed",
                "{route:?} {path}"
            );
            settle(&proxy).await;
            let (_, _, b) = get(&proxy.url(path)).await;
            assert_eq!(
                b, "page for anonymous",
                "{route:?}: victim got {path}'s page"
            );
            assert_eq!(origin.hits(path), 2);
        }
        // `public` lets it be stored, but with no lifetime: every use goes to the origin.
        let (_, h, _) = get_with(&proxy.url("/public"), &[("cookie", "session=attacker")]).await;
        assert!(cache_status(&h).contains("stored"), "{h:?}");
        settle(&proxy).await;
        let (_, _, b) = get(&proxy.url("/public")).await;
        assert_eq!(b, "page for anonymous", "{route:?}");
        assert_eq!(origin.hits("/public"), 2);
    }
}

#[tokio::test]
async fn credentialed_requests_with_explicit_freshness_are_still_shared() {
    let origin = MockOrigin::new()
        .route(
            "/c",
            MockResponse::ok("shared").header("cache-control", "max-age=60"),
        )
        .route(
            "/a",
            MockResponse::ok("shared").header("cache-control", "s-maxage=60"),
        )
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&config(&origin.url(), "", "", "default_ttl = \"5m\"")).await;
    for (path, field) in [("/c", "cookie"), ("/a", "authorization")] {
        let (_, h, _) = get_with(&proxy.url(path), &[(field, "x")]).await;
        assert_eq!(cache_status(&h), "seawall; fwd=uri-miss; stored");
        settle(&proxy).await;
        let (_, h, b) = get(&proxy.url(path)).await;
        assert_eq!(b, "shared");
        assert!(cache_status(&h).starts_with("seawall; hit; ttl="), "{h:?}");
        assert!(ttl_of(&cache_status(&h)) <= 60);
        assert_eq!(origin.hits(path), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 15.1: Age
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn age_lists_use_the_first_member_and_invalid_age_is_ignored() {
    let cases: [(&str, &str, i64); 7] = [
        ("/list", "10, 20", 50),
        ("/plain", "10", 50),
        ("/word", "soon", 60),
        ("/negative", "-5", 60),
        ("/fraction", "1.5", 60),
        ("/junk", "10s", 60),
        ("/empty-first", ", 10", 50),
    ];
    let mut b = MockOrigin::new();
    for (path, age, _) in cases {
        b = b.route(
            path,
            MockResponse::ok("aged")
                .header("cache-control", "max-age=60")
                .header("age", age),
        );
    }
    let origin = b.start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    for (path, age, ttl) in cases {
        let (_, h, _) = get(&proxy.url(path)).await;
        assert_eq!(
            cache_status(&h),
            "seawall; fwd=uri-miss; stored",
            "Age: {age}"
        );
        settle(&proxy).await;
        let (_, h, _) = get(&proxy.url(path)).await;
        let cs = cache_status(&h);
        assert!(cs.starts_with("seawall; hit"), "Age: {age}: {cs}");
        let got = ttl_of(&cs);
        assert!(
            got <= ttl && got >= ttl - 2,
            "Age: {age}: ttl {got}, want {ttl}"
        );
        assert_eq!(origin.hits(path), 1, "Age: {age}");
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 15.3: targeted cache-control fields are Structured Field Dictionaries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn targeted_fields_are_dictionaries_and_fall_back_to_cache_control() {
    // (field, value, ttl the stored response gets); Cache-Control says max-age=60.
    let cases: [(&str, &str, i64); 9] = [
        ("cdn-cache-control", "max-age=600", 600),
        (
            "seawall-cache-control",
            "max-age=300, stale-if-error=10",
            300,
        ),
        // Not a dictionary: the whole field is ignored.
        ("cdn-cache-control", "MAX-AGE=600", 60),
        ("cdn-cache-control", "max-age=600,", 60),
        ("cdn-cache-control", "max-age=600 public", 60),
        // A known directive of the wrong type is not consumed (RFC 9213 §2.1) ...
        ("cdn-cache-control", "max-age=1.5", 60),
        ("cdn-cache-control", "max-age=\"600\"", 60),
        // ... and the valid rest still applies, parameters ignored.
        ("cdn-cache-control", "s-maxage=1.5, max-age=600;x=1", 600),
        ("seawall-cache-control", "max-age=-1, s-maxage=120", 120),
    ];
    let mut b = MockOrigin::new();
    for (i, (field, value, _)) in cases.iter().enumerate() {
        b = b.route(
            &format!("/t{i}"),
            MockResponse::ok("t")
                .header("cache-control", "max-age=60")
                .header(field, value),
        );
    }
    let origin = b.start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    for (i, (field, value, ttl)) in cases.iter().enumerate() {
        let path = format!("/t{i}");
        get(&proxy.url(&path)).await;
        settle(&proxy).await;
        let (_, h, _) = get(&proxy.url(&path)).await;
        let cs = cache_status(&h);
        assert!(cs.starts_with("seawall; hit"), "{field}: {value}: {cs}");
        let got = ttl_of(&cs);
        assert!(
            got <= *ttl && got >= ttl - 2,
            "{field}: {value}: ttl {got}, want {ttl}"
        );
        assert_eq!(origin.hits(&path), 1);
        assert!(!h.contains_key("seawall-cache-control"));
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 15.5: HTTP-dates
// ---------------------------------------------------------------------------------------------

const DAYS: [(&str, &str); 7] = [
    ("Mon", "Monday"),
    ("Tue", "Tuesday"),
    ("Wed", "Wednesday"),
    ("Thu", "Thursday"),
    ("Fri", "Friday"),
    ("Sat", "Saturday"),
    ("Sun", "Sunday"),
];

/// `t` as IMF-fixdate, RFC 850 and asctime.
fn formats(t: SystemTime) -> [String; 3] {
    let imf = httpdate::fmt_http_date(t); // Sun, 06 Nov 1994 08:49:37 GMT
    let (wd, rest) = imf.split_once(", ").unwrap();
    let long = DAYS.iter().find(|d| d.0 == wd).unwrap().1;
    let (day, mon, year, time) = (&rest[0..2], &rest[3..6], &rest[7..11], &rest[12..20]);
    let rfc850 = format!("{long}, {day}-{mon}-{} {time} GMT", &year[2..]);
    let day_sp = format!("{:>2}", day.trim_start_matches('0'));
    let asctime = format!("{wd} {mon} {day_sp} {time} {year}");
    [imf, rfc850, asctime]
}

#[tokio::test]
async fn all_three_date_formats_are_read_and_other_zones_are_invalid() {
    let exp = SystemTime::now() + Duration::from_secs(600);
    let [imf, rfc850, asctime] = formats(exp);
    let good = [
        imf.clone(),
        rfc850.clone(),
        asctime,
        imf.to_lowercase().replace("gmt", "GMT"),
        rfc850.to_uppercase(),
    ];
    let bad = [imf.replace("GMT", "UTC"), imf.replace(" GMT", " +0000")];
    let mut b = MockOrigin::new();
    for (i, v) in good.iter().chain(bad.iter()).enumerate() {
        b = b.route(
            &format!("/d{i}"),
            MockResponse::ok("d").header("expires", v),
        );
    }
    let origin = b.start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    for (i, v) in good.iter().enumerate() {
        let path = format!("/d{i}");
        get(&proxy.url(&path)).await;
        settle(&proxy).await;
        let (_, h, _) = get(&proxy.url(&path)).await;
        let cs = cache_status(&h);
        assert!(cs.starts_with("seawall; hit"), "Expires: {v}: {cs}");
        assert!(ttl_of(&cs) >= 590, "Expires: {v}: {cs}");
        assert_eq!(origin.hits(&path), 1);
    }
    // A zone other than GMT makes Expires invalid: already expired.
    for (j, v) in bad.iter().enumerate() {
        let path = format!("/d{}", good.len() + j);
        get(&proxy.url(&path)).await;
        settle(&proxy).await;
        let (_, h, _) = get(&proxy.url(&path)).await;
        assert!(!cache_status(&h).contains("hit"), "Expires: {v}: {h:?}");
        assert_eq!(origin.hits(&path), 2, "Expires: {v}");
    }
}

#[tokio::test]
async fn if_modified_since_is_read_in_every_format() {
    let lm = SystemTime::now() - Duration::from_secs(3600);
    let origin = MockOrigin::new()
        .route(
            "/lm",
            MockResponse::ok("body")
                .header("cache-control", "max-age=600")
                .header("last-modified", &httpdate::fmt_http_date(lm)),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    get(&proxy.url("/lm")).await;
    settle(&proxy).await;
    let [imf, rfc850, asctime] = formats(SystemTime::now());
    for ims in [imf.clone(), rfc850, asctime, imf.to_uppercase()] {
        let (st, _, b) = get_with(&proxy.url("/lm"), &[("if-modified-since", &ims)]).await;
        assert_eq!(st, StatusCode::NOT_MODIFIED, "If-Modified-Since: {ims}");
        assert!(b.is_empty());
    }
    let old = httpdate::fmt_http_date(lm - Duration::from_secs(60));
    let (st, _, _) = get_with(&proxy.url("/lm"), &[("if-modified-since", &old)]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(origin.hits("/lm"), 1);
}

// ---------------------------------------------------------------------------------------------
// Issue 15.6: Accept-Language variants
// ---------------------------------------------------------------------------------------------

/// Answers in the first language the request names (`en` without one), as
/// `lang {n} {language}` with `Content-Language`, varying on Accept-Language.
fn by_language() -> impl Fn(&Parts, &Bytes) -> MockResponse + Send + Sync + 'static {
    let n = Arc::new(AtomicU64::new(0));
    move |p, _| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let al = req_header(p, "accept-language").unwrap_or_default();
        let lang = al
            .split(',')
            .next()
            .and_then(|r| r.split(';').next())
            .map(|r| r.trim().to_ascii_lowercase())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "en".into());
        MockResponse::ok(format!("lang {i} {lang}"))
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Language")
            .header("content-language", &lang)
    }
}

#[tokio::test]
async fn equivalent_accept_language_values_share_a_variant() {
    let origin = MockOrigin::new().route("/l", by_language()).start().await;
    let proxy = TestProxy::start(&origin.url()).await;
    let url = proxy.url("/l");
    let (_, _, b) = get_with(&url, &[("accept-language", "en-US, fr;q=0.8")]).await;
    assert_eq!(b, "lang 1 en-us");
    settle(&proxy).await;
    for same in [
        "en-us,fr;q=0.8",
        "EN-US , FR; q=0.8",
        "fr;q=0.8, en-US",
        "fr;q=0.800, en-US;q=1",
    ] {
        let (_, h, b) = get_with(&url, &[("accept-language", same)]).await;
        assert_eq!(b, "lang 1 en-us", "{same}");
        assert!(
            cache_status(&h).starts_with("seawall; hit"),
            "{same}: {h:?}"
        );
    }
    assert_eq!(origin.hits("/l"), 1);
    // Another preference is another variant: never a different language.
    let (_, _, b) = get_with(&url, &[("accept-language", "fr, en-US;q=0.8")]).await;
    assert_eq!(b, "lang 2 fr");
    settle(&proxy).await;
    // Equal q keeps its order.
    let (_, _, b) = get_with(&url, &[("accept-language", "de;q=0.5, it;q=0.5")]).await;
    assert_eq!(b, "lang 3 de");
    settle(&proxy).await;
    let (_, _, b) = get_with(&url, &[("accept-language", "it;q=0.5, de;q=0.5")]).await;
    assert_eq!(b, "lang 4 it");
    assert_eq!(origin.hits("/l"), 4);
}

#[tokio::test]
async fn a_route_may_select_variants_by_content_language() {
    let origin = MockOrigin::new().route("/l", by_language()).start().await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "",
        "",
        "vary_language = \"content-language\"",
    ))
    .await;
    let url = proxy.url("/l");
    let (_, _, b) = get_with(&url, &[("accept-language", "fr, en;q=0.5")]).await;
    assert_eq!(b, "lang 1 fr");
    settle(&proxy).await;
    // Any request whose first choice is the stored language gets it.
    for same in ["fr", "FR;q=0.9, de;q=0.1", "de;q=0.2, fr"] {
        let (_, h, b) = get_with(&url, &[("accept-language", same)]).await;
        assert_eq!(b, "lang 1 fr", "{same}");
        assert!(
            cache_status(&h).starts_with("seawall; hit"),
            "{same}: {h:?}"
        );
    }
    assert_eq!(origin.hits("/l"), 1);
    let (_, _, b) = get_with(&url, &[("accept-language", "en")]).await;
    assert_eq!(b, "lang 2 en");
    settle(&proxy).await;
    let (_, _, b) = get_with(&url, &[("accept-language", "en, fr;q=0.9")]).await;
    assert_eq!(b, "lang 2 en");
    assert_eq!(origin.hits("/l"), 2);
}

#[tokio::test]
async fn vary_language_values_other_than_the_known_ones_are_refused() {
    let src = config("http://127.0.0.1:1", "", "", "vary_language = \"guess\"");
    let err = seawall::config::Config::parse(&src, "t.toml", std::iter::empty())
        .err()
        .unwrap_or_else(|| panic!("vary_language = \"guess\" accepted"))
        .to_string();
    assert!(err.contains("routes[0].vary_language"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Issue 15.8: stale when the origin cannot be reached
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stale_is_served_for_a_while_when_the_origin_cannot_be_reached() {
    let paths: [(&str, &str); 5] = [
        ("/plain", "max-age=10"),
        ("/mr", "max-age=10, must-revalidate"),
        ("/pr", "max-age=10, proxy-revalidate"),
        ("/nc", "max-age=10, no-cache"),
        ("/sm", "s-maxage=10"),
    ];
    let mut b = MockOrigin::new();
    for (p, cc) in paths {
        b = b.route(p, MockResponse::ok("kept").header("cache-control", cc));
    }
    let origin = b.start().await;
    let proxy = TestProxy::with_config(&config(&origin.url(), "", "", "")).await;
    for (p, _) in paths {
        get(&proxy.url(p)).await;
    }
    settle(&proxy).await;
    stop(origin).await;
    advance(&proxy, 40);
    let (st, h, b) = get(&proxy.url("/plain")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b, "kept");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; detail=stale-if-unreachable"
    );
    assert_eq!(hv(&h, "x-cache"), "STALE");
    for (p, cc) in &paths[1..] {
        let (st, h, _) = get(&proxy.url(p)).await;
        assert_eq!(st, StatusCode::BAD_GATEWAY, "{cc}");
        assert!(cache_status(&h).contains("fwd=stale"), "{cc}: {h:?}");
    }
    // Past the window (default 60 s) the error goes through, still naming the stored copy.
    advance(&proxy, 35);
    let (st, h, _) = get(&proxy.url("/plain")).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY);
    assert!(cache_status(&h).starts_with("seawall; fwd=stale"), "{h:?}");
}

#[tokio::test]
async fn an_origin_that_answers_is_not_unreachable() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = failing.clone();
    let origin = MockOrigin::new()
        .route("/s", move |_: &Parts, _: &Bytes| {
            if f.load(Ordering::SeqCst) {
                MockResponse::ok("down").status(503)
            } else {
                MockResponse::ok("kept").header("cache-control", "max-age=10")
            }
        })
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    get(&proxy.url("/s")).await;
    settle(&proxy).await;
    failing.store(true, Ordering::SeqCst);
    advance(&proxy, 20);
    let (st, _, b) = get(&proxy.url("/s")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b, "down");
    assert_eq!(origin.hits("/s"), 2);
}

#[tokio::test]
async fn routes_and_the_cache_section_set_the_unreachable_window() {
    let origin = MockOrigin::new()
        .route(
            "/a",
            MockResponse::ok("a").header("cache-control", "max-age=10"),
        )
        .route(
            "/b",
            MockResponse::ok("b").header("cache-control", "max-age=10"),
        )
        .start()
        .await;
    let url = origin.url();
    let src = format!(
        "[cache]\nstale_if_unreachable = \"10m\"\n\n[[upstreams]]\nname = \"origin\"\n\
         endpoints = [{url:?}]\n[upstreams.breaker]\nenabled = false\n\n\
         [[routes]]\nupstream = \"origin\"\npath_prefix = \"/a\"\nstale_if_unreachable = \"0s\"\n\n\
         [[routes]]\nupstream = \"origin\"\n"
    );
    let proxy = TestProxy::with_config(&src).await;
    get(&proxy.url("/a")).await;
    get(&proxy.url("/b")).await;
    settle(&proxy).await;
    stop(origin).await;
    advance(&proxy, 300);
    let (st, h, _) = get(&proxy.url("/a")).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{h:?}");
    assert!(cache_status(&h).starts_with("seawall; fwd=stale"), "{h:?}");
    let (st, h, b) = get(&proxy.url("/b")).await;
    assert_eq!(st, StatusCode::OK, "{h:?}");
    assert_eq!(b, "b");
}

#[tokio::test]
async fn entries_are_kept_past_freshness_for_the_unreachable_window() {
    let origin = MockOrigin::new()
        .route(
            "/k",
            MockResponse::ok("kept").header("cache-control", "max-age=1"),
        )
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    get(&proxy.url("/k")).await;
    settle(&proxy).await;
    stop(origin).await;
    // Real time passes (the memory store's expiry runs on the real clock).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    advance(&proxy, 1);
    let (st, h, b) = get(&proxy.url("/k")).await;
    assert_eq!(st, StatusCode::OK, "{h:?}");
    assert_eq!(b, "kept");
    assert_eq!(
        cache_status(&h),
        "seawall; fwd=stale; detail=stale-if-unreachable"
    );
}

#[tokio::test]
async fn stale_stands_in_while_the_breaker_is_open() {
    let origin = MockOrigin::new()
        .route(
            "/k",
            MockResponse::ok("kept").header("cache-control", "max-age=10"),
        )
        .route(
            "/mr",
            MockResponse::ok("kept").header("cache-control", "max-age=10, must-revalidate"),
        )
        .start()
        .await;
    let breaker = "[upstreams.breaker]\nconsecutive_failures = 2\nopen_duration = \"30s\"\n\
                   min_requests = 100\n\n[upstreams.retry]\nmax_retries = 0\n";
    let proxy = TestProxy::with_config(&config(&origin.url(), "", breaker, "")).await;
    get(&proxy.url("/k")).await;
    get(&proxy.url("/mr")).await;
    settle(&proxy).await;
    stop(origin).await;
    advance(&proxy, 20);
    for i in 0..2 {
        let (st, _, _) = get(&proxy.url(&format!("/new{i}"))).await;
        assert_eq!(st, StatusCode::BAD_GATEWAY);
    }
    let (st, h, b) = get(&proxy.url("/k")).await;
    assert_eq!(st, StatusCode::OK, "{h:?}");
    assert_eq!(b, "kept");
    let cs = cache_status(&h);
    assert!(
        cs.starts_with("seawall; hit; ttl=-") && cs.ends_with("detail=circuit-open"),
        "{cs}"
    );
    let (st, h, _) = get(&proxy.url("/mr")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{h:?}");
}

#[tokio::test]
async fn a_credentialed_or_provoked_response_does_not_switch_off_coalescing() {
    let slow = |_: &Parts, _: &Bytes| {
        let lm = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(86_400));
        MockResponse::ok("page")
            .header("last-modified", &lm)
            .delay(300)
    };
    let origin = MockOrigin::new()
        .route("/p", slow)
        .route("/e", provokable())
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&config(&origin.url(), "", "", "default_ttl = \"5m\"")).await;
    let (_, h, _) = get_with(&proxy.url("/p"), &[("cookie", "s=attacker")]).await;
    assert!(cache_status(&h).contains("detail=credentialed"), "{h:?}");
    let (_, h, _) = get_with(&proxy.url("/e"), &[("x-provoke", "400")]).await;
    assert!(
        cache_status(&h).contains("detail=operator-ttl-status"),
        "{h:?}"
    );
    settle(&proxy).await;
    let url = proxy.url("/p");
    let answers = burst(8, |_| {
        let url = url.clone();
        async move { get(&url).await }
    })
    .await;
    assert!(answers.iter().all(|(s, _, _)| *s == StatusCode::OK));
    assert_eq!(origin.hits("/p"), 2, "innocent requests were not coalesced");
}

#[tokio::test]
async fn redis_keeps_entries_for_the_unreachable_window_too() {
    let redis = redis_support::RedisServer::start().await;
    let origin = MockOrigin::new()
        .route(
            "/r",
            MockResponse::ok("r").header("cache-control", "max-age=10"),
        )
        .start()
        .await;
    let fleet = redis_support::Fleet::start(&origin.url(), &redis, 1).await;
    let (st, _, _) = redis_support::shared_get(&fleet.replicas[0], "/r").await;
    assert_eq!(st, StatusCode::OK);
    redis.wait_entry("/r").await;
    let pttl: i64 = redis
        .cli(&["PTTL", &redis_support::entry_key("/r")])
        .await
        .trim()
        .parse()
        .unwrap();
    // Freshness (10 s) plus the default stale_if_unreachable (60 s).
    assert!((60_001..=70_000).contains(&pttl), "PTTL {pttl}");
}

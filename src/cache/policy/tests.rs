//! Policy rules, one test per RFC 9111 / RFC 5861 rule, with explicit `now`.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;
use crate::cache::cache_control::CacheControl;
use crate::route::RouteCache;

fn rules() -> RouteCache {
    RouteCache::default()
}

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    m
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

fn store_check(
    req: &HeaderMap,
    status: u16,
    res: &HeaderMap,
    r: &RouteCache,
) -> Result<(), NotStorable> {
    let cc = effective_cc(res, &[]);
    storable(
        &Method::GET,
        req,
        &request_cc(req),
        StatusCode::from_u16(status).expect("status"),
        res,
        &cc,
        r,
    )
}

fn fresh_of(res: &HeaderMap, status: u16, r: &RouteCache) -> Freshness {
    let cc = effective_cc(res, &[]);
    freshness(
        StatusCode::from_u16(status).expect("status"),
        &HeaderMap::new(),
        res,
        cc,
        t0(),
        t0(),
        r,
    )
}

#[test]
fn max_age_gives_lifetime_and_age_counts_down() {
    let f = fresh_of(
        &h(&[("cache-control", "max-age=60"), ("date", &date(t0()))]),
        200,
        &rules(),
    );
    assert_eq!(f.lifetime, Duration::from_secs(60));
    assert_eq!(ttl_secs(&f, t0() + Duration::from_secs(10)), 50);
    assert_eq!(
        evaluate(&f, &CacheControl::default(), t0() + Duration::from_secs(59)),
        Decision::Fresh
    );
    assert_eq!(
        evaluate(&f, &CacheControl::default(), t0() + Duration::from_secs(60)),
        Decision::Revalidate(Revalidate::Stale)
    );
}

#[test]
fn s_maxage_beats_max_age_for_a_shared_cache() {
    let f = fresh_of(
        &h(&[("cache-control", "max-age=0, s-maxage=30")]),
        200,
        &rules(),
    );
    assert_eq!(f.lifetime, Duration::from_secs(30));
}

#[test]
fn expires_minus_date_and_invalid_expires_is_stale() {
    let res = h(&[
        ("date", &date(t0())),
        ("expires", &date(t0() + Duration::from_secs(120))),
    ]);
    assert_eq!(
        fresh_of(&res, 200, &rules()).lifetime,
        Duration::from_secs(120)
    );
    let res = h(&[("date", &date(t0())), ("expires", "0")]);
    assert_eq!(fresh_of(&res, 200, &rules()).lifetime, Duration::ZERO);
}

#[test]
fn age_header_and_apparent_age_are_corrected_initial_age() {
    let res = h(&[("cache-control", "max-age=60"), ("age", "50")]);
    let f = fresh_of(&res, 200, &rules());
    assert_eq!(ttl_secs(&f, t0()), 10);
    // Date 20 s in the past and no Age: apparent age wins.
    let res = h(&[
        ("cache-control", "max-age=60"),
        ("date", &date(t0() - Duration::from_secs(20))),
    ]);
    assert_eq!(ttl_secs(&fresh_of(&res, 200, &rules()), t0()), 40);
}

#[test]
fn heuristic_only_for_heuristically_cacheable_statuses_never_5xx() {
    let lm = date(t0() - Duration::from_secs(1000));
    let res = h(&[("last-modified", &lm), ("date", &date(t0()))]);
    assert_eq!(
        fresh_of(&res, 200, &rules()).lifetime,
        Duration::from_secs(100)
    );
    assert!(fresh_of(&res, 200, &rules()).heuristic);
    assert_eq!(
        store_check(&HeaderMap::new(), 500, &res, &rules()),
        Err(NotStorable::NoFreshness)
    );
    assert_eq!(
        store_check(&HeaderMap::new(), 302, &res, &rules()),
        Err(NotStorable::NoFreshness)
    );
    // Explicit freshness makes any final status storable.
    let res = h(&[("cache-control", "max-age=5")]);
    assert_eq!(store_check(&HeaderMap::new(), 500, &res, &rules()), Ok(()));
}

#[test]
fn no_store_private_and_set_cookie_are_not_stored() {
    let none = HeaderMap::new();
    assert_eq!(
        store_check(
            &none,
            200,
            &h(&[("cache-control", "no-store, max-age=60")]),
            &rules()
        ),
        Err(NotStorable::NoStore)
    );
    assert_eq!(
        store_check(
            &none,
            200,
            &h(&[("cache-control", "private, max-age=60")]),
            &rules()
        ),
        Err(NotStorable::Private)
    );
    let cookie = h(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]);
    assert_eq!(
        store_check(&none, 200, &cookie, &rules()),
        Err(NotStorable::SetCookie)
    );
    let mut r = rules();
    r.cache_set_cookie = true;
    assert_eq!(store_check(&none, 200, &cookie, &r), Ok(()));
}

#[test]
fn authorization_needs_public_s_maxage_or_must_revalidate() {
    let auth = h(&[("authorization", "Bearer x")]);
    assert_eq!(
        store_check(&auth, 200, &h(&[("cache-control", "max-age=60")]), &rules()),
        Err(NotStorable::Authorization)
    );
    for cc in [
        "public, max-age=60",
        "s-maxage=60",
        "must-revalidate, max-age=60",
    ] {
        assert_eq!(
            store_check(&auth, 200, &h(&[("cache-control", cc)]), &rules()),
            Ok(()),
            "{cc}"
        );
    }
}

#[test]
fn request_no_store_and_vary_star_are_not_stored() {
    let req = h(&[("cache-control", "no-store")]);
    assert_eq!(
        store_check(&req, 200, &h(&[("cache-control", "max-age=60")]), &rules()),
        Err(NotStorable::RequestNoStore)
    );
    let res = h(&[("cache-control", "max-age=60"), ("vary", "*")]);
    assert_eq!(
        store_check(&HeaderMap::new(), 200, &res, &rules()),
        Err(NotStorable::VaryStar)
    );
}

#[test]
fn must_understand_overrides_no_store_for_understood_statuses() {
    let res = h(&[("cache-control", "must-understand, no-store, max-age=60")]);
    assert_eq!(store_check(&HeaderMap::new(), 200, &res, &rules()), Ok(()));
    assert_eq!(
        store_check(&HeaderMap::new(), 299, &res, &rules()),
        Err(NotStorable::MustUnderstand)
    );
}

#[test]
fn response_no_cache_always_revalidates() {
    let f = fresh_of(
        &h(&[("cache-control", "no-cache, max-age=60")]),
        200,
        &rules(),
    );
    assert_eq!(
        evaluate(&f, &CacheControl::default(), t0()),
        Decision::Revalidate(Revalidate::ResponseNoCache)
    );
}

#[test]
fn request_directives_no_cache_max_age_min_fresh() {
    let f = fresh_of(&h(&[("cache-control", "max-age=60")]), 200, &rules());
    let at = t0() + Duration::from_secs(30);
    let rq = |s: &str| CacheControl::parse_str(s);
    assert_eq!(
        evaluate(&f, &rq("no-cache"), at),
        Decision::Revalidate(Revalidate::Request)
    );
    assert_eq!(
        evaluate(&f, &rq("max-age=10"), at),
        Decision::Revalidate(Revalidate::Request)
    );
    assert_eq!(evaluate(&f, &rq("max-age=40"), at), Decision::Fresh);
    assert_eq!(
        evaluate(&f, &rq("min-fresh=40"), at),
        Decision::Revalidate(Revalidate::Request)
    );
    assert_eq!(evaluate(&f, &rq("min-fresh=20"), at), Decision::Fresh);
}

#[test]
fn pragma_no_cache_counts_only_without_cache_control() {
    assert!(request_cc(&h(&[("pragma", "no-cache")])).no_cache);
    assert!(
        !request_cc(&h(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=5")
        ]))
        .no_cache
    );
    assert!(!request_cc(&h(&[("pragma", "x-other")])).no_cache);
}

#[test]
fn max_stale_serves_stale_but_never_unlocks_must_revalidate_no_cache_or_set_cookie() {
    let stale_at = t0() + Duration::from_secs(70);
    let ms = CacheControl::parse_str("max-stale=60");
    let f = fresh_of(&h(&[("cache-control", "max-age=60")]), 200, &rules());
    assert_eq!(evaluate(&f, &ms, stale_at), Decision::StaleAccepted);
    assert_eq!(
        evaluate(&f, &CacheControl::parse_str("max-stale=5"), stale_at),
        Decision::Revalidate(Revalidate::Stale)
    );
    for cc in [
        "max-age=60, must-revalidate",
        "max-age=60, proxy-revalidate",
        "s-maxage=60",
    ] {
        let f = fresh_of(&h(&[("cache-control", cc)]), 200, &rules());
        assert_eq!(
            evaluate(&f, &ms, stale_at),
            Decision::Revalidate(Revalidate::Stale),
            "{cc}"
        );
    }
    let f = fresh_of(&h(&[("cache-control", "no-cache")]), 200, &rules());
    assert_eq!(
        evaluate(&f, &ms, stale_at),
        Decision::Revalidate(Revalidate::ResponseNoCache)
    );
    let mut r = rules();
    r.cache_set_cookie = true;
    let f = fresh_of(
        &h(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]),
        200,
        &r,
    );
    assert_eq!(
        evaluate(&f, &ms, stale_at),
        Decision::Revalidate(Revalidate::Stale)
    );
}

#[test]
fn stale_while_revalidate_window() {
    let f = fresh_of(
        &h(&[("cache-control", "max-age=10, stale-while-revalidate=30")]),
        200,
        &rules(),
    );
    let none = CacheControl::default();
    assert_eq!(
        evaluate(&f, &none, t0() + Duration::from_secs(20)),
        Decision::StaleWhileRevalidate
    );
    assert_eq!(
        evaluate(&f, &none, t0() + Duration::from_secs(41)),
        Decision::Revalidate(Revalidate::Stale)
    );
    let f = fresh_of(
        &h(&[(
            "cache-control",
            "max-age=10, stale-while-revalidate=30, must-revalidate",
        )]),
        200,
        &rules(),
    );
    assert_eq!(
        evaluate(&f, &none, t0() + Duration::from_secs(20)),
        Decision::Revalidate(Revalidate::Stale)
    );
}

#[test]
fn stale_if_error_window_route_default_and_must_revalidate() {
    let f = fresh_of(
        &h(&[("cache-control", "max-age=10, stale-if-error=60")]),
        200,
        &rules(),
    );
    assert!(stale_if_error_ok(&f, t0() + Duration::from_secs(60)));
    assert!(!stale_if_error_ok(&f, t0() + Duration::from_secs(71)));
    let f = fresh_of(&h(&[("cache-control", "max-age=10")]), 200, &rules());
    assert!(!stale_if_error_ok(&f, t0() + Duration::from_secs(20)));
    let mut r = rules();
    r.stale_if_error = Some(Duration::from_secs(300));
    let f = fresh_of(&h(&[("cache-control", "max-age=10")]), 200, &r);
    assert!(stale_if_error_ok(&f, t0() + Duration::from_secs(200)));
    let f = fresh_of(
        &h(&[("cache-control", "max-age=10, must-revalidate")]),
        200,
        &r,
    );
    assert!(!stale_if_error_ok(&f, t0() + Duration::from_secs(20)));
}

#[test]
fn route_ttls_never_apply_to_personal_traffic() {
    let mut r = rules();
    r.default_ttl = Some(Duration::from_secs(30));
    let plain = HeaderMap::new();
    assert_eq!(store_check(&plain, 200, &HeaderMap::new(), &r), Ok(()));
    let res = HeaderMap::new();
    let f = freshness(
        StatusCode::OK,
        &plain,
        &res,
        CacheControl::default(),
        t0(),
        t0(),
        &r,
    );
    assert_eq!(f.lifetime, Duration::from_secs(30));
    let cookie_req = h(&[("cookie", "s=1")]);
    let f = freshness(
        StatusCode::OK,
        &cookie_req,
        &res,
        CacheControl::default(),
        t0(),
        t0(),
        &r,
    );
    assert_eq!(f.lifetime, Duration::ZERO);
    let mut r = rules();
    r.ttl_override = Some(Duration::from_secs(5));
    r.max_ttl = Some(Duration::from_secs(3));
    let f = fresh_of(&h(&[("cache-control", "max-age=600")]), 200, &r);
    assert_eq!(f.lifetime, Duration::from_secs(3));
}

#[test]
fn targeted_field_takes_precedence_when_valid() {
    let targeted = [http::HeaderName::from_static("cdn-cache-control")];
    let res = h(&[
        ("cache-control", "max-age=5"),
        ("cdn-cache-control", "max-age=600"),
    ]);
    assert_eq!(effective_cc(&res, &targeted).max_age, Some(600));
    let res = h(&[
        ("cache-control", "max-age=5"),
        ("cdn-cache-control", "garbage-only"),
    ]);
    assert_eq!(effective_cc(&res, &targeted).max_age, Some(5));
}

#[test]
fn weak_comparison_for_if_none_match() {
    assert!(none_match("W/\"a\", \"b\"", "\"a\""));
    assert!(none_match("*", "\"z\""));
    assert!(!none_match("\"a\"", "\"b\""));
}

#[test]
fn operator_lifetimes_apply_only_to_cacheable_and_listed_statuses() {
    let none = HeaderMap::new();
    let bare = HeaderMap::new();
    for lifetime in [0, 1] {
        let mut r = rules();
        if lifetime == 0 {
            r.default_ttl = Some(Duration::from_secs(300));
        } else {
            r.ttl_override = Some(Duration::from_secs(300));
        }
        for s in [400, 403, 413, 431, 409, 500, 503] {
            assert_eq!(
                store_check(&none, s, &bare, &r),
                Err(NotStorable::OperatorTtlStatus),
                "{s}"
            );
            assert_eq!(fresh_of(&bare, s, &r).lifetime, Duration::ZERO, "{s}");
        }
        for s in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414] {
            assert_eq!(store_check(&none, s, &bare, &r), Ok(()), "{s}");
            assert_eq!(fresh_of(&bare, s, &r).lifetime, Duration::from_secs(300));
        }
        // The origin's own freshness still makes any final status storable, and an
        // override never stretches it for an unlisted status.
        let explicit = h(&[("cache-control", "max-age=7")]);
        assert_eq!(store_check(&none, 403, &explicit, &r), Ok(()));
        assert_eq!(
            fresh_of(&explicit, 403, &r).lifetime,
            Duration::from_secs(7)
        );
        r.ttl_statuses = vec![403];
        assert_eq!(store_check(&none, 403, &bare, &r), Ok(()));
        assert_eq!(fresh_of(&bare, 403, &r).lifetime, Duration::from_secs(300));
    }
    // Without an operator lifetime a bare 400 is simply without freshness.
    assert_eq!(
        store_check(&none, 400, &bare, &rules()),
        Err(NotStorable::NoFreshness)
    );
}

#[test]
fn credentialed_requests_get_no_heuristic_or_operator_lifetime() {
    let lm = date(t0() - Duration::from_secs(100_000));
    let res = h(&[("last-modified", &lm), ("date", &date(t0()))]);
    let mut r = rules();
    r.default_ttl = Some(Duration::from_secs(300));
    for req in [h(&[("cookie", "s=1")]), h(&[("authorization", "Bearer x")])] {
        for rr in [rules(), r.clone()] {
            let with_mr = h(&[("last-modified", &lm), ("cache-control", "must-revalidate")]);
            assert_eq!(
                store_check(&req, 200, &with_mr, &rr),
                Err(NotStorable::Credentialed)
            );
            let f = freshness(
                StatusCode::OK,
                &req,
                &res,
                CacheControl::default(),
                t0(),
                t0(),
                &rr,
            );
            assert_eq!(f.lifetime, Duration::ZERO);
            assert!(!f.heuristic);
        }
        // `public` stores it, still without a borrowed lifetime.
        let public = h(&[("last-modified", &lm), ("cache-control", "public")]);
        assert_eq!(store_check(&req, 200, &public, &r), Ok(()));
        let cc = effective_cc(&public, &[]);
        let f = freshness(StatusCode::OK, &req, &public, cc, t0(), t0(), &r);
        assert_eq!(f.lifetime, Duration::ZERO);
    }
    // Explicit freshness: Cookie with max-age; Authorization only as RFC 9111 §3.5 allows.
    let cookie = h(&[("cookie", "s=1")]);
    let auth = h(&[("authorization", "Bearer x")]);
    let ma = h(&[("cache-control", "max-age=60")]);
    assert_eq!(store_check(&cookie, 200, &ma, &r), Ok(()));
    assert_eq!(
        store_check(&auth, 200, &ma, &r),
        Err(NotStorable::Authorization)
    );
    let exp = h(&[("expires", &date(t0() + Duration::from_secs(60)))]);
    assert_eq!(store_check(&cookie, 200, &exp, &r), Ok(()));
    // The same response to an anonymous request keeps its heuristic lifetime.
    assert_eq!(
        fresh_of(&res, 200, &rules()).lifetime,
        Duration::from_secs(10_000)
    );
}

#[test]
fn age_uses_the_first_list_member_and_ignores_invalid_values() {
    for (v, want) in [
        ("10", Some(10)),
        ("10, 20", Some(10)),
        (" , 7", Some(7)),
        ("99999999999999999999", Some(1 << 31)),
        ("-5", None),
        ("1.5", None),
        ("10s", None),
        ("soon", None),
        ("", None),
    ] {
        assert_eq!(age_value(&h(&[("age", v)])), want, "{v:?}");
    }
    let mut two = h(&[("age", "3")]);
    two.append("age", HeaderValue::from_static("50"));
    assert_eq!(age_value(&two), Some(3));
    // Invalid Age never makes a response stale by itself.
    let res = h(&[("cache-control", "max-age=60"), ("age", "junk")]);
    let f = fresh_of(&res, 200, &rules());
    assert_eq!(f.initial_age, Duration::ZERO);
    assert_eq!(
        evaluate(&f, &CacheControl::default(), t0()),
        Decision::Fresh
    );
}

#[test]
fn stale_if_unreachable_window_never_past_revalidation_directives() {
    let w = Duration::from_secs(60);
    let f = fresh_of(&h(&[("cache-control", "max-age=10")]), 200, &rules());
    assert!(stale_if_unreachable_ok(
        &f,
        w,
        t0() + Duration::from_secs(70)
    ));
    assert!(!stale_if_unreachable_ok(
        &f,
        w,
        t0() + Duration::from_secs(71)
    ));
    assert!(!stale_if_unreachable_ok(
        &f,
        Duration::ZERO,
        t0() + Duration::from_secs(11)
    ));
    for cc in [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
        "max-age=10, no-cache",
        "s-maxage=10",
    ] {
        let f = fresh_of(&h(&[("cache-control", cc)]), 200, &rules());
        assert!(
            !stale_if_unreachable_ok(&f, w, t0() + Duration::from_secs(11)),
            "{cc}"
        );
        // Nor are such entries kept longer for it.
        assert_eq!(
            keep_for(&f, false, w),
            keep_for(&f, false, Duration::ZERO),
            "{cc}"
        );
    }
    // Entries are kept for the window (memory and Redis TTLs both come from here).
    assert_eq!(keep_for(&f, false, w), Duration::from_secs(70));
    assert_eq!(keep_for(&f, false, Duration::ZERO), Duration::from_secs(10));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn age_parsing_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60)) {
        if let Ok(v) = HeaderValue::from_bytes(&b) {
            let mut m = HeaderMap::new();
            m.insert("age", v);
            if let Some(a) = age_value(&m) {
                proptest::prop_assert!(a <= 1 << 31);
            }
            let _ = fresh_of(&m, 200, &rules());
        }
    }
}

use super::*;
use http::header::CACHE_CONTROL;

fn cc(s: &str) -> CacheControl {
    CacheControl::parse_str(s)
}

#[test]
fn basic_directives() {
    let c = cc("public, max-age=60, s-maxage=120, must-revalidate, no-transform, immutable");
    assert!(c.public && c.must_revalidate && c.no_transform && c.immutable);
    assert_eq!(c.max_age, Some(60));
    assert_eq!(c.s_maxage, Some(120));
    assert!(!c.no_store && !c.no_cache && !c.private);

    let c = cc("no-store, private, proxy-revalidate, must-understand, only-if-cached, min-fresh=7");
    assert!(c.no_store && c.private && c.proxy_revalidate && c.must_understand && c.only_if_cached);
    assert_eq!(c.min_fresh, Some(7));
    assert_eq!(c.max_age, None);
}

#[test]
fn names_are_case_insensitive() {
    let c = cc("Max-Age=10, NO-STORE, Public, S-MaxAge=3");
    assert_eq!(c.max_age, Some(10));
    assert_eq!(c.s_maxage, Some(3));
    assert!(c.no_store && c.public);
}

#[test]
fn whitespace_is_tolerated() {
    let c = cc(" \tmax-age = 30 ,\tno-cache\t,  private  ");
    assert_eq!(c.max_age, Some(30));
    assert!(c.no_cache && c.private);
    assert!(c.no_cache_fields.is_empty());
}

#[test]
fn quoted_values_keep_commas() {
    let c = cc(r#"no-cache="set-cookie, x-foo", max-age=5"#);
    assert!(c.no_cache);
    assert_eq!(c.no_cache_fields, ["set-cookie", "x-foo"]);
    assert_eq!(c.max_age, Some(5));

    let c = cc(r#"private="Set-Cookie, Authorization", no-store"#);
    assert!(c.private && c.no_store);
    assert!(c.no_cache_fields.is_empty());
}

#[test]
fn quoted_escapes_and_token_form() {
    let c = cc(r#"no-cache="a\"b, X-\Bar", public"#);
    // `a"b` is not a valid field name; `X-\Bar` unescapes to `x-bar`.
    assert_eq!(c.no_cache_fields, ["x-bar"]);
    assert!(c.public);

    let c = cc("no-cache=Set-Cookie");
    assert_eq!(c.no_cache_fields, ["set-cookie"]);
}

#[test]
fn quoted_numeric_value_accepted() {
    assert_eq!(cc(r#"max-age="60""#).max_age, Some(60));
    assert_eq!(cc(r#"stale-if-error="9""#).stale_if_error, Some(9));
}

#[test]
fn multiple_header_lines() {
    let mut headers = HeaderMap::new();
    headers.append(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    headers.append(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache=\"x-a\", public"),
    );
    headers.append(
        CACHE_CONTROL,
        HeaderValue::from_static("stale-while-revalidate=30"),
    );
    let c = CacheControl::from_headers(&headers, &CACHE_CONTROL);
    assert_eq!(c.max_age, Some(60));
    assert_eq!(c.no_cache_fields, ["x-a"]);
    assert!(c.no_cache && c.public);
    assert_eq!(c.stale_while_revalidate, Some(30));

    let cdn = HeaderName::from_static("cdn-cache-control");
    assert!(CacheControl::from_headers(&headers, &cdn).is_empty());
}

#[test]
fn duplicates_take_lowest_and_or_booleans() {
    let c = cc("max-age=100, s-maxage=50, max-age=10, s-maxage=70, public, public");
    assert_eq!(c.max_age, Some(10));
    assert_eq!(c.s_maxage, Some(50));
    assert!(c.public);

    let c = cc(r#"no-cache="a", no-cache="b, A", no-store"#);
    assert_eq!(c.no_cache_fields, ["a", "b"]);
    assert!(c.no_cache && c.no_store);
}

#[test]
fn invalid_max_age_is_stale() {
    for s in [
        "max-age=abc",
        "max-age=-1",
        "max-age=1.5",
        "max-age=",
        "max-age",
        "max-age=\"\"",
    ] {
        assert_eq!(cc(s).max_age, Some(0), "{s}");
    }
    assert_eq!(cc("s-maxage=x").s_maxage, Some(0));
    // An invalid duplicate wins because it is the most conservative reading.
    assert_eq!(cc("max-age=60, max-age=oops").max_age, Some(0));
}

#[test]
fn invalid_other_numbers_are_absent() {
    let c = cc("min-fresh=x, stale-while-revalidate=-3, stale-if-error=1.0, max-stale=abc");
    assert_eq!(c.min_fresh, None);
    assert_eq!(c.stale_while_revalidate, None);
    assert_eq!(c.stale_if_error, None);
    assert_eq!(c.max_stale, None);
    assert!(c.is_empty());
}

#[test]
fn delta_seconds_saturate() {
    assert_eq!(parse_delta_seconds("0"), Some(0));
    assert_eq!(parse_delta_seconds("007"), Some(7));
    assert_eq!(parse_delta_seconds("2147483647"), Some(2_147_483_647));
    assert_eq!(parse_delta_seconds("2147483649"), Some(2_147_483_648));
    assert_eq!(
        parse_delta_seconds("99999999999999999999999999999"),
        Some(2_147_483_648)
    );
    for bad in ["", "-1", "+1", "1.5", " 1", "1 ", "1e3", "١"] {
        assert_eq!(parse_delta_seconds(bad), None, "{bad:?}");
    }
    assert_eq!(
        cc("max-age=184467440737095516160").max_age,
        Some(2_147_483_648)
    );
}

#[test]
fn max_stale_any_vs_seconds() {
    assert_eq!(cc("max-stale").max_stale, Some(MaxStale::Any));
    assert_eq!(cc("max-stale=30").max_stale, Some(MaxStale::Seconds(30)));
    assert_eq!(
        cc("max-stale, max-stale=30").max_stale,
        Some(MaxStale::Seconds(30))
    );
    assert_eq!(
        cc("max-stale=30, max-stale").max_stale,
        Some(MaxStale::Seconds(30))
    );
    assert_eq!(
        cc("max-stale=30, max-stale=5").max_stale,
        Some(MaxStale::Seconds(5))
    );
}

#[test]
fn stale_extensions() {
    let c = cc("max-age=1, stale-while-revalidate=60, stale-if-error=86400");
    assert_eq!(c.stale_while_revalidate, Some(60));
    assert_eq!(c.stale_if_error, Some(86400));
}

#[test]
fn unknown_directives_ignored() {
    let c = cc(r#"foo, bar=baz, qux="a, no-store", community="UCI", max-age=5"#);
    assert_eq!(c.max_age, Some(5));
    assert!(!c.no_store);
    assert!(cc("x-unknown=1, averyveryveryverylongdirectivename").is_empty());
}

#[test]
fn malformed_elements() {
    // Restrictive directives are honoured, permissive ones dropped, parsing resumes after the comma.
    let c = cc("no-store junk, public junk, max-age=60 junk, immutable");
    assert!(c.no_store && !c.public && c.immutable);
    assert_eq!(c.max_age, Some(0));
    // An unterminated quote swallows the rest of the value.
    let c = cc(r#"max-age=5, no-cache="a, public"#);
    assert_eq!(c.max_age, Some(5));
    assert!(c.no_cache && !c.public);
}

#[test]
fn empty_elements_skipped() {
    let c = cc(",, ,max-age=3,,\t, public,");
    assert_eq!(c.max_age, Some(3));
    assert!(c.public);
}

#[test]
fn non_utf8_bytes_only_spoil_their_element() {
    let v = HeaderValue::from_bytes(b"max-age=10, x\xffy=1, pub\xfflic, no-store")
        .expect("valid header bytes");
    let c = CacheControl::parse([&v]);
    assert_eq!(c.max_age, Some(10));
    assert!(c.no_store && !c.public);
}

#[test]
fn is_empty() {
    assert!(CacheControl::default().is_empty());
    assert!(cc("").is_empty());
    assert!(cc(" , ,").is_empty());
    assert!(cc("foo=bar").is_empty());
    assert!(!cc("no-store").is_empty());
    assert!(!cc("max-age=abc").is_empty());
    assert!(CacheControl::parse([]).is_empty());
}

#[test]
fn garbage_never_panics() {
    let nasty = [
        "\"",
        "\\",
        "=",
        "==,=",
        "\"\\",
        "max-age=\"\\",
        "no-cache=\"\\\"",
        "no-cache=\"a\\",
        ",\",\",\"",
        "max-age=\"60",
        "=\"x\", no-store",
        "\u{0}\u{7f}\r\n",
        "🦀=🦀, max-age=🦀",
        "no-cache=\"\u{e9}\", private=\"\"",
        "max-stale=\"",
        "                ",
        "a=b=c=d, \"\"\"\"",
    ];
    for s in nasty {
        let _ = cc(s);
    }
    let long = "no-cache=\"".repeat(1000) + &",".repeat(1000) + &"max-age=9".repeat(100);
    let _ = cc(&long);
    // Every prefix of a tricky value, to hit each truncation point.
    let tricky = r#"max-age="6\"0", no-cache="a,\"b", x="\\", max-stale"#;
    for end in 0..=tricky.len() {
        let _ = cc(&tricky[..end]);
    }
    assert!(cc("=\"x\", no-store").no_store);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
        if let Ok(v) = http::HeaderValue::from_bytes(&b) {
            let _ = CacheControl::parse([&v]);
        }
    }

    #[test]
    fn directive_shaped_text_never_panics(s in "[a-zA-Z=\", \\\\\\-0-9;]{0,60}") {
        let _ = CacheControl::parse_str(&s);
    }
}

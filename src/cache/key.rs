//! Cache keys: the primary key (scheme, canonical host, path and query) and the Vary
//! secondary key (the request's values of the fields a stored response varies on).

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Request};

use crate::route::{RouteCache, strip_port};

/// The primary key: `http://host/path?query`, normalised so HTTP/1.1 (`Host` + origin-form)
/// and HTTP/2 (`:authority`) requests share entries. The method is implied: GET, with HEAD
/// answered from the stored GET.
pub fn primary_key<B>(req: &Request<B>, rules: &RouteCache) -> Arc<str> {
    let host = rules.cache_host.as_deref().unwrap_or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
    });
    let path = req.uri().path();
    let query = req.uri().query();
    let key = build_key(host, path, query, &rules.ignore_query_params);
    // The TLS listener's requests are `https` only where the route keys on the scheme.
    let tls = || {
        req.extensions()
            .get::<crate::http_util::conn::ConnInfo>()
            .is_some_and(|c| c.tls.is_some())
    };
    with_scheme(key, rules.key_scheme && tls())
}

/// `key` for an `https` request when `https` (`https://host/path?q`, or a raw key behind an
/// `https+` prefix), else `key` as it is: `build_key`'s keys are the `http` ones.
pub fn with_scheme(key: Arc<str>, https: bool) -> Arc<str> {
    if !https {
        return key;
    }
    match key.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}").into(),
        None => format!("https+{key}").into(),
    }
}

/// Both schemes' keys for an `http` key (what a `key_scheme` route invalidates).
pub fn both_schemes(key: Arc<str>) -> [Arc<str>; 2] {
    let https = with_scheme(key.clone(), true);
    [key, https]
}

/// Builds a key from parts (also used by purge, so its input matches the same entries).
///
/// Host and path stay structurally apart: `http://host/path?query` is used only when the host
/// cannot hold `/`, `?` or `#` and the path starts with `/` and holds no `?`, so the text splits
/// back into the same parts. Anything else (which request checks refuse before it gets here)
/// gets a length-prefixed form that never starts with `http://`, so no value can make one
/// URL's answer land under another's key.
pub fn build_key(host: &str, path: &str, query: Option<&str>, ignore: &[String]) -> Arc<str> {
    let host = normalise_host(host);
    let path = if path.is_empty() { "/" } else { path };
    let kept = query.and_then(|q| kept_query(q, ignore));
    let kept = kept.as_deref();
    let structured = host.bytes().all(host_byte) && path.starts_with('/') && !path.contains('?');
    let mut k = String::with_capacity(16 + host.len() + path.len() + kept.map_or(0, str::len));
    if structured {
        k.push_str("http://");
        k.push_str(&host);
        k.push_str(path);
    } else {
        use std::fmt::Write as _;
        let _ = write!(k, "seawall-raw:{}:{host}{}:{path}", host.len(), path.len());
    }
    if let Some(q) = kept {
        k.push('?');
        k.push_str(q);
    }
    k.into()
}

/// Bytes a valid `uri-host [":" port]` is made of (none of them ends an authority).
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)
}

/// The query's `&`-separated parameters, each with whether `ignore` drops it (by name, the
/// text before the first `=`).
fn params<'a>(q: &'a str, ignore: &'a [String]) -> impl Iterator<Item = (&'a str, bool)> + 'a {
    q.split('&').filter(|kv| !kv.is_empty()).map(move |kv| {
        let name = kv.split('=').next().unwrap_or("");
        (kv, ignore.iter().any(|i| i == name))
    })
}

/// The query as it goes into the key: whole when nothing is ignored, else the kept parameters
/// in order. `None` when nothing remains.
pub fn kept_query<'a>(q: &'a str, ignore: &[String]) -> Option<std::borrow::Cow<'a, str>> {
    if ignore.is_empty() {
        return (!q.is_empty()).then_some(std::borrow::Cow::Borrowed(q));
    }
    let kept: Vec<&str> = params(q, ignore)
        .filter(|(_, dropped)| !dropped)
        .map(|(kv, _)| kv)
        .collect();
    (!kept.is_empty()).then(|| std::borrow::Cow::Owned(kept.join("&")))
}

/// Whether a dropped parameter could hide others from the key: the origin may split the
/// query on `;` or decode `%26` (`&`), `%3B` (`;`), `%3D` (`=`) in it, reading parameters the
/// key never saw (RFC 3986 §3.4: the query's syntax belongs to the origin).
pub fn ambiguous_query(q: &str, ignore: &[String]) -> bool {
    !ignore.is_empty()
        && params(q, ignore).any(|(kv, dropped)| {
            dropped
                && (kv.contains(';')
                    || kv.as_bytes().windows(3).any(|w| {
                        w[0] == b'%' && w[1] == b'2' && w[2] == b'6'
                            || w[0] == b'%'
                                && w[1] == b'3'
                                && matches!(w[2], b'b' | b'B' | b'd' | b'D')
                    }))
        })
}

/// Lowercase, default port dropped.
pub fn normalise_host(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    match h.strip_suffix(":80") {
        Some(stripped) if strip_port(&h) == stripped => stripped.to_string(),
        _ => h,
    }
}

/// The encodings Seawall buckets `Accept-Encoding` into.
const KNOWN_ENCODINGS: [&str; 4] = ["br", "deflate", "gzip", "zstd"];

/// Marks a stored `Accept-Language` variant selected by its `Content-Language` (routes with
/// `vary_language = "content-language"`); the control byte cannot occur in a field value.
const CONTENT_LANGUAGE_MARK: &str = "\u{1}content-language:";

/// One `Accept-Language` range with its q-value in thousandths.
type LanguageRange = (u16, String);

/// RFC 9110 §12.4.2 qvalue, in thousandths.
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let frac_n = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(frac_n),
        "1" if frac_n == 0 => Some(1000),
        _ => None,
    }
}

/// `Accept-Language` items as ranges (lowercase, whitespace removed around `;` and `=`) in
/// preference order: by q-value, stable among equal q. `None` when an item has a parameter
/// other than a valid `q`: then the order is left alone (the origin's reading is unknown).
fn language_ranges(items: &[String]) -> Option<Vec<LanguageRange>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1000;
        for p in parts {
            let (k, v) = p.split_once('=')?;
            if !k.trim().eq_ignore_ascii_case("q") {
                return None;
            }
            q = qvalue(v.trim())?;
        }
        out.push((q, range));
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.0));
    Some(out)
}

/// The normalised `Accept-Language` key: case and whitespace folded, ranges ordered by q.
fn accept_language_key(items: &[String]) -> String {
    match language_ranges(items) {
        Some(ranges) => {
            let rendered: Vec<String> = ranges
                .into_iter()
                .map(|(q, r)| match q {
                    1000 => r,
                    q => {
                        let frac = format!("{q:03}");
                        format!("{r};q=0.{}", frac.trim_end_matches('0'))
                            .trim_end_matches('.')
                            .to_string()
                    }
                })
                .collect();
            rendered.join(",")
        }
        None => {
            let folded: Vec<String> = items
                .iter()
                .map(|i| {
                    i.split(';')
                        .map(|p| match p.split_once('=') {
                            Some((k, v)) => format!("{}={}", k.trim(), v.trim()),
                            None => p.trim().to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(";")
                        .to_ascii_lowercase()
                })
                .collect();
            folded.join(",")
        }
    }
}

/// The language a request prefers most (its first range by q), if it names one.
fn preferred_language(headers: &HeaderMap) -> Option<String> {
    let items = field_items(headers, &http::header::ACCEPT_LANGUAGE)?;
    let (q, range) = language_ranges(&items)?.into_iter().next()?;
    (q > 0 && range != "*" && !range.is_empty()).then_some(range)
}

/// The vary value that stands for "requests preferring this response's `Content-Language`",
/// for a response in exactly one language.
pub fn content_language_variant(res: &HeaderMap) -> Option<String> {
    let mut values = res.get_all(http::header::CONTENT_LANGUAGE).iter();
    let v = values.next()?.to_str().ok()?.trim();
    if values.next().is_some() || v.is_empty() || v.contains(',') {
        return None;
    }
    Some(format!("{CONTENT_LANGUAGE_MARK}{}", v.to_ascii_lowercase()))
}

/// A field's list items, trimmed, empty ones dropped; `None` when the field is absent.
fn field_items(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<String>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(
        values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// The request's value of one Vary field, normalised: field lines joined, whitespace around
/// commas folded; `Accept-Language` case- and whitespace-folded and ordered by q-value;
/// `Accept-Encoding` optionally reduced to the known encodings it accepts.
pub fn vary_value(headers: &HeaderMap, name: &HeaderName, normalise_ae: bool) -> Option<String> {
    let joined = field_items(headers, name)?;
    if name == http::header::ACCEPT_LANGUAGE {
        return Some(accept_language_key(&joined));
    }
    if normalise_ae && name == http::header::ACCEPT_ENCODING {
        let mut accepted: Vec<&str> = KNOWN_ENCODINGS
            .iter()
            .copied()
            .filter(|enc| {
                joined.iter().any(|item| {
                    let mut parts = item.split(';');
                    let coding = parts.next().unwrap_or("").trim();
                    let q_zero = parts.any(|p| {
                        let p = p.trim();
                        p.strip_prefix("q=")
                            .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
                    });
                    (coding.eq_ignore_ascii_case(enc) || coding == "*") && !q_zero
                })
            })
            .collect();
        accepted.sort_unstable();
        return Some(accepted.join(","));
    }
    Some(joined.join(", "))
}

/// The field names a response varies on; `None` for `Vary: *` (never matches).
pub fn vary_fields(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut out = Vec::new();
    for v in headers.get_all(http::header::VARY) {
        let Ok(s) = v.to_str() else { continue };
        for f in s.split(',') {
            let f = f.trim();
            if f == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(f.as_bytes())
                && !out.contains(&n)
            {
                out.push(n);
            }
        }
    }
    Some(out)
}

/// The secondary key of a request for the given fields.
pub fn vary_key(
    headers: &HeaderMap,
    fields: &[HeaderName],
    normalise_ae: bool,
) -> Vec<(HeaderName, Option<String>)> {
    fields
        .iter()
        .map(|f| (f.clone(), vary_value(headers, f, normalise_ae)))
        .collect()
}

/// Whether `headers` selects the variant stored with `stored`.
pub fn vary_matches(
    stored: &[(HeaderName, Option<String>)],
    headers: &HeaderMap,
    normalise_ae: bool,
) -> bool {
    stored.iter().all(|(name, value)| {
        match value
            .as_deref()
            .and_then(|v| v.strip_prefix(CONTENT_LANGUAGE_MARK))
        {
            Some(lang) => preferred_language(headers).is_some_and(|p| p == lang),
            None => vary_value(headers, name, normalise_ae) == *value,
        }
    })
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rules() -> RouteCache {
        RouteCache::default()
    }

    #[test]
    fn h1_and_h2_requests_share_a_key() {
        let h1 = Request::get("/a?b=1")
            .header("host", "Example.COM:80")
            .body(())
            .expect("req");
        let h2 = Request::get("http://example.com/a?b=1")
            .body(())
            .expect("req");
        assert_eq!(primary_key(&h1, &rules()), primary_key(&h2, &rules()));
        assert_eq!(&*primary_key(&h1, &rules()), "http://example.com/a?b=1");
    }

    #[test]
    fn cache_host_and_ignored_params_normalise_keys() {
        let mut r = rules();
        r.cache_host = Some("svc".into());
        r.ignore_query_params = vec!["utm_source".into()];
        let a = Request::get("/p?utm_source=x&id=2")
            .header("host", "svc.ns.svc.cluster.local")
            .body(())
            .expect("req");
        let b = Request::get("/p?id=2")
            .header("host", "svc.ns")
            .body(())
            .expect("req");
        assert_eq!(primary_key(&a, &r), primary_key(&b, &r));
        assert_eq!(&*primary_key(&a, &r), "http://svc/p?id=2");
    }

    #[test]
    fn accept_encoding_is_bucketed() {
        let mut h = HeaderMap::new();
        h.insert(
            "accept-encoding",
            HeaderValue::from_static("gzip, deflate, br;q=0, x-custom"),
        );
        let ae = http::header::ACCEPT_ENCODING;
        assert_eq!(vary_value(&h, &ae, true).as_deref(), Some("deflate,gzip"));
        let mut h2 = HeaderMap::new();
        h2.insert("accept-encoding", HeaderValue::from_static("deflate,gzip"));
        assert_eq!(vary_value(&h, &ae, true), vary_value(&h2, &ae, true));
        assert_eq!(
            vary_value(&h, &ae, false).as_deref(),
            Some("gzip, deflate, br;q=0, x-custom")
        );
    }

    #[test]
    fn vary_star_never_matches_and_fields_are_deduplicated() {
        let mut h = HeaderMap::new();
        h.append(
            "vary",
            HeaderValue::from_static("Accept-Language, accept-language"),
        );
        h.append("vary", HeaderValue::from_static("Origin"));
        assert_eq!(vary_fields(&h).map(|v| v.len()), Some(2));
        h.append("vary", HeaderValue::from_static("*"));
        assert!(vary_fields(&h).is_none());
    }

    fn al(v: &str) -> Option<String> {
        let mut h = HeaderMap::new();
        h.insert("accept-language", HeaderValue::from_str(v).expect("value"));
        vary_value(&h, &http::header::ACCEPT_LANGUAGE, true)
    }

    #[test]
    fn accept_language_is_folded_and_ordered_by_q_only() {
        let k = al("en-US, fr;q=0.8");
        assert_eq!(k.as_deref(), Some("en-us,fr;q=0.8"));
        for same in [
            "EN-us ,fr ; Q = 0.80",
            "fr;q=0.8, en-US",
            "fr;q=0.800,en-us;q=1.000",
        ] {
            assert_eq!(al(same), k, "{same}");
        }
        assert_ne!(al("fr, en-US;q=0.8"), k);
        // Equal q keeps the sender's order.
        assert_ne!(al("de;q=0.5, it;q=0.5"), al("it;q=0.5, de;q=0.5"));
        // Anything but a valid q: folded, never reordered.
        assert_eq!(al("fr;x=1, en").as_deref(), Some("fr;x=1,en"));
        assert_ne!(al("fr;q=2, en"), al("en, fr;q=2"));
        assert_eq!(al("en;q=0").as_deref(), Some("en;q=0"));
    }

    #[test]
    fn content_language_variants_serve_requests_preferring_that_language() {
        let mut res = HeaderMap::new();
        res.insert("content-language", HeaderValue::from_static("FR"));
        let v = content_language_variant(&res);
        let stored = vec![(http::header::ACCEPT_LANGUAGE, v)];
        let req = |s: &str| {
            let mut h = HeaderMap::new();
            h.insert("accept-language", HeaderValue::from_str(s).expect("value"));
            h
        };
        assert!(vary_matches(&stored, &req("fr, en;q=0.5"), true));
        assert!(vary_matches(&stored, &req("de;q=0.1, Fr"), true));
        assert!(!vary_matches(&stored, &req("fr-CH, fr;q=0.9"), true));
        assert!(!vary_matches(&stored, &req("*"), true));
        assert!(!vary_matches(&stored, &HeaderMap::new(), true));
        res.insert("content-language", HeaderValue::from_static("fr, de"));
        assert_eq!(content_language_variant(&res), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn accept_language_parsing_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            if let Ok(v) = HeaderValue::from_bytes(&b) {
                let mut h = HeaderMap::new();
                h.insert("accept-language", v);
                let _ = vary_value(&h, &http::header::ACCEPT_LANGUAGE, true);
                let _ = preferred_language(&h);
            }
        }

        #[test]
        fn language_shaped_text_keys_are_stable(s in "[a-zA-Z*;=q0-9., -]{0,40}") {
            if let Ok(v) = HeaderValue::from_str(&s) {
                let mut h = HeaderMap::new();
                h.insert("accept-language", v);
                let k = vary_value(&h, &http::header::ACCEPT_LANGUAGE, true);
                // The key of a key is itself: normalising is idempotent.
                if let Some(k) = &k && let Ok(v2) = HeaderValue::from_str(k) {
                    let mut h2 = HeaderMap::new();
                    h2.insert("accept-language", v2);
                    proptest::prop_assert_eq!(vary_value(&h2, &http::header::ACCEPT_LANGUAGE, true), k.clone().into());
                }
            }
        }
    }

    #[test]
    fn absent_and_present_fields_differ() {
        let fields = vec![HeaderName::from_static("accept-language")];
        let mut fr = HeaderMap::new();
        fr.insert("accept-language", HeaderValue::from_static("fr"));
        let stored = vary_key(&fr, &fields, true);
        assert!(vary_matches(&stored, &fr, true));
        assert!(!vary_matches(&stored, &HeaderMap::new(), true));
    }
}

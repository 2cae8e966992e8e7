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
    build_key(host, path, query, &rules.ignore_query_params)
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

/// The request's value of one Vary field, normalised: field lines joined, whitespace around
/// commas folded; `Accept-Encoding` optionally reduced to the known encodings it accepts.
pub fn vary_value(headers: &HeaderMap, name: &HeaderName, normalise_ae: bool) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let joined: Vec<String> = values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
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
    stored
        .iter()
        .all(|(name, value)| vary_value(headers, name, normalise_ae) == *value)
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

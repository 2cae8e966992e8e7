//! Routing: request host and path → the route (upstream and cache rules). Longest prefix wins;
//! a route with a host beats one without.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::config::Config;

pub use crate::config::VaryLanguage;

/// Per-route cache rules.
#[derive(Clone, Debug)]
pub struct RouteCache {
    /// Caching on for this route.
    pub enabled: bool,
    /// Canonical host used in keys instead of the request's.
    pub cache_host: Option<String>,
    /// Freshness for responses without explicit freshness.
    pub default_ttl: Option<Duration>,
    /// Cap on freshness.
    pub max_ttl: Option<Duration>,
    /// Replaces the origin's freshness.
    pub ttl_override: Option<Duration>,
    /// Stale-if-error window when the origin gives none.
    pub stale_if_error: Option<Duration>,
    /// Store `Set-Cookie` responses.
    pub cache_set_cookie: bool,
    /// Bucket `Accept-Encoding` before keying variants.
    pub normalize_accept_encoding: bool,
    /// Only these Vary headers are honoured.
    pub vary_allowlist: Option<Vec<HeaderName>>,
    /// Query parameters dropped from keys.
    pub ignore_query_params: Vec<String>,
    /// A non-error response to a method not known to be safe invalidates (RFC 9111 §4.4).
    pub invalidate_on_unsafe: bool,
    /// `https` and `http` requests get keys of their own.
    pub key_scheme: bool,
    /// Statuses besides the heuristically cacheable ones that operator lifetimes apply to.
    pub ttl_statuses: Vec<u16>,
    /// How `Vary: Accept-Language` selects a variant.
    pub vary_language: VaryLanguage,
    /// How long past freshness a stored response stands in when the origin cannot be reached.
    pub stale_if_unreachable: Duration,
}

impl Default for RouteCache {
    /// A caching route that obeys the origin (what `[[routes]]` gives with no cache keys).
    fn default() -> Self {
        Self {
            enabled: true,
            cache_host: None,
            default_ttl: None,
            max_ttl: None,
            ttl_override: None,
            stale_if_error: None,
            cache_set_cookie: false,
            normalize_accept_encoding: true,
            vary_allowlist: None,
            ignore_query_params: Vec::new(),
            invalidate_on_unsafe: true,
            key_scheme: false,
            ttl_statuses: Vec::new(),
            vary_language: VaryLanguage::AcceptLanguage,
            stale_if_unreachable: Duration::from_secs(60),
        }
    }
}

/// A route.
#[derive(Clone, Debug)]
pub struct Route {
    /// Position in config.
    pub idx: usize,
    /// Name for metrics and logs.
    pub name: String,
    /// Upstream index.
    pub upstream: usize,
    /// Upstream name.
    pub upstream_name: String,
    host: Option<String>,
    path_prefix: Option<String>,
    /// Cache rules.
    pub cache: RouteCache,
}

/// The routing table.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    /// Builds the table from validated config.
    pub fn new(cfg: &Config) -> Self {
        let routes = cfg
            .raw
            .routes
            .iter()
            .enumerate()
            .map(|(idx, r)| {
                let upstream = cfg
                    .raw
                    .upstreams
                    .iter()
                    .position(|u| u.name == r.upstream)
                    .unwrap_or(0);
                Arc::new(Route {
                    idx,
                    name: cfg.route_name(idx).to_string(),
                    upstream,
                    upstream_name: r.upstream.clone(),
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: r.path_prefix.clone(),
                    cache: RouteCache {
                        enabled: r.cache,
                        cache_host: r.cache_host.as_ref().map(|h| h.to_ascii_lowercase()),
                        default_ttl: r.default_ttl,
                        max_ttl: r.max_ttl,
                        ttl_override: r.ttl_override,
                        stale_if_error: r.stale_if_error,
                        cache_set_cookie: r.cache_set_cookie,
                        normalize_accept_encoding: r.normalize_accept_encoding,
                        vary_allowlist: r.vary_allowlist.as_ref().map(|l| {
                            l.iter()
                                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                                .collect()
                        }),
                        ignore_query_params: r.ignore_query_params.clone(),
                        invalidate_on_unsafe: r.invalidate_on_unsafe,
                        key_scheme: r.key_scheme,
                        ttl_statuses: r.ttl_statuses.clone(),
                        vary_language: r
                            .vary_language
                            .as_deref()
                            .and_then(VaryLanguage::parse)
                            .unwrap_or_default(),
                        stale_if_unreachable: r
                            .stale_if_unreachable
                            .unwrap_or(cfg.raw.cache.stale_if_unreachable),
                    },
                })
            })
            .collect();
        Self { routes }
    }

    /// The best route for `host` (port ignored) and `path`, if any.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .filter(|r| match (&r.host, host) {
                (None, _) => true,
                (Some(h), Some(req)) => h.eq_ignore_ascii_case(req),
                (Some(_), None) => false,
            })
            .filter(|r| {
                r.path_prefix
                    .as_ref()
                    .is_none_or(|p| path.starts_with(p.as_str()))
            })
            .max_by_key(|r| {
                (
                    r.host.is_some(),
                    r.path_prefix.as_ref().map_or(0, String::len),
                    std::cmp::Reverse(r.idx),
                )
            })
    }

    /// All routes.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// `host:port` → `host` (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

pub use crate::http_util::valid_authority;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_and_host_specific_routes_win() {
        let src = r#"
[[upstreams]]
name = "a"
endpoints = ["http://127.0.0.1:1"]
[[upstreams]]
name = "b"
endpoints = ["http://127.0.0.1:2"]
[[routes]]
upstream = "a"
[[routes]]
upstream = "b"
path_prefix = "/api"
[[routes]]
name = "api-v2"
upstream = "a"
path_prefix = "/api/v2"
[[routes]]
name = "shop"
upstream = "b"
host = "Shop.Example"
"#;
        let cfg = Config::parse(src, "t", std::iter::empty()).expect("valid");
        let r = Router::new(&cfg);
        assert_eq!(r.route(Some("x"), "/").map(|r| r.name.as_str()), Some("a"));
        assert_eq!(
            r.route(Some("x"), "/api/1").map(|r| r.name.as_str()),
            Some("b")
        );
        assert_eq!(
            r.route(Some("x"), "/api/v2/z").map(|r| r.name.as_str()),
            Some("api-v2")
        );
        assert_eq!(
            r.route(Some("shop.example:8080"), "/api")
                .map(|r| r.name.as_str()),
            Some("shop")
        );
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn no_catch_all_means_no_route() {
        let src = r#"
[[upstreams]]
name = "a"
endpoints = ["http://127.0.0.1:1"]
[[routes]]
upstream = "a"
path_prefix = "/only"
"#;
        let cfg = Config::parse(src, "t", std::iter::empty()).expect("valid");
        let r = Router::new(&cfg);
        assert!(r.route(Some("x"), "/other").is_none());
        assert!(r.route(Some("x"), "/only/x").is_some());
    }

    #[test]
    fn authority_follows_rfc_3986_host_and_port() {
        for ok in [
            "a",
            "example.com:8080",
            "example.com:",
            "127.0.0.1",
            "[::1]",
            "[::ffff:192.0.2.1]:443",
            "[v7.a:b]",
            "a%2Fb",
            "a_b-c~d!$&'()*+,;=e",
        ] {
            assert!(valid_authority(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "a/b",
            "a?b",
            "a#b",
            "u@a",
            "a b",
            "a\tb",
            "a\\b",
            "a:b",
            "a:80:80",
            "[::1",
            "[::1]x",
            "[::g]",
            "[v.a]",
            "[vz.a]",
            "a%2",
            "a%zz",
            "caf\u{e9}",
            "a\u{0}",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes never panic, and nothing accepted can end the host early.
        #[test]
        fn authority_validation_never_panics_nor_admits_delimiters(
            v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48)
        ) {
            if valid_authority(&v) {
                proptest::prop_assert!(!v.is_empty());
                proptest::prop_assert!(!v.iter().any(|b| b"/?#@ \t\r\n\\".contains(b)));
                proptest::prop_assert!(v.is_ascii());
            }
        }

        /// Strings built from the host alphabet, valid or not, are judged without a panic and
        /// any accepted one routes by its host part.
        #[test]
        fn authority_from_host_alphabet(v in "[a-z0-9.:%\\[\\]v@/-]{0,24}") {
            if valid_authority(v.as_bytes()) {
                proptest::prop_assert!(!strip_port(&v).contains('/'));
            }
        }
    }
}

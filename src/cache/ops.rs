//! Operator actions on the cache: purge by key, path, prefix or tag (hard, soft or dry run),
//! listings, and the export/import record that moves entries between replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::entry::Entry;
use super::{CacheShared, key, policy};
use crate::route::{Router, strip_port};

/// What to purge.
#[derive(Clone, Debug)]
pub enum Selector {
    /// One primary key (all its variants).
    Key(Arc<str>),
    /// A path with query, on every host.
    Path(String),
    /// A path prefix, on one host or all.
    Prefix {
        /// Normalised host, or every host.
        host: Option<String>,
        /// Path prefix.
        prefix: String,
    },
    /// Everything carrying a tag.
    Tag(String),
    /// Everything.
    All,
}

/// What a purge did (or would do, on a dry run).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PurgeResult {
    /// URLs (primary keys) matched.
    pub keys: usize,
    /// Stored variants affected.
    pub entries: usize,
    /// Marked stale instead of removed.
    pub soft: bool,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// The host used in keys for `host` + `path`: the route's `cache_host` when it has one.
pub fn key_host(router: &Router, host: &str, path: &str) -> String {
    match router
        .route(Some(host), path)
        .and_then(|r| r.cache.cache_host.clone())
    {
        Some(h) => h,
        None => key::normalise_host(host),
    }
}

/// The key of an absolute URL, normalised like request keys (aliases, ignored parameters).
pub fn key_of_url(router: &Router, url: &str) -> Option<Arc<str>> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.authority()?.as_str();
    let path = uri.path();
    let route = router.route(Some(host), path);
    let h = key_host(router, host, path);
    let ignore = route
        .map(|r| r.cache.ignore_query_params.clone())
        .unwrap_or_default();
    // `https://…` names the same entry as `http://…` unless the route keys on the scheme.
    let https = uri.scheme_str() == Some("https") && route.is_some_and(|r| r.cache.key_scheme);
    Some(key::with_scheme(
        key::build_key(&h, path, uri.query(), &ignore),
        https,
    ))
}

/// Splits a key `http://host/path?q` (or `https://…`) into host and path-with-query.
fn split_key(k: &str) -> (&str, &str) {
    let rest = k
        .strip_prefix("http://")
        .or_else(|| k.strip_prefix("https://"))
        .unwrap_or(k);
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

impl Selector {
    /// Whether the primary key `k` is selected (tags need their index: never by the key).
    pub fn matches(&self, k: &str) -> bool {
        match self {
            Selector::Key(key) => &**key == k,
            Selector::Tag(_) => false,
            Selector::Path(p) => split_key(k).1 == p,
            Selector::Prefix { host, prefix } => {
                let (h, p) = split_key(k);
                host.as_deref()
                    .is_none_or(|want| strip_port(h) == strip_port(want))
                    && p.starts_with(prefix.as_str())
            }
            Selector::All => true,
        }
    }
}

impl CacheShared {
    /// The stored primary keys `sel` selects.
    pub fn matching_keys(&self, sel: &Selector) -> Vec<Arc<str>> {
        match sel {
            Selector::Key(k) => self
                .store
                .variants(k)
                .map(|_| vec![k.clone()])
                .unwrap_or_default(),
            Selector::Tag(t) => self.store.keys_for_tag(t),
            _ => self
                .store
                .iter()
                .filter(|(k, _)| sel.matches(k))
                .map(|(k, _)| (*k).clone())
                .collect(),
        }
    }

    /// Purges what `sel` matches: removes it, or with `soft` marks it stale so
    /// stale-while-revalidate and stale-if-error can still use it while the origin refills.
    pub fn purge(&self, sel: &Selector, soft: bool, dry_run: bool) -> PurgeResult {
        let keys = self.matching_keys(sel);
        let mut out = PurgeResult {
            keys: 0,
            entries: 0,
            soft,
            dry_run,
        };
        let now = self.clock.now();
        for k in keys {
            let Some(vs) = self.store.variants(&k) else {
                continue;
            };
            out.keys += 1;
            out.entries += vs.entries.len();
            if dry_run {
                continue;
            }
            if soft {
                self.store.map_variants(&k, |e| {
                    let mut fresh = e.fresh.clone();
                    fresh.lifetime = fresh.lifetime.min(policy::current_age(&fresh, now));
                    Arc::new(e.with_fresh(fresh))
                });
            } else {
                self.store.remove(&k);
            }
        }
        self.store.run_pending_tasks();
        out
    }

    /// Every stored variant, flattened (for listings and export).
    pub fn all_entries(&self) -> Vec<Arc<Entry>> {
        self.store
            .iter()
            .flat_map(|(_, v)| v.entries.clone())
            .collect()
    }
}

/// One entry in listings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Listing {
    /// Primary key.
    pub key: String,
    /// Stored variants.
    pub variants: usize,
    /// Bytes.
    pub size: u64,
    /// Age in seconds (first variant).
    pub age: u64,
    /// Time to live in seconds (negative when stale).
    pub ttl: i64,
    /// Hits over all variants.
    pub hits: u64,
    /// Tags.
    pub tags: Vec<String>,
    /// The route that serves the key now (`None`: no route does any more).
    #[serde(default)]
    pub route: Option<String>,
    /// Stored HTTP status (first variant).
    #[serde(default)]
    pub status: u16,
    /// `fresh` or `stale` (first variant).
    #[serde(default)]
    pub state: String,
    /// The Vary field names that select the variants (first variant's).
    #[serde(default)]
    pub vary: Vec<String>,
}

/// Listings of the keys `keep` accepts, sorted by `sort` (`hits`, `size` or `age`), the top
/// `n`; `router` names each key's route.
pub fn listings(
    cache: &CacheShared,
    router: &Router,
    keep: impl Fn(&str) -> bool,
    sort: &str,
    n: usize,
) -> Vec<Listing> {
    let now = cache.clock.now();
    let mut v: Vec<Listing> = cache
        .store
        .iter()
        .filter(|(k, _)| keep(k))
        .filter_map(|(k, vs)| {
            let first = vs.entries.first()?;
            let (host, path) = split_key(&k);
            let ttl = policy::ttl_secs(&first.fresh, now);
            let mut tags: Vec<String> = Vec::new();
            for e in &vs.entries {
                for t in &e.tags {
                    if !tags.iter().any(|x| x == &**t) {
                        tags.push(t.to_string());
                    }
                }
            }
            Some(Listing {
                key: k.to_string(),
                variants: vs.entries.len(),
                size: vs.entries.iter().map(|e| e.weight()).sum(),
                age: policy::current_age(&first.fresh, now).as_secs(),
                ttl,
                hits: vs
                    .entries
                    .iter()
                    .map(|e| e.hits.load(Ordering::Relaxed))
                    .sum(),
                tags,
                route: router
                    .route(Some(host), path.split('?').next().unwrap_or("/"))
                    .map(|r| r.name.clone()),
                status: first.status.as_u16(),
                state: if policy::current_age(&first.fresh, now) < first.fresh.lifetime {
                    "fresh"
                } else {
                    "stale"
                }
                .to_string(),
                vary: first
                    .vary
                    .iter()
                    .map(|(h, _)| h.as_str().to_string())
                    .collect(),
            })
        })
        .collect();
    match sort {
        "size" => v.sort_by(|a, b| b.size.cmp(&a.size).then(a.key.cmp(&b.key))),
        "age" => v.sort_by(|a, b| b.age.cmp(&a.age).then(a.key.cmp(&b.key))),
        _ => v.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.key.cmp(&b.key))),
    }
    v.truncate(n);
    v
}

/// A whole entry as it travels between replicas (one JSON line each).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Primary key.
    pub key: String,
    /// Status.
    pub status: u16,
    /// Stored header fields, in order.
    pub headers: Vec<(String, String)>,
    /// Body, base64.
    pub body: String,
    /// Vary field values that select this variant.
    pub vary: Vec<(String, Option<String>)>,
    /// Whether Accept-Encoding was bucketed.
    pub normalise_ae: bool,
    /// Age in seconds at export.
    pub age: u64,
    /// Remaining freshness lifetime at export (seconds, from the exporter's rules).
    pub lifetime: u64,
    /// Hits at export (used to rank).
    pub hits: u64,
    /// Unix seconds at export.
    pub exported_at: u64,
}

impl Record {
    /// From a stored variant, with its identity content (a compressed copy travels decoded,
    /// so any importer reads it; `None` when it does not decode).
    pub fn from_entry(e: &Entry, now: SystemTime) -> Option<Self> {
        let body = super::compress::identity_body(e)?;
        Some(Record {
            key: e.key.to_string(),
            status: e.status.as_u16(),
            headers: e
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: base64::engine::general_purpose::STANDARD.encode(&body),
            vary: e
                .vary
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect(),
            normalise_ae: e.normalise_ae,
            age: policy::current_age(&e.fresh, now).as_secs(),
            lifetime: e.fresh.lifetime.as_secs(),
            hits: e.hits.load(Ordering::Relaxed),
            exported_at: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        })
    }

    /// Stores this record in `cache`, keeping its age; false when it does not decode or no
    /// route covers it.
    pub fn import(&self, cache: &CacheShared, router: &Router) -> bool {
        let (host, path) = split_key(&self.key);
        let Some(route) = router.route(Some(host), path.split('?').next().unwrap_or("/")) else {
            return false;
        };
        let Ok(status) = StatusCode::from_u16(self.status) else {
            return false;
        };
        let Ok(body) = base64::engine::general_purpose::STANDARD.decode(&self.body) else {
            return false;
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) else {
                return false;
            };
            headers.append(k, v);
        }
        let mut vary = Vec::new();
        for (k, v) in &self.vary {
            let Ok(k) = HeaderName::from_bytes(k.as_bytes()) else {
                return false;
            };
            vary.push((k, v.clone()));
        }
        let now = cache.clock.now();
        let cc = policy::effective_cc(&headers, &cache.targeted);
        let mut fresh = policy::freshness(
            status,
            &HeaderMap::new(),
            &headers,
            cc,
            now,
            now,
            &route.cache,
        );
        // The record's age and lifetime travel as they were: the importer's clock starts now.
        fresh.initial_age = Duration::from_secs(self.age);
        fresh.lifetime = Duration::from_secs(self.lifetime);
        let (body, transformed) = cache.compressor.stored_form(status, &headers, body.into());
        if transformed.is_some() {
            // One encoded copy serves every Accept-Encoding.
            vary.retain(|(n, _)| n != header::ACCEPT_ENCODING);
        }
        let e = Entry {
            key: self.key.as_str().into(),
            status,
            tags: super::entry::tags_of(&headers),
            headers,
            body,
            transformed,
            fresh,
            vary,
            normalise_ae: self.normalise_ae,
            stored_at: now,
            hits: AtomicU64::new(0),
        };
        let has_validators = e.etag().is_some() || e.last_modified().is_some();
        let keep = policy::keep_for(&e.fresh, has_validators, route.cache.stale_if_unreachable);
        cache.store.insert(Arc::new(e), keep);
        true
    }
}

/// The hottest `n` variants as records.
pub fn export(cache: &CacheShared, n: usize) -> Vec<Record> {
    let now = cache.clock.now();
    let mut all = cache.all_entries();
    all.sort_by(|a, b| {
        b.hits
            .load(Ordering::Relaxed)
            .cmp(&a.hits.load(Ordering::Relaxed))
    });
    all.truncate(n);
    all.iter()
        .filter_map(|e| Record::from_entry(e, now))
        .collect()
}

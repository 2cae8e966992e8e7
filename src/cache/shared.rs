//! The cache's state shared by every request and kept across reloads: the store, the
//! freshness clock, counters, and the shared tier once it is attached.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::compress::{Compressor, Transformed};
use super::entry::Entry;
use super::plan::FetchPlan;
use super::store::Store;
use super::store::redis::SharedTier;
use super::{entry, key, policy};
use crate::config::Config;
/// Wall clock for freshness, with an offset tests can advance (production never does).
#[derive(Debug, Default)]
pub struct Clock {
    pub(super) offset_ms: AtomicI64,
}

impl Clock {
    /// Now, plus the offset.
    pub fn now(&self) -> SystemTime {
        let off = self.offset_ms.load(Ordering::Relaxed);
        let now = SystemTime::now();
        if off >= 0 {
            now + Duration::from_millis(off as u64)
        } else {
            now - Duration::from_millis(off.unsigned_abs())
        }
    }

    /// Moves the clock forward (tests).
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::Relaxed);
    }
}

/// Counters for metrics and the admin API.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Fresh hits.
    pub hits: AtomicU64,
    /// Misses (nothing usable stored).
    pub misses: AtomicU64,
    /// Stale responses served (SWR, stale-if-error, max-stale, circuit open).
    pub stale: AtomicU64,
    /// Revalidated with 304.
    pub revalidated: AtomicU64,
    /// Requests that bypassed the cache.
    pub bypass: AtomicU64,
    /// Responses stored.
    pub stored: AtomicU64,
}

/// Cache state shared by every request and kept across reloads.
pub struct CacheShared {
    /// The store.
    pub store: Store,
    /// Kill switch (false: plain proxy).
    pub enabled: AtomicBool,
    /// Name in `Cache-Status`.
    pub name: Arc<str>,
    pub(super) max_object_size: u64,
    pub(crate) targeted: Vec<HeaderName>,
    pub(super) strip_downstream: Vec<HeaderName>,
    /// Request fields shared fetches drop: the built-in list plus the configured ones.
    pub(super) unkeyed: Vec<HeaderName>,
    pub(super) x_cache: bool,
    /// The freshness clock.
    pub clock: Clock,
    pub(super) refreshing: Mutex<HashSet<Arc<str>>>,
    /// Counters.
    pub stats: CacheStats,
    pub(super) tier: std::sync::OnceLock<Arc<SharedTier>>,
    /// `[cache.compression]` and its counters.
    pub compressor: Compressor,
    /// Memory pressure, as the governor last saw it.
    pub memory: Arc<super::governor::Pressure>,
}

impl std::fmt::Debug for CacheShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheShared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Request headers that origins commonly honour without naming them in `Vary`; they are not
/// forwarded on fetches whose response is shared, so nobody can poison an entry with them.
/// `[cache] unkeyed_request_headers` adds to this list; nothing removes from it.
pub const BUILTIN_UNKEYED_REQUEST_HEADERS: [&str; 15] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-host",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "front-end-https",
    "x-url-scheme",
    "x-forwarded-path",
    "x-original-host",
];

impl CacheShared {
    /// From `[cache]`; a `max_size` given as a share of the memory limit is resolved against
    /// the limit read now (256 MiB when none can be read; `app` refuses to start then).
    pub fn new(cfg: &Config) -> Self {
        let limit = || crate::telemetry::memory::limit().map(|l| l.bytes);
        let max_size = match cfg.raw.cache.max_size {
            crate::config::MemSize::Bytes(n) => n,
            share => share.resolve(limit()).unwrap_or(256 << 20),
        };
        Self::with_capacity(cfg, max_size)
    }

    /// From `[cache]`, with `max_size` already resolved to bytes.
    pub fn with_capacity(cfg: &Config, max_size: u64) -> Self {
        let c = &cfg.raw.cache;
        let targeted: Vec<HeaderName> = c
            .targeted_fields
            .iter()
            .filter_map(|f| HeaderName::from_bytes(f.as_bytes()).ok())
            .collect();
        // Seawall's own targeted fields stop here; CDN-Cache-Control is for the next CDN.
        let mut strip_downstream: Vec<HeaderName> = targeted
            .iter()
            .filter(|n| n.as_str() != "cdn-cache-control")
            .cloned()
            .collect();
        let mut unkeyed: Vec<HeaderName> = BUILTIN_UNKEYED_REQUEST_HEADERS
            .iter()
            .map(|n| HeaderName::from_static(n))
            .collect();
        for n in &c.unkeyed_request_headers {
            if let Ok(n) = HeaderName::from_bytes(n.as_bytes())
                && !unkeyed.contains(&n)
            {
                unkeyed.push(n);
            }
        }
        if c.strip_tag_headers {
            strip_downstream.push(HeaderName::from_static("surrogate-key"));
            strip_downstream.push(HeaderName::from_static("cache-tag"));
        }
        Self {
            store: Store::new(max_size, c.max_variants),
            enabled: AtomicBool::new(c.enabled),
            name: c.name.as_str().into(),
            max_object_size: c.max_object_size,
            targeted,
            strip_downstream,
            unkeyed,
            x_cache: c.x_cache_header,
            clock: Clock::default(),
            refreshing: Mutex::new(HashSet::new()),
            stats: CacheStats::default(),
            tier: std::sync::OnceLock::new(),
            compressor: Compressor::new(&c.compression),
            memory: Arc::default(),
        }
    }

    /// The shared tier, when `[cache.redis]` is configured.
    pub fn tier(&self) -> Option<&Arc<SharedTier>> {
        self.tier.get()
    }

    /// Attaches the shared tier (once, at start).
    pub fn set_tier(&self, tier: Arc<SharedTier>) {
        let _ = self.tier.set(tier);
    }

    /// Configured targeted Cache-Control fields.
    pub fn targeted(&self) -> &[HeaderName] {
        &self.targeted
    }

    /// Builds the stored entry for a complete response.
    /// `body` is in its stored form already: encoded as `transformed` says.
    pub(super) fn make_entry(
        &self,
        plan: &FetchPlan,
        status: StatusCode,
        res: &HeaderMap,
        (body, transformed): (Bytes, Option<Transformed>),
        response_time: SystemTime,
    ) -> (Arc<Entry>, Duration) {
        let cc = policy::effective_cc(res, &self.targeted);
        let fresh = policy::freshness(
            status,
            &plan.req_headers,
            res,
            cc,
            plan.request_time,
            response_time,
            &plan.route.cache,
        );
        // Seawall-only fields stay stored (export and refresh need them) and are stripped
        // from every response in `decorate`.
        // Header values parsed by hyper are slices of its read buffer: copy them, or every
        // stored entry would keep a whole connection buffer alive (and the weigher would lie).
        let mut headers = HeaderMap::with_capacity(res.len());
        for (k, v) in res {
            if k == header::AGE {
                continue;
            }
            let owned = HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone());
            headers.append(k.clone(), owned);
        }
        let ae = plan.route.cache.normalize_accept_encoding;
        let fields = key::vary_fields(res).unwrap_or_default();
        let mut vary = key::vary_key(&plan.req_headers, &fields, ae);
        if transformed.is_some() {
            // One encoded copy serves every Accept-Encoding (decoded for those that do not
            // accept its coding): Accept-Encoding variants collapse into it.
            vary.retain(|(n, _)| n != header::ACCEPT_ENCODING);
        }
        if plan.route.cache.vary_language == crate::route::VaryLanguage::ContentLanguage
            && let Some(v) = key::content_language_variant(res)
        {
            for (name, value) in &mut vary {
                if *name == header::ACCEPT_LANGUAGE {
                    *value = Some(v.clone());
                }
            }
        }
        let e = Entry {
            key: plan.primary.clone(),
            status,
            vary,
            normalise_ae: ae,
            tags: entry::tags_of(res),
            headers,
            body,
            transformed,
            fresh,
            stored_at: response_time,
            hits: AtomicU64::new(0),
        };
        let has_validators = e.etag().is_some() || e.last_modified().is_some();
        let keep = policy::keep_for(
            &e.fresh,
            has_validators,
            plan.route.cache.stale_if_unreachable,
        );
        (Arc::new(e), keep)
    }

    /// RFC 9111 §4.3.4: a 304 updates the stored headers (except Content-Length) and freshness,
    /// in memory and (behind the response) in the shared tier.
    pub(super) fn refresh(
        &self,
        old: &Arc<Entry>,
        plan: &FetchPlan,
        res: &HeaderMap,
        response_time: SystemTime,
    ) -> Arc<Entry> {
        let mut headers = old.headers.clone();
        for name in res.keys() {
            // A cookie on a 304 is for the client that revalidated, not for everyone.
            if name == header::CONTENT_LENGTH
                || (name == header::SET_COOKIE && !plan.route.cache.cache_set_cookie)
            {
                continue;
            }
            headers.remove(name);
            for v in res.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let (new, keep) = self.make_entry(
            plan,
            old.status,
            &headers,
            (old.body.clone(), old.transformed),
            response_time,
        );
        // The variant stays the one the stored response was selected by.
        let new = Arc::new(Entry {
            key: new.key.clone(),
            status: new.status,
            headers: new.headers.clone(),
            body: new.body.clone(),
            transformed: old.transformed,
            fresh: new.fresh.clone(),
            vary: old.vary.clone(),
            normalise_ae: old.normalise_ae,
            tags: new.tags.clone(),
            stored_at: new.stored_at,
            hits: AtomicU64::new(old.hits.load(Ordering::Relaxed)),
        });
        self.store.replace(old, new.clone(), keep);
        // The shared copy gets the new head and lifetime too, or every other replica would
        // revalidate (or refetch) what this one just learned is still good.
        if let Some(t) = self.tier() {
            t.enqueue(new.clone(), keep, None);
        }
        new
    }
}

//! What the cache shows operators: typed, serialisable views of its counters and of one key's
//! stored variants, built here from the cache's own state so the admin API only renders them.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::CacheShared;
use super::entry::Entry;
use super::policy;

/// `GET /admin/cache/stats`.
#[derive(Debug, Serialize)]
pub(crate) struct StatsView {
    enabled: bool,
    entries: u64,
    bytes: u64,
    capacity: u64,
    evictions: EvictionsView,
    hits: u64,
    misses: u64,
    stale: u64,
    revalidated: u64,
    bypass: u64,
    stored: u64,
    inflight_fill_bytes: u64,
}

#[derive(Debug, Serialize)]
struct EvictionsView {
    size: u64,
    expired: u64,
    explicit: u64,
}

/// One key and its stored variants, most recently stored first.
#[derive(Debug, Serialize)]
pub(crate) struct EntryView {
    key: String,
    variants: Vec<VariantView>,
}

#[derive(Debug, Serialize)]
struct VariantView {
    status: u16,
    headers: Vec<(String, String)>,
    size: u64,
    body_bytes: usize,
    /// The coding Seawall stored the body in (`[cache.compression]`); absent: as it came.
    #[serde(skip_serializing_if = "Option::is_none")]
    stored_encoding: Option<&'static str>,
    /// The identity content's length, for a body Seawall compressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_bytes: Option<u64>,
    hits: u64,
    stored_at: u64,
    vary: Vec<VaryView>,
    validators: ValidatorsView,
    policy: PolicyView,
    tags: Vec<String>,
}

#[derive(Debug, Serialize)]
struct VaryView {
    field: String,
    value: Option<String>,
}

#[derive(Debug, Serialize)]
struct ValidatorsView {
    etag: Option<String>,
    last_modified: Option<String>,
}

#[derive(Debug, Serialize)]
struct PolicyView {
    lifetime_secs: u64,
    age_secs: u64,
    ttl_secs: i64,
    heuristic: bool,
    no_cache: bool,
    must_revalidate: bool,
    stale_while_revalidate: Option<u64>,
    stale_if_error: Option<u64>,
    immutable: bool,
}

impl CacheShared {
    /// The counters, with the bytes of fills in flight (the coalescing phase's).
    pub(crate) fn stats_view(&self, inflight_fill_bytes: u64) -> StatsView {
        self.store.run_pending_tasks();
        let st = &self.stats;
        let ev = &self.store.evictions;
        StatsView {
            enabled: self.is_enabled(),
            entries: self.store.entry_count(),
            bytes: self.store.weighted_size(),
            capacity: self.store.capacity(),
            evictions: EvictionsView {
                size: ev.size.load(Ordering::Relaxed),
                expired: ev.expired.load(Ordering::Relaxed),
                explicit: ev.explicit.load(Ordering::Relaxed),
            },
            hits: st.hits.load(Ordering::Relaxed),
            misses: st.misses.load(Ordering::Relaxed),
            stale: st.stale.load(Ordering::Relaxed),
            revalidated: st.revalidated.load(Ordering::Relaxed),
            bypass: st.bypass.load(Ordering::Relaxed),
            stored: st.stored.load(Ordering::Relaxed),
            inflight_fill_bytes,
        }
    }

    /// One key's stored variants in full, or `None` when nothing is stored under it.
    pub(crate) fn entry_view(&self, key: &str) -> Option<EntryView> {
        let vs = self.store.variants(key)?;
        let now = self.clock.now();
        Some(EntryView {
            key: key.to_string(),
            variants: vs.entries.iter().map(|e| variant_view(e, now)).collect(),
        })
    }

    /// Whether the cache serves and stores (the kill switch).
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns the cache on or off (the kill switch; off: every request goes to the origin).
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }
}

fn variant_view(e: &Entry, now: SystemTime) -> VariantView {
    let f = &e.fresh;
    let text = |v: &http::HeaderValue| v.to_str().ok().map(str::to_string);
    VariantView {
        status: e.status.as_u16(),
        headers: e
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        size: e.weight(),
        body_bytes: e.body.len(),
        stored_encoding: e.transformed.map(|t| t.coding.token()),
        identity_bytes: e.transformed.map(|t| t.identity_len),
        hits: e.hits.load(Ordering::Relaxed),
        stored_at: e
            .stored_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        vary: e
            .vary
            .iter()
            .map(|(k, v)| VaryView {
                field: k.as_str().to_string(),
                value: v.clone(),
            })
            .collect(),
        validators: ValidatorsView {
            etag: e.etag().and_then(text),
            last_modified: e.last_modified().and_then(text),
        },
        policy: PolicyView {
            lifetime_secs: f.lifetime.as_secs(),
            age_secs: policy::current_age(f, now).as_secs(),
            ttl_secs: policy::ttl_secs(f, now),
            heuristic: f.heuristic,
            no_cache: f.cc.no_cache,
            must_revalidate: f.cc.must_revalidate || f.cc.proxy_revalidate,
            stale_while_revalidate: f.cc.stale_while_revalidate,
            stale_if_error: f
                .cc
                .stale_if_error
                .or(f.route_stale_if_error.map(|d| d.as_secs())),
            immutable: f.cc.immutable,
        },
        tags: e.tags.iter().map(|t| t.to_string()).collect(),
    }
}

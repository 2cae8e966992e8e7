//! The memory store: moka, bounded in bytes by a weigher, one slot per primary key holding
//! up to `max_variants` Vary variants, plus a tag → keys index for purges. Under memory
//! pressure the governor lowers a soft byte budget below moka's fixed capacity (moka cannot
//! shrink at runtime): inserts past it are refused and `evict_to` takes the coldest keys out.

pub mod redis;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use moka::notification::RemovalCause;

use super::entry::Entry;
use super::key;

/// Tag → primary keys.
type TagIndex = Arc<Mutex<HashMap<Arc<str>, HashSet<Arc<str>>>>>;

/// The variants stored for one primary key (copy-on-write).
#[derive(Debug, Default)]
pub struct Variants {
    /// Most recently stored first.
    pub entries: Vec<Arc<Entry>>,
    keep: Duration,
}

impl Variants {
    fn weight(&self) -> u32 {
        let w: u64 = self.entries.iter().map(|e| e.weight()).sum();
        w.min(u32::MAX as u64) as u32
    }
}

/// Eviction counters by cause.
#[derive(Debug, Default)]
pub struct Evictions {
    /// Evicted to stay within `max_size`.
    pub size: AtomicU64,
    /// Dropped after they could no longer be used.
    pub expired: AtomicU64,
    /// Removed by purge or invalidation.
    pub explicit: AtomicU64,
    /// Evicted by the memory governor (counted under `explicit` by moka's listener first).
    pub memory: AtomicU64,
}

struct Expiry;

impl moka::Expiry<Arc<str>, Arc<Variants>> for Expiry {
    #[allow(clippy::disallowed_types)] // moka's trait is defined on std's Instant.
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        v: &Arc<Variants>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.keep)
    }

    #[allow(clippy::disallowed_types)]
    fn expire_after_update(
        &self,
        _: &Arc<str>,
        v: &Arc<Variants>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.keep)
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A variant matching the request.
    Hit(Arc<Entry>),
    /// The URL is stored, but no variant matches.
    VaryMiss,
    /// Nothing stored for the URL.
    Miss,
}

/// The store.
pub struct Store {
    cache: moka::sync::Cache<Arc<str>, Arc<Variants>>,
    max_variants: usize,
    max_size: u64,
    /// The governor's soft budget: `max_size` unless memory is short.
    budget: AtomicU64,
    /// Inserts refused because the store was past `budget`.
    refused: AtomicU64,
    tags: TagIndex,
    /// Eviction counters.
    pub evictions: Arc<Evictions>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store holding at most `max_size` bytes.
    pub fn new(max_size: u64, max_variants: usize) -> Self {
        let evictions = Arc::new(Evictions::default());
        let tags: TagIndex = Arc::default();
        let ev = evictions.clone();
        let tag_index = tags.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_size)
            .weigher(|_k: &Arc<str>, v: &Arc<Variants>| v.weight())
            .expire_after(Expiry)
            .eviction_listener(move |k: Arc<Arc<str>>, v: Arc<Variants>, cause| {
                let c = match cause {
                    RemovalCause::Size => &ev.size,
                    RemovalCause::Expired => &ev.expired,
                    RemovalCause::Explicit => &ev.explicit,
                    RemovalCause::Replaced => return,
                };
                c.fetch_add(1, Ordering::Relaxed);
                unindex(&tag_index, &k, &v);
            })
            .build();
        Self {
            cache,
            max_variants,
            max_size,
            budget: AtomicU64::new(max_size),
            refused: AtomicU64::new(0),
            tags,
            evictions,
        }
    }

    /// Finds the variant `headers` select.
    pub fn lookup(&self, key: &str, headers: &HeaderMap) -> Lookup {
        let Some(vs) = self.cache.get(key) else {
            return Lookup::Miss;
        };
        for e in &vs.entries {
            if key::vary_matches(&e.vary, headers, e.normalise_ae) {
                return Lookup::Hit(e.clone());
            }
        }
        Lookup::VaryMiss
    }

    /// All variants of a key.
    pub fn variants(&self, key: &str) -> Option<Arc<Variants>> {
        self.cache.get(key)
    }

    /// Stores `entry`, replacing the variant with the same Vary values; the oldest variants go
    /// past `max_variants`. Objects larger than the whole budget are refused.
    pub fn insert(&self, entry: Arc<Entry>, keep: Duration) {
        let weight = entry.weight();
        if weight > self.max_size {
            return;
        }
        // Only while the governor holds the budget below capacity (one load on the fill path
        // otherwise); moka's size lags its pending writes, so they are applied first.
        let budget = self.budget.load(Ordering::Relaxed);
        if budget < self.max_size {
            self.cache.run_pending_tasks();
            if self.cache.weighted_size() + weight > budget {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let key = entry.key.clone();
        let max = self.max_variants;
        let mut before: Vec<Arc<str>> = Vec::new();
        let mut after: Vec<Arc<str>> = Vec::new();
        self.cache.entry(key.clone()).and_compute_with(|cur| {
            // Most URLs have one variant: no spare slots until a second one comes.
            let n = cur.as_ref().map_or(1, |c| c.value().entries.len() + 1);
            let mut entries: Vec<Arc<Entry>> = Vec::with_capacity(max.min(n));
            entries.push(entry.clone());
            let mut keep = keep;
            if let Some(cur) = cur {
                let cur = cur.into_value();
                before = tag_set(&cur.entries);
                for e in &cur.entries {
                    if entries.len() >= max {
                        break;
                    }
                    if e.vary != entry.vary {
                        entries.push(e.clone());
                    }
                }
                keep = keep.max(cur.keep);
            }
            after = tag_set(&entries);
            moka::ops::compute::Op::Put(Arc::new(Variants { entries, keep }))
        });
        self.reindex(&key, &before, &after);
    }

    /// Moves `key` from tags it no longer carries to the ones it now carries.
    fn reindex(&self, key: &Arc<str>, before: &[Arc<str>], after: &[Arc<str>]) {
        if before.is_empty() && after.is_empty() {
            return;
        }
        let mut idx = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        for t in before.iter().filter(|t| !after.contains(t)) {
            if let Some(set) = idx.get_mut(t) {
                set.remove(key);
                if set.is_empty() {
                    idx.remove(t);
                }
            }
        }
        for t in after {
            idx.entry(t.clone()).or_default().insert(key.clone());
        }
    }

    /// Replaces one stored variant (after a 304 refreshed it), if it is still there.
    pub fn replace(&self, old: &Arc<Entry>, new: Arc<Entry>, keep: Duration) {
        let key = old.key.clone();
        self.cache.entry(key).and_compute_with(|cur| match cur {
            Some(cur) => {
                let cur = cur.into_value();
                let entries = cur
                    .entries
                    .iter()
                    .map(|e| {
                        if Arc::ptr_eq(e, old) {
                            new.clone()
                        } else {
                            e.clone()
                        }
                    })
                    .collect();
                moka::ops::compute::Op::Put(Arc::new(Variants {
                    entries,
                    keep: keep.max(cur.keep),
                }))
            }
            None => moka::ops::compute::Op::Nop,
        });
    }

    /// Rewrites every variant of `key` (soft purge).
    pub fn map_variants(&self, key: &str, f: impl Fn(&Arc<Entry>) -> Arc<Entry>) {
        let Some(k) = self
            .cache
            .get(key)
            .and_then(|v| v.entries.first().map(|e| e.key.clone()))
        else {
            return;
        };
        self.cache.entry(k).and_compute_with(|cur| match cur {
            Some(cur) => {
                let cur = cur.into_value();
                moka::ops::compute::Op::Put(Arc::new(Variants {
                    entries: cur.entries.iter().map(&f).collect(),
                    keep: cur.keep,
                }))
            }
            None => moka::ops::compute::Op::Nop,
        });
    }

    /// Removes every variant of `key`; returns how many variants went.
    pub fn remove(&self, key: &str) -> usize {
        match self.cache.remove(key) {
            Some(v) => {
                unindex(&self.tags, key, &v);
                v.entries.len()
            }
            None => 0,
        }
    }

    /// Keys carrying `tag` (from the index, not a scan).
    pub fn keys_for_tag(&self, tag: &str) -> Vec<Arc<str>> {
        let idx = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        idx.get(tag)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every key with its variants (admin listings, prefix purge).
    pub fn iter(&self) -> impl Iterator<Item = (Arc<Arc<str>>, Arc<Variants>)> + '_ {
        self.cache.iter()
    }

    /// Entries (primary keys) after pending maintenance.
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Weighted size in bytes.
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Configured capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.max_size
    }

    /// The governor's soft budget in bytes (`capacity()` unless memory is short).
    pub fn budget(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }

    /// Sets the soft budget (at most the capacity).
    pub fn set_budget(&self, bytes: u64) {
        self.budget
            .store(bytes.min(self.max_size), Ordering::Relaxed);
    }

    /// Inserts refused for the soft budget so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Removes the coldest keys (fewest hits, then oldest) until the weighted size is at most
    /// `target`; returns how many keys went. moka exposes no eviction order, so this scans a
    /// snapshot of the keys: it runs once a second, and only while memory is short.
    pub fn evict_to(&self, target: u64) -> u64 {
        self.cache.run_pending_tasks();
        let size = self.cache.weighted_size();
        if size <= target {
            return 0;
        }
        let mut keys: Vec<(u64, std::time::SystemTime, u32, Arc<str>)> = self
            .cache
            .iter()
            .map(|(k, v)| {
                let hits = v
                    .entries
                    .iter()
                    .map(|e| e.hits.load(Ordering::Relaxed))
                    .sum();
                let stored = v
                    .entries
                    .iter()
                    .map(|e| e.stored_at)
                    .max()
                    .unwrap_or(std::time::UNIX_EPOCH);
                (hits, stored, v.weight(), Arc::clone(&*k))
            })
            .collect();
        keys.sort_unstable_by_key(|k| (k.0, k.1));
        let mut over = size - target;
        let mut n = 0;
        for (_, _, weight, key) in keys {
            if over == 0 {
                break;
            }
            if self.cache.remove(&key).is_some() {
                over = over.saturating_sub(u64::from(weight));
                n += 1;
            }
        }
        self.cache.run_pending_tasks();
        // moka's listener counted these as explicit removals; they are the governor's.
        let ev = &self.evictions;
        ev.memory.fetch_add(n, Ordering::Relaxed);
        let _ = ev
            .explicit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| {
                Some(e.saturating_sub(n))
            });
        n
    }

    /// Runs moka's pending maintenance (eviction, expiry, listeners).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}

fn tag_set(entries: &[Arc<Entry>]) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = Vec::new();
    for t in entries.iter().flat_map(|e| e.tags.iter()) {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

fn unindex(tags: &Mutex<HashMap<Arc<str>, HashSet<Arc<str>>>>, key: &str, v: &Variants) {
    let mut idx = tags.lock().unwrap_or_else(|e| e.into_inner());
    for e in &v.entries {
        for t in &e.tags {
            if let Some(set) = idx.get_mut(t) {
                set.remove(key);
                if set.is_empty() {
                    idx.remove(t);
                }
            }
        }
    }
}

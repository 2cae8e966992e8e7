//! The memory governor: a task that samples resident memory every second and, above
//! `[cache] memory_high_watermark`, shrinks the store's soft budget, evicts the coldest keys and
//! has detached fills dropped, before the kernel's OOM killer has to step in.
//!
//! moka's capacity is fixed when the cache is built, so the governor does not resize it: the
//! store keeps a second, soft budget (`Store::budget`) that starts at `max_size`. The fill path
//! refuses inserts past it (`refuse_store`), and the governor removes keys, coldest first, until
//! the store is below it (`evict`). Fills nobody waits for any more (background revalidations,
//! fetches whose clients left) stop at their next chunk while `Pressure::shedding` is set
//! (`drop_fill`), and no new background revalidation starts. Below the watermark (less a tenth,
//! so it does not flap) the budget grows back by a sixteenth of `max_size` per second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;

use super::CacheShared;
use super::store::Store;
use crate::config::MemSize;
use crate::telemetry::memory::{self, Limit};
use crate::telemetry::metrics::{OnScrape, gauge, set_counter};

/// What the governor shares with the fill path, the store's callers and the status page.
#[derive(Debug, Default)]
pub struct Pressure {
    shedding: AtomicBool,
    /// 0: unknown.
    limit: AtomicU64,
    /// 0: no governor.
    watermark: AtomicU64,
    resident: AtomicU64,
    evicted: AtomicU64,
    /// Detached fills dropped and background revalidations not started.
    pub(crate) dropped_fills: AtomicU64,
}

impl Pressure {
    /// Whether resident memory is above the watermark: detached work is shed.
    pub fn shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// Counts a background revalidation not started while shedding; true when it must not.
    pub fn skip_background(&self) -> bool {
        let shed = self.shedding();
        if shed {
            self.dropped_fills.fetch_add(1, Ordering::Relaxed);
        }
        shed
    }

    /// The figures `/admin/status` shows.
    pub fn view(&self, store: &Store) -> MemoryView {
        let known = |v: u64| (v > 0).then_some(v);
        MemoryView {
            limit_bytes: known(self.limit.load(Ordering::Relaxed)),
            high_watermark_bytes: known(self.watermark.load(Ordering::Relaxed)),
            resident_bytes: known(self.resident.load(Ordering::Relaxed)),
            // The budget first: a size read after it is within it (but for a racing insert).
            cache_budget_bytes: store.budget(),
            cache_bytes: store.weighted_size(),
            shedding: self.shedding(),
            actions: Actions {
                evict: self.evicted.load(Ordering::Relaxed),
                drop_fill: self.dropped_fills.load(Ordering::Relaxed),
                refuse_store: store.refused(),
            },
        }
    }
}

/// The memory part of `/admin/status`.
#[derive(Debug, Serialize)]
pub struct MemoryView {
    /// The memory limit (cgroup, else physical memory); `null` when unknown.
    pub limit_bytes: Option<u64>,
    /// `[cache] memory_high_watermark` in bytes; `null` when the governor is off.
    pub high_watermark_bytes: Option<u64>,
    /// Resident memory at the last sample.
    pub resident_bytes: Option<u64>,
    /// The store's soft budget (`max_size` unless memory is short).
    pub cache_budget_bytes: u64,
    /// The store's weighted size.
    pub cache_bytes: u64,
    /// Above the watermark: detached fills are dropped.
    pub shedding: bool,
    /// Actions taken so far.
    pub actions: Actions,
}

/// The governor's action counts (`seawall_memory_governor_actions_total{action}`).
#[derive(Debug, Serialize)]
pub struct Actions {
    /// Keys evicted.
    pub evict: u64,
    /// Detached fills dropped and background revalidations not started.
    pub drop_fill: u64,
    /// Responses not stored because the store was past its budget.
    pub refuse_store: u64,
}

/// Where the governor reads memory: the real `/proc` and `/sys`, or a test's figures.
#[derive(Clone)]
pub struct MemoryProbe {
    /// The memory limit read at start.
    pub limit: Option<Limit>,
    /// How often resident memory is sampled.
    pub interval: Duration,
    resident: Arc<dyn Fn() -> Option<u64> + Send + Sync>,
}

impl std::fmt::Debug for MemoryProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProbe")
            .field("limit", &self.limit)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl MemoryProbe {
    /// This process: the cgroup (or physical) limit, `VmRSS` once a second.
    pub fn system() -> Self {
        Self::new(memory::limit(), Duration::from_secs(1), memory::resident)
    }

    /// Given figures (tests): the limit, the sampling period, the resident reading.
    pub fn new(
        limit: Option<Limit>,
        interval: Duration,
        resident: impl Fn() -> Option<u64> + Send + Sync + 'static,
    ) -> Self {
        Self {
            limit,
            interval,
            resident: Arc::new(resident),
        }
    }
}

/// One sample, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Resident memory.
    pub resident: u64,
    /// The high watermark.
    pub watermark: u64,
    /// The store's weighted size.
    pub store_bytes: u64,
    /// The store's fixed capacity (`max_size`).
    pub capacity: u64,
    /// The store's current soft budget.
    pub budget: u64,
}

/// What to do about a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The new soft budget.
    pub budget: u64,
    /// Drop detached fills.
    pub shed: bool,
    /// Evict down to this many bytes.
    pub evict_to: Option<u64>,
}

/// The policy. Above the watermark the store gives back what resident memory is over it, and
/// a sixteenth of its capacity more, never going below a sixty-fourth of it (so hot keys stay);
/// evicting to seven eighths of the budget leaves new objects room until the next sample.
/// Freed memory does not always leave the process at once, so the budget keeps falling while
/// resident memory stays high. Below the watermark less a tenth, the budget grows back by a
/// sixteenth of the capacity per sample; in between it holds.
pub fn decide(s: Sample) -> Step {
    let floor = s.capacity / 64;
    if s.resident > s.watermark {
        let over = s.resident - s.watermark;
        let target = s
            .store_bytes
            .saturating_sub(over.saturating_add(s.capacity / 16));
        let budget = target.min(s.budget).max(floor);
        Step {
            budget,
            shed: true,
            evict_to: Some(budget - budget / 8),
        }
    } else if s.resident < s.watermark - s.watermark / 10 {
        Step {
            budget: s.budget.saturating_add(s.capacity / 16).min(s.capacity),
            shed: false,
            evict_to: None,
        }
    } else {
        Step {
            budget: s.budget,
            shed: false,
            evict_to: None,
        }
    }
}

/// The governor of one cache.
pub struct Governor {
    cache: Weak<CacheShared>,
    probe: MemoryProbe,
    watermark: u64,
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor")
            .field("watermark", &self.watermark)
            .finish_non_exhaustive()
    }
}

impl Governor {
    /// A governor for `cache` with `watermark` (a share of `probe`'s limit, or a size); `None`
    /// when the watermark is a share and no limit is known. Publishes the limit and watermark.
    pub fn new(cache: &Arc<CacheShared>, probe: MemoryProbe, watermark: MemSize) -> Option<Self> {
        let limit = probe.limit.map(|l| l.bytes);
        let p = &cache.memory;
        p.limit.store(limit.unwrap_or(0), Ordering::Relaxed);
        let watermark = watermark.resolve(limit)?;
        p.watermark.store(watermark, Ordering::Relaxed);
        Some(Self {
            cache: Arc::downgrade(cache),
            probe,
            watermark,
        })
    }

    /// One sample and what follows from it; `None` when the cache is gone or resident memory
    /// cannot be read.
    pub fn tick(&self) -> Option<Step> {
        let cache = self.cache.upgrade()?;
        let resident = (self.probe.resident)()?;
        let p = &cache.memory;
        p.resident.store(resident, Ordering::Relaxed);
        let store = &cache.store;
        store.run_pending_tasks();
        let step = decide(Sample {
            resident,
            watermark: self.watermark,
            store_bytes: store.weighted_size(),
            capacity: store.capacity(),
            budget: store.budget(),
        });
        store.set_budget(step.budget);
        if step.shed != p.shedding() {
            tracing::warn!(
                resident,
                watermark = self.watermark,
                cache_budget = step.budget,
                shedding = step.shed,
                "Memory governor: {}.",
                if step.shed {
                    "resident memory above the high watermark, evicting and dropping detached fills"
                } else {
                    "resident memory below the high watermark again"
                }
            );
        }
        p.shedding.store(step.shed, Ordering::Relaxed);
        if let Some(target) = step.evict_to {
            let n = store.evict_to(target);
            p.evicted.fetch_add(n, Ordering::Relaxed);
        }
        Some(step)
    }

    /// Samples every `interval` until the cache is dropped.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(self.probe.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if self.cache.strong_count() == 0 {
                    return;
                }
                self.tick();
            }
        })
    }
}

/// Registers `seawall_memory_limit_bytes`, `seawall_memory_high_watermark_bytes` and
/// `seawall_memory_governor_actions_total{action}`, read from `cache` at each scrape.
pub(crate) fn register(r: &Registry, cache: &Arc<CacheShared>) -> prometheus::Result<()> {
    let limit = gauge(
        "seawall_memory_limit_bytes",
        "The memory limit: the cgroup's memory.max, else physical memory (0: unknown).",
    )?;
    let watermark = gauge(
        "seawall_memory_high_watermark_bytes",
        "Resident memory above which the governor evicts and drops detached fills (0: off).",
    )?;
    let actions = IntCounterVec::new(
        Opts::new(
            "seawall_memory_governor_actions_total",
            "Memory governor actions: keys evicted, detached fills dropped, stores refused.",
        ),
        &["action"],
    )?;
    let metrics: Vec<Box<dyn prometheus::core::Collector>> = vec![
        Box::new(limit.clone()),
        Box::new(watermark.clone()),
        Box::new(actions.clone()),
    ];
    let cache = cache.clone();
    OnScrape::register(r, metrics, move || {
        let v = cache.memory.view(&cache.store);
        limit.set(v.limit_bytes.unwrap_or(0) as i64);
        watermark.set(v.high_watermark_bytes.unwrap_or(0) as i64);
        for (action, n) in [
            ("evict", v.actions.evict),
            ("drop_fill", v.actions.drop_fill),
            ("refuse_store", v.actions.refuse_store),
        ] {
            set_counter(&actions.with_label_values(&[action]), n);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sample(resident: u64, store_bytes: u64, budget: u64) -> Sample {
        Sample {
            resident,
            watermark: 100 * MIB,
            store_bytes,
            capacity: 64 * MIB,
            budget,
        }
    }

    #[test]
    fn above_the_watermark_the_store_gives_back_the_excess_and_a_step() {
        let s = decide(sample(110 * MIB, 60 * MIB, 64 * MIB));
        // 10 MiB over, plus 4 MiB (a sixteenth of 64 MiB).
        assert_eq!(s.budget, 46 * MIB);
        assert!(s.shed);
        assert_eq!(s.evict_to, Some(46 * MIB - 46 * MIB / 8));
    }

    #[test]
    fn the_budget_keeps_falling_while_memory_stays_high_down_to_a_floor() {
        let mut budget = 64 * MIB;
        let mut store = 60 * MIB;
        for _ in 0..50 {
            let s = decide(sample(150 * MIB, store, budget));
            assert!(s.budget <= budget);
            budget = s.budget;
            store = s.evict_to.unwrap_or(store).min(store);
        }
        assert_eq!(budget, MIB, "a sixty-fourth of the capacity stays");
    }

    #[test]
    fn the_budget_holds_near_the_watermark_and_grows_back_below_it() {
        let hold = decide(sample(95 * MIB, 10 * MIB, 12 * MIB));
        assert_eq!(
            (hold.budget, hold.shed, hold.evict_to),
            (12 * MIB, false, None)
        );
        let grow = decide(sample(50 * MIB, 10 * MIB, 12 * MIB));
        assert_eq!(
            (grow.budget, grow.shed, grow.evict_to),
            (16 * MIB, false, None)
        );
        let full = decide(sample(50 * MIB, 10 * MIB, 62 * MIB));
        assert_eq!(full.budget, 64 * MIB, "never above the capacity");
    }

    #[test]
    fn a_store_smaller_than_the_excess_goes_to_the_floor() {
        let s = decide(sample(500 * MIB, 8 * MIB, 64 * MIB));
        assert_eq!(s.budget, MIB);
        assert!(s.shed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_samples_on_its_interval() {
        let cfg = crate::config::Config::parse(
            "[[upstreams]]\nname = \"a\"\nendpoints = [\"http://127.0.0.1:9\"]\n\
             [[routes]]\nupstream = \"a\"\n",
            "t.toml",
            Vec::new(),
        )
        .expect("valid");
        let cache = Arc::new(CacheShared::new(&cfg));
        let samples = Arc::new(AtomicU64::new(0));
        let n = samples.clone();
        let probe = MemoryProbe::new(None, Duration::from_secs(1), move || {
            n.fetch_add(1, Ordering::SeqCst);
            Some(2 * MIB)
        });
        let g = Governor::new(&cache, probe, MemSize::Bytes(MIB)).expect("absolute watermark");
        let task = g.spawn();
        // The first tick is immediate; the paused clock then jumps a second at a time.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(samples.load(Ordering::SeqCst), 4);
        let v = cache.memory.view(&cache.store);
        assert!(v.shedding);
        assert_eq!(v.resident_bytes, Some(2 * MIB));
        assert_eq!(v.high_watermark_bytes, Some(MIB));
        assert_eq!(v.cache_budget_bytes, cache.store.capacity() / 64);
        drop(cache);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(task.is_finished(), "the task ends with its cache");
    }
}

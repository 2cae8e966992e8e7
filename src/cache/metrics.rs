//! Cache and coalescing metrics: store and coalescing gauges and counters read from their
//! atomics at scrape time, the follower wait histogram, and the purge counter.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use super::CacheShared;
use crate::cache::coalesce::{CoalesceShared, HIT_FOR_PASS_REASONS};
use crate::telemetry::metrics::{OnScrape, counter_vec, gauge, latency_buckets, set_counter};

/// Registers `seawall_coalesce_wait_seconds`, which coalescing observes (built before it).
pub(crate) fn coalesce_wait(r: &Registry) -> prometheus::Result<Histogram> {
    let coalesce_wait = Histogram::with_opts(
        HistogramOpts::new(
            "seawall_coalesce_wait_seconds",
            "Time coalesced followers waited for the leader's response head.",
        )
        .buckets(latency_buckets()),
    )?;
    r.register(Box::new(coalesce_wait.clone()))?;
    Ok(coalesce_wait)
}

/// Registers `seawall_purges_total`, counted where purges are asked for (admin API, `PURGE`).
pub(crate) fn purges(r: &Registry) -> prometheus::Result<IntCounterVec> {
    counter_vec(
        r,
        "seawall_purges_total",
        "Purge requests by kind.",
        &["kind"],
    )
}

/// Registers the store and coalescing metrics, copied from `cache` and `coalesce` at each
/// scrape (after the store has run its pending maintenance, so counts are current).
pub(crate) fn register(
    r: &Registry,
    cache: &Arc<CacheShared>,
    coalesce: &Arc<CoalesceShared>,
) -> prometheus::Result<()> {
    let cache_entries = gauge("seawall_cache_entries", "Stored URLs (primary keys).")?;
    let cache_bytes = gauge("seawall_cache_bytes", "Bytes used by stored responses.")?;
    let cache_capacity = gauge("seawall_cache_capacity_bytes", "Configured cache size.")?;
    let cache_enabled = gauge(
        "seawall_cache_enabled",
        "1 while the cache is on, 0 while the kill switch has it off.",
    )?;
    let inflight_bytes = gauge(
        "seawall_coalesce_inflight_bytes",
        "Bytes held in fill buffers.",
    )?;
    let counters =
        |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels);
    let evictions = counters(
        "seawall_cache_evictions_total",
        "Cache evictions by cause.",
        &["cause"],
    )?;
    let coalesce_rejected = counters(
        "seawall_coalesce_rejected_total",
        "Followers turned away by a coalescing bound.",
        &["reason"],
    )?;
    let hit_for_pass = IntCounter::new(
        "seawall_hit_for_pass_total",
        "Requests sent straight upstream because the key is hit-for-pass.",
    )?;
    let hit_for_pass_marked = counters(
        "seawall_hit_for_pass_marked_total",
        "Keys marked hit-for-pass, by the response's reason.",
        &["reason"],
    )?;
    let fetches_cancelled = counters(
        "seawall_fetches_cancelled_total",
        "Upstream fetches cancelled because no client waited for them any more.",
        &["reason"],
    )?;
    let compressed = IntCounter::new(
        "seawall_cache_compressed_total",
        "Responses stored compressed by [cache.compression].",
    )?;
    let bytes_saved = IntCounter::new(
        "seawall_cache_compressed_bytes_saved_total",
        "Identity bytes minus stored bytes, over responses stored compressed.",
    )?;
    let decoded = IntCounter::new(
        "seawall_cache_decode_total",
        "Hits decoded while streaming for a client that does not accept the stored coding.",
    )?;
    let metrics: Vec<Box<dyn prometheus::core::Collector>> = vec![
        Box::new(compressed.clone()),
        Box::new(bytes_saved.clone()),
        Box::new(decoded.clone()),
        Box::new(cache_entries.clone()),
        Box::new(cache_bytes.clone()),
        Box::new(cache_capacity.clone()),
        Box::new(cache_enabled.clone()),
        Box::new(inflight_bytes.clone()),
        Box::new(evictions.clone()),
        Box::new(coalesce_rejected.clone()),
        Box::new(hit_for_pass.clone()),
        Box::new(hit_for_pass_marked.clone()),
        Box::new(fetches_cancelled.clone()),
    ];
    super::governor::register(r, cache)?;
    let (cache, coalesce) = (cache.clone(), coalesce.clone());
    OnScrape::register(r, metrics, move || {
        cache.store.run_pending_tasks();
        cache_entries.set(cache.store.entry_count() as i64);
        cache_bytes.set(cache.store.weighted_size() as i64);
        cache_capacity.set(cache.store.capacity() as i64);
        cache_enabled.set(i64::from(cache.enabled.load(Ordering::Relaxed)));
        inflight_bytes.set(coalesce.inflight_bytes() as i64);
        let z = &cache.compressor.stats;
        set_counter(&compressed, z.compressed.load(Ordering::Relaxed));
        set_counter(&bytes_saved, z.bytes_saved.load(Ordering::Relaxed));
        set_counter(&decoded, z.decoded.load(Ordering::Relaxed));
        let ev = &cache.store.evictions;
        set_counter(
            &evictions.with_label_values(&["size"]),
            ev.size.load(Ordering::Relaxed),
        );
        set_counter(
            &evictions.with_label_values(&["expired"]),
            ev.expired.load(Ordering::Relaxed),
        );
        set_counter(
            &evictions.with_label_values(&["explicit"]),
            ev.explicit.load(Ordering::Relaxed),
        );
        set_counter(
            &evictions.with_label_values(&["memory"]),
            ev.memory.load(Ordering::Relaxed),
        );
        let cs = &coalesce.stats;
        set_counter(
            &coalesce_rejected.with_label_values(&["waiter_limit"]),
            cs.waiter_cap.load(Ordering::Relaxed),
        );
        set_counter(
            &coalesce_rejected.with_label_values(&["wait_timeout"]),
            cs.wait_timeouts.load(Ordering::Relaxed),
        );
        set_counter(
            &coalesce_rejected.with_label_values(&["slow_reader"]),
            cs.slow_readers.load(Ordering::Relaxed),
        );
        set_counter(&hit_for_pass, cs.hit_for_pass.load(Ordering::Relaxed));
        for (i, r) in HIT_FOR_PASS_REASONS.iter().enumerate() {
            set_counter(
                &hit_for_pass_marked.with_label_values(&[r.as_str()]),
                cs.marked[i].load(Ordering::Relaxed),
            );
        }
        set_counter(
            &fetches_cancelled.with_label_values(&["before_head"]),
            cs.cancelled_before_head.load(Ordering::Relaxed),
        );
        set_counter(
            &fetches_cancelled.with_label_values(&["not_storable"]),
            cs.cancelled_not_storable.load(Ordering::Relaxed),
        );
        set_counter(
            &fetches_cancelled.with_label_values(&["stream_limit"]),
            cs.cancelled_stream_limit.load(Ordering::Relaxed),
        );
    })
}

//! The Prometheus `Registry` (injected, never the global one) with `seawall_build_info` and the
//! process collector, the text rendering, and helpers the components register their metrics with.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Cache status label values (also the index into per-route handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheClass {
    /// Fresh hit.
    Hit = 0,
    /// Stale served.
    Stale = 1,
    /// Forwarded, not usable from cache.
    Miss = 2,
    /// Revalidated with 304.
    Revalidated = 3,
    /// Could not have been a hit: `no-store`, `private` and other unstorable responses, pass
    /// (hit-for-pass), bypass (method, kill switch, ...) and requests no route took.
    Uncacheable = 4,
}

impl CacheClass {
    /// Every class, in index order.
    pub(crate) const ALL: [CacheClass; 5] = [
        Self::Hit,
        Self::Stale,
        Self::Miss,
        Self::Revalidated,
        Self::Uncacheable,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Miss => "miss",
            Self::Revalidated => "revalidated",
            Self::Uncacheable => "uncacheable",
        }
    }
}

/// Why a stale response was served (label values of `seawall_stale_served_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleReason {
    /// Within stale-while-revalidate.
    StaleWhileRevalidate = 0,
    /// The forward failed.
    StaleIfError = 1,
    /// The breaker is open.
    CircuitOpen = 2,
    /// The client's max-stale.
    MaxStale = 3,
}

impl StaleReason {
    /// Every reason, in index order.
    pub(crate) const ALL: [StaleReason; 4] = [
        Self::StaleWhileRevalidate,
        Self::StaleIfError,
        Self::CircuitOpen,
        Self::MaxStale,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StaleWhileRevalidate => "stale_while_revalidate",
            Self::StaleIfError => "stale_if_error",
            Self::CircuitOpen => "circuit_open",
            Self::MaxStale => "max_stale",
        }
    }
}

/// How the cache produced a response; put in response extensions by the cache layer.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    /// Status class.
    pub class: CacheClass,
    /// Stale reason, when stale.
    pub stale: Option<StaleReason>,
    /// The response came from another request's fetch.
    pub collapsed: bool,
}

/// Buckets from 50 µs (memory hits) to 30 s (slow backends).
pub(crate) fn latency_buckets() -> Vec<f64> {
    vec![
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

/// A fresh registry holding `seawall_build_info` and, on Linux, the process collector; the
/// components register the rest.
pub fn registry(version: &str, slot: &str) -> prometheus::Result<Registry> {
    let r = Registry::new();
    let build_info = IntGaugeVec::new(
        Opts::new(
            "seawall_build_info",
            "Build version, commit and blue/green slot.",
        ),
        &["version", "commit", "slot"],
    )?;
    r.register(Box::new(build_info.clone()))?;
    build_info
        .with_label_values(&[version, crate::COMMIT, slot])
        .set(1);
    #[cfg(target_os = "linux")]
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(r)
}

/// The text format of everything registered: scrape-time collectors refresh themselves while
/// they are gathered.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// A registered counter vector.
pub(crate) fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// A registered histogram vector with [`latency_buckets`].
pub(crate) fn latency_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(latency_buckets()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

/// An unregistered gauge, for an [`OnScrape`] collector.
pub(crate) fn gauge(name: &str, help: &str) -> prometheus::Result<IntGauge> {
    IntGauge::new(name, help)
}

/// Raises a counter to a component's running total (counters never go down).
pub(crate) fn set_counter(c: &IntCounter, v: u64) {
    let cur = c.get();
    if v > cur {
        c.inc_by(v - cur);
    }
}

/// Metrics whose values live in a component's own atomics: `refresh` copies them in when the
/// registry is gathered, just before they are collected, so the hot path never touches them.
pub(crate) struct OnScrape {
    metrics: Vec<Box<dyn Collector>>,
    refresh: Box<dyn Fn() + Send + Sync>,
}

impl OnScrape {
    /// Registers `metrics` (not registered themselves), refreshed by `refresh` at each scrape.
    pub(crate) fn register(
        r: &Registry,
        metrics: Vec<Box<dyn Collector>>,
        refresh: impl Fn() + Send + Sync + 'static,
    ) -> prometheus::Result<()> {
        r.register(Box::new(Self {
            metrics,
            refresh: Box::new(refresh),
        }))
    }
}

impl Collector for OnScrape {
    fn desc(&self) -> Vec<&Desc> {
        self.metrics.iter().flat_map(|m| m.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.refresh)();
        self.metrics.iter().flat_map(|m| m.collect()).collect()
    }
}

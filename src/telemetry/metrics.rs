//! Prometheus metrics on an injected `Registry` (never the global one). Per-route label
//! handles are resolved once, so the hot path only bumps atomics; counters owned by other
//! components (store evictions, breaker transitions) are read at scrape time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::breaker::Breakers;
use crate::cache::CacheShared;
use crate::coalesce::CoalesceShared;

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
    const ALL: [CacheClass; 5] = [
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
    const ALL: [StaleReason; 4] = [
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

/// Upstream outcome label values.
#[derive(Clone, Copy, Debug)]
pub enum UpstreamOutcome {
    /// A response that is not a configured failure status.
    Ok = 0,
    /// A configured failure status (5xx by default).
    ErrorStatus = 1,
    /// Refused.
    ConnectError = 2,
    /// Deadline.
    Timeout = 3,
    /// Reset after sending.
    Reset = 4,
    /// The breaker refused it.
    CircuitOpen = 5,
    /// At the concurrency cap.
    Overloaded = 6,
}

impl UpstreamOutcome {
    const ALL: [UpstreamOutcome; 7] = [
        Self::Ok,
        Self::ErrorStatus,
        Self::ConnectError,
        Self::Timeout,
        Self::Reset,
        Self::CircuitOpen,
        Self::Overloaded,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ErrorStatus => "error_status",
            Self::ConnectError => "connect_error",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::CircuitOpen => "circuit_open",
            Self::Overloaded => "overloaded",
        }
    }
}

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Buckets from 50 µs (memory hits) to 30 s (slow backends).
fn latency_buckets() -> Vec<f64> {
    vec![
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

/// Pre-resolved handles of one route.
#[derive(Debug)]
pub struct RouteHandles {
    requests: Vec<[IntCounter; 5]>,
    duration: Vec<Histogram>,
    first_byte: Vec<Histogram>,
    coalesced: IntCounter,
    stale: Vec<IntCounter>,
}

/// Pre-resolved handles of one upstream.
#[derive(Debug)]
pub struct UpstreamHandles {
    outcomes: Vec<IntCounter>,
    duration: Histogram,
}

/// All metrics.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    first_byte: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    coalesced: IntCounterVec,
    stale_served: IntCounterVec,
    /// Follower wait time.
    pub coalesce_wait: Histogram,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    cache_capacity: IntGauge,
    cache_enabled: IntGauge,
    inflight_bytes: IntGauge,
    evictions: IntCounterVec,
    coalesce_rejected: IntCounterVec,
    hit_for_pass: IntCounter,
    hit_for_pass_marked: IntCounterVec,
    fetches_cancelled: IntCounterVec,
    h2_streams_reset: IntCounter,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    /// Purges by kind.
    pub purges: IntCounterVec,
    /// Config reloads by result.
    pub config_reloads: IntCounterVec,
    routes: ArcSwap<Vec<RouteHandles>>,
    no_route: RouteHandles,
    upstreams: ArcSwap<Vec<UpstreamHandles>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// Registers everything on a fresh registry.
    pub fn new(version: &str, slot: &str) -> prometheus::Result<Self> {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "seawall_requests_total",
            "Requests by route, cache status and status class.",
            &["route", "cache_status", "code_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "seawall_request_duration_seconds",
                "Time to the last byte sent (or the client going away), by route and cache status.",
            )
            .buckets(latency_buckets()),
            &["route", "cache_status"],
        )?;
        r.register(Box::new(duration.clone()))?;
        let first_byte = HistogramVec::new(
            HistogramOpts::new(
                "seawall_response_first_byte_seconds",
                "Time to the response head, by route and cache status.",
            )
            .buckets(latency_buckets()),
            &["route", "cache_status"],
        )?;
        r.register(Box::new(first_byte.clone()))?;
        let upstream_requests = counter_vec(
            &r,
            "seawall_upstream_requests_total",
            "Upstream requests by outcome.",
            &["upstream", "outcome"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "seawall_upstream_duration_seconds",
                "Upstream time to response head.",
            )
            .buckets(latency_buckets()),
            &["upstream"],
        )?;
        r.register(Box::new(upstream_duration.clone()))?;
        let coalesced = counter_vec(
            &r,
            "seawall_coalesced_requests_total",
            "Requests served from another request's upstream fetch.",
            &["route"],
        )?;
        let stale_served = counter_vec(
            &r,
            "seawall_stale_served_total",
            "Stale responses served, by reason.",
            &["route", "reason"],
        )?;
        let coalesce_wait = Histogram::with_opts(
            HistogramOpts::new(
                "seawall_coalesce_wait_seconds",
                "Time coalesced followers waited for the leader's response head.",
            )
            .buckets(latency_buckets()),
        )?;
        r.register(Box::new(coalesce_wait.clone()))?;
        let evictions = counter_vec(
            &r,
            "seawall_cache_evictions_total",
            "Cache evictions by cause.",
            &["cause"],
        )?;
        let coalesce_rejected = counter_vec(
            &r,
            "seawall_coalesce_rejected_total",
            "Followers turned away by a coalescing bound.",
            &["reason"],
        )?;
        let hit_for_pass = IntCounter::new(
            "seawall_hit_for_pass_total",
            "Requests sent straight upstream because the key is hit-for-pass.",
        )?;
        r.register(Box::new(hit_for_pass.clone()))?;
        let hit_for_pass_marked = counter_vec(
            &r,
            "seawall_hit_for_pass_marked_total",
            "Keys marked hit-for-pass, by the response's reason.",
            &["reason"],
        )?;
        let fetches_cancelled = counter_vec(
            &r,
            "seawall_fetches_cancelled_total",
            "Upstream fetches cancelled because no client waited for them any more.",
            &["reason"],
        )?;
        let h2_streams_reset = IntCounter::new(
            "seawall_h2_streams_reset_total",
            "HTTP/2 request streams the client reset (RST_STREAM) before their response ended.",
        )?;
        r.register(Box::new(h2_streams_reset.clone()))?;
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "seawall_breaker_state",
                "Breaker state: 0 closed, 1 open, 2 half-open.",
            ),
            &["upstream"],
        )?;
        r.register(Box::new(breaker_state.clone()))?;
        let breaker_transitions = counter_vec(
            &r,
            "seawall_breaker_transitions_total",
            "Breaker transitions by target state.",
            &["upstream", "to"],
        )?;
        let purges = counter_vec(
            &r,
            "seawall_purges_total",
            "Purge requests by kind.",
            &["kind"],
        )?;
        let config_reloads = counter_vec(
            &r,
            "seawall_config_reloads_total",
            "Config reloads by result.",
            &["result"],
        )?;
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
        let no_route = route_handles(
            &requests,
            &duration,
            &first_byte,
            &coalesced,
            &stale_served,
            "_none",
        );
        Ok(Self {
            cache_entries: gauge(&r, "seawall_cache_entries", "Stored URLs (primary keys).")?,
            cache_bytes: gauge(&r, "seawall_cache_bytes", "Bytes used by stored responses.")?,
            cache_capacity: gauge(&r, "seawall_cache_capacity_bytes", "Configured cache size.")?,
            cache_enabled: gauge(
                &r,
                "seawall_cache_enabled",
                "1 while the cache is on, 0 while the kill switch has it off.",
            )?,
            inflight_bytes: gauge(
                &r,
                "seawall_coalesce_inflight_bytes",
                "Bytes held in fill buffers.",
            )?,
            registry: r,
            requests,
            duration,
            first_byte,
            upstream_requests,
            upstream_duration,
            coalesced,
            stale_served,
            coalesce_wait,
            evictions,
            coalesce_rejected,
            hit_for_pass,
            hit_for_pass_marked,
            fetches_cancelled,
            h2_streams_reset,
            breaker_state,
            breaker_transitions,
            purges,
            config_reloads,
            routes: ArcSwap::from_pointee(Vec::new()),
            no_route,
            upstreams: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// Resolves handles for the current routes and upstreams (at start and on reload).
    pub fn bind(&self, routes: &[String], upstreams: &[String]) {
        let r = routes
            .iter()
            .map(|name| {
                route_handles(
                    &self.requests,
                    &self.duration,
                    &self.first_byte,
                    &self.coalesced,
                    &self.stale_served,
                    name,
                )
            })
            .collect();
        self.routes.store(Arc::new(r));
        let u = upstreams
            .iter()
            .map(|name| UpstreamHandles {
                outcomes: UpstreamOutcome::ALL
                    .iter()
                    .map(|o| {
                        self.upstream_requests
                            .with_label_values(&[name, o.as_str()])
                    })
                    .collect(),
                duration: self.upstream_duration.with_label_values(&[name]),
            })
            .collect();
        self.upstreams.store(Arc::new(u));
    }

    /// Records one request at its response head (`first_byte` after it started); returns the
    /// histogram that times it to its last byte, observed when the body ends.
    pub fn request(
        &self,
        route: Option<usize>,
        served: Option<Served>,
        status: u16,
        first_byte: Duration,
    ) -> Histogram {
        let routes = self.routes.load();
        let h = route.and_then(|i| routes.get(i)).unwrap_or(&self.no_route);
        let served = served.unwrap_or(Served {
            class: CacheClass::Uncacheable,
            stale: None,
            collapsed: false,
        });
        let class = ((status / 100) as usize).clamp(1, 5) - 1;
        let c = served.class as usize;
        h.requests[c][class].inc();
        h.first_byte[c].observe(first_byte.as_secs_f64());
        if served.collapsed {
            h.coalesced.inc();
        }
        if let Some(s) = served.stale {
            h.stale[s as usize].inc();
        }
        h.duration[c].clone()
    }

    /// Records one upstream outcome; the latency only when the request reached the upstream
    /// (a breaker rejection or our own concurrency cap would drag the histogram to zero).
    pub fn upstream(&self, idx: usize, outcome: UpstreamOutcome, elapsed: Duration) {
        let ups = self.upstreams.load();
        if let Some(h) = ups.get(idx) {
            h.outcomes[outcome as usize].inc();
            if !matches!(
                outcome,
                UpstreamOutcome::CircuitOpen | UpstreamOutcome::Overloaded
            ) {
                h.duration.observe(elapsed.as_secs_f64());
            }
        }
    }

    /// Takes the data listener's counters (before [`Self::render`]).
    pub fn observe_server(&self, h2_streams_reset: u64) {
        set_counter(&self.h2_streams_reset, h2_streams_reset);
    }

    /// Refreshes the values owned by other components, then renders the text format.
    pub fn render(
        &self,
        cache: &CacheShared,
        coalesce: &CoalesceShared,
        breakers: &Breakers,
    ) -> String {
        cache.store.run_pending_tasks();
        self.cache_entries.set(cache.store.entry_count() as i64);
        self.cache_bytes.set(cache.store.weighted_size() as i64);
        self.cache_capacity.set(cache.store.capacity() as i64);
        self.cache_enabled
            .set(i64::from(cache.enabled.load(Ordering::Relaxed)));
        self.inflight_bytes.set(coalesce.inflight_bytes() as i64);
        let ev = &cache.store.evictions;
        set_counter(
            &self.evictions.with_label_values(&["size"]),
            ev.size.load(Ordering::Relaxed),
        );
        set_counter(
            &self.evictions.with_label_values(&["expired"]),
            ev.expired.load(Ordering::Relaxed),
        );
        set_counter(
            &self.evictions.with_label_values(&["explicit"]),
            ev.explicit.load(Ordering::Relaxed),
        );
        let cs = &coalesce.stats;
        set_counter(
            &self.coalesce_rejected.with_label_values(&["waiter_limit"]),
            cs.waiter_cap.load(Ordering::Relaxed),
        );
        set_counter(
            &self.coalesce_rejected.with_label_values(&["wait_timeout"]),
            cs.wait_timeouts.load(Ordering::Relaxed),
        );
        set_counter(
            &self.coalesce_rejected.with_label_values(&["slow_reader"]),
            cs.slow_readers.load(Ordering::Relaxed),
        );
        set_counter(&self.hit_for_pass, cs.hit_for_pass.load(Ordering::Relaxed));
        for (i, r) in crate::coalesce::HIT_FOR_PASS_REASONS.iter().enumerate() {
            set_counter(
                &self.hit_for_pass_marked.with_label_values(&[r.as_str()]),
                cs.marked[i].load(Ordering::Relaxed),
            );
        }
        set_counter(
            &self.fetches_cancelled.with_label_values(&["before_head"]),
            cs.cancelled_before_head.load(Ordering::Relaxed),
        );
        set_counter(
            &self.fetches_cancelled.with_label_values(&["not_storable"]),
            cs.cancelled_not_storable.load(Ordering::Relaxed),
        );
        set_counter(
            &self.fetches_cancelled.with_label_values(&["stream_limit"]),
            cs.cancelled_stream_limit.load(Ordering::Relaxed),
        );

        for b in breakers.all() {
            self.breaker_state
                .with_label_values(&[b.upstream.as_str()])
                .set(b.state().as_gauge());
            for (i, to) in ["closed", "open", "half_open"].iter().enumerate() {
                set_counter(
                    &self
                        .breaker_transitions
                        .with_label_values(&[b.upstream.as_str(), to]),
                    b.transitions[i].load(Ordering::Relaxed),
                );
            }
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn set_counter(c: &IntCounter, v: u64) {
    let cur = c.get();
    if v > cur {
        c.inc_by(v - cur);
    }
}

fn route_handles(
    requests: &IntCounterVec,
    duration: &HistogramVec,
    first_byte: &HistogramVec,
    coalesced: &IntCounterVec,
    stale: &IntCounterVec,
    name: &str,
) -> RouteHandles {
    RouteHandles {
        requests: CacheClass::ALL
            .iter()
            .map(|c| {
                let h = |i: usize| requests.with_label_values(&[name, c.as_str(), CODE_CLASSES[i]]);
                [h(0), h(1), h(2), h(3), h(4)]
            })
            .collect(),
        duration: CacheClass::ALL
            .iter()
            .map(|c| duration.with_label_values(&[name, c.as_str()]))
            .collect(),
        first_byte: CacheClass::ALL
            .iter()
            .map(|c| first_byte.with_label_values(&[name, c.as_str()]))
            .collect(),
        coalesced: coalesced.with_label_values(&[name]),
        stale: StaleReason::ALL
            .iter()
            .map(|s| stale.with_label_values(&[name, s.as_str()]))
            .collect(),
    }
}

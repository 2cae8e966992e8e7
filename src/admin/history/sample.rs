//! What the history sampler reads: a snapshot of the running totals in the metrics registry
//! (requests by route and cache class, 5xx, coalesced, time-to-head histograms, upstream
//! latency, breaker transitions), and the per-interval difference of two snapshots.

use std::collections::BTreeMap;

use prometheus::proto::{Metric, MetricFamily};

use crate::telemetry::metrics::{CacheClass, latency_buckets};

/// Histogram buckets: the registry's bounds plus the open-ended `+Inf` one.
pub(crate) const NB: usize = 19;

/// Non-cumulative bucket counts of one latency histogram.
pub(crate) type Buckets = [u64; NB];

/// Running totals of one route (label value of `route`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RouteTotals {
    /// Requests by cache class, in `CacheClass` index order.
    pub(crate) classes: [u64; 5],
    /// Responses with a 5xx status.
    pub(crate) errors: u64,
    /// Requests served from another request's fetch.
    pub(crate) coalesced: u64,
    /// Time to the response head of hits.
    pub(crate) hit: Buckets,
    /// Time to the response head of misses.
    pub(crate) miss: Buckets,
}

/// Running totals of one upstream.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct UpstreamTotals {
    /// Upstream time to response head.
    pub(crate) latency: Buckets,
    /// Breaker transitions (to any state).
    pub(crate) changes: u64,
}

/// Every running total the history needs, at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// By route label (`_none` for requests no route took).
    pub(crate) routes: BTreeMap<String, RouteTotals>,
    /// By upstream label.
    pub(crate) upstreams: BTreeMap<String, UpstreamTotals>,
    /// Route name → its upstream (from the running config).
    pub(crate) route_upstream: BTreeMap<String, String>,
    /// Route names in config order (who gets one of the per-route series first).
    pub(crate) order: Vec<String>,
}

/// The change over one interval, summed over the routes of one series.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Delta {
    /// Requests by cache class.
    pub(crate) classes: [u64; 5],
    /// 5xx responses.
    pub(crate) errors: u64,
    /// Coalesced requests.
    pub(crate) coalesced: u64,
    /// Breaker transitions of the series' upstreams.
    pub(crate) changes: u64,
    /// Hit time to head.
    pub(crate) hit: Buckets,
    /// Miss time to head.
    pub(crate) miss: Buckets,
    /// Upstream time to head of the series' upstreams.
    pub(crate) upstream: Buckets,
}

fn add_buckets(into: &mut Buckets, from: &Buckets) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

fn sub_buckets(now: &Buckets, before: &Buckets) -> Buckets {
    let mut out = [0; NB];
    for (i, o) in out.iter_mut().enumerate() {
        *o = now[i].saturating_sub(before[i]);
    }
    out
}

impl Delta {
    /// Adds one route's change (`now` − `before`; counters never go down, a missing
    /// `before` is zero).
    pub(crate) fn add_route(&mut self, now: &RouteTotals, before: Option<&RouteTotals>) {
        let zero = RouteTotals::default();
        let b = before.unwrap_or(&zero);
        for i in 0..5 {
            self.classes[i] += now.classes[i].saturating_sub(b.classes[i]);
        }
        self.errors += now.errors.saturating_sub(b.errors);
        self.coalesced += now.coalesced.saturating_sub(b.coalesced);
        add_buckets(&mut self.hit, &sub_buckets(&now.hit, &b.hit));
        add_buckets(&mut self.miss, &sub_buckets(&now.miss, &b.miss));
    }

    /// Adds one upstream's change.
    pub(crate) fn add_upstream(&mut self, now: &UpstreamTotals, before: Option<&UpstreamTotals>) {
        let zero = UpstreamTotals::default();
        let b = before.unwrap_or(&zero);
        self.changes += now.changes.saturating_sub(b.changes);
        add_buckets(&mut self.upstream, &sub_buckets(&now.latency, &b.latency));
    }
}

/// The `q` quantile (milliseconds) of non-cumulative `buckets` over the registry's latency
/// bounds, as Prometheus' `histogram_quantile` computes it: linear within the bucket holding
/// the rank (from 0 in the first bucket); the open-ended bucket answers its lower bound.
/// `None` without observations.
pub(crate) fn quantile_ms(buckets: &Buckets, q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let bounds = latency_buckets();
    let rank = total as f64 * q;
    let mut acc = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        let below = acc;
        acc += n;
        if n > 0 && acc as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let Some(&upper) = bounds.get(i) else {
                return Some(lower * 1000.0);
            };
            let frac = (rank - below as f64) / n as f64;
            return Some((lower + (upper - lower) * frac) * 1000.0);
        }
    }
    None
}

fn label<'a>(m: &'a Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// Non-cumulative counts of a registry histogram (zero when its bounds are not ours).
fn buckets_of(m: &Metric) -> Buckets {
    let h = m.get_histogram();
    let mut out = [0u64; NB];
    let bs = h.get_bucket();
    if bs.len() != NB - 1 {
        return out;
    }
    let mut prev = 0u64;
    for (i, b) in bs.iter().enumerate() {
        out[i] = b.cumulative_count().saturating_sub(prev);
        prev = b.cumulative_count();
    }
    out[NB - 1] = h.get_sample_count().saturating_sub(prev);
    out
}

impl Snapshot {
    /// Reads the totals from gathered metric families; `routes` is the running config's
    /// (route name, upstream name) list in config order.
    pub(crate) fn from_families(families: &[MetricFamily], routes: &[(String, String)]) -> Self {
        let mut s = Snapshot {
            order: routes.iter().map(|(r, _)| r.clone()).collect(),
            route_upstream: routes.iter().cloned().collect(),
            ..Default::default()
        };
        let class_of = |v: &str| CacheClass::ALL.iter().position(|c| c.as_str() == v);
        const READ: [&str; 5] = [
            "seawall_requests_total",
            "seawall_response_first_byte_seconds",
            "seawall_coalesced_requests_total",
            "seawall_upstream_duration_seconds",
            "seawall_breaker_transitions_total",
        ];
        for f in families.iter().filter(|f| READ.contains(&f.name())) {
            for m in f.get_metric() {
                match f.name() {
                    "seawall_requests_total" => {
                        let (Some(r), Some(c)) = (label(m, "route"), label(m, "cache_status"))
                        else {
                            continue;
                        };
                        let Some(ci) = class_of(c) else { continue };
                        let n = m.get_counter().get_value() as u64;
                        let t = s.routes.entry(r.to_string()).or_default();
                        t.classes[ci] += n;
                        if label(m, "code_class") == Some("5xx") {
                            t.errors += n;
                        }
                    }
                    "seawall_response_first_byte_seconds" => {
                        let (Some(r), Some(c)) = (label(m, "route"), label(m, "cache_status"))
                        else {
                            continue;
                        };
                        let t = s.routes.entry(r.to_string()).or_default();
                        match c {
                            "hit" => t.hit = buckets_of(m),
                            "miss" => t.miss = buckets_of(m),
                            _ => {}
                        }
                    }
                    "seawall_coalesced_requests_total" => {
                        if let Some(r) = label(m, "route") {
                            s.routes.entry(r.to_string()).or_default().coalesced +=
                                m.get_counter().get_value() as u64;
                        }
                    }
                    "seawall_upstream_duration_seconds" => {
                        if let Some(u) = label(m, "upstream") {
                            s.upstreams.entry(u.to_string()).or_default().latency = buckets_of(m);
                        }
                    }
                    "seawall_breaker_transitions_total" => {
                        if let Some(u) = label(m, "upstream") {
                            s.upstreams.entry(u.to_string()).or_default().changes +=
                                m.get_counter().get_value() as u64;
                        }
                    }
                    _ => {}
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_histogram_quantile() {
        let mut b = [0u64; NB];
        // 100 observations in (25 ms, 50 ms]: index 9 (bounds[8] = 0.025, bounds[9] = 0.05).
        b[9] = 100;
        let p95 = quantile_ms(&b, 0.95).unwrap();
        assert!((p95 - 48.75).abs() < 1e-9, "{p95}");
        assert_eq!(quantile_ms(&[0; NB], 0.5), None);
        let mut inf = [0u64; NB];
        inf[NB - 1] = 3;
        assert_eq!(quantile_ms(&inf, 0.99), Some(30_000.0));
    }

    #[test]
    fn snapshot_reads_the_registry() {
        let r = prometheus::Registry::new();
        let req = crate::telemetry::metrics::counter_vec(
            &r,
            "seawall_requests_total",
            "h",
            &["route", "cache_status", "code_class"],
        )
        .unwrap();
        req.with_label_values(&["a", "hit", "2xx"]).inc_by(3);
        req.with_label_values(&["a", "miss", "5xx"]).inc_by(2);
        let fb = crate::telemetry::metrics::latency_vec(
            &r,
            "seawall_response_first_byte_seconds",
            "h",
            &["route", "cache_status"],
        )
        .unwrap();
        fb.with_label_values(&["a", "hit"]).observe(0.0002);
        let s = Snapshot::from_families(&r.gather(), &[("a".into(), "o".into())]);
        let a = &s.routes["a"];
        assert_eq!(a.classes, [3, 0, 2, 0, 0]);
        assert_eq!(a.errors, 2);
        assert_eq!(a.hit.iter().sum::<u64>(), 1);
        assert_eq!(a.hit[2], 1, "0.2 ms falls in (0.1 ms, 0.25 ms]");
        assert_eq!(s.order, ["a"]);
    }
}

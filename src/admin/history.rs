//! `GET /admin/stats/history?range=1h|6h|24h|7d|30d[&route=NAME][&format=csv]`: performance
//! over time from Seawall's own bounded history (since process start), and the sampler task
//! that fills it every 10 s from the metrics registry's running totals.
//!
//! A point: `{"t", "partial", "requests", "by_status": {"hit", "stale", "miss", "revalidated",
//! "uncacheable"}, "errors_5xx", "hit_ratio", "origin_requests", "origin_saved", "coalesced",
//! "breaker_changes", "latency_ms": {"hit": {"p50", "p95", "p99"}, "miss": {…}},
//! "upstream_latency_ms": {…}}`. The classes are `seawall_requests_total`'s `cache_status`
//! values; latencies are times to the response head in ms, `null` without observations.

mod ring;
mod sample;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::alerts::{self, Alert, AlertLog};
use super::{ApiError, bad};
use crate::state::AppState;
pub(crate) use ring::{Point, Rings};
pub(crate) use sample::Snapshot;

/// The history and the alert log, shared by the sampler and the handlers.
#[derive(Debug)]
pub(crate) struct History {
    /// Process start, unix seconds: nothing is known before.
    pub(crate) since: u64,
    rings: Mutex<Rings>,
    /// Fired and resolved alerts.
    pub(crate) alerts: Mutex<AlertLog>,
}

impl History {
    /// Empty, from `since` (unix seconds).
    pub(crate) fn new(since: u64) -> Self {
        Self {
            since,
            rings: Mutex::new(Rings::new(since)),
            alerts: Mutex::new(AlertLog::default()),
        }
    }

    /// One sampler tick at `now`: the counters `snap` and the alerts `cur`.
    pub(crate) fn tick(&self, now: u64, snap: Snapshot, cur: &[Alert]) {
        self.rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(now, snap);
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(cur, now);
    }
}

/// Unix seconds now.
pub(crate) fn wall_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The running totals now: the registry gathered, with the running routes and their upstreams.
pub(crate) fn snapshot(s: &AppState) -> Snapshot {
    let routes: Vec<(String, String)> =
        s.rt.load()
            .router
            .routes()
            .iter()
            .map(|r| (r.name.clone(), r.upstream_name.clone()))
            .collect();
    Snapshot::from_families(&s.metrics.registry.gather(), &routes)
}

/// Starts the sampler for `s`: every 10 s on the wall clock's 10 s grid.
pub(crate) fn spawn_sampler(s: Arc<AppState>, h: Arc<History>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_sampler(h, wall_clock, move || {
        (snapshot(&s), alerts::current(&s))
    }))
}

/// The sampler loop: ticks on the `clock`'s 10 s grid (a late tick is taken late, not
/// twice), reads `sample` and steps `h`.
pub(crate) async fn run_sampler(
    h: Arc<History>,
    clock: impl Fn() -> u64,
    mut sample: impl FnMut() -> (Snapshot, Vec<Alert>),
) {
    let step = Duration::from_secs(ring::STEP_SECS);
    let first = ring::STEP_SECS - clock() % ring::STEP_SECS;
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(first),
        step,
    );
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (snap, cur) = sample();
        h.tick(clock(), snap, &cur);
    }
}

/// The ranges: name, span, tier of the all-traffic series, tier of a route series.
const RANGES: [(&str, u64, usize); 5] = [
    ("1h", 3600, 0),
    ("6h", 6 * 3600, 1),
    ("24h", 24 * 3600, 1),
    ("7d", 7 * 86400, 2),
    ("30d", 30 * 86400, 2),
];

/// The CSV columns, in order.
pub(crate) const CSV_HEADER: &str = "t,requests,hit,miss,stale,uncacheable,revalidated,errors_5xx,\
hit_ratio,origin_requests,origin_saved,coalesced,breaker_changes,hit_p50_ms,hit_p95_ms,hit_p99_ms,\
miss_p50_ms,miss_p95_ms,miss_p99_ms,upstream_p50_ms,upstream_p95_ms,upstream_p99_ms";

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    range: Option<String>,
    route: Option<String>,
    format: Option<String>,
}

/// The derived numbers of a point.
struct Derived {
    requests: u64,
    hit_ratio: Option<f64>,
    origin_requests: u64,
    origin_saved: u64,
}

fn derive(p: &Point) -> Derived {
    let [hit, stale, miss, reval, uncacheable] = p.classes();
    let requests = hit + stale + miss + reval + uncacheable;
    let cacheable = hit + stale + miss + reval;
    // Hits and stale answers never reach the origin, nor do followers of a coalesced fetch;
    // every other request is answered from a fetch of its own.
    let saved = (hit + stale + p.coalesced()).min(requests);
    Derived {
        requests,
        hit_ratio: (cacheable > 0).then(|| (hit + stale + reval) as f64 / cacheable as f64),
        origin_requests: requests - saved,
        origin_saved: saved,
    }
}

fn round3(v: Option<f64>) -> Option<f64> {
    v.map(|v| (v * 1000.0).round() / 1000.0)
}

fn quantiles_json(q: [Option<f64>; 3]) -> Value {
    json!({"p50": round3(q[0]), "p95": round3(q[1]), "p99": round3(q[2])})
}

fn point_json(t: u64, p: &Point, partial: bool) -> Value {
    let d = derive(p);
    let [hit, stale, miss, revalidated, uncacheable] = p.classes();
    json!({
        "t": t,
        "partial": partial,
        "requests": d.requests,
        "by_status": {
            "hit": hit, "stale": stale, "miss": miss, "revalidated": revalidated,
            "uncacheable": uncacheable,
        },
        "errors_5xx": p.errors(),
        "hit_ratio": round3(d.hit_ratio),
        "origin_requests": d.origin_requests,
        "origin_saved": d.origin_saved,
        "coalesced": p.coalesced(),
        "breaker_changes": p.changes(),
        "latency_ms": {"hit": quantiles_json(p.quantiles(0)), "miss": quantiles_json(p.quantiles(1))},
        "upstream_latency_ms": quantiles_json(p.quantiles(2)),
    })
}

fn csv_row(t: u64, p: &Point) -> String {
    let d = derive(p);
    let [hit, stale, miss, revalidated, uncacheable] = p.classes();
    let opt = |v: Option<f64>| round3(v).map_or(String::new(), |v| v.to_string());
    let mut cols = vec![
        t.to_string(),
        d.requests.to_string(),
        hit.to_string(),
        miss.to_string(),
        stale.to_string(),
        uncacheable.to_string(),
        revalidated.to_string(),
        p.errors().to_string(),
        opt(d.hit_ratio),
        d.origin_requests.to_string(),
        d.origin_saved.to_string(),
        p.coalesced().to_string(),
        p.changes().to_string(),
    ];
    for g in 0..3 {
        cols.extend(p.quantiles(g).into_iter().map(opt));
    }
    cols.join(",")
}

/// `GET /admin/stats/history`.
pub(super) async fn history(
    State(s): State<Arc<AppState>>,
    Extension(h): Extension<Arc<History>>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let range = q.range.as_deref().unwrap_or("1h");
    let Some(&(name, span, tier)) = RANGES.iter().find(|(n, _, _)| *n == range) else {
        return Err(bad(format!(
            "range must be one of 1h, 6h, 24h, 7d, 30d (not {range:?})"
        )));
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => return Err(bad(format!("format must be json or csv (not {f:?})"))),
    };
    let live = snapshot(&s);
    let now = wall_clock();
    let mut rings = h.rings.lock().unwrap_or_else(|e| e.into_inner());
    rings.assign(&live);
    let routes = rings.route_names();
    let Some(series) = rings.series(q.route.as_deref()) else {
        return Err(ApiError(
            axum::http::StatusCode::NOT_FOUND,
            format!(
                "no series for route {:?}: the routes with one are {}",
                q.route.unwrap_or_default(),
                routes.join(", ")
            ),
        ));
    };
    // The interval since the sampler's last tick, so what just happened shows at once.
    let pts = rings.points(&live);
    let live_point = match q.route.as_deref() {
        None => pts.total,
        Some(ring::OTHER) => pts.other,
        Some(r) => routes
            .iter()
            .position(|n| n == r)
            .and_then(|i| pts.routes.get(i).copied())
            .unwrap_or_default(),
    };
    let from = now
        .saturating_sub(span)
        .max(h.since - h.since % ring::STEP_SECS);
    let points = series.view(tier, from, now, Some((rings.live_t(), &live_point)));
    let step = series.tiers[tier].step;
    drop(rings);
    if csv {
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        for (t, p, _) in &points {
            out.push_str(&csv_row(*t, p));
            out.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    Ok(Json(json!({
        "range": name,
        "step_secs": step,
        "since": h.since,
        "route": q.route,
        "routes": routes,
        "points": points.iter().map(|(t, p, partial)| point_json(*t, p, *partial)).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[cfg(test)]
mod tests;

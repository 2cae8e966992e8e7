//! The history's step, roll-ups, views, memory bound and the sampler loop, without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};

use super::ring::{MAX_BYTES, MAX_ROUTES, OTHER, buckets_at};
use super::sample::{RouteTotals, UpstreamTotals};
use super::*;

const T0: u64 = 1_800_000_000;

/// A snapshot with `routes` (name, hits, misses, hit ms, miss ms) on upstream `o`.
fn snap(routes: &[(&str, u64, u64)], changes: u64, upstream_obs: u64) -> Snapshot {
    let mut s = Snapshot::default();
    for (name, hits, misses) in routes {
        s.order.push(name.to_string());
        s.route_upstream.insert(name.to_string(), "o".into());
        s.routes.insert(
            name.to_string(),
            RouteTotals {
                classes: [*hits, 0, *misses, 0, 0],
                errors: 0,
                coalesced: 0,
                hit: buckets_at(0.2, *hits),
                miss: buckets_at(40.0, *misses),
            },
        );
    }
    s.upstreams.insert(
        "o".into(),
        UpstreamTotals {
            latency: buckets_at(40.0, upstream_obs),
            changes,
        },
    );
    s
}

fn view_all(r: &Rings, tier: usize, now: u64) -> Vec<(u64, Point, bool)> {
    r.series(None).unwrap().view(tier, 0, now, None)
}

#[test]
fn a_step_records_the_interval_difference_at_its_start() {
    let mut r = Rings::new(T0 + 3);
    r.step(T0 + 10, snap(&[("a", 5, 2)], 0, 2));
    r.step(T0 + 20, snap(&[("a", 8, 2)], 1, 2));
    let pts = view_all(&r, 0, T0 + 21);
    assert_eq!(pts.iter().map(|p| p.0).collect::<Vec<_>>(), [T0, T0 + 10]);
    assert_eq!(pts[0].1.classes(), [5, 0, 2, 0, 0]);
    assert_eq!(pts[1].1.classes(), [3, 0, 0, 0, 0]);
    assert_eq!((pts[0].1.changes(), pts[1].1.changes()), (0, 1));
    assert!(!pts[0].2, "[T0, T0+10) is over at T0+21");
    // The miss latency of the first interval: 2 in (25 ms, 50 ms].
    let [p50, _, p99] = pts[0].1.quantiles(1);
    assert!((p50.unwrap() - 37.5).abs() < 0.2, "{p50:?}");
    assert!((p99.unwrap() - 49.75).abs() < 0.3, "{p99:?}");
    assert_eq!(pts[1].1.quantiles(1), [None, None, None]);
    // The route series has the same counts, in one 1-minute point.
    let a = r.series(Some("a")).unwrap().view(0, 0, T0 + 21, None);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].1.classes(), [8, 0, 2, 0, 0]);
    assert!(a[0].2, "the minute is still running");
    assert_eq!(r.route_names(), ["a", OTHER]);
}

#[test]
fn coarser_tiers_sum_counts_weight_p50_and_keep_the_worst_tail() {
    let mut r = Rings::new(T0);
    let mut s = snap(&[("a", 0, 0)], 0, 0);
    // Six 10 s intervals: 1 hit at 0.2 ms each, and in the last one 99 more hits at 40 ms.
    for i in 1..=6u64 {
        let a = s.routes.get_mut("a").unwrap();
        a.classes[0] += 1;
        a.hit[2] += 1;
        if i == 6 {
            a.classes[0] += 99;
            a.hit[9] += 99;
        }
        r.step(T0 + 10 * i, s.clone());
    }
    r.step(T0 + 70, s.clone());
    let minutes = view_all(&r, 1, T0 + 75);
    assert_eq!(minutes[0].0, T0);
    assert_eq!(minutes[0].1.classes()[0], 105);
    let [p50, p95, _] = minutes[0].1.quantiles(0);
    // Weighted: five points of weight 1 at 0.175 ms, one of weight 100 at its own p50
    // (rank 50 of 100: 49/99 into (25 ms, 50 ms]).
    let last = 25.0 + 25.0 * 49.0 / 99.0;
    let want = (5.0 * 0.175 + 100.0 * last) / 105.0;
    assert!(
        (p50.unwrap() - want).abs() < want * 0.01,
        "{p50:?} vs {want}"
    );
    // The 95th of the last interval (all of it in (25, 50] ms) is the roll-up's.
    assert!(p95.unwrap() > 45.0, "{p95:?}");
    let hours = view_all(&r, 2, T0 + 75);
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].1.classes()[0], 105);
}

#[test]
fn the_live_interval_is_merged_as_a_partial_point() {
    let mut r = Rings::new(T0);
    r.step(T0 + 10, snap(&[("a", 1, 0)], 0, 0));
    let live = snap(&[("a", 4, 1)], 0, 1);
    let p = r.points(&live);
    assert_eq!(p.total.classes(), [3, 0, 1, 0, 0]);
    let tens = r
        .series(None)
        .unwrap()
        .view(0, 0, T0 + 15, Some((r.live_t(), &p.total)));
    assert_eq!(
        tens.iter().map(|v| (v.0, v.2)).collect::<Vec<_>>(),
        [(T0, false), (T0 + 10, true)]
    );
    assert_eq!(tens[1].1.classes()[0], 3);
    // In the minute tier the live interval joins the running minute.
    let mins = r
        .series(None)
        .unwrap()
        .view(1, 0, T0 + 15, Some((r.live_t(), &p.total)));
    assert_eq!(mins.len(), 1);
    assert_eq!((mins[0].1.classes()[0], mins[0].2), (4, true));
}

#[test]
fn routes_past_twenty_and_unrouted_requests_fold_into_other() {
    let names: Vec<String> = (0..25).map(|i| format!("r{i:02}")).collect();
    let mut rows: Vec<(&str, u64, u64)> = names.iter().map(|n| (n.as_str(), 1, 0)).collect();
    rows.push(("_none", 0, 1));
    let mut s = snap(&rows, 0, 0);
    s.order.retain(|n| n != "_none");
    let mut r = Rings::new(T0);
    r.step(T0 + 10, s);
    let rn = r.route_names();
    assert_eq!(rn.len(), MAX_ROUTES + 1);
    assert_eq!(rn[0], "r00");
    assert_eq!(rn[MAX_ROUTES - 1], "r19");
    assert!(r.series(Some("r20")).is_none());
    let other = r.series(Some(OTHER)).unwrap().view(0, 0, T0 + 10, None);
    // r20..r24 (one hit each) and the unrouted miss.
    assert_eq!(other[0].1.classes(), [5, 0, 1, 0, 0]);
    assert_eq!(view_all(&r, 0, T0 + 10)[0].1.classes(), [25, 0, 1, 0, 0]);
}

#[test]
fn a_late_sampler_leaves_empty_points_not_a_shifted_ring() {
    let mut r = Rings::new(T0);
    r.step(T0 + 10, snap(&[("a", 1, 0)], 0, 0));
    r.step(T0 + 20, snap(&[("a", 2, 0)], 0, 0));
    // Nothing for 40 s, then one step covering it.
    r.step(T0 + 60, snap(&[("a", 3, 0)], 0, 0));
    r.step(T0 + 70, snap(&[("a", 4, 0)], 0, 0));
    let pts = view_all(&r, 0, T0 + 75);
    let times: Vec<u64> = pts.iter().map(|p| p.0).collect();
    assert_eq!(
        times,
        [T0, T0 + 10, T0 + 20, T0 + 30, T0 + 40, T0 + 50, T0 + 60]
    );
    let hits: Vec<u64> = pts.iter().map(|p| p.1.classes()[0]).collect();
    assert_eq!(hits, [1, 1, 1, 0, 0, 0, 1]);
}

#[test]
fn the_history_stays_under_512_kib_with_every_tier_and_route_slot_full() {
    // The bound computed from the point size and the capacities.
    assert_eq!(std::mem::size_of::<Point>(), 52);
    let bound = Rings::max_bytes();
    assert!(bound <= MAX_BYTES, "{bound} > {MAX_BYTES}");
    // And measured on a history driven through 31 days with 25 routes.
    let names: Vec<String> = (0..25).map(|i| format!("route-{i:02}")).collect();
    let mut r = Rings::new(T0);
    let mut now = T0;
    let mut n = 0u64;
    let mut next = |now: u64| {
        n += 1;
        let rows: Vec<(&str, u64, u64)> = names.iter().map(|x| (x.as_str(), n, n)).collect();
        (now, snap(&rows, n, n))
    };
    for _ in 0..400 {
        now += 10;
        let (t, s) = next(now);
        r.step(t, s);
    }
    for _ in 0..(31 * 24) {
        now += 3600;
        let (t, s) = next(now);
        r.step(t, s);
    }
    for _ in 0..400 {
        now += 10;
        let (t, s) = next(now);
        r.step(t, s);
    }
    for name in std::iter::once(None)
        .chain(r.route_names().iter().map(|n| Some(n.clone())))
        .collect::<Vec<_>>()
    {
        for t in &r.series(name.as_deref()).unwrap().tiers {
            let (held, cap) = t.held();
            assert_eq!(held, cap, "{name:?} step {}", t.step);
        }
    }
    let names_bytes: usize = r.route_names().iter().map(String::capacity).sum();
    let used = r.bytes();
    assert!(
        used <= bound + names_bytes,
        "{used} > {bound} + {names_bytes}"
    );
    assert!(used <= MAX_BYTES, "{used} > {MAX_BYTES}");
    println!("history: bound {bound} bytes, measured {used} bytes, limit {MAX_BYTES}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_sampler_ticks_every_ten_seconds_on_the_grid() {
    let h = Arc::new(History::new(T0 + 4));
    let start = tokio::time::Instant::now();
    let clock = move || T0 + 4 + start.elapsed().as_secs();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let task = tokio::spawn(run_sampler(h.clone(), clock, move || {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        let alerts = if n == 2 {
            vec![Alert {
                name: "cache_disabled",
                severity: "warning",
                message: "off".into(),
                subject: None,
            }]
        } else {
            Vec::new()
        };
        (snap(&[("a", n * 10, 0)], 0, 0), alerts)
    }));
    // Ticks at T0+10, +20, +30 (the first one 6 s after the start, on the grid).
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let rings = h.rings.lock().unwrap();
    let pts = rings.series(None).unwrap().view(0, 0, T0 + 39, None);
    assert_eq!(
        pts.iter()
            .map(|p| (p.0, p.1.classes()[0]))
            .collect::<Vec<_>>(),
        [(T0, 10), (T0 + 10, 10), (T0 + 20, 10)]
    );
    drop(rings);
    let events = h.alerts.lock().unwrap().events();
    assert_eq!(
        events.iter().map(|e| (e.state, e.at)).collect::<Vec<_>>(),
        [("resolved", T0 + 30), ("firing", T0 + 20)]
    );
    task.abort();
}

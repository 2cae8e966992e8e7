//! The bounded history: fixed-size points in ring buffers, one ring per resolution (tier), for
//! all traffic and for up to 20 routes (the rest folded into `other`); the sampler's step, a
//! pure function of `now` and a counter snapshot.

use super::sample::{Delta, Snapshot, quantile_ms};

/// Sampling period.
pub(crate) const STEP_SECS: u64 = 10;
/// Routes with a series of their own; the others share `other`.
pub(crate) const MAX_ROUTES: usize = 20;
/// The name of the series of every route past the first [`MAX_ROUTES`] (and of requests no
/// route took).
pub(crate) const OTHER: &str = "other";
/// The bound the whole history stays under.
pub(crate) const MAX_BYTES: usize = 512 * 1024;

/// Tiers of the all-traffic series: 10 s points for an hour, 1 min points for a day, 1 h
/// points for 30 days.
pub(crate) const TOTAL_TIERS: [(u64, usize); 3] = [(10, 360), (60, 1440), (3600, 720)];
/// Tiers of a per-route series. Coarser than the totals' so that 21 series fit the 512 KiB
/// bound (at the totals' resolution one route series alone takes 2,520 points = 131 KB):
/// 1 min points for an hour, 10 min points for a day, 6 h points for 30 days.
pub(crate) const ROUTE_TIERS: [(u64, usize); 3] = [(60, 60), (600, 144), (21600, 120)];

/// Quantiles stored per point: p50, p95, p99 of hit, miss and upstream latency.
const QS: [f64; 3] = [0.5, 0.95, 0.99];

/// A missing quantile (no observations) as stored.
const NO_Q: u16 = 0x7FC0;

/// Milliseconds as a bfloat16 (f32's upper half, rounded to nearest even): 8 significant
/// bits are ample for a chart and halve the point.
fn to_bf16(v: Option<f64>) -> u16 {
    let Some(v) = v.filter(|v| v.is_finite() && *v >= 0.0) else {
        return NO_Q;
    };
    let bits = (v as f32).to_bits();
    let rounded = bits.saturating_add(0x7FFF + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

fn from_bf16(b: u16) -> Option<f64> {
    let v = f32::from_bits((b as u32) << 16);
    v.is_finite().then_some(v as f64)
}

/// Counter slots of a [`Point`].
#[derive(Clone, Copy)]
enum C {
    Errors = 5,
    Coalesced = 6,
    /// Upstream latency observations: the weight of the upstream p50 in a roll-up.
    Upstream = 7,
}

/// One interval of one series, fixed size (52 bytes): counters saturate at `u32::MAX`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub(crate) struct Point {
    /// hit, stale, miss, revalidated, uncacheable (`CacheClass` order), 5xx, coalesced,
    /// upstream observations.
    counts: [u32; 8],
    /// Breaker transitions.
    changes: u16,
    /// p50/p95/p99 of hit, miss, upstream latency in ms (bfloat16).
    q: [u16; 9],
}

impl Default for Point {
    fn default() -> Self {
        Self {
            counts: [0; 8],
            changes: 0,
            q: [NO_Q; 9],
        }
    }
}

fn sat(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Point {
    /// The point of one interval's change.
    pub(crate) fn from_delta(d: &Delta) -> Self {
        let mut p = Point::default();
        for i in 0..5 {
            p.counts[i] = sat(d.classes[i]);
        }
        p.counts[C::Errors as usize] = sat(d.errors);
        p.counts[C::Coalesced as usize] = sat(d.coalesced);
        p.counts[C::Upstream as usize] = sat(d.upstream.iter().sum());
        p.changes = u16::try_from(d.changes).unwrap_or(u16::MAX);
        for (g, b) in [&d.hit, &d.miss, &d.upstream].into_iter().enumerate() {
            for (j, q) in QS.iter().enumerate() {
                p.q[g * 3 + j] = to_bf16(quantile_ms(b, *q));
            }
        }
        p
    }

    /// Requests by cache class.
    pub(crate) fn classes(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for (o, c) in out.iter_mut().zip(&self.counts) {
            *o = *c as u64;
        }
        out
    }

    /// 5xx responses.
    pub(crate) fn errors(&self) -> u64 {
        self.counts[C::Errors as usize] as u64
    }

    /// Coalesced requests.
    pub(crate) fn coalesced(&self) -> u64 {
        self.counts[C::Coalesced as usize] as u64
    }

    /// Breaker transitions.
    pub(crate) fn changes(&self) -> u64 {
        self.changes as u64
    }

    /// p50/p95/p99 (ms) of group `g`: 0 hit, 1 miss, 2 upstream.
    pub(crate) fn quantiles(&self, g: usize) -> [Option<f64>; 3] {
        [
            from_bf16(self.q[g * 3]),
            from_bf16(self.q[g * 3 + 1]),
            from_bf16(self.q[g * 3 + 2]),
        ]
    }

    /// The weight of group `g`'s quantiles: its number of observations.
    fn weight(&self, g: usize) -> u64 {
        match g {
            0 => self.counts[0] as u64,
            1 => self.counts[2] as u64,
            _ => self.counts[C::Upstream as usize] as u64,
        }
    }
}

/// A point being built from finer ones. Counts add up. Quantiles of the finer points cannot
/// be merged exactly (their histograms are gone), so: p50 is their mean weighted by the
/// observations behind each; p95 and p99 are their maximum, an upper bound that keeps a
/// short tail spike visible after the roll-up.
#[derive(Clone, Debug, Default)]
struct Acc {
    counts: [u64; 8],
    changes: u64,
    /// Per group: weighted p50 sum, its weight.
    p50: [(f64, u64); 3],
    /// Per group: max p95, max p99.
    tail: [[Option<f64>; 2]; 3],
}

impl Acc {
    fn add(&mut self, p: &Point) {
        for (a, c) in self.counts.iter_mut().zip(&p.counts) {
            *a += *c as u64;
        }
        self.changes += p.changes as u64;
        for g in 0..3 {
            let [p50, p95, p99] = p.quantiles(g);
            let w = p.weight(g);
            if let Some(v) = p50
                && w > 0
            {
                self.p50[g].0 += v * w as f64;
                self.p50[g].1 += w;
            }
            for (slot, v) in self.tail[g].iter_mut().zip([p95, p99]) {
                if let Some(v) = v {
                    *slot = Some(slot.map_or(v, |s: f64| s.max(v)));
                }
            }
        }
    }

    fn point(&self) -> Point {
        let mut p = Point::default();
        for (o, c) in p.counts.iter_mut().zip(&self.counts) {
            *o = sat(*c);
        }
        p.changes = u16::try_from(self.changes).unwrap_or(u16::MAX);
        for g in 0..3 {
            let (sum, w) = self.p50[g];
            p.q[g * 3] = to_bf16((w > 0).then(|| sum / w as f64));
            p.q[g * 3 + 1] = to_bf16(self.tail[g][0]);
            p.q[g * 3 + 2] = to_bf16(self.tail[g][1]);
        }
        p
    }
}

/// One resolution: closed points in a ring, and the open one being filled.
#[derive(Debug)]
pub(crate) struct Tier {
    /// Seconds per point.
    pub(crate) step: u64,
    ring: Box<[Point]>,
    /// Index of the oldest closed point.
    start: usize,
    /// Closed points held.
    len: usize,
    /// Start of the newest closed point.
    last_t: u64,
    /// Start of the open point, and the open point.
    open: Option<(u64, Acc)>,
}

/// A point of a view: start time, values, and whether its interval is still running.
pub(crate) type Viewed = (u64, Point, bool);

impl Tier {
    fn new(step: u64, cap: usize) -> Self {
        Self {
            step,
            ring: vec![Point::default(); cap].into_boxed_slice(),
            start: 0,
            len: 0,
            last_t: 0,
            open: None,
        }
    }

    fn push_closed(&mut self, t: u64, p: Point) {
        let cap = self.ring.len();
        if self.len > 0 && t > self.last_t {
            // Empty intervals between (the sampler was held up): zero points keep the ring's
            // times contiguous; at most a ring's worth.
            let gap = ((t - self.last_t) / self.step).saturating_sub(1) as usize;
            for _ in 0..gap.min(cap) {
                self.push_raw(Point::default());
            }
        }
        self.push_raw(p);
        self.last_t = t;
    }

    fn push_raw(&mut self, p: Point) {
        let cap = self.ring.len();
        let at = (self.start + self.len) % cap;
        self.ring[at] = p;
        if self.len < cap {
            self.len += 1;
        } else {
            self.start = (self.start + 1) % cap;
        }
    }

    /// Adds a 10 s point starting at `t` to the point of this tier's interval holding `t`.
    fn add(&mut self, t: u64, p: &Point) {
        let slot = t - t % self.step;
        match &mut self.open {
            Some((open_t, acc)) if *open_t >= slot => acc.add(p),
            _ => {
                if let Some((open_t, acc)) = self.open.take() {
                    self.push_closed(open_t, acc.point());
                }
                let mut acc = Acc::default();
                acc.add(p);
                self.open = Some((slot, acc));
            }
        }
    }

    /// The points ending after `from`, oldest first, with `live` (the interval the
    /// sampler has not closed yet) merged in; a point whose interval ends after `now` is
    /// partial.
    fn view(&self, from: u64, now: u64, live: Option<(u64, &Point)>) -> Vec<Viewed> {
        let cap = self.ring.len();
        let mut out: Vec<Viewed> = Vec::new();
        for i in 0..self.len {
            let t = self
                .last_t
                .saturating_sub((self.len - 1 - i) as u64 * self.step);
            if t + self.step > from {
                out.push((t, self.ring[(self.start + i) % cap], false));
            }
        }
        let mut open = self.open.clone();
        if let Some((lt, lp)) = live {
            let slot = lt - lt % self.step;
            match &mut open {
                Some((ot, acc)) if *ot >= slot => acc.add(lp),
                _ => {
                    if let Some((ot, acc)) = open.take()
                        && ot + self.step > from
                    {
                        out.push((ot, acc.point(), ot + self.step > now));
                    }
                    let mut acc = Acc::default();
                    acc.add(lp);
                    open = Some((slot, acc));
                }
            }
        }
        if let Some((ot, acc)) = open
            && ot + self.step > from
        {
            out.push((ot, acc.point(), ot + self.step > now));
        }
        // Intervals the sampler skipped are empty points, as the ring will hold them.
        let mut filled: Vec<Viewed> = Vec::with_capacity(out.len());
        for v in out {
            if let Some(&(prev, _, _)) = filled.last() {
                let mut t = prev + self.step;
                while t < v.0 && filled.len() < cap + 2 {
                    filled.push((t, Point::default(), false));
                    t += self.step;
                }
            }
            filled.push(v);
        }
        filled
    }

    /// Closed points held, and the ring's capacity.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.len, self.ring.len())
    }

    /// Bytes of its ring (the struct itself is inside its series).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.ring)
    }
}

/// The tiers of one series.
#[derive(Debug)]
pub(crate) struct Series {
    /// Finest first.
    pub(crate) tiers: [Tier; 3],
}

impl Series {
    fn new(spec: [(u64, usize); 3]) -> Self {
        Self {
            tiers: spec.map(|(step, cap)| Tier::new(step, cap)),
        }
    }

    fn add(&mut self, t: u64, p: &Point) {
        for tier in &mut self.tiers {
            tier.add(t, p);
        }
    }

    /// Tier `i`'s points from `from`, with `live` merged in.
    pub(crate) fn view(
        &self,
        i: usize,
        from: u64,
        now: u64,
        live: Option<(u64, &Point)>,
    ) -> Vec<Viewed> {
        self.tiers[i].view(from, now, live)
    }

    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.tiers.iter().map(Tier::heap_bytes).sum()
    }
}

/// The 10 s points of one interval, for every series.
#[derive(Debug, Default)]
pub(crate) struct Points {
    /// All traffic.
    pub(crate) total: Point,
    /// By route series index.
    pub(crate) routes: Vec<Point>,
    /// The `other` series.
    pub(crate) other: Point,
}

/// The whole history: all traffic, the route series and `other`, and the snapshot the next
/// interval is measured from.
#[derive(Debug)]
pub(crate) struct Rings {
    total: Series,
    routes: Vec<(String, Series)>,
    other: Series,
    /// Counters at the last step (the start of the live interval).
    prev: Snapshot,
    /// When the last step was taken (process start before the first).
    last_t: u64,
}

impl Rings {
    /// Empty, measured from `since` (unix seconds; every counter is zero then).
    pub(crate) fn new(since: u64) -> Self {
        Self {
            total: Series::new(TOTAL_TIERS),
            routes: Vec::with_capacity(MAX_ROUTES),
            other: Series::new(ROUTE_TIERS),
            prev: Snapshot::default(),
            last_t: since,
        }
    }

    /// The names of the route series, in the order they were given one, then `other`.
    pub(crate) fn route_names(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|(n, _)| n.clone())
            .chain(std::iter::once(OTHER.to_string()))
            .collect()
    }

    /// The series of `route` (`None`: all traffic); `None` when it has none (an unknown
    /// name; a route past the 20 is in `other`).
    pub(crate) fn series(&self, route: Option<&str>) -> Option<&Series> {
        match route {
            None => Some(&self.total),
            Some(OTHER) => Some(&self.other),
            Some(r) => self.routes.iter().find(|(n, _)| n == r).map(|(_, s)| s),
        }
    }

    /// Gives route series to routes of `snap`'s config (in its order) while there is room.
    pub(crate) fn assign(&mut self, snap: &Snapshot) {
        for name in &snap.order {
            if self.routes.len() >= MAX_ROUTES {
                break;
            }
            if name != OTHER && !self.routes.iter().any(|(n, _)| n == name) {
                self.routes.push((name.clone(), Series::new(ROUTE_TIERS)));
            }
        }
    }

    /// The points of the interval from the last step to `snap`, for every series: counts are
    /// the snapshots' differences; a series' upstream latency and breaker changes are those of
    /// the upstreams its routes use (all upstreams for all traffic).
    pub(crate) fn points(&self, snap: &Snapshot) -> Points {
        let mut total = Delta::default();
        let mut routes = vec![Delta::default(); self.routes.len()];
        let mut other = Delta::default();
        let mut upstreams_of: Vec<Vec<&str>> = vec![Vec::new(); self.routes.len() + 1];
        for (name, now) in &snap.routes {
            let before = self.prev.routes.get(name);
            total.add_route(now, before);
            let i = self.routes.iter().position(|(n, _)| n == name);
            let d = match i {
                Some(i) => &mut routes[i],
                None => &mut other,
            };
            d.add_route(now, before);
            if let Some(u) = snap.route_upstream.get(name) {
                let ups = &mut upstreams_of[i.unwrap_or(self.routes.len())];
                if !ups.contains(&u.as_str()) {
                    ups.push(u);
                }
            }
        }
        for (name, now) in &snap.upstreams {
            total.add_upstream(now, self.prev.upstreams.get(name));
        }
        for (i, ups) in upstreams_of.iter().enumerate() {
            let d = routes.get_mut(i).unwrap_or(&mut other);
            for u in ups {
                if let Some(now) = snap.upstreams.get(*u) {
                    d.add_upstream(now, self.prev.upstreams.get(*u));
                }
            }
        }
        Points {
            total: Point::from_delta(&total),
            routes: routes.iter().map(Point::from_delta).collect(),
            other: Point::from_delta(&other),
        }
    }

    /// The start of the interval the next step closes (on the 10 s grid).
    pub(crate) fn live_t(&self) -> u64 {
        self.last_t - self.last_t % STEP_SECS
    }

    /// The sampler's step at `now` with the counters `snap`: one 10 s point per series for the
    /// interval since the last step, added to every tier.
    pub(crate) fn step(&mut self, now: u64, snap: Snapshot) {
        self.assign(&snap);
        let t = self.live_t();
        let pts = self.points(&snap);
        self.total.add(t, &pts.total);
        for ((_, s), p) in self.routes.iter_mut().zip(&pts.routes) {
            s.add(t, p);
        }
        self.other.add(t, &pts.other);
        self.prev = snap;
        self.last_t = now.max(self.last_t);
    }

    /// Bytes held by the rings: the structs, the points, the route series' slots and names.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.total.heap_bytes()
            + self.other.heap_bytes()
            + self.routes.capacity() * std::mem::size_of::<(String, Series)>()
            + self
                .routes
                .iter()
                .map(|(n, s)| n.capacity() + s.heap_bytes())
                .sum::<usize>()
    }

    /// The bound of [`Rings::bytes`] from the point size and the tier capacities, with every
    /// route slot used, less the route names (config text, some bytes each).
    pub(crate) const fn max_bytes() -> usize {
        const fn points(spec: [(u64, usize); 3]) -> usize {
            spec[0].1 + spec[1].1 + spec[2].1
        }
        std::mem::size_of::<Self>()
            + std::mem::size_of::<Point>()
                * (points(TOTAL_TIERS) + (MAX_ROUTES + 1) * points(ROUTE_TIERS))
            + MAX_ROUTES * std::mem::size_of::<(String, Series)>()
    }
}

// The bound holds by construction (and `tests.rs` measures a full history against it).
const _: () = assert!(Rings::max_bytes() <= MAX_BYTES);

/// Buckets with `n` observations at `ms` (test helper).
#[cfg(test)]
pub(crate) fn buckets_at(ms: f64, n: u64) -> super::sample::Buckets {
    use super::sample::NB;
    let bounds = crate::telemetry::metrics::latency_buckets();
    let i = bounds
        .iter()
        .position(|b| ms / 1000.0 <= *b)
        .unwrap_or(NB - 1);
    let mut out = [0; NB];
    out[i] = n;
    out
}

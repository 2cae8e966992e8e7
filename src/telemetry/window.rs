//! Request statistics over a recent window (ten-second buckets) and since start, for
//! `GET /admin/status`: counts by cache class, 5xx, bytes, and a histogram of the time to the
//! response head (first byte).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::metrics::CacheClass;

const BUCKET_SECS: u64 = 10;
const BUCKETS: usize = 60;
/// Latency bucket upper bounds in microseconds.
const LAT_US: [u64; 16] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
    u64::MAX,
];

#[derive(Debug, Default)]
struct Bucket {
    epoch: AtomicU64,
    requests: AtomicU64,
    classes: [AtomicU64; 5],
    errors: AtomicU64,
    bytes: AtomicU64,
    latency_sum_us: AtomicU64,
    latency: [AtomicU64; 16],
}

impl Bucket {
    fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.classes
            .iter()
            .for_each(|c| c.store(0, Ordering::Relaxed));
        self.errors.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.latency_sum_us.store(0, Ordering::Relaxed);
        self.latency
            .iter()
            .for_each(|c| c.store(0, Ordering::Relaxed));
    }

    fn add(&self, class: CacheClass, server_error: bool, bytes: u64, us: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.classes[class as usize].fetch_add(1, Ordering::Relaxed);
        if server_error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let i = LAT_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LAT_US.len() - 1);
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The windowed statistics.
#[derive(Debug)]
pub struct Window {
    buckets: Vec<Bucket>,
    total: Bucket,
}

/// A summary over some span.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Requests.
    pub requests: u64,
    /// Fresh hits.
    pub hits: u64,
    /// Stale served.
    pub stale: u64,
    /// Misses.
    pub misses: u64,
    /// Revalidated (304 from the origin).
    pub revalidated: u64,
    /// Not cacheable (`no-store`, `private`, pass, bypass, no route).
    pub uncacheable: u64,
    /// Requests that could have been hits: all but the uncacheable ones.
    pub cacheable_requests: u64,
    /// uncacheable / requests.
    pub uncacheable_share: f64,
    /// Responses with 5xx.
    pub errors_5xx: u64,
    /// Response body bytes (declared lengths).
    pub bytes: u64,
    /// (hits + stale + revalidated) / cacheable requests.
    pub hit_ratio: Option<f64>,
    /// 5xx / requests.
    pub error_rate: f64,
    /// Mean time to response head.
    pub latency_avg_ms: f64,
    /// p95 of the time to response head, interpolated within its bucket.
    pub latency_p95_ms: f64,
    /// p99 of the time to response head, interpolated within its bucket.
    pub latency_p99_ms: f64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

impl Window {
    /// Empty.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            total: Bucket::default(),
        }
    }

    /// Records one request.
    pub fn record(&self, class: CacheClass, status: u16, bytes: u64, elapsed: Duration) {
        let epoch = now_secs() / BUCKET_SECS + 1;
        let b = &self.buckets[(epoch as usize) % BUCKETS];
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch
            && b.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.reset();
        }
        let us = elapsed.as_micros() as u64;
        b.add(class, status >= 500, bytes, us);
        self.total.add(class, status >= 500, bytes, us);
    }

    /// Over the last `span` (rounded to buckets, at most ten minutes).
    pub fn recent(&self, span: Duration) -> Summary {
        let now = now_secs() / BUCKET_SECS + 1;
        let n = (span.as_secs().div_ceil(BUCKET_SECS)).clamp(1, BUCKETS as u64);
        let live: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| {
                let e = b.epoch.load(Ordering::Acquire);
                e + n > now && e <= now
            })
            .collect();
        summarize(&live)
    }

    /// Since start.
    pub fn total(&self) -> Summary {
        summarize(&[&self.total])
    }
}

fn summarize(bs: &[&Bucket]) -> Summary {
    let sum = |f: &dyn Fn(&Bucket) -> u64| bs.iter().map(|b| f(b)).sum::<u64>();
    let requests = sum(&|b| b.requests.load(Ordering::Relaxed));
    let class = |c: CacheClass| sum(&|b| b.classes[c as usize].load(Ordering::Relaxed));
    let (hits, stale, misses, revalidated, uncacheable) = (
        class(CacheClass::Hit),
        class(CacheClass::Stale),
        class(CacheClass::Miss),
        class(CacheClass::Revalidated),
        class(CacheClass::Uncacheable),
    );
    let errors = sum(&|b| b.errors.load(Ordering::Relaxed));
    let lat: Vec<u64> = (0..LAT_US.len())
        .map(|i| sum(&|b| b.latency[i].load(Ordering::Relaxed)))
        .collect();
    // Prometheus' `histogram_quantile`: linear within the bucket that holds the rank (from
    // 0 for the first bucket); the open-ended last bucket answers its lower bound.
    let quantile = |q: f64| -> f64 {
        if requests == 0 {
            return 0.0;
        }
        let rank = requests as f64 * q;
        let mut acc = 0u64;
        for (i, &n) in lat.iter().enumerate() {
            let below = acc;
            acc += n;
            if n > 0 && acc as f64 >= rank {
                let lower = if i == 0 { 0 } else { LAT_US[i - 1] };
                if i == LAT_US.len() - 1 {
                    return lower as f64 / 1000.0;
                }
                let frac = (rank - below as f64) / n as f64;
                return (lower as f64 + (LAT_US[i] - lower) as f64 * frac) / 1000.0;
            }
        }
        0.0
    };
    let cacheable = hits + stale + misses + revalidated;
    Summary {
        requests,
        hits,
        stale,
        misses,
        revalidated,
        uncacheable,
        cacheable_requests: cacheable,
        uncacheable_share: if requests > 0 {
            uncacheable as f64 / requests as f64
        } else {
            0.0
        },
        errors_5xx: errors,
        bytes: sum(&|b| b.bytes.load(Ordering::Relaxed)),
        hit_ratio: (cacheable > 0).then(|| (hits + stale + revalidated) as f64 / cacheable as f64),
        error_rate: if requests > 0 {
            errors as f64 / requests as f64
        } else {
            0.0
        },
        latency_avg_ms: if requests > 0 {
            sum(&|b| b.latency_sum_us.load(Ordering::Relaxed)) as f64 / requests as f64 / 1000.0
        } else {
            0.0
        },
        latency_p95_ms: quantile(0.95),
        latency_p99_ms: quantile(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_ratios_and_quantiles() {
        let w = Window::new();
        for _ in 0..90 {
            w.record(CacheClass::Hit, 200, 100, Duration::from_micros(200));
        }
        for _ in 0..10 {
            w.record(CacheClass::Miss, 503, 0, Duration::from_millis(40));
        }
        let s = w.recent(Duration::from_secs(300));
        assert_eq!(s.requests, 100);
        assert_eq!(s.hits, 90);
        assert_eq!(s.errors_5xx, 10);
        assert_eq!(s.bytes, 9000);
        assert_eq!(s.hit_ratio, Some(0.9));
        assert!((s.error_rate - 0.1).abs() < 1e-9);
        // Ranks 95 and 99 of 100: the 10 misses fill (25 ms, 50 ms] evenly.
        assert!(
            (s.latency_p95_ms - 37.5).abs() < 1e-9,
            "{}",
            s.latency_p95_ms
        );
        assert!(
            (s.latency_p99_ms - 47.5).abs() < 1e-9,
            "{}",
            s.latency_p99_ms
        );
        assert_eq!(w.total().requests, 100);
    }

    #[test]
    fn p95_is_interpolated_within_its_bucket() {
        let w = Window::new();
        for _ in 0..100 {
            w.record(CacheClass::Miss, 200, 0, Duration::from_millis(30));
        }
        let s = w.recent(Duration::from_secs(300));
        // All in (25 ms, 50 ms]: rank 95 of 100 lies 95% into the bucket.
        assert!(
            (s.latency_p95_ms - 48.75).abs() < 1e-9,
            "{}",
            s.latency_p95_ms
        );
        assert!(
            (s.latency_p99_ms - 49.75).abs() < 1e-9,
            "{}",
            s.latency_p99_ms
        );
    }
}

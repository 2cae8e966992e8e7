//! Circuit-breaker state machine for one upstream: Closed → Open → HalfOpen → Closed.
//! Pure and lock-free by itself; the caller serialises access and supplies `now`.

use std::collections::HashMap;
use std::net::IpAddr;

use tokio::time::{Duration, Instant};

/// Number of buckets the rolling window is split into.
const BUCKETS: usize = 10;
/// Floor for `retry_after`, so clients never see `Retry-After: 0`.
const MIN_RETRY: Duration = Duration::from_secs(1);
/// Distinct client addresses tracked per bucket; further ones count as one failure each.
const MAX_CLIENTS_PER_BUCKET: usize = 1024;

/// Tuning knobs for a [`Breaker`].
#[derive(Clone, Debug)]
pub(crate) struct BreakerConfig {
    /// Length of the rolling window used for the failure rate.
    pub window: Duration,
    /// Failure ratio (0.0–1.0) within the window that trips the breaker.
    pub failure_rate: f64,
    /// Minimum requests in the window before the failure rate is considered.
    pub min_requests: u32,
    /// Consecutive failures that trip the breaker regardless of rate; 0 disables.
    pub consecutive_failures: u32,
    /// Open time after the first trip; doubles on each consecutive trip.
    pub open_duration: Duration,
    /// Upper bound for the grown open time.
    pub max_open_duration: Duration,
    /// Probe requests allowed at once while half-open (at least 1 is used).
    pub half_open_probes: u32,
    /// Largest share (0..1] of the counted failures in the window one client may contribute.
    pub max_client_share: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        use crate::config::file::breaker_defaults as d;
        Self {
            window: d::WINDOW,
            failure_rate: d::FAILURE_RATE,
            min_requests: d::MIN_REQUESTS,
            consecutive_failures: d::CONSECUTIVE_FAILURES,
            open_duration: d::OPEN_DURATION,
            max_open_duration: d::MAX_OPEN_DURATION,
            half_open_probes: d::HALF_OPEN_PROBES,
            max_client_share: 1.0,
        }
    }
}

/// The externally visible breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// Traffic flows; outcomes are counted.
    Closed,
    /// Traffic is rejected.
    Open,
    /// A limited number of probes decide whether to close or re-open.
    HalfOpen,
}

impl StateKind {
    /// Stable lowercase name for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            StateKind::Closed => "closed",
            StateKind::Open => "open",
            StateKind::HalfOpen => "half_open",
        }
    }

    /// Numeric value for a state gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(&self) -> i64 {
        match self {
            StateKind::Closed => 0,
            StateKind::Open => 1,
            StateKind::HalfOpen => 2,
        }
    }
}

/// Decision for one incoming request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Forward the request; report its outcome with the same `probe` flag.
    Allowed {
        /// Whether this request occupies a half-open probe slot.
        probe: bool,
    },
    /// Reject the request; `retry_after` is a hint for the client.
    Rejected {
        /// Suggested wait before retrying (never below 1 s); `None` when nobody knows (an
        /// operator forced the breaker open).
        retry_after: Option<Duration>,
    },
}

/// A state change caused by a call, for logging and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before the call.
    pub from: StateKind,
    /// State after the call.
    pub to: StateKind,
}

/// Point-in-time view of a [`Breaker`] for admin endpoints and metrics.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Current state.
    pub state: StateKind,
    /// When the current state was entered.
    pub since: Instant,
    /// Consecutive trips since the last successful close (drives open-time growth).
    pub trips: u32,
    /// Current run of consecutive failures.
    pub consecutive_failures: u32,
    /// Requests counted in the rolling window.
    pub window_requests: u32,
    /// Failures recorded in the rolling window.
    pub window_failures: u32,
    /// Failures that count toward the rate (after the per-client cap).
    pub window_counted_failures: f64,
    /// End of the open period; `None` unless open and not forced.
    pub open_until: Option<Instant>,
    /// Whether an operator forced the breaker open.
    pub forced: bool,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    requests: u32,
    failures: u32,
    /// Failures that say the backend is down (connect), counted whoever sent the request.
    backend_failures: u32,
    /// Other failures by client address (`None`: no address known).
    by_client: HashMap<Option<IpAddr>, u32>,
    /// Failures of clients beyond `MAX_CLIENTS_PER_BUCKET`, each taken as a distinct client.
    overflow: u32,
}

/// Fixed ring of buckets; `head` is the absolute index of the newest bucket.
#[derive(Debug)]
struct Window {
    buckets: [Bucket; BUCKETS],
    bucket_nanos: u128,
    origin: Instant,
    head: u128,
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        Self {
            buckets: Default::default(),
            // max(1) keeps a zero-length window from dividing by zero.
            bucket_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            origin: now,
            head: 0,
        }
    }

    fn clear(&mut self, now: Instant) {
        self.buckets = Default::default();
        self.origin = now;
        self.head = 0;
    }

    /// Rotates the ring to `now`, zeroing buckets that fell out of the window.
    fn advance(&mut self, now: Instant) {
        let idx = now.saturating_duration_since(self.origin).as_nanos() / self.bucket_nanos;
        // A `now` older than the head (taken before the lock) lands in the head bucket.
        if idx <= self.head {
            return;
        }
        let stale = (idx - self.head).min(BUCKETS as u128);
        for i in 0..stale {
            self.buckets[((idx - i) % BUCKETS as u128) as usize] = Bucket::default();
        }
        self.head = idx;
    }

    fn record(&mut self, now: Instant, failure: Option<Failure>) {
        self.advance(now);
        let b = &mut self.buckets[(self.head % BUCKETS as u128) as usize];
        b.requests = b.requests.saturating_add(1);
        match failure {
            None => {}
            Some(Failure::Backend) => {
                b.failures = b.failures.saturating_add(1);
                b.backend_failures = b.backend_failures.saturating_add(1);
            }
            Some(Failure::Client(c)) => {
                b.failures = b.failures.saturating_add(1);
                let known = b.by_client.len() < MAX_CLIENTS_PER_BUCKET;
                match b.by_client.get_mut(&c) {
                    Some(n) => *n = n.saturating_add(1),
                    None if known => {
                        b.by_client.insert(c, 1);
                    }
                    None => b.overflow = b.overflow.saturating_add(1),
                }
            }
        }
    }

    /// Requests and failures in the window, as recorded.
    fn totals(&self) -> (u32, u32) {
        self.buckets.iter().fold((0, 0), |(r, f), b| {
            (r.saturating_add(b.requests), f.saturating_add(b.failures))
        })
    }

    /// Failures that count toward the rate: every backend failure, and client failures with
    /// no client above `share` of the counted total.
    fn counted_failures(&self, share: f64) -> f64 {
        let mut backend = 0u64;
        let mut per_client: HashMap<Option<IpAddr>, u64> = HashMap::new();
        let mut overflow = 0u64;
        for b in &self.buckets {
            backend += u64::from(b.backend_failures);
            for (c, n) in &b.by_client {
                *per_client.entry(*c).or_default() += u64::from(*n);
            }
            overflow += u64::from(b.overflow);
        }
        let mut clients: Vec<u64> = per_client.into_values().collect();
        // Clients past the per-bucket table failed once each, under any cap worth having:
        // counted in full, without one entry apiece.
        counted((backend + overflow) as f64, &mut clients, share)
    }
}

/// The largest `F` with `F = backend + Σ min(f_c, share·F)`: the most failures that can be
/// counted with no client above `share` of them. The top `k` clients are capped at `share·F`
/// and the rest counted in full, so `F = (backend + rest) / (1 − k·share)`; the first `k`
/// whose caps are consistent wins.
pub(crate) fn counted(backend: f64, clients: &mut [u64], share: f64) -> f64 {
    clients.sort_unstable_by(|a, b| b.cmp(a));
    let total: f64 = clients.iter().map(|&n| n as f64).sum();
    let mut capped_sum = 0.0;
    for k in 0..=clients.len() {
        let denom = 1.0 - k as f64 * share;
        if denom <= 0.0 {
            break;
        }
        let f = (backend + total - capped_sum) / denom;
        let cap = share * f;
        let capped_ok = clients[..k].iter().all(|&n| n as f64 >= cap);
        let rest_ok = clients.get(k).is_none_or(|&n| n as f64 <= cap + 1e-9);
        if capped_ok && rest_ok {
            return f;
        }
        if let Some(&n) = clients.get(k) {
            capped_sum += n as f64;
        }
    }
    // No consistent cap: only the backend's own failures count (and they cap every client).
    backend
}

/// Why a request failed, for the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The backend could not be reached.
    Backend,
    /// A failure status, timeout or reset of a request from this client.
    Client(Option<IpAddr>),
}

/// The circuit-breaker state machine. Not thread-safe by itself.
#[derive(Debug)]
pub(crate) struct Breaker {
    cfg: BreakerConfig,
    kind: StateKind,
    since: Instant,
    trips: u32,
    consecutive: u32,
    window: Window,
    open_until: Option<Instant>,
    forced: bool,
    probes_in_flight: u32,
    /// Clients whose half-open probes failed by status, timeout or reset since the last trip:
    /// one client alone cannot keep the breaker open.
    probe_failures: Vec<Option<IpAddr>>,
}

impl Breaker {
    /// Creates a closed breaker with an empty window.
    pub(crate) fn new(cfg: BreakerConfig, now: Instant) -> Self {
        let window = Window::new(cfg.window, now);
        Self {
            cfg,
            kind: StateKind::Closed,
            since: now,
            trips: 0,
            consecutive: 0,
            window,
            open_until: None,
            forced: false,
            probes_in_flight: 0,
            probe_failures: Vec::new(),
        }
    }

    /// The configuration this breaker was built with.
    #[cfg(test)]
    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// Decides whether a request may proceed; may move Open → HalfOpen.
    pub(crate) fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let mut transition = None;
        if self.kind == StateKind::Open {
            if self.forced {
                // Open until an operator says otherwise: no time to promise.
                return (Admission::Rejected { retry_after: None }, None);
            }
            let until = self.open_until.unwrap_or(now);
            if now < until {
                let retry_after = Some((until - now).max(MIN_RETRY));
                return (Admission::Rejected { retry_after }, None);
            }
            self.probes_in_flight = 0;
            transition = self.enter(StateKind::HalfOpen, now);
        }
        let admission = match self.kind {
            StateKind::Closed => Admission::Allowed { probe: false },
            _ if self.probes_in_flight < self.cfg.half_open_probes.max(1) => {
                self.probes_in_flight += 1;
                Admission::Allowed { probe: true }
            }
            _ => Admission::Rejected {
                retry_after: Some(MIN_RETRY),
            },
        };
        (admission, transition)
    }

    /// Records a successful request; a half-open probe success closes the breaker.
    pub(crate) fn on_success(&mut self, now: Instant, probe: bool) -> Option<Transition> {
        match (self.kind, probe) {
            (StateKind::HalfOpen, true) => {
                self.release_probe();
                // A proven recovery resets open-time growth.
                self.trips = 0;
                self.close(now)
            }
            (StateKind::Closed, false) => {
                self.window.record(now, None);
                self.consecutive = 0;
                None
            }
            // Stale outcomes from an earlier state must not move this one.
            _ => None,
        }
    }

    /// Records a failure to reach the backend (connect refused or timed out, TLS handshake):
    /// counted in the run of consecutive failures and in the rate, whoever sent the request.
    /// May trip Closed → Open or HalfOpen → Open.
    pub(crate) fn on_failure(&mut self, now: Instant, probe: bool) -> Option<Transition> {
        self.failed(now, probe, Failure::Backend)
    }

    /// Records a failure status, timeout or reset of a request from `client`: counted only
    /// through the rate, and no client beyond `max_client_share` of the counted failures.
    pub(crate) fn on_request_failure(
        &mut self,
        now: Instant,
        probe: bool,
        client: Option<IpAddr>,
    ) -> Option<Transition> {
        self.failed(now, probe, Failure::Client(client))
    }

    fn failed(&mut self, now: Instant, probe: bool, failure: Failure) -> Option<Transition> {
        match (self.kind, probe) {
            (StateKind::HalfOpen, true) => {
                self.release_probe();
                match failure {
                    Failure::Backend => self.trip(now),
                    // A failure status says the backend is still sick only when it is not one
                    // client's: it trips once a second client's probe fails too (or at once
                    // when a single client may count in full, `max_client_share` 1).
                    Failure::Client(c) => {
                        if !self.probe_failures.contains(&c) {
                            self.probe_failures.push(c);
                        }
                        if self.cfg.max_client_share >= 1.0 || self.probe_failures.len() >= 2 {
                            self.trip(now)
                        } else {
                            None
                        }
                    }
                }
            }
            (StateKind::Closed, false) => {
                self.window.record(now, Some(failure));
                if failure == Failure::Backend {
                    self.consecutive = self.consecutive.saturating_add(1);
                }
                // Rate is only checked on failures: a success never trips the breaker.
                let (requests, _) = self.window.totals();
                let by_rate = requests >= self.cfg.min_requests.max(1)
                    && self.window.counted_failures(self.cfg.max_client_share)
                        / f64::from(requests)
                        >= self.cfg.failure_rate;
                let by_run = self.cfg.consecutive_failures > 0
                    && self.consecutive >= self.cfg.consecutive_failures;
                if by_rate || by_run {
                    self.trip(now)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Records a cancelled request: no outcome counted, but its probe slot is freed.
    pub(crate) fn on_cancel(&mut self, probe: bool) {
        if probe && self.kind == StateKind::HalfOpen {
            self.release_probe();
        }
    }

    /// Opens the breaker until [`Breaker::force_close`] or [`Breaker::reset`].
    pub(crate) fn force_open(&mut self, now: Instant) -> Option<Transition> {
        self.forced = true;
        self.open_until = None;
        self.enter(StateKind::Open, now)
    }

    /// Closes the breaker and clears counters, keeping the trip count.
    pub(crate) fn force_close(&mut self, now: Instant) -> Option<Transition> {
        self.close(now)
    }

    /// Closes the breaker and clears counters and the trip count.
    pub(crate) fn reset(&mut self, now: Instant) -> Option<Transition> {
        self.trips = 0;
        self.close(now)
    }

    /// The current state (an elapsed open period only ends at the next `admit`).
    pub(crate) fn state(&self) -> StateKind {
        self.kind
    }

    /// A copy of the current state and counters.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let (window_requests, window_failures) = self.window.totals();
        Snapshot {
            state: self.kind,
            since: self.since,
            trips: self.trips,
            consecutive_failures: self.consecutive,
            window_requests,
            window_failures,
            window_counted_failures: self.window.counted_failures(self.cfg.max_client_share),
            open_until: self.open_until,
            forced: self.forced,
        }
    }

    /// Open time for the current trip count: doubled per consecutive trip, capped.
    fn open_for(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.trips.saturating_sub(1));
        self.cfg
            .open_duration
            .saturating_mul(factor)
            .min(self.cfg.max_open_duration)
    }

    fn trip(&mut self, now: Instant) -> Option<Transition> {
        self.probe_failures.clear();
        self.trips = self.trips.saturating_add(1);
        self.open_until = Some(now + self.open_for());
        self.enter(StateKind::Open, now)
    }

    fn close(&mut self, now: Instant) -> Option<Transition> {
        self.forced = false;
        self.open_until = None;
        self.consecutive = 0;
        self.probes_in_flight = 0;
        self.probe_failures.clear();
        self.window.clear(now);
        self.enter(StateKind::Closed, now)
    }

    fn release_probe(&mut self) {
        self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
    }

    /// Switches state, reporting a transition only when the kind actually changes.
    fn enter(&mut self, to: StateKind, now: Instant) -> Option<Transition> {
        let from = self.kind;
        if from == to {
            return None;
        }
        self.kind = to;
        self.since = now;
        Some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests;

//! Upstream and breaker metrics: outcomes and latency recorded by the breaker and the forwarder,
//! breaker state and transitions read from the current breakers at scrape time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::Breakers;
use crate::telemetry::metrics::{OnScrape, counter_vec, latency_vec, set_counter};

/// Upstream outcome label values.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UpstreamOutcome {
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

/// Pre-resolved handles of one upstream.
#[derive(Debug)]
struct UpstreamHandles {
    outcomes: Vec<IntCounter>,
    duration: Histogram,
}

/// Upstream outcomes and latency. Per-upstream label handles are resolved once (at start and
/// on reload), so the hot path only bumps atomics.
pub(crate) struct UpstreamMetrics {
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstreams: ArcSwap<Vec<UpstreamHandles>>,
}

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamMetrics").finish_non_exhaustive()
    }
}

impl UpstreamMetrics {
    /// Registers the upstream metrics on `r`.
    pub(crate) fn new(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            upstream_requests: counter_vec(
                r,
                "seawall_upstream_requests_total",
                "Upstream requests by outcome.",
                &["upstream", "outcome"],
            )?,
            upstream_duration: latency_vec(
                r,
                "seawall_upstream_duration_seconds",
                "Upstream time to response head.",
                &["upstream"],
            )?,
            upstreams: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// Resolves handles for the current upstreams (at start and on reload).
    pub(crate) fn bind(&self, upstreams: &[String]) {
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

    /// Records one upstream outcome; the latency only when the request reached the upstream
    /// (a breaker rejection or our own concurrency cap would drag the histogram to zero).
    pub(crate) fn upstream(&self, idx: usize, outcome: UpstreamOutcome, elapsed: Duration) {
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
}

/// Registers `seawall_breaker_state` and `seawall_breaker_transitions_total`, read at scrape
/// time from the breakers `current` returns: a reload rebuilds them, so they are looked up
/// each time rather than held.
pub(crate) fn register_breakers(
    r: &Registry,
    current: impl Fn() -> Arc<Breakers> + Send + Sync + 'static,
) -> prometheus::Result<()> {
    let breaker_state = IntGaugeVec::new(
        Opts::new(
            "seawall_breaker_state",
            "Breaker state: 0 closed, 1 open, 2 half-open.",
        ),
        &["upstream"],
    )?;
    let breaker_transitions = IntCounterVec::new(
        Opts::new(
            "seawall_breaker_transitions_total",
            "Breaker transitions by target state.",
        ),
        &["upstream", "to"],
    )?;
    OnScrape::register(
        r,
        vec![
            Box::new(breaker_state.clone()),
            Box::new(breaker_transitions.clone()),
        ],
        move || {
            let breakers = current();
            for b in breakers.all() {
                breaker_state
                    .with_label_values(&[b.upstream.as_str()])
                    .set(b.state().as_gauge());
                for (i, to) in ["closed", "open", "half_open"].iter().enumerate() {
                    set_counter(
                        &breaker_transitions.with_label_values(&[b.upstream.as_str(), to]),
                        b.transitions[i].load(Ordering::Relaxed),
                    );
                }
            }
        },
    )
}

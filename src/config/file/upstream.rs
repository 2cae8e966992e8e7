//! `[[upstreams]]` and its nested sections (breaker, retry, outlier ejection, health checks).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{dur, size};

/// `[[upstreams]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Name used by routes, metrics and logs.
    pub name: String,
    /// `http://` or `https://` base URLs.
    pub endpoints: Vec<String>,
    /// TCP (+TLS) connect deadline.
    #[serde(default = "d_connect", with = "dur")]
    pub connect_timeout: Duration,
    /// Deadline for the response head after the request was sent.
    #[serde(default = "d_ttfb", with = "dur")]
    pub ttfb_timeout: Duration,
    /// Deadline for the whole exchange, body included.
    #[serde(default = "d_total", with = "dur")]
    pub total_timeout: Duration,
    /// Longest pause between two body chunks from the upstream.
    #[serde(default = "d_body_idle", with = "dur")]
    pub body_idle_timeout: Duration,
    /// Concurrent requests at most; beyond: 503 (no unbounded queue).
    #[serde(default = "d_max_conc")]
    pub max_concurrent_requests: usize,
    /// Idle pooled connections are closed after this (keep it below the backend's).
    #[serde(default = "d_pool_idle", with = "dur")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections per endpoint at most.
    #[serde(default = "d_pool_max")]
    pub pool_max_idle: usize,
    /// PEM CA bundle for `https://` endpoints (default: the webpki roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM client certificate chain sent to `https://` endpoints that ask for one (mutual
    /// TLS); with `client_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// PEM private key of `client_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
    /// Circuit breaker.
    #[serde(default)]
    pub breaker: BreakerSection,
    /// Retries.
    #[serde(default)]
    pub retry: RetrySection,
    /// Outlier ejection.
    #[serde(default)]
    pub outlier: OutlierSection,
    /// Active health check (off unless `path` is set).
    #[serde(default)]
    pub health_check: HealthCheckSection,
}

fn d_connect() -> Duration {
    Duration::from_secs(2)
}
fn d_ttfb() -> Duration {
    Duration::from_secs(30)
}
fn d_total() -> Duration {
    Duration::from_secs(60)
}
fn d_body_idle() -> Duration {
    Duration::from_secs(30)
}
fn d_max_conc() -> usize {
    1024
}
fn d_pool_idle() -> Duration {
    Duration::from_secs(30)
}
fn d_pool_max() -> usize {
    64
}

/// `[upstreams.breaker]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Whether the breaker is active.
    pub enabled: bool,
    /// Rolling window for the failure rate.
    #[serde(with = "dur")]
    pub window: Duration,
    /// Failure rate (0..1) that opens the breaker.
    pub failure_rate: f64,
    /// Requests in the window before the rate counts.
    pub min_requests: u32,
    /// Consecutive failures to connect (refused, connect timeout, TLS handshake) that open
    /// the breaker; failure statuses, timeouts and resets count only through `failure_rate`.
    pub consecutive_failures: u32,
    /// First open period; doubles with each repeated trip.
    #[serde(with = "dur")]
    pub open_duration: Duration,
    /// Cap on the open period.
    #[serde(with = "dur")]
    pub max_open_duration: Duration,
    /// Probe requests let through while half-open.
    pub half_open_probes: u32,
    /// Upstream statuses that count as failures.
    pub failure_statuses: Vec<u16>,
    /// Largest share (0..1] of the failures counted in a window that one client address may
    /// contribute; its further failures are not counted.
    pub max_client_share: f64,
}

/// The circuit breaker's defaults, written once: the upstreams' `[upstreams.breaker]` and the
/// state machine (`breaker::state::BreakerConfig`) both read them.
pub mod breaker_defaults {
    use std::time::Duration;

    /// Rolling window of the failure rate.
    pub const WINDOW: Duration = Duration::from_secs(10);
    /// Counted failures over requests that open the breaker.
    pub const FAILURE_RATE: f64 = 0.5;
    /// Requests in the window before the rate is judged.
    pub const MIN_REQUESTS: u32 = 20;
    /// Consecutive connect failures that open the breaker.
    pub const CONSECUTIVE_FAILURES: u32 = 5;
    /// First open period.
    pub const OPEN_DURATION: Duration = Duration::from_secs(30);
    /// Longest open period (it doubles with repeated trips).
    pub const MAX_OPEN_DURATION: Duration = Duration::from_secs(300);
    /// Requests let through to probe a half-open breaker.
    pub const HALF_OPEN_PROBES: u32 = 1;
}

impl Default for BreakerSection {
    /// The state machine's defaults ([`breaker_defaults`], the one place they are written), plus
    /// what only an upstream has: failure statuses and a per-client cap (the machine's own
    /// default is no cap, for the Redis tier, which has no clients).
    fn default() -> Self {
        Self {
            enabled: true,
            window: breaker_defaults::WINDOW,
            failure_rate: breaker_defaults::FAILURE_RATE,
            min_requests: breaker_defaults::MIN_REQUESTS,
            consecutive_failures: breaker_defaults::CONSECUTIVE_FAILURES,
            open_duration: breaker_defaults::OPEN_DURATION,
            max_open_duration: breaker_defaults::MAX_OPEN_DURATION,
            half_open_probes: breaker_defaults::HALF_OPEN_PROBES,
            failure_statuses: vec![502, 503, 504],
            max_client_share: 0.2,
        }
    }
}

/// `[upstreams.retry]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Retries per request at most.
    pub max_retries: u32,
    /// Retries as a share of requests (the budget).
    pub budget_ratio: f64,
    /// Retries always allowed per second on top of the ratio.
    pub budget_min_per_sec: u32,
    /// Request bodies up to this size are kept for replay; larger ones are never retried.
    #[serde(with = "size")]
    pub max_replay_body: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            max_retries: 2,
            budget_ratio: 0.2,
            budget_min_per_sec: 3,
            max_replay_body: 64 * 1024,
        }
    }
}

/// `[upstreams.outlier]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierSection {
    /// Consecutive failures of one endpoint that eject it (0 disables ejection).
    pub consecutive_failures: u32,
    /// How long an ejected endpoint is skipped.
    #[serde(with = "dur")]
    pub ejection_time: Duration,
}

impl Default for OutlierSection {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(30),
        }
    }
}

/// `[upstreams.health_check]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckSection {
    /// Path to GET; unset disables the active check.
    pub path: Option<String>,
    /// Time between checks.
    #[serde(with = "dur")]
    pub interval: Duration,
    /// Deadline of one check.
    #[serde(with = "dur")]
    pub timeout: Duration,
}

impl Default for HealthCheckSection {
    fn default() -> Self {
        Self {
            path: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

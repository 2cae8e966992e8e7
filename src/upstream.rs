//! Upstream side: pooled HTTP/1.1 client (http and https), endpoint selection by least
//! outstanding requests with outlier ejection, deadlines, a concurrency cap and budgeted retries.
//! The pool is ours: one idle stack per endpoint, connections checked back in when their
//! response body has ended (hyper-util's legacy client spent a task, a channel and several
//! keyed map operations per request on the same). Here: the upstream and its endpoints;
//! `pool`, `balance`, `retry` and `body` hold the rest, `forward` the innermost service.

mod balance;
mod body;
mod forward;
pub(crate) mod headers;
mod pool;
mod retry;

pub(crate) use forward::{Forward, UpstreamElapsed};
use pool::{IdleConn, tls_config};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;

use crate::body::ProxyBody;
use crate::config::Config;
use crate::config::file::UpstreamSection;
use crate::error::BoxError;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Conn = http1::SendRequest<ProxyBody>;

/// One endpoint of an upstream, with the counters selection and ejection use.
#[derive(Debug)]
pub struct Endpoint {
    /// `scheme://authority`.
    pub base: Uri,
    outstanding: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the upstream's epoch until which the endpoint is skipped (0: not).
    ejected_until_ms: AtomicU64,
    /// Requests sent to this endpoint (for operators and tests).
    pub attempts: AtomicU64,
    /// Idle connections, most recently used last.
    idle: Mutex<VecDeque<IdleConn>>,
}

/// A named backend.
pub struct Upstream {
    /// Name from config.
    pub name: String,
    /// Settings.
    pub cfg: UpstreamSection,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    connector: Connector,
    limit: Arc<Semaphore>,
    rr: AtomicUsize,
    budget: TpsBudget,
    epoch: Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// All upstreams, indexed like `Config::raw.upstreams`.
#[derive(Debug)]
pub struct Upstreams {
    /// The upstreams.
    pub list: Vec<Arc<Upstream>>,
}

impl Upstreams {
    /// Builds clients for every upstream in `cfg`.
    pub fn new(cfg: &Config) -> Result<Self, BoxError> {
        let mut list = Vec::new();
        for (u, eps) in cfg.raw.upstreams.iter().zip(&cfg.endpoints) {
            list.push(Arc::new(Upstream::new(u, eps)?));
        }
        Ok(Self { list })
    }

    /// The upstream by index.
    pub fn get(&self, idx: usize) -> Option<&Arc<Upstream>> {
        self.list.get(idx)
    }
}

impl Upstream {
    fn new(cfg: &UpstreamSection, endpoints: &[Uri]) -> Result<Self, BoxError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(
                cfg.ca_file.as_deref(),
                cfg.client_cert_file
                    .as_deref()
                    .zip(cfg.client_key_file.as_deref()),
            )?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let endpoints = endpoints
            .iter()
            .map(|u| Endpoint {
                base: u.clone(),
                outstanding: AtomicUsize::new(0),
                consecutive_failures: AtomicU32::new(0),
                ejected_until_ms: AtomicU64::new(0),
                attempts: AtomicU64::new(0),
                idle: Mutex::new(VecDeque::new()),
            })
            .collect();
        Ok(Self {
            name: cfg.name.clone(),
            cfg: cfg.clone(),
            endpoints,
            connector: https,
            limit: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            rr: AtomicUsize::new(0),
            budget: TpsBudget::new(
                Duration::from_secs(10),
                cfg.retry.budget_min_per_sec,
                cfg.retry.budget_ratio as f32,
            ),
            epoch: Instant::now(),
        })
    }
}

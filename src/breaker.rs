//! Per-upstream circuit breaker layer: a thin shell over the pure `state` machine. It sits next
//! to the upstream so it sees only upstream outcomes; while open it fails fast with
//! `CircuitOpen`, which the cache layer turns into a stale copy where the rules allow.
//! It follows the backend's health, not one client's: only failures to connect count in a
//! run; other failures count through the rate, capped per client address (`ClientAddr`).

pub(crate) mod metrics;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::ProxyError;
use crate::route::Route;
use metrics::{UpstreamMetrics, UpstreamOutcome};
use state::{Admission, Breaker, BreakerConfig, Snapshot, StateKind, Transition};

/// One upstream's breaker with what operators read about it.
#[derive(Debug)]
pub struct BreakerHandle {
    /// Upstream name.
    pub upstream: String,
    machine: Mutex<Breaker>,
    failure_statuses: Vec<u16>,
    /// Transitions into closed, open, half-open.
    pub transitions: [AtomicU64; 3],
    last_transition: Mutex<Option<(SystemTime, Transition)>>,
}

/// How a request through the breaker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with a status that is not a failure.
    Success,
    /// The backend could not be reached (connect refused or timed out, TLS handshake): it is
    /// down whoever asked.
    Unreachable,
    /// A failure status, timeout or reset after the request was sent, for this client: it
    /// may be the request's doing, so it counts only through the rate, capped per client.
    Failed(Option<std::net::IpAddr>),
    /// No outcome (client gone, our own limits).
    Cancelled,
}

/// What `GET /admin/breakers` and metrics show.
#[derive(Clone, Debug)]
pub struct BreakerView {
    /// Upstream name.
    pub upstream: String,
    /// Machine snapshot.
    pub snapshot: Snapshot,
    /// Wall-clock time and kind of the last transition.
    pub last_transition: Option<(SystemTime, Transition)>,
}

fn slot(k: StateKind) -> usize {
    match k {
        StateKind::Closed => 0,
        StateKind::Open => 1,
        StateKind::HalfOpen => 2,
    }
}

impl BreakerHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, t: Option<Transition>) {
        if let Some(t) = t {
            self.transitions[slot(t.to)].fetch_add(1, Ordering::Relaxed);
            *self
                .last_transition
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some((SystemTime::now(), t));
            if t.to == StateKind::Open {
                tracing::warn!(upstream = %self.upstream, from = t.from.as_str(), "Circuit breaker opened.");
            } else {
                tracing::info!(upstream = %self.upstream, from = t.from.as_str(), to = t.to.as_str(), "Circuit breaker changed state.");
            }
        }
    }

    /// Admits or rejects a request now.
    pub fn admit(&self) -> Admission {
        let (a, t) = self.lock().admit(Instant::now());
        self.note(t);
        a
    }

    /// Records an outcome.
    pub fn record(&self, probe: bool, outcome: Outcome) {
        let now = Instant::now();
        let t = {
            let mut m = self.lock();
            match outcome {
                Outcome::Success => m.on_success(now, probe),
                Outcome::Unreachable => m.on_failure(now, probe),
                Outcome::Failed(client) => m.on_request_failure(now, probe, client),
                Outcome::Cancelled => {
                    m.on_cancel(probe);
                    None
                }
            }
        };
        self.note(t);
    }

    /// Operator override: open now and stay open.
    pub fn force_open(&self) {
        let t = self.lock().force_open(Instant::now());
        self.note(t);
    }

    /// Operator override: close now.
    pub fn force_close(&self) {
        let t = self.lock().force_close(Instant::now());
        self.note(t);
    }

    /// Operator override: closed, with trip history cleared.
    pub fn reset(&self) {
        let t = self.lock().reset(Instant::now());
        self.note(t);
    }

    /// Current state.
    pub fn state(&self) -> StateKind {
        self.lock().state()
    }

    /// For operators.
    pub fn view(&self) -> BreakerView {
        BreakerView {
            upstream: self.upstream.clone(),
            snapshot: self.lock().snapshot(),
            last_transition: *self
                .last_transition
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// All breakers, indexed like the upstreams; `None` where disabled.
#[derive(Debug)]
pub struct Breakers {
    list: Vec<Option<Arc<BreakerHandle>>>,
}

impl Breakers {
    /// From each upstream's `[upstreams.breaker]`.
    pub fn new(cfg: &Config) -> Self {
        let now = Instant::now();
        let list = cfg
            .raw
            .upstreams
            .iter()
            .map(|u| {
                let b = &u.breaker;
                b.enabled.then(|| {
                    Arc::new(BreakerHandle {
                        upstream: u.name.clone(),
                        machine: Mutex::new(Breaker::new(
                            BreakerConfig {
                                window: b.window,
                                failure_rate: b.failure_rate,
                                min_requests: b.min_requests,
                                consecutive_failures: b.consecutive_failures,
                                open_duration: b.open_duration,
                                max_open_duration: b.max_open_duration,
                                half_open_probes: b.half_open_probes,
                                max_client_share: b.max_client_share,
                            },
                            now,
                        )),
                        failure_statuses: b.failure_statuses.clone(),
                        transitions: Default::default(),
                        last_transition: Mutex::new(None),
                    })
                })
            })
            .collect();
        Self { list }
    }

    /// Carries the transition counts of same-named upstreams over from the previous generation,
    /// so the exported counters never go backwards across a reload.
    pub fn inherit_counts(&self, old: &Breakers) {
        for b in self.all() {
            if let Some(o) = old.by_name(&b.upstream) {
                for (i, c) in b.transitions.iter().enumerate() {
                    c.fetch_add(o.transitions[i].load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
    }

    /// The breaker of upstream `idx`.
    pub fn get(&self, idx: usize) -> Option<&Arc<BreakerHandle>> {
        self.list.get(idx).and_then(Option::as_ref)
    }

    /// By upstream name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<BreakerHandle>> {
        self.list.iter().flatten().find(|b| b.upstream == name)
    }

    /// Every enabled breaker.
    pub fn all(&self) -> impl Iterator<Item = &Arc<BreakerHandle>> {
        self.list.iter().flatten()
    }
}

/// The layer.
#[derive(Clone, Debug)]
pub(crate) struct BreakerLayer {
    breakers: Arc<Breakers>,
    metrics: Option<Arc<UpstreamMetrics>>,
}

impl BreakerLayer {
    /// A layer over the shared breakers.
    pub(crate) fn new(breakers: Arc<Breakers>, metrics: Option<Arc<UpstreamMetrics>>) -> Self {
        Self { breakers, metrics }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            breakers: self.breakers.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    breakers: Arc<Breakers>,
    metrics: Option<Arc<UpstreamMetrics>>,
}

/// Releases a probe slot when a request ends without an outcome (client gone).
struct Pending {
    handle: Arc<BreakerHandle>,
    probe: bool,
    done: bool,
    client: Option<std::net::IpAddr>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.handle.record(self.probe, Outcome::Cancelled);
        }
    }
}

pin_project_lite::pin_project! {
    /// The breaker's future: the inner call with its admission recorded when it ends, or an
    /// immediate rejection. No allocation.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            fut: F,
            // None when the upstream has no breaker.
            pending: Option<Pending>,
        },
        Rejected {
            err: Option<ProxyError>,
        },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, ProxyError>>,
{
    type Output = Result<Response<ProxyBody>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut, pending } => {
                let res = std::task::ready!(fut.poll(cx));
                if let Some(p) = pending {
                    let outcome = match &res {
                        Ok(r) if p.handle.failure_statuses.contains(&r.status().as_u16()) => {
                            Outcome::Failed(p.client)
                        }
                        Ok(_) => Outcome::Success,
                        Err(
                            ProxyError::UpstreamConnect(_)
                            | ProxyError::UpstreamTimeout(crate::error::TimeoutPhase::Connect),
                        ) => Outcome::Unreachable,
                        Err(e) if e.is_upstream_failure() => Outcome::Failed(p.client),
                        // Our own limits and client trouble say nothing about the upstream.
                        Err(_) => Outcome::Cancelled,
                    };
                    p.done = true;
                    p.handle.record(p.probe, outcome);
                }
                Poll::Ready(res)
            }
            StateProj::Rejected { err } => Poll::Ready(Err(err
                .take()
                .unwrap_or(ProxyError::Internal("breaker future polled again")))),
        }
    }
}

impl<S> Service<Request<ProxyBody>> for CircuitBreaker<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = ResponseFuture<tower::util::Oneshot<S, Request<ProxyBody>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let upstream = req.extensions().get::<Arc<Route>>().map(|r| r.upstream);
        let client = req
            .extensions()
            .get::<crate::http_util::ClientAddr>()
            .map(|c| c.0);
        let pending = match upstream.and_then(|u| self.breakers.get(u)) {
            None => None,
            Some(handle) => match handle.admit() {
                Admission::Rejected { retry_after } => {
                    if let (Some(m), Some(u)) = (&self.metrics, upstream) {
                        m.upstream(u, UpstreamOutcome::CircuitOpen, std::time::Duration::ZERO);
                    }
                    return ResponseFuture {
                        state: State::Rejected {
                            err: Some(ProxyError::CircuitOpen { retry_after }),
                        },
                    };
                }
                Admission::Allowed { probe } => Some(Pending {
                    handle: handle.clone(),
                    probe,
                    done: false,
                    client,
                }),
            },
        };
        ResponseFuture {
            state: State::Called {
                fut: self.inner.clone().oneshot(req),
                pending,
            },
        }
    }
}

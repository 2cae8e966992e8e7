//! Endpoint selection by least outstanding requests, outlier ejection after consecutive
//! failures, and the active health check that ejects and readmits.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Request, header};

use super::Upstream;
use crate::body::ProxyBody;

impl Upstream {
    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether the endpoint is currently ejected.
    pub fn is_ejected(&self, idx: usize) -> bool {
        self.endpoints
            .get(idx)
            .is_some_and(|e| e.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms())
    }

    /// Least outstanding requests among endpoints not ejected and not in `skip`; round robin
    /// breaks ties. When every endpoint is ejected, ejection is ignored (better a chance than none).
    pub(super) fn pick(&self, skip: &[usize]) -> usize {
        let n = self.endpoints.len();
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut best: Option<(usize, usize)> = None;
        for pass in 0..2 {
            for k in 0..n {
                let i = (start + k) % n;
                let e = &self.endpoints[i];
                if skip.contains(&i) && skip.len() < n {
                    continue;
                }
                if pass == 0 && e.ejected_until_ms.load(Ordering::Relaxed) > now {
                    continue;
                }
                let load = e.outstanding.load(Ordering::Relaxed);
                if best.is_none_or(|(_, l)| load < l) {
                    best = Some((i, load));
                }
            }
            if best.is_some() {
                break;
            }
        }
        best.map_or(start % n, |(i, _)| i)
    }

    /// Records an endpoint outcome for outlier ejection.
    pub fn record_endpoint(&self, idx: usize, ok: bool) {
        let Some(e) = self.endpoints.get(idx) else {
            return;
        };
        if ok {
            e.consecutive_failures.store(0, Ordering::Relaxed);
            return;
        }
        let fails = e.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.cfg.outlier.consecutive_failures;
        if limit > 0 && fails >= limit && self.endpoints.len() > 1 {
            let until = self.now_ms() + self.cfg.outlier.ejection_time.as_millis() as u64;
            e.ejected_until_ms.store(until, Ordering::Relaxed);
            e.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %self.name, endpoint = %e.base, "Endpoint ejected after consecutive failures.");
        }
    }

    /// Marks an endpoint healthy again (active health check).
    pub fn readmit(&self, idx: usize) {
        if let Some(e) = self.endpoints.get(idx) {
            e.ejected_until_ms.store(0, Ordering::Relaxed);
            e.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Starts the active health check when `health_check.path` is set: a failing endpoint is
    /// ejected, a passing one is brought back.
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let Some(path) = self.cfg.health_check.path.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let interval = self.cfg.health_check.interval;
        let timeout = self.cfg.health_check.timeout;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(up) = weak.upgrade() else { return };
                for (i, ep) in up.endpoints.iter().enumerate() {
                    let mut req = Request::get(path.as_str()).body(ProxyBody::empty());
                    if let (Ok(r), Some(a)) = (&mut req, ep.base.authority())
                        && let Ok(host) = HeaderValue::from_str(a.as_str())
                    {
                        r.headers_mut().insert(header::HOST, host);
                    }
                    let Ok(req) = req else {
                        continue;
                    };
                    // The connection is not pooled again: the body is never read.
                    let ok = matches!(
                        tokio::time::timeout(timeout, up.send(i, req)).await,
                        Ok(Ok((r, _))) if r.status().is_success()
                    );
                    if ok {
                        if up.is_ejected(i) {
                            tracing::info!(upstream = %up.name, endpoint = %ep.base, "Health check passed; endpoint back in rotation.");
                        }
                        up.readmit(i);
                    } else if !up.is_ejected(i) && up.endpoints.len() > 1 {
                        let until = up.now_ms() + up.cfg.outlier.ejection_time.as_millis() as u64;
                        ep.ejected_until_ms.store(until, Ordering::Relaxed);
                        tracing::warn!(upstream = %up.name, endpoint = %ep.base, "Health check failed; endpoint ejected.");
                    }
                }
            }
        });
    }
}

/// Decrements an endpoint's outstanding count when the exchange ends.
pub(super) struct Outstanding(pub(super) Arc<Upstream>, pub(super) usize);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.endpoints[self.1]
            .outstanding
            .fetch_sub(1, Ordering::Relaxed);
    }
}

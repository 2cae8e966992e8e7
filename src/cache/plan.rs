//! The contract between the cache and its coalescing phase: the plan a miss carries down
//! and what comes back up on the response. Every request/response extension type on the
//! request path, who inserts it and who reads it:
//!
//! | type | on | inserted by | read by |
//! |---|---|---|---|
//! | `http_util::conn::ConnInfo` | request | `server` (per connection) | `stack::proxy`, `cache` (copied onto the fetch), `cache::coalesce`, `upstream::forward` |
//! | `Arc<route::Route>` | request | `stack::proxy` (routing) | `cache`, `breaker` |
//! | `http_util::ClientAddr` | request | `stack::proxy` (after `trusted_proxies`) | `cache` (copied onto the fetch), `upstream::forward` |
//! | `Arc<FetchPlan>` | request | `cache` (a miss or revalidation going down) | `cache::coalesce` |
//! | `Share` | response | `cache::coalesce` (once per fetch) | `cache` |
//! | `Collapsed` | response | `cache::coalesce` (a follower's copy) | `cache` |
//! | `SharedHit` | response | `cache::coalesce` (the shared tier had it) | `cache` |
//! | `telemetry::metrics::Served` | response | `cache` | `stack::proxy` (metrics, access log) |
//! | `upstream::forward::UpstreamElapsed` | response | `upstream::forward` | `stack::proxy` (access log, span) |

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};

use super::cache_control::CacheControl;
use super::entry::Entry;
use super::policy::{self, Decision, NotStorable};
use super::store::redis::{FillLock, FillOutcome, Lock, SharedTier};
use super::{CacheShared, fill, key};
use crate::body::ProxyBody;
use crate::route::Route;

/// Marks a response that a follower received from another request's fetch.
#[derive(Clone, Copy, Debug)]
pub struct Collapsed;

/// How a fetched response may be used (decided once, by the coalescing layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Storable and fresh: stored and shared with followers.
    Storable,
    /// Storable but already stale (e.g. `no-cache`): stored, not shared.
    StorableStale,
    /// A failure (5xx): shared with current followers, not stored.
    Failure,
    /// 304 to a revalidation: shared with the other revalidators.
    NotModified,
    /// Not storable for a shared cache: followers fetch for themselves.
    Personal(NotStorable),
}

impl Share {
    /// Whether the fill stores it.
    pub fn storable(&self) -> bool {
        matches!(self, Self::Storable | Self::StorableStale)
    }

    /// Whether followers may receive it.
    pub fn shareable(&self) -> bool {
        matches!(self, Self::Storable | Self::Failure | Self::NotModified)
    }
}

/// A response the shared tier had: answered from this entry (now also in memory).
#[derive(Clone, Debug)]
pub struct SharedHit(pub Arc<Entry>);

impl SharedHit {
    /// The response that carries it up to the cache layer.
    pub fn response(entry: Arc<Entry>) -> Response<ProxyBody> {
        let mut res = Response::new(ProxyBody::empty());
        res.extensions_mut().insert(SharedHit(entry));
        res
    }
}

/// What the shared tier says before a fetch.
#[derive(Debug)]
pub enum SharedStep {
    /// A usable copy.
    Entry(Arc<Entry>),
    /// Fetch, holding the fleet's fill lock when we got it.
    Fetch(Option<FillLock>),
}

/// What the layers below need to share a fetch and store its response.
#[derive(Debug)]
pub struct FetchPlan {
    /// Coalescing key (the primary key, plus the validators for revalidations).
    pub key: Arc<str>,
    /// Primary cache key.
    pub primary: Arc<str>,
    /// The route.
    pub route: Arc<Route>,
    pub(super) req_headers: HeaderMap,
    pub(super) req_cc: CacheControl,
    pub(super) request_time: SystemTime,
    pub(super) conditional: bool,
    pub(super) shared: Arc<CacheShared>,
}

impl FetchPlan {
    /// Bodies above this are streamed, never stored.
    pub fn max_object_size(&self) -> u64 {
        self.shared.max_object_size
    }

    /// Whether the request this plan fetches for carries what makes its own response personal
    /// to it (credentials, or a `no-store` of its own), from what the plan already parsed.
    pub fn personal_request(&self) -> bool {
        self.req_headers.contains_key(header::AUTHORIZATION)
            || self.req_headers.contains_key(header::COOKIE)
            || self.req_cc.no_store
    }

    /// Classifies a response head.
    pub fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Share {
        if self.conditional && status == StatusCode::NOT_MODIFIED {
            return Share::NotModified;
        }
        let cc = policy::effective_cc(headers, &self.shared.targeted);
        match policy::storable(
            &Method::GET,
            &self.req_headers,
            &self.req_cc,
            status,
            headers,
            &cc,
            &self.route.cache,
        ) {
            Ok(()) => {
                let now = self.shared.clock.now();
                let f = policy::freshness(
                    status,
                    &self.req_headers,
                    headers,
                    cc,
                    self.request_time,
                    now,
                    &self.route.cache,
                );
                let fresh = f.lifetime > f.initial_age
                    && !(f.cc.no_cache && f.cc.no_cache_fields.is_empty());
                if fresh {
                    Share::Storable
                } else {
                    Share::StorableStale
                }
            }
            // A server error is shared with the waiting requests only when nothing in it or
            // in the leader's request is personal: a 5xx that sets a cookie, or one a
            // credentialed request provoked, stays with that request.
            Err(_)
                if status.is_server_error()
                    && !headers.contains_key(header::SET_COOKIE)
                    && !self.req_headers.contains_key(header::AUTHORIZATION)
                    && !self.req_headers.contains_key(header::COOKIE) =>
            {
                Share::Failure
            }
            Err(r) => Share::Personal(r),
        }
    }

    /// The completion callback that stores the body (response time taken now, at the head),
    /// in memory and behind it in the shared tier; `lock` learns when the tier has it.
    pub fn on_complete(self: Arc<Self>, lock: Option<FillLock>) -> fill::OnComplete {
        let response_time = self.shared.clock.now();
        Box::new(move |head: &fill::Head, body: Bytes| {
            // Encoded once, here, off the clients' path: the fill already streamed the body.
            let stored = self
                .shared
                .compressor
                .stored_form(head.status, &head.headers, body);
            let (entry, keep) =
                self.shared
                    .make_entry(&self, head.status, &head.headers, stored, response_time);
            self.shared.store.insert(entry.clone(), keep);
            self.shared.stats.stored.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = self.shared.tier() {
                t.enqueue(entry, keep, lock);
            }
        })
    }

    /// Before an unconditional fetch: the shared tier's copy, else the fleet's fill lock
    /// (waiting, bounded, for the replica that holds it).
    pub async fn consult_shared(&self) -> SharedStep {
        let Some(tier) = self.shared.tier().cloned() else {
            return SharedStep::Fetch(None);
        };
        if self.conditional {
            return SharedStep::Fetch(None);
        }
        if let Some(e) = self.read_shared(&tier).await {
            return SharedStep::Entry(e);
        }
        match tier.lock(&self.primary).await {
            Lock::Acquired(l) => SharedStep::Fetch(Some(l)),
            Lock::Stored => match self.read_shared(&tier).await {
                Some(e) => SharedStep::Entry(e),
                None => SharedStep::Fetch(None),
            },
            Lock::Skip => SharedStep::Fetch(None),
        }
    }

    /// Reads the shared tier only (no lock): for fetches that are not coalesced.
    pub async fn shared_copy(&self) -> Option<Arc<Entry>> {
        let tier = self.shared.tier().cloned()?;
        if self.conditional {
            return None;
        }
        self.read_shared(&tier).await
    }

    /// The stored variants go to memory; the one this request selects, if fresh for it, is
    /// returned.
    async fn read_shared(&self, tier: &SharedTier) -> Option<Arc<Entry>> {
        let variants = tier.read(&self.primary).await.ok()?;
        let now = self.shared.clock.now();
        let mut found = None;
        // Oldest first, so the newest ends up first in memory as it was in its own replica.
        for e in variants.into_iter().rev() {
            let e = Arc::new(e);
            let has_validators = e.etag().is_some() || e.last_modified().is_some();
            let keep = policy::keep_for(
                &e.fresh,
                has_validators,
                self.route.cache.stale_if_unreachable,
            );
            self.shared.store.insert(e.clone(), keep);
            if found.is_none()
                && key::vary_matches(&e.vary, &self.req_headers, e.normalise_ae)
                && policy::evaluate(&e.fresh, &self.req_cc, now) == Decision::Fresh
            {
                found = Some(e);
            }
        }
        let result = if found.is_some() { "hit" } else { "miss" };
        tier.metrics.lookups.with_label_values(&[result]).inc();
        found
    }

    /// Tells the fleet's waiters what became of a locked fetch that stores nothing.
    pub fn unlocked(lock: Option<FillLock>, share: Option<Share>) {
        if let Some(l) = lock {
            l.finish(match share {
                Some(Share::Personal(_)) => FillOutcome::NotStorable,
                _ => FillOutcome::Failed,
            });
        }
    }
}

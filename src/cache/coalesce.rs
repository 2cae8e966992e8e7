//! Request coalescing below the cache: one upstream fetch per cache key. The leader's fetch
//! runs in its client's task, goes on without it while followers wait (capped, with a deadline)
//! for its head, and is cancelled when nobody does; followers then stream the same fill.
//! Responses unshareable by their own fields send followers upstream and mark the key
//! hit-for-pass for a while; one made personal by the leader's request has them elect anew.

mod hit_for_pass;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tokio::sync::{Notify, watch};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument as _;

use crate::body::ProxyBody;
use crate::cache::entry::Entry as Stored;
use crate::cache::fill::{Fill, FillLimits};
use crate::cache::plan::{Collapsed, FetchPlan, Share, SharedHit, SharedStep};
use crate::cache::policy::NotStorable;
use crate::config::Config;
use crate::error::ProxyError;
pub use hit_for_pass::HIT_FOR_PASS_REASONS;
use hit_for_pass::HitForPass;

/// The coalescing counters operators see (`GET /admin/status`, `coalesced`).
#[derive(Debug, serde::Serialize)]
pub(crate) struct CoalesceView {
    requests: u64,
    leaders: u64,
    waiter_limit: u64,
    wait_timeouts: u64,
    hit_for_pass: u64,
}

/// Counters for metrics and the admin API.
#[derive(Debug, Default)]
pub struct CoalesceStats {
    /// Fetches that went upstream as a leader.
    pub leaders: AtomicU64,
    /// Requests served from another request's fetch.
    pub coalesced: AtomicU64,
    /// Followers refused past `max_waiters`.
    pub waiter_cap: AtomicU64,
    /// Followers that gave up at `wait_timeout`.
    pub wait_timeouts: AtomicU64,
    /// Requests sent straight upstream because the key is hit-for-pass.
    pub hit_for_pass: AtomicU64,
    /// Followers released to fetch themselves (response not shareable).
    pub released: AtomicU64,
    /// Sum of follower wait time in microseconds.
    pub wait_micros: AtomicU64,
    /// Keys marked hit-for-pass, by reason (indexed like [`HIT_FOR_PASS_REASONS`]).
    pub marked: [AtomicU64; 6],
    /// Followers that elected a new leader because the last one's response was its own.
    pub reelected: AtomicU64,
    /// Readers disconnected for falling more than `max_reader_lag` behind the fastest.
    pub slow_readers: Arc<AtomicU64>,
    /// Fetches cancelled because their last client left before the response head.
    pub cancelled_before_head: AtomicU64,
    /// Fills given up because their last reader left and the body was not being stored.
    pub cancelled_not_storable: Arc<AtomicU64>,
    /// Fills given up because their last reader's connection had no stream to spare.
    pub cancelled_stream_limit: Arc<AtomicU64>,
}

/// How many times one request follows a new leader after a leader's personal response,
/// before it fetches for itself.
const MAX_ELECTIONS: usize = 3;

#[derive(Clone, Debug)]
enum Outcome {
    Response(Arc<Fill>, Share),
    /// Only the leader may have it: followers fetch for themselves.
    Unshared,
    /// Only the leader may have it because of its own request: followers elect a new leader.
    Reelect,
    /// The shared tier had it (now in memory too).
    Shared(Arc<Stored>),
    Error(ProxyError),
}

struct Flight {
    tx: watch::Sender<Option<Outcome>>,
    waiters: AtomicUsize,
    holds: Arc<AtomicUsize>,
    leader_headers: HeaderMap,
    /// Set when the response head has arrived (the fetch is no longer cancelled for want of
    /// clients; the fill decides from then on).
    headed: AtomicBool,
    /// Notified when the last follower's hold goes.
    left: Notify,
}

/// A follower's promise to read (or to decide not to): released on drop, also when the
/// follower's client goes away mid-wait.
struct Hold(Arc<Flight>);

impl Drop for Hold {
    fn drop(&mut self) {
        if self.0.holds.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.left.notify_waiters();
        }
    }
}

/// A follower counted as waiting for the head until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared coalescing state (one per process; survives reloads).
pub struct CoalesceShared {
    enabled: bool,
    max_waiters: usize,
    wait_timeout: Option<Duration>,
    upstream_timeouts: Vec<Duration>,
    flights: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
    hit_for_pass: HitForPass,
    inflight: Arc<AtomicU64>,
    max_inflight_bytes: u64,
    max_reader_lag: u64,
    wait_hist: Option<prometheus::Histogram>,
    /// Counters.
    pub stats: CoalesceStats,
}

impl std::fmt::Debug for CoalesceShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoalesceShared")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl CoalesceShared {
    /// The counters operators see.
    pub(crate) fn view(&self) -> CoalesceView {
        let cs = &self.stats;
        CoalesceView {
            requests: cs.coalesced.load(Ordering::Relaxed),
            leaders: cs.leaders.load(Ordering::Relaxed),
            waiter_limit: cs.waiter_cap.load(Ordering::Relaxed),
            wait_timeouts: cs.wait_timeouts.load(Ordering::Relaxed),
            hit_for_pass: cs.hit_for_pass.load(Ordering::Relaxed),
        }
    }

    /// From `[coalesce]` and the upstreams' total timeouts.
    pub fn new(cfg: &Config, wait_hist: Option<prometheus::Histogram>) -> Self {
        let c = &cfg.raw.coalesce;
        Self {
            enabled: c.enabled,
            max_waiters: c.max_waiters,
            wait_timeout: c.wait_timeout,
            upstream_timeouts: cfg.raw.upstreams.iter().map(|u| u.total_timeout).collect(),
            flights: Mutex::new(HashMap::new()),
            hit_for_pass: HitForPass::new(c.hit_for_pass_ttl, 100_000),
            inflight: Arc::new(AtomicU64::new(0)),
            max_inflight_bytes: c.max_inflight_bytes,
            max_reader_lag: c.max_reader_lag,
            wait_hist,
            stats: CoalesceStats::default(),
        }
    }

    /// Bytes currently held by fills.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Keys currently being fetched.
    pub fn flights(&self) -> usize {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Followers currently waiting for a leader's response head, over all keys.
    pub fn waiters(&self) -> usize {
        let flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        flights
            .values()
            .map(|f| f.waiters.load(Ordering::Relaxed))
            .sum()
    }

    fn limits(&self, plan: &FetchPlan) -> FillLimits {
        FillLimits {
            max_object_size: plan.max_object_size(),
            max_inflight_bytes: self.max_inflight_bytes,
            inflight: self.inflight.clone(),
            max_reader_lag: self.max_reader_lag,
            slow_readers: self.stats.slow_readers.clone(),
            abandoned: self.stats.cancelled_not_storable.clone(),
            over_stream_limit: self.stats.cancelled_stream_limit.clone(),
            pressure: plan.shared.memory.clone(),
        }
    }
}

/// The layer.
#[derive(Clone, Debug)]
pub struct CoalesceLayer {
    shared: Arc<CoalesceShared>,
}

impl CoalesceLayer {
    /// A layer over shared state.
    pub fn new(shared: Arc<CoalesceShared>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for CoalesceLayer {
    type Service = Coalesce<S>;
    fn layer(&self, inner: S) -> Coalesce<S> {
        Coalesce {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service.
#[derive(Clone, Debug)]
pub struct Coalesce<S> {
    inner: S,
    shared: Arc<CoalesceShared>,
}

impl<S> Service<Request<ProxyBody>> for Coalesce<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        let Some(plan) = req.extensions().get::<Arc<FetchPlan>>().cloned() else {
            return Box::pin(inner.oneshot(req));
        };
        // The common case, a lone miss, leads at once: the fetch is not wrapped in the async
        // block below, whose state (followers, re-elections) would be moved into a box too.
        if shared.enabled
            && !shared.hit_for_pass.contains(&plan.primary)
            && let Some(flight) = try_lead(&shared, &plan, &req)
        {
            shared.stats.leaders.fetch_add(1, Ordering::Relaxed);
            let fetch = Box::pin(lead(
                inner,
                shared.clone(),
                plan.clone(),
                flight.clone(),
                req,
            ));
            return Box::pin(Detached::new(fetch, shared, plan, flight));
        }
        Box::pin(async move {
            if !shared.enabled {
                if let Some(e) = plan.shared_copy().await {
                    return Ok(SharedHit::response(e));
                }
                return solo(inner, &shared, plan, req).await;
            }
            let mut req = req;
            let mut elections = 0;
            loop {
                if shared.hit_for_pass.contains(&plan.primary) {
                    shared.stats.hit_for_pass.fetch_add(1, Ordering::Relaxed);
                    return solo(inner, &shared, plan, req).await;
                }
                let (flight, leader) = {
                    let mut flights = shared.flights.lock().unwrap_or_else(|e| e.into_inner());
                    // One lookup (the key hashes once) whether we lead or follow.
                    match flights.entry(plan.key.clone()) {
                        Entry::Occupied(f) => {
                            let f = f.get();
                            // Promise a reader before the lock goes, so the fill is not
                            // abandoned between its head and our attaching.
                            f.holds.fetch_add(1, Ordering::Relaxed);
                            (f.clone(), false)
                        }
                        Entry::Vacant(slot) => {
                            let f = new_flight(&req);
                            slot.insert(f.clone());
                            (f, true)
                        }
                    }
                };
                if leader {
                    shared.stats.leaders.fetch_add(1, Ordering::Relaxed);
                    let fetch = Box::pin(lead(
                        inner,
                        shared.clone(),
                        plan.clone(),
                        flight.clone(),
                        req,
                    ));
                    return Detached::new(fetch, shared, plan, flight).await;
                }
                let hold = Hold(flight.clone());
                let followed = follow(inner.clone(), &shared, plan.clone(), hold, req).await;
                match followed {
                    Followed::Done(r) => return r,
                    Followed::Reelect(r) if elections < MAX_ELECTIONS => {
                        elections += 1;
                        shared.stats.reelected.fetch_add(1, Ordering::Relaxed);
                        req = r;
                    }
                    Followed::Reelect(r) => {
                        shared.stats.released.fetch_add(1, Ordering::Relaxed);
                        return solo(inner, &shared, plan, r).await;
                    }
                }
            }
        })
    }
}

fn new_flight(req: &Request<ProxyBody>) -> Arc<Flight> {
    Arc::new(Flight {
        tx: watch::Sender::new(None),
        waiters: AtomicUsize::new(0),
        holds: Arc::new(AtomicUsize::new(0)),
        leader_headers: req.headers().clone(),
        headed: AtomicBool::new(false),
        left: Notify::new(),
    })
}

/// Registers a flight for `plan`'s key when none is in the air; `None` when one is (the
/// caller then follows it, or leads after it ended, through the election loop).
fn try_lead(
    shared: &CoalesceShared,
    plan: &FetchPlan,
    req: &Request<ProxyBody>,
) -> Option<Arc<Flight>> {
    let mut flights = shared.flights.lock().unwrap_or_else(|e| e.into_inner());
    match flights.entry(plan.key.clone()) {
        Entry::Occupied(_) => None,
        Entry::Vacant(slot) => {
            let f = new_flight(req);
            slot.insert(f.clone());
            Some(f)
        }
    }
}

/// What a follower ended with.
enum Followed {
    Done(Result<Response<ProxyBody>, ProxyError>),
    /// The leader's response was personal because of the leader's request: the request back,
    /// to follow (or lead) the next fetch.
    Reelect(Request<ProxyBody>),
}

/// Marks `plan`'s key hit-for-pass when `share` is unshareable for a reason of the response's
/// own; counts the mark. Returns whether it marked.
fn mark_hit_for_pass(shared: &CoalesceShared, plan: &FetchPlan, share: Share) -> bool {
    let Share::Personal(r) = share else {
        return false;
    };
    let Some(i) = HIT_FOR_PASS_REASONS.iter().position(|x| *x == r) else {
        return false;
    };
    shared.hit_for_pass.insert(&plan.primary);
    shared.stats.marked[i].fetch_add(1, Ordering::Relaxed);
    true
}

/// Whether `share` is unshareable because of the request that fetched it: its own `no-store`,
/// credentials or `Authorization`, a status an operator lifetime does not cover, or a client
/// error without freshness that it provoked.
fn leaders_own(share: Share, status: http::StatusCode) -> bool {
    match share {
        Share::Personal(r) if r.caused_by_request() => true,
        Share::Personal(NotStorable::Authorization) => true,
        Share::Personal(NotStorable::NoFreshness) => status.is_client_error(),
        _ => false,
    }
}

/// Whether a request carries what makes its own response personal to it (credentials, or a
/// `no-store` of its own).
fn personal_request(h: &HeaderMap) -> bool {
    h.contains_key(http::header::AUTHORIZATION)
        || h.contains_key(http::header::COOKIE)
        || crate::cache::policy::request_cc(h).no_store
}

type LeadFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

/// Runs the leader's fetch in its client's task (a lone miss costs no task and no channel).
/// If the client goes away first, the fetch goes on in a task of its own while followers
/// wait for it, and is cancelled (the upstream exchange dropped) when none is left before
/// the response head arrived. From the head on, the fill decides.
struct Detached {
    fetch: Option<LeadFuture>,
    span: tracing::Span,
    shared: Arc<CoalesceShared>,
    plan: Arc<FetchPlan>,
    flight: Arc<Flight>,
}

impl Detached {
    fn new(
        fetch: LeadFuture,
        shared: Arc<CoalesceShared>,
        plan: Arc<FetchPlan>,
        flight: Arc<Flight>,
    ) -> Self {
        Self {
            fetch: Some(fetch),
            span: tracing::Span::current(),
            shared,
            plan,
            flight,
        }
    }
}

impl Future for Detached {
    type Output = Result<Response<ProxyBody>, ProxyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fetch) = self.fetch.as_mut() else {
            return Poll::Ready(Err(ProxyError::Internal("fetch polled again")));
        };
        let out = std::task::ready!(fetch.as_mut().poll(cx));
        self.fetch = None;
        Poll::Ready(out)
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let Some(mut fetch) = self.fetch.take() else {
            return;
        };
        if cancel_unwanted(&self.shared, &self.plan, &self.flight) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, plan, flight) = (self.shared.clone(), self.plan.clone(), self.flight.clone());
        rt.spawn(
            async move {
                loop {
                    let left = flight.left.notified();
                    tokio::pin!(left);
                    left.as_mut().enable();
                    if cancel_unwanted(&shared, &plan, &flight) {
                        return;
                    }
                    tokio::select! {
                        _ = &mut fetch => return,
                        _ = left => {}
                    }
                }
            }
            .instrument(self.span.clone()),
        );
    }
}

/// With no head yet and no follower holding the flight, takes the flight out of the map (so
/// the next request leads a fetch of its own) and counts the cancellation; the caller then
/// drops the fetch. Followers promise a reader under the map's lock, so none can slip in.
fn cancel_unwanted(shared: &CoalesceShared, plan: &FetchPlan, flight: &Arc<Flight>) -> bool {
    if flight.headed.load(Ordering::Acquire) {
        return false;
    }
    let mut flights = shared.flights.lock().unwrap_or_else(|e| e.into_inner());
    if flight.holds.load(Ordering::Acquire) > 0 || flight.headed.load(Ordering::Acquire) {
        return false;
    }
    if let Entry::Occupied(f) = flights.entry(plan.key.clone())
        && Arc::ptr_eq(f.get(), flight)
    {
        f.remove();
    }
    shared
        .stats
        .cancelled_before_head
        .fetch_add(1, Ordering::Relaxed);
    true
}

/// The leader: fetch, publish the head, keep the flight while the body streams (in a task of
/// its own, as the client's task ends with the head).
async fn lead<S>(
    inner: S,
    shared: Arc<CoalesceShared>,
    plan: Arc<FetchPlan>,
    flight: Arc<Flight>,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Send
        + 'static,
    S::Future: Send,
{
    // The shared tier first: another replica may have it, or be fetching it right now.
    let mut lock = match plan.consult_shared().await {
        SharedStep::Entry(e) => {
            flight.tx.send_replace(Some(Outcome::Shared(e.clone())));
            remove_flight(&shared, &plan, &flight);
            return Ok(SharedHit::response(e));
        }
        SharedStep::Fetch(lock) => lock,
    };
    let conn = conn_of(&req);
    let fetched = inner.oneshot(req).await;
    flight.headed.store(true, Ordering::Release);
    let (outcome, mine) = match fetched {
        Ok(res) => {
            let share = plan.classify(res.status(), res.headers());
            let storable = share.storable();
            if !storable {
                FetchPlan::unlocked(lock.take(), Some(share));
            }
            if !storable && !share.shareable() {
                // Nobody will receive it but the leader: no buffer, no pump task. When the
                // leader's own request could have made it personal (its credentials, its
                // `no-store`, an error it provoked), the followers elect a new leader and the
                // key stays unmarked: one request never switches coalescing off for everyone.
                // Otherwise a reason of the response's own marks the key.
                let reelect = leaders_own(share, res.status()) || plan.personal_request();
                if !reelect {
                    mark_hit_for_pass(&shared, &plan, share);
                }
                let mut res = res;
                res.extensions_mut().insert(share);
                // Out of the map first: a re-electing follower must not find this flight.
                remove_flight(&shared, &plan, &flight);
                flight.tx.send_replace(Some(if reelect {
                    Outcome::Reelect
                } else {
                    Outcome::Unshared
                }));
                return Ok(res);
            }
            let on_complete = storable.then(|| plan.clone().on_complete(lock.take()));
            let (fill, mut early) = Fill::spawn(
                res,
                shared.limits(&plan),
                storable,
                on_complete,
                flight.holds.clone(),
                1,
                true,
                conn,
            );
            let mine = early
                .pop()
                .map(|mut r| {
                    r.extensions_mut().insert(share);
                    r
                })
                .ok_or(ProxyError::Internal("fill lost"));
            (Outcome::Response(fill, share), mine)
        }
        Err(e) => {
            FetchPlan::unlocked(lock.take(), None);
            (Outcome::Error(e.clone()), Err(e))
        }
    };
    // A flight no new follower may join leaves the map before its outcome is published: a
    // follower that re-elects must not find it again.
    let keep_flight = matches!(outcome, Outcome::Response(_, Share::Storable));
    if !keep_flight {
        remove_flight(&shared, &plan, &flight);
    }
    flight.tx.send_replace(Some(outcome.clone()));
    match outcome {
        // Late arrivals may still attach while the body streams; once it is complete the
        // entry is stored and new requests hit.
        Outcome::Response(fill, Share::Storable) => {
            tokio::spawn(
                async move {
                    // Until stored, or until a body too large to store has run past what a
                    // late follower could still read from its start.
                    fill.closed().await;
                    remove_flight(&shared, &plan, &flight);
                    fill.unpin();
                }
                .instrument(tracing::Span::current()),
            );
        }
        Outcome::Response(fill, _) => {
            // No new follower can find the fill now; those already promised a reader still
            // hold it.
            fill.unpin();
        }
        _ => {}
    }
    mine
}

fn remove_flight(shared: &CoalesceShared, plan: &FetchPlan, flight: &Arc<Flight>) {
    let mut flights = shared.flights.lock().unwrap_or_else(|e| e.into_inner());
    if let Entry::Occupied(f) = flights.entry(plan.key.clone())
        && Arc::ptr_eq(f.get(), flight)
    {
        f.remove();
    }
}

async fn follow<S>(
    inner: S,
    shared: &Arc<CoalesceShared>,
    plan: Arc<FetchPlan>,
    hold: Hold,
    req: Request<ProxyBody>,
) -> Followed
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Send
        + 'static,
    S::Future: Send,
{
    let flight = hold.0.clone();
    let waiting = Waiting(&flight.waiters);
    if flight.waiters.fetch_add(1, Ordering::Relaxed) >= shared.max_waiters {
        drop(waiting);
        shared.stats.waiter_cap.fetch_add(1, Ordering::Relaxed);
        return Followed::Done(Err(ProxyError::TooManyWaiters));
    }
    let wait = shared
        .wait_timeout
        .or_else(|| shared.upstream_timeouts.get(plan.route.upstream).copied())
        .unwrap_or(Duration::from_secs(60));
    let started = tokio::time::Instant::now();
    let mut rx = flight.tx.subscribe();
    let outcome = tokio::time::timeout(wait, async {
        rx.wait_for(Option::is_some).await.map(|o| o.clone())
    })
    .instrument(tracing::info_span!("coalesce_wait", seawall.key = %plan.primary))
    .await;
    drop(waiting);
    let waited = started.elapsed();
    shared
        .stats
        .wait_micros
        .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    if let Some(h) = &shared.wait_hist {
        h.observe(waited.as_secs_f64());
    }
    let outcome: Option<Outcome> = match outcome {
        Err(_) => {
            shared.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
            return Followed::Done(Err(ProxyError::WaitTimeout));
        }
        Ok(Err(_)) => {
            return Followed::Done(Err(ProxyError::Internal("fetch task ended")));
        }
        Ok(Ok(o)) => o,
    };
    let done = match outcome {
        Some(Outcome::Error(e)) => {
            shared.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
        Some(Outcome::Response(fill, share)) => {
            let vary_ok =
                crate::cache::key::vary_fields(&fill.head.headers).is_some_and(|fields| {
                    let ae = plan.route.cache.normalize_accept_encoding;
                    crate::cache::key::vary_key(&flight.leader_headers, &fields, ae)
                        == crate::cache::key::vary_key(req.headers(), &fields, ae)
                });
            if share.shareable()
                && vary_ok
                && let Some(mut res) = fill.response(conn_of(&req))
            {
                shared.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                res.extensions_mut().insert(Collapsed);
                res.extensions_mut().insert(share);
                return Followed::Done(Ok(res));
            }
            // Stored already stale only because the leader's request was personal (no
            // operator lifetime for credentialed requests): the next leader may do better.
            if share == Share::StorableStale && vary_ok && personal_request(&flight.leader_headers)
            {
                return Followed::Reelect(req);
            }
            shared.stats.released.fetch_add(1, Ordering::Relaxed);
            // This follower reads nothing from the fill: it no longer holds it.
            drop(hold);
            solo(inner, shared, plan, req).await
        }
        Some(Outcome::Shared(e)) => {
            if crate::cache::key::vary_matches(&e.vary, req.headers(), e.normalise_ae) {
                shared.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                let mut res = SharedHit::response(e);
                res.extensions_mut().insert(Collapsed);
                return Followed::Done(Ok(res));
            }
            shared.stats.released.fetch_add(1, Ordering::Relaxed);
            drop(hold);
            solo(inner, shared, plan, req).await
        }
        Some(Outcome::Unshared) => {
            shared.stats.released.fetch_add(1, Ordering::Relaxed);
            drop(hold);
            solo(inner, shared, plan, req).await
        }
        Some(Outcome::Reelect) => return Followed::Reelect(req),
        None => Err(ProxyError::Internal("fetch task ended")),
    };
    Followed::Done(done)
}

/// The client connection a request came in on.
fn conn_of<B>(req: &Request<B>) -> Option<Arc<crate::http_util::conn::ConnState>> {
    req.extensions()
        .get::<crate::http_util::conn::ConnInfo>()
        .map(|c| c.state.clone())
}

/// A fetch of our own (not shared), still through a fill so a storable response is stored.
async fn solo<S>(
    inner: S,
    shared: &Arc<CoalesceShared>,
    plan: Arc<FetchPlan>,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Send
        + 'static,
    S::Future: Send,
{
    let conn = conn_of(&req);
    let mut res = inner.oneshot(req).await?;
    let share = plan.classify(res.status(), res.headers());
    if !share.storable() {
        res.extensions_mut().insert(share);
        return Ok(res);
    }
    let on_complete = Some(plan.clone().on_complete(None));
    let (_fill, mut early) = Fill::spawn(
        res,
        shared.limits(&plan),
        true,
        on_complete,
        Arc::default(),
        1,
        false,
        conn,
    );
    let mut res = early.pop().ok_or(ProxyError::Internal("fill lost"))?;
    res.extensions_mut().insert(share);
    Ok(res)
}

//! Request coalescing below the cache: one upstream fetch per cache key. The leader's fetch
//! runs in its client's task and is detached if that client goes away; followers wait (capped, with a deadline) for its head and then stream the
//! same fill. Responses that cannot be shared send followers upstream and mark the key
//! hit-for-pass for a while, so the next burst does not queue.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument as _;

use crate::body::ProxyBody;
use crate::cache::entry::Entry as Stored;
use crate::cache::fill::{Fill, FillLimits};
use crate::cache::{FetchPlan, Share, SharedHit, SharedStep};
use crate::config::Config;
use crate::error::ProxyError;

/// Marks a response that a follower received from another request's fetch.
#[derive(Clone, Copy, Debug)]
pub struct Collapsed;

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
}

#[derive(Clone, Debug)]
enum Outcome {
    Response(Arc<Fill>, Share),
    /// Only the leader may have it: followers fetch for themselves.
    Unshared,
    /// The shared tier had it (now in memory too).
    Shared(Arc<Stored>),
    Error(ProxyError),
}

struct Flight {
    tx: watch::Sender<Option<Outcome>>,
    waiters: AtomicUsize,
    holds: Arc<AtomicUsize>,
    leader_headers: HeaderMap,
}

const HFP_SHARDS: usize = 16;

/// Keys whose last response could not be shared, with their expiry. Sharded maps with lazy
/// expiry: an insert per unique uncacheable URL must stay O(1) (a full general-purpose cache
/// stalled requests here doing its housekeeping), and losing entries only costs one queue.
/// Keys are held as their 64-bit keyed hash, computed once per operation: a collision (about
/// 1 in 10^10 at the cap) only sends a key's requests upstream uncoalesced for a while.
struct HitForPass {
    ttl: Duration,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<u64, tokio::time::Instant, KeyHashed>>>,
}

/// The map hasher of [`HitForPass`]: its keys are hashes already.
type KeyHashed = std::hash::BuildHasherDefault<PassThrough>;

#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl HitForPass {
    fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            per_shard: (cap / HFP_SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..HFP_SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }

    fn shard(&self, key: &str) -> (u64, &Mutex<HashMap<u64, tokio::time::Instant, KeyHashed>>) {
        use std::hash::BuildHasher;
        // One hasher for the life of the map: each RandomState::new() has other keys.
        let h = self.hasher.hash_one(key);
        // The map takes its bucket from the low bits and its tags from the top ones: the shard
        // comes from bits of neither.
        (h, &self.shards[(h >> 32) as usize % HFP_SHARDS])
    }

    fn insert(&self, key: &str) {
        let now = tokio::time::Instant::now();
        let (h, shard) = self.shard(key);
        let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= self.per_shard {
            m.retain(|_, exp| *exp > now);
            if m.len() >= self.per_shard {
                m.clear();
            }
        }
        m.insert(h, now + self.ttl);
    }

    fn contains(&self, key: &str) -> bool {
        let now = tokio::time::Instant::now();
        let (h, shard) = self.shard(key);
        let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(&h) {
            Some(exp) if *exp > now => true,
            Some(_) => {
                m.remove(&h);
                false
            }
            None => false,
        }
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

    fn limits(&self, plan: &FetchPlan) -> FillLimits {
        FillLimits {
            max_object_size: plan.max_object_size(),
            max_inflight_bytes: self.max_inflight_bytes,
            inflight: self.inflight.clone(),
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
        Box::pin(async move {
            if !shared.enabled {
                if let Some(e) = plan.shared_copy().await {
                    return Ok(SharedHit::response(e));
                }
                return solo(inner, &shared, plan, req).await;
            }
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
                        // Promise a reader before the lock goes, so the fill is not abandoned
                        // between its head and our attaching.
                        f.holds.fetch_add(1, Ordering::Relaxed);
                        (f.clone(), false)
                    }
                    Entry::Vacant(slot) => {
                        let f = Arc::new(Flight {
                            tx: watch::Sender::new(None),
                            waiters: AtomicUsize::new(0),
                            holds: Arc::new(AtomicUsize::new(0)),
                            leader_headers: req.headers().clone(),
                        });
                        slot.insert(f.clone());
                        (f, true)
                    }
                }
            };
            if leader {
                shared.stats.leaders.fetch_add(1, Ordering::Relaxed);
                return Detached::new(Box::pin(lead(inner, shared.clone(), plan, flight, req)))
                    .await;
            }
            let r = follow(inner, &shared, plan, &flight, req).await;
            flight.holds.fetch_sub(1, Ordering::Relaxed);
            r
        })
    }
}

type LeadFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

/// Runs the leader's fetch in its client's task (a lone miss costs no task and no channel),
/// and moves whatever is left of it to a task of its own if the client goes away first: a
/// fetch that followers wait on (or that will be stored) is never cancelled.
struct Detached {
    fetch: Option<LeadFuture>,
    span: tracing::Span,
}

impl Detached {
    fn new(fetch: LeadFuture) -> Self {
        Self {
            fetch: Some(fetch),
            span: tracing::Span::current(),
        }
    }
}

impl Future for Detached {
    type Output = Result<Response<ProxyBody>, ProxyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fetch) = self.fetch.as_mut() else {
            return Poll::Ready(Err(ProxyError::UpstreamReset("fetch polled again".into())));
        };
        let out = std::task::ready!(fetch.as_mut().poll(cx));
        self.fetch = None;
        Poll::Ready(out)
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(fetch) = self.fetch.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(fetch.instrument(self.span.clone()));
        }
    }
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
    let (outcome, mine) = match inner.oneshot(req).await {
        Ok(res) => {
            let share = plan.classify(res.status(), res.headers());
            let storable = share.storable();
            if !storable {
                FetchPlan::unlocked(lock.take(), Some(share));
            }
            if !storable && !share.shareable() {
                // Nobody will receive it but the leader: no buffer, no pump task.
                if let Share::Personal(r) = share
                    && !r.caused_by_request()
                {
                    shared.hit_for_pass.insert(&plan.primary);
                }
                let mut res = res;
                res.extensions_mut().insert(share);
                flight.tx.send_replace(Some(Outcome::Unshared));
                remove_flight(&shared, &plan, &flight);
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
            );
            // One client's `no-store` request says nothing about the key.
            if let Share::Personal(r) = share
                && !r.caused_by_request()
            {
                shared.hit_for_pass.insert(&plan.primary);
            }
            let mine = early
                .pop()
                .map(|mut r| {
                    r.extensions_mut().insert(share);
                    r
                })
                .ok_or(ProxyError::UpstreamReset("fill lost".into()));
            (Outcome::Response(fill, share), mine)
        }
        Err(e) => {
            FetchPlan::unlocked(lock.take(), None);
            (Outcome::Error(e.clone()), Err(e))
        }
    };
    flight.tx.send_replace(Some(outcome.clone()));
    match outcome {
        // Late arrivals may still attach while the body streams; once it is complete the
        // entry is stored and new requests hit.
        Outcome::Response(fill, Share::Storable) => {
            tokio::spawn(
                async move {
                    fill.finished().await;
                    remove_flight(&shared, &plan, &flight);
                    fill.unpin();
                }
                .instrument(tracing::Span::current()),
            );
        }
        Outcome::Response(fill, _) => {
            remove_flight(&shared, &plan, &flight);
            // No new follower can find the fill now; those already promised a reader still
            // hold it.
            fill.unpin();
        }
        _ => remove_flight(&shared, &plan, &flight),
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
    flight: &Flight,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Send
        + 'static,
    S::Future: Send,
{
    if flight.waiters.fetch_add(1, Ordering::Relaxed) >= shared.max_waiters {
        flight.waiters.fetch_sub(1, Ordering::Relaxed);
        shared.stats.waiter_cap.fetch_add(1, Ordering::Relaxed);
        return Err(ProxyError::TooManyWaiters);
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
    flight.waiters.fetch_sub(1, Ordering::Relaxed);
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
            return Err(ProxyError::WaitTimeout);
        }
        Ok(Err(_)) => return Err(ProxyError::UpstreamReset("fetch task ended".into())),
        Ok(Ok(o)) => o,
    };
    match outcome {
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
                && let Some(mut res) = fill.response()
            {
                shared.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                res.extensions_mut().insert(Collapsed);
                res.extensions_mut().insert(share);
                return Ok(res);
            }
            shared.stats.released.fetch_add(1, Ordering::Relaxed);
            solo(inner, shared, plan, req).await
        }
        Some(Outcome::Shared(e)) => {
            if crate::cache::key::vary_matches(&e.vary, req.headers(), e.normalise_ae) {
                shared.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                let mut res = SharedHit::response(e);
                res.extensions_mut().insert(Collapsed);
                return Ok(res);
            }
            shared.stats.released.fetch_add(1, Ordering::Relaxed);
            solo(inner, shared, plan, req).await
        }
        Some(Outcome::Unshared) => {
            shared.stats.released.fetch_add(1, Ordering::Relaxed);
            solo(inner, shared, plan, req).await
        }
        None => Err(ProxyError::UpstreamReset("fetch task ended".into())),
    }
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
    );
    let mut res = early
        .pop()
        .ok_or(ProxyError::UpstreamReset("fill lost".into()))?;
    res.extensions_mut().insert(share);
    Ok(res)
}

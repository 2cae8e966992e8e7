//! The one place that assembles the request path (`build`), outermost first:
//!
//! 1. `Proxy` (`stack::proxy`): strict request checks (framing, Host, loops, body size), routing,
//!    rescue of every error into a status with `Cache-Status`, and `Connection: close` while
//!    draining. It sees the final status of every request, so metrics sit here too; the body
//!    goes out wrapped (`stack::observe`) to time the request to its last byte.
//! 2. `cache::CacheLayer`: hits answer here and never touch coalescing, the breaker or upstream.
//! 3. `coalesce::CoalesceLayer`: one leader per cache key goes on; followers wait for it.
//! 4. `breaker::BreakerLayer`: per upstream; sees only upstream outcomes.
//! 5. `upstream::Forward`: forwarding headers, then the pooled upstream client.

mod observe;
mod proxy;

pub(crate) use observe::RequestMetrics;
pub(crate) use proxy::Proxy;

use std::sync::Arc;

use crate::breaker::metrics::UpstreamMetrics;
use crate::breaker::{BreakerLayer, Breakers};
use crate::cache::coalesce::{CoalesceLayer, CoalesceShared};
use crate::cache::{CacheLayer, CacheShared};
use crate::config::Config;
use crate::http_util::Secret;
use crate::route::Router;
use crate::upstream::{Forward, Upstreams};

/// The inner stack, spelled out (cloning it per request is a few reference counts, where a
/// boxed service would allocate): cache → coalesce → breaker → forward.
pub(crate) type Inner =
    crate::cache::Cache<crate::cache::coalesce::Coalesce<crate::breaker::CircuitBreaker<Forward>>>;

/// Everything one config generation needs; swapped whole on reload.
pub struct Runtime {
    /// The config.
    pub config: Arc<Config>,
    /// The routing table.
    pub router: Router,
    /// The inner stack.
    pub inner: Inner,
    /// `Cache-Status` name.
    pub cache_name: Arc<str>,
    /// Upstream clients of this generation.
    pub upstreams: Arc<Upstreams>,
    /// Breakers of this generation.
    pub breakers: Arc<Breakers>,
    /// The cache, for `PURGE` on the proxy listener.
    pub cache: Arc<CacheShared>,
    /// `[admin] purge_token_file`'s token, for `PURGE` from peers outside `purge_allow`.
    pub purge_token: Option<Secret>,
    /// `tls.hsts`, ready to send on TLS responses.
    pub(crate) hsts: Option<http::HeaderValue>,
    /// `tls.client_subject_header`: removed from every request, set from a verified client
    /// certificate.
    pub(crate) client_subject_header: Option<http::HeaderName>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

pub(crate) use crate::http_util::request_host;

/// Every component's metrics, registered on one registry that `GET /metrics` renders; the
/// handles here are those recorded outside their component or rebound on reload.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// The registry.
    pub(crate) registry: prometheus::Registry,
    /// Request metrics (the outer service records them).
    pub(crate) requests: Arc<RequestMetrics>,
    /// Upstream outcomes (the breaker and the forwarder record them).
    pub(crate) upstreams: Arc<UpstreamMetrics>,
    /// Purges by kind: the cache's counter, counted where purges are asked for.
    pub(crate) purges: prometheus::IntCounterVec,
    /// Config reloads by result: the app's, counted by `AppState::reload`.
    pub(crate) config_reloads: prometheus::IntCounterVec,
}

impl Metrics {
    /// Registers the metrics built once per process on `registry` (the breakers' follow the
    /// running generation and are registered once it exists).
    pub(crate) fn register(
        registry: prometheus::Registry,
        cache: &Arc<CacheShared>,
        coalesce: &Arc<CoalesceShared>,
    ) -> prometheus::Result<Self> {
        let purges = crate::cache::metrics::purges(&registry)?;
        crate::cache::metrics::register(&registry, cache, coalesce)?;
        Ok(Self {
            requests: Arc::new(RequestMetrics::new(&registry, purges.clone())?),
            upstreams: Arc::new(UpstreamMetrics::new(&registry)?),
            purges,
            config_reloads: crate::telemetry::metrics::counter_vec(
                &registry,
                "seawall_config_reloads_total",
                "Config reloads by result.",
                &["result"],
            )?,
            registry,
        })
    }
}

/// What every config generation shares with the ones before and after it: a reload swaps the
/// stack around these, never these.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    /// The cache.
    pub cache: Arc<CacheShared>,
    /// Coalescing.
    pub coalesce: Arc<CoalesceShared>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
}

/// Builds one config generation: its upstreams and breakers, its routing table, and the inner
/// stack. The order is the request path's, and each place has its reason:
///
/// - `CacheLayer` outermost: a hit answers at once and never touches coalescing, the breaker
///   or the upstream (the hot path stays a map lookup).
/// - `CoalesceLayer` below the cache, keyed by the cache key the cache passes down: only
///   misses coalesce, and only the leader of a key goes on.
/// - `BreakerLayer` next to the upstream: it sees upstream outcomes only, so a slow client or
///   a cache decision never trips it; when open, the cache above may still serve stale.
/// - `Forward` innermost: forwarding headers and the pooled client.
///
/// `Proxy` (checks, routing, rescue, observation) wraps this from outside (`app`), over the
/// swappable `Runtime`, so a reload replaces everything built here at once.
pub(crate) fn build(
    config: Arc<Config>,
    shared: &Shared,
    purge_token: Option<Secret>,
) -> anyhow::Result<Runtime> {
    let Shared {
        cache,
        coalesce,
        metrics,
    } = shared;
    let recorded = config
        .raw
        .telemetry
        .metrics
        .then(|| metrics.upstreams.clone());
    let upstreams = Arc::new(Upstreams::new(&config).map_err(|e| anyhow::anyhow!(e))?);
    let breakers = Arc::new(Breakers::new(&config));
    let svc = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .layer(CoalesceLayer::new(coalesce.clone()))
        .layer(BreakerLayer::new(breakers.clone(), recorded.clone()))
        .service(Forward::new(&config, upstreams.clone(), recorded));
    let router = Router::new(&config);
    metrics.requests.bind(
        &router
            .routes()
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>(),
    );
    metrics.upstreams.bind(
        &config
            .raw
            .upstreams
            .iter()
            .map(|u| u.name.clone())
            .collect::<Vec<_>>(),
    );
    for u in &upstreams.list {
        u.spawn_health_checks();
    }
    Ok(Runtime {
        cache: cache.clone(),
        purge_token,
        router,
        inner: svc,
        cache_name: config.raw.cache.name.as_str().into(),
        hsts: config
            .raw
            .tls
            .hsts
            .as_deref()
            .and_then(|h| http::HeaderValue::from_str(h).ok()),
        client_subject_header: config
            .raw
            .tls
            .client_subject_header
            .as_deref()
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        upstreams,
        breakers,
        config,
    })
}

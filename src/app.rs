//! Builds the shared state, the stack and both servers; runs them until a signal or
//! `shutdown()`; walks the drain phases (not ready → drain delay → close → grace period);
//! reloads the config on SIGHUP or `POST /admin/reload`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin;
use crate::breaker::metrics::UpstreamMetrics;
use crate::breaker::{BreakerLayer, Breakers};
use crate::cache::store::redis::SharedTier;
use crate::cache::{CacheLayer, CacheShared};
use crate::coalesce::{CoalesceLayer, CoalesceShared};
use crate::config::{Config, FileConfig};
use crate::route::Router;
use crate::server::{self, Lifecycle, Phase};
use crate::stack::{Forward, Proxy, RequestMetrics, Runtime};
use crate::telemetry::window::Window;
use crate::upstream::Upstreams;

/// Everything the proxy and the admin API share for the life of the process.
#[derive(Debug)]
pub struct AppState {
    /// The cache (kept across reloads).
    pub cache: Arc<CacheShared>,
    /// Coalescing (kept across reloads).
    pub coalesce: Arc<CoalesceShared>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The current config generation.
    pub rt: Arc<ArcSwap<Runtime>>,
    /// Drain phase.
    pub lifecycle: Arc<Lifecycle>,
    /// Data listener bound and serving.
    pub serving: AtomicBool,
    /// Warm-up finished (or none configured).
    pub warm: AtomicBool,
    /// The full admin bearer token (configured or generated at start).
    pub admin_token: Option<String>,
    /// The admin tokens as digests, with their roles.
    pub admin_auth: admin::auth::Tokens,
    /// Process start.
    pub started_at: SystemTime,
    /// Recent-window request statistics for `/admin/status`.
    pub window: Arc<Window>,
    /// Where the data listener is (for URL warm-ups through the cache).
    pub data_addr: std::sync::OnceLock<SocketAddr>,
    /// Warm-up jobs.
    pub jobs: admin::warm::Jobs,
    /// File values read by a reload that wait for a restart (key → the file's value).
    pub pending_restart: Mutex<BTreeMap<String, Value>>,
    /// Breakers an operator forced through the admin API (upstream → forced open); kept
    /// across reloads until `reset` or a file change of that upstream's `[upstreams.breaker]`.
    pub breaker_overrides: Mutex<BTreeMap<String, bool>>,
}

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

/// Registers the metrics built once per process on `registry` (the breakers' follow the
/// running generation and are registered once it exists).
fn register_metrics(
    registry: prometheus::Registry,
    cache: &Arc<CacheShared>,
    coalesce: &Arc<CoalesceShared>,
) -> prometheus::Result<Metrics> {
    let purges = crate::cache::metrics::purges(&registry)?;
    crate::cache::metrics::register(&registry, cache, coalesce)?;
    Ok(Metrics {
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

fn build_runtime(
    config: Arc<Config>,
    state_parts: (&Arc<CacheShared>, &Arc<CoalesceShared>, &Arc<Metrics>),
) -> anyhow::Result<Runtime> {
    let (cache, coalesce, metrics) = state_parts;
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
    let purge_token = admin::auth::load_secret(
        None,
        config.raw.admin.purge_token_file.as_deref(),
        "admin.purge_token_file",
    )?
    .map(|t| admin::auth::Secret::new(&t));
    for u in &upstreams.list {
        u.spawn_health_checks();
    }
    Ok(Runtime {
        cache: cache.clone(),
        purge_token,
        router,
        inner: svc,
        cache_name: config.raw.cache.name.as_str().into(),
        upstreams,
        breakers,
        config,
    })
}

/// Copies one key's running value into a freshly read file.
type Pin = fn(&mut FileConfig, &FileConfig);

/// The keys read once at startup: a reload keeps their running values and reports the file's.
fn restart_keys() -> Vec<(&'static str, Pin)> {
    vec![
        ("server.listen", |f, r| {
            f.server.listen.clone_from(&r.server.listen)
        }),
        ("server.admin_listen", |f, r| {
            f.server.admin_listen.clone_from(&r.server.admin_listen)
        }),
        ("server.worker_threads", |f, r| {
            f.server.worker_threads = r.server.worker_threads
        }),
        ("server.max_connections", |f, r| {
            f.server.max_connections = r.server.max_connections
        }),
        ("server.keepalive_timeout", |f, r| {
            f.server.keepalive_timeout = r.server.keepalive_timeout
        }),
        ("server.header_read_timeout", |f, r| {
            f.server.header_read_timeout = r.server.header_read_timeout
        }),
        ("server.max_header_size", |f, r| {
            f.server.max_header_size = r.server.max_header_size
        }),
        ("server.max_headers", |f, r| {
            f.server.max_headers = r.server.max_headers
        }),
        ("server.http2_max_concurrent_streams", |f, r| {
            f.server.http2_max_concurrent_streams = r.server.http2_max_concurrent_streams
        }),
        ("server.http2_max_pending_accept_reset_streams", |f, r| {
            f.server.http2_max_pending_accept_reset_streams =
                r.server.http2_max_pending_accept_reset_streams
        }),
        ("server.drain_delay", |f, r| {
            f.server.drain_delay = r.server.drain_delay
        }),
        ("server.grace_period", |f, r| {
            f.server.grace_period = r.server.grace_period
        }),
        ("cache.max_size", |f, r| f.cache.max_size = r.cache.max_size),
        ("cache.max_object_size", |f, r| {
            f.cache.max_object_size = r.cache.max_object_size
        }),
        ("cache.max_variants", |f, r| {
            f.cache.max_variants = r.cache.max_variants
        }),
        ("cache.name", |f, r| f.cache.name.clone_from(&r.cache.name)),
        ("cache.targeted_fields", |f, r| {
            f.cache.targeted_fields.clone_from(&r.cache.targeted_fields)
        }),
        ("cache.unkeyed_request_headers", |f, r| {
            f.cache
                .unkeyed_request_headers
                .clone_from(&r.cache.unkeyed_request_headers)
        }),
        ("cache.strip_tag_headers", |f, r| {
            f.cache.strip_tag_headers = r.cache.strip_tag_headers
        }),
        ("cache.x_cache_header", |f, r| {
            f.cache.x_cache_header = r.cache.x_cache_header
        }),
        ("cache.redis", |f, r| {
            f.cache.redis.clone_from(&r.cache.redis)
        }),
        ("coalesce", |f, r| f.coalesce.clone_from(&r.coalesce)),
        ("log.level", |f, r| f.log.level.clone_from(&r.log.level)),
        ("log.format", |f, r| f.log.format.clone_from(&r.log.format)),
        ("telemetry.enabled", |f, r| {
            f.telemetry.enabled = r.telemetry.enabled
        }),
        ("telemetry.otlp_endpoint", |f, r| {
            f.telemetry
                .otlp_endpoint
                .clone_from(&r.telemetry.otlp_endpoint)
        }),
        ("telemetry.service_name", |f, r| {
            f.telemetry
                .service_name
                .clone_from(&r.telemetry.service_name)
        }),
        ("telemetry.sampling_ratio", |f, r| {
            f.telemetry.sampling_ratio = r.telemetry.sampling_ratio
        }),
        ("telemetry.ignore_client_sampling", |f, r| {
            f.telemetry.ignore_client_sampling = r.telemetry.ignore_client_sampling
        }),
        ("telemetry.max_queue_size", |f, r| {
            f.telemetry.max_queue_size = r.telemetry.max_queue_size
        }),
        ("admin.token_file", |f, r| {
            f.admin.token_file.clone_from(&r.admin.token_file)
        }),
        ("warmup", |f, r| f.warmup.clone_from(&r.warmup)),
    ]
}

/// A dotted key's value in a serialized config (`None` when absent).
fn value_at<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.pointer(&format!("/{}", key.replace('.', "/")))
        .filter(|v| !v.is_null())
}

/// The config a reload runs with: the file, with every startup-only key kept at its running
/// value; and the file's values of those keys that differ from the running ones (they wait
/// for a restart). Compared with what runs, not with the file read last.
fn pin_restart_keys(running: &Config, mut file: Config) -> (Config, BTreeMap<String, Value>) {
    let run_v = serde_json::to_value(&running.raw).unwrap_or(Value::Null);
    let file_v = serde_json::to_value(&file.raw).unwrap_or(Value::Null);
    let mut pending = BTreeMap::new();
    for (key, pin) in restart_keys() {
        let (r, f) = (value_at(&run_v, key), value_at(&file_v, key));
        if r != f {
            pending.insert(key.to_string(), f.cloned().unwrap_or(Value::Null));
            pin(&mut file.raw, &running.raw);
        }
    }
    file.listen = running.listen;
    file.admin_listen = running.admin_listen;
    (file, pending)
}

/// What a reload did.
#[derive(Debug, serde::Serialize)]
pub struct ReloadReport {
    /// Applied.
    pub applied: bool,
    /// Keys whose file value differs from the running one and needs a restart.
    pub needs_restart: Vec<String>,
    /// Operator overrides (kill switch, forced breakers) still in force.
    pub overrides_kept: Vec<String>,
    /// Operator overrides ended because the file changed their key.
    pub overrides_reset: Vec<String>,
    /// Warnings from the new config.
    pub warnings: Vec<String>,
}

/// A `[upstreams.breaker]` table by upstream name, serialized for comparison.
fn breaker_section(c: &Config, upstream: &str) -> Option<Value> {
    c.raw
        .upstreams
        .iter()
        .find(|u| u.name == upstream)
        .and_then(|u| serde_json::to_value(&u.breaker).ok())
}

impl AppState {
    /// Re-reads the config file; a valid one replaces routes, upstreams, cache rules and the
    /// kill switch; an invalid one is refused and the running config stays. Startup-only keys
    /// keep their running values; operator overrides stay unless the file changed their key.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let old = self.rt.load_full();
        let Some(path) = old.config.source.clone() else {
            self.metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            return Err("this instance was started without a config file".into());
        };
        let file = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(error = %e, "Config reload refused; the running config stays.");
                return Err(e.to_string());
            }
        };
        let (new, pending) = pin_restart_keys(&old.config, file);
        let new = Arc::new(new);
        let rt = build_runtime(new.clone(), (&self.cache, &self.coalesce, &self.metrics)).map_err(
            |e| {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                e.to_string()
            },
        )?;
        let (mut kept, mut reset) = (Vec::new(), Vec::new());
        // The kill switch is overridden while it differs from the file it was started with.
        let was = old.config.raw.cache.enabled;
        let now = new.raw.cache.enabled;
        let enabled = self.cache.enabled.load(Ordering::Relaxed);
        if enabled != was && now == was {
            kept.push(("cache.enabled".to_string(), enabled.to_string()));
        } else {
            if enabled != was {
                reset.push(("cache.enabled".to_string(), now.to_string()));
            }
            self.cache.enabled.store(now, Ordering::Relaxed);
        }
        {
            let mut forced = self
                .breaker_overrides
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            forced.retain(|upstream, open| {
                let key = format!("breakers.{upstream}");
                let unchanged =
                    breaker_section(&old.config, upstream) == breaker_section(&new, upstream);
                match rt.breakers.by_name(upstream) {
                    Some(b) if unchanged => {
                        if *open {
                            b.force_open();
                        } else {
                            b.force_close();
                        }
                        // Re-applying an override is not a transition.
                        for c in &b.transitions {
                            c.store(0, Ordering::Relaxed);
                        }
                        let state = if *open {
                            "forced open"
                        } else {
                            "forced closed"
                        };
                        kept.push((key, state.to_string()));
                        true
                    }
                    _ => {
                        reset.push((key, "as configured".to_string()));
                        false
                    }
                }
            });
        }
        rt.breakers.inherit_counts(&old.breakers);
        self.rt.store(Arc::new(rt));
        *self
            .pending_restart
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = pending.clone();
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        for (key, value) in &kept {
            tracing::warn!(key = %key, value = %value, "Reload keeps an operator override (undo it through the admin API).");
        }
        for (key, value) in &reset {
            tracing::warn!(key = %key, value = %value, "Reload ends an operator override: the file changed this key.");
        }
        let needs_restart: Vec<String> = pending.keys().cloned().collect();
        tracing::info!(needs_restart = ?needs_restart, "Config reloaded.");
        Ok(ReloadReport {
            applied: true,
            needs_restart,
            overrides_kept: kept.into_iter().map(|(k, _)| k).collect(),
            overrides_reset: reset.into_iter().map(|(k, _)| k).collect(),
            warnings: new.warnings.clone(),
        })
    }

    /// Records an operator's breaker action so reloads keep it: `open`/`close` force,
    /// `reset` gives the breaker back to its configuration.
    pub fn note_breaker_override(&self, upstream: &str, action: &str) {
        let mut forced = self
            .breaker_overrides
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match action {
            "open" => {
                forced.insert(upstream.to_string(), true);
            }
            "close" => {
                forced.insert(upstream.to_string(), false);
            }
            _ => {
                forced.remove(upstream);
            }
        }
    }

    /// Whether `/readyz` says ready.
    pub fn ready(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
            && self.warm.load(Ordering::Relaxed)
            && self.lifecycle.phase() == Phase::Serving
    }

    /// Starts a drain without exiting: not ready at once, then kept-alive connections are
    /// asked to close after the drain delay. Logged like the drain of SIGTERM.
    pub fn drain(self: &Arc<Self>) {
        let epoch = self.lifecycle.epoch();
        let delay = self.rt.load().config.raw.server.drain_delay;
        if self.lifecycle.phase() == Phase::Serving {
            tracing::info!(drain_delay = ?delay, source = "admin", "Draining: not ready, still serving.");
        }
        self.lifecycle.advance(Phase::Draining);
        let lc = self.lifecycle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if lc.phase() == Phase::Draining && lc.epoch() == epoch {
                tracing::info!(
                    source = "admin",
                    "Drained: open connections asked to close; new ones get one request each."
                );
            }
            lc.advance_in_epoch(epoch, Phase::Drained);
        });
    }

    /// Undoes `drain` (`POST /admin/drain/cancel`): ready again, connections kept alive.
    /// Returns the phase it left, `None` when nothing was draining; refused once shutdown began.
    pub fn cancel_drain(&self) -> Result<Option<Phase>, crate::server::ShuttingDown> {
        let r = self.lifecycle.cancel_drain();
        match r {
            Ok(Some(from)) => tracing::info!(from = ?from, "Drain cancelled: ready again."),
            Ok(None) => tracing::info!("Drain cancel: nothing was draining."),
            Err(_) => tracing::warn!("Drain cancel refused: shutting down."),
        }
        r
    }
}

/// A started Seawall.
#[derive(Debug)]
pub struct Running {
    /// Data listener address (useful with port 0).
    pub addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Lifecycle phase.
    pub lifecycle: Arc<Lifecycle>,
    /// Shared state (tests read counters and advance the cache clock).
    pub state: Arc<AppState>,
    shutdown: Arc<tokio::sync::Notify>,
    done: JoinHandle<bool>,
}

impl Running {
    /// Starts the drain (as SIGTERM does): not ready at once.
    pub fn shutdown(&self) {
        self.lifecycle.begin_shutdown();
        self.shutdown.notify_one();
    }

    /// The current runtime (routes, upstreams, breakers).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.state.rt.load_full()
    }

    /// Waits until everything stopped; true when every connection finished within the grace period.
    pub async fn wait(self) -> bool {
        self.done.await.unwrap_or(false)
    }
}

/// What `run` refuses before it binds anything; `seawall check` calls the same function, so
/// both say it in the same words: an unreadable or empty token file (admin, read-only, purge),
/// an admin listener off loopback without a configured token. Returns the configured admin
/// token (`None`: one is generated at start).
pub fn preflight(config: &Config) -> anyhow::Result<Option<String>> {
    let token = admin::auth::configured_token(config)?;
    admin::auth::check_exposure(config, token.is_some())?;
    admin::auth::configured_read_token(config)?;
    admin::auth::load_secret(
        None,
        config.raw.admin.purge_token_file.as_deref(),
        "admin.purge_token_file",
    )?;
    Ok(token)
}

/// Binds both listeners and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let token = preflight(&config)?;
    start_with_token(config, token).await
}

/// Like `start`, with the admin token given explicitly (tests, embedding); `None` means none is
/// configured: one is generated, logged and written as `start` does.
pub async fn start_with_token(
    config: Config,
    admin_token: Option<String>,
) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    for w in &config.warnings {
        tracing::warn!(warning = %w, "Configuration warning.");
    }
    let read_token = admin::auth::configured_read_token(&config)?;
    let admin_token = admin::auth::full_token(&config, admin_token)?;
    let admin_auth = admin::auth::Tokens::new(&admin_token, read_token.as_deref());
    crate::telemetry::memory::warn_if_over_limit(config.raw.cache.max_size);
    let slot = std::env::var("SEAWALL_SLOT").unwrap_or_else(|_| "none".into());
    let registry = crate::telemetry::metrics::registry(env!("CARGO_PKG_VERSION"), &slot)
        .map_err(|e| anyhow::anyhow!(e))?;
    let cache = Arc::new(CacheShared::new(&config));
    if let Some(r) = &config.raw.cache.redis {
        let tier = SharedTier::new(r, cache.targeted().to_vec(), &registry)?;
        cache.set_tier(tier.clone());
        tier.start(Arc::downgrade(&cache));
        tracing::info!(replica = tier.replica(), "Shared tier on Redis enabled.");
    }
    let coalesce = Arc::new(CoalesceShared::new(
        &config,
        Some(crate::cache::metrics::coalesce_wait(&registry).map_err(|e| anyhow::anyhow!(e))?),
    ));
    let metrics =
        Arc::new(register_metrics(registry, &cache, &coalesce).map_err(|e| anyhow::anyhow!(e))?);
    let rt = build_runtime(config.clone(), (&cache, &coalesce, &metrics))?;
    let lifecycle = Arc::new(Lifecycle::new());
    lifecycle
        .register_metrics(&metrics.registry)
        .map_err(|e| anyhow::anyhow!(e))?;
    let window = Arc::new(Window::new());
    let state = Arc::new(AppState {
        cache,
        coalesce,
        metrics: metrics.clone(),
        rt: Arc::new(ArcSwap::from_pointee(rt)),
        lifecycle: lifecycle.clone(),
        serving: AtomicBool::new(false),
        warm: AtomicBool::new(config.raw.warmup.is_none()),
        admin_token: Some(admin_token),
        admin_auth,
        started_at: SystemTime::now(),
        window: window.clone(),
        data_addr: std::sync::OnceLock::new(),
        jobs: admin::warm::Jobs::default(),
        pending_restart: Mutex::new(BTreeMap::new()),
        breaker_overrides: Mutex::new(BTreeMap::new()),
    });
    // The breakers are rebuilt on reload: the scrape reads the running generation's.
    let rt = state.rt.clone();
    crate::breaker::metrics::register_breakers(&metrics.registry, move || {
        rt.load().breakers.clone()
    })
    .map_err(|e| anyhow::anyhow!(e))?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot bind server.listen {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot bind server.admin_listen {}", config.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let _ = state.data_addr.set(addr);

    let admin_app = admin::router(state.clone());
    let admin_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(
            admin_listener,
            admin_app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        {
            tracing::error!(error = %e, "Admin listener failed.");
        }
    });

    let proxy = Proxy::new(
        state.rt.clone(),
        lifecycle.clone(),
        Some(metrics.requests.clone()),
        Some(window),
    )
    .with_tracing(crate::telemetry::trace::wanted(&config.raw.telemetry));
    let server_task = tokio::spawn(server::serve(
        listener,
        proxy,
        config.raw.server.clone(),
        lifecycle.clone(),
    ));
    state.serving.store(true, Ordering::Relaxed);
    tracing::info!(listen = %addr, admin = %admin_addr, "Seawall is serving.");
    if let Some(w) = config.raw.warmup.clone() {
        admin::warm::startup_warmup(state.clone(), w);
    }

    let shutdown = Arc::new(tokio::sync::Notify::new());
    let done = {
        let shutdown = shutdown.clone();
        let lifecycle = lifecycle.clone();
        let drain_delay = config.raw.server.drain_delay;
        let grace = config.raw.server.grace_period;
        let tier = state.cache.tier().cloned();
        tokio::spawn(async move {
            shutdown.notified().await;
            tracing::info!(drain_delay = ?drain_delay, source = "signal", "Draining: not ready, still serving.");
            lifecycle.begin_shutdown();
            tokio::time::sleep(drain_delay).await;
            tracing::info!(grace = ?grace, "Closing the listener; waiting for in-flight requests.");
            lifecycle.advance(Phase::Closing);
            let clean = match server_task.await {
                Ok(conns) => tokio::time::timeout(grace, conns.wait()).await.is_ok(),
                Err(_) => false,
            };
            admin_task.abort();
            if let Some(t) = tier {
                t.stop().await;
            }
            clean
        })
    };
    Ok(Running {
        addr,
        admin_addr,
        lifecycle,
        state,
        shutdown,
        done,
    })
}

/// Runs until SIGTERM/SIGINT (a second signal exits at once); SIGHUP reloads the config.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    #[cfg(unix)]
    {
        let state = running.state.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                let _ = state.reload();
            }
        });
    }
    wait_signal().await;
    running.shutdown();
    let handle = tokio::spawn(running.wait());
    tokio::select! {
        r = handle => {
            if !r.unwrap_or(false) {
                tracing::warn!("Grace period ended with requests still in flight.");
            }
            tracing::info!("Stopped.");
            Ok(())
        }
        _ = wait_signal() => {
            tracing::warn!("Second signal: exiting at once.");
            std::process::exit(130);
        }
    }
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

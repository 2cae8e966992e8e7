//! Builds the shared state, the stack and both servers; runs them until a signal or
//! `shutdown()`; walks the drain phases (not ready → drain delay → close → grace period);
//! reloads the config on SIGHUP or `POST /admin/reload`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin;
use crate::breaker::{BreakerLayer, Breakers};
use crate::cache::store::redis::SharedTier;
use crate::cache::{CacheLayer, CacheShared};
use crate::coalesce::{CoalesceLayer, CoalesceShared};
use crate::config::Config;
use crate::route::Router;
use crate::server::{self, Lifecycle, Phase};
use crate::stack::{Forward, Proxy, Runtime};
use crate::telemetry::metrics::Metrics;
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
    pub metrics: Arc<Metrics>,
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
}

fn build_runtime(
    config: Arc<Config>,
    state_parts: (&Arc<CacheShared>, &Arc<CoalesceShared>, &Arc<Metrics>),
) -> anyhow::Result<Runtime> {
    let (cache, coalesce, metrics) = state_parts;
    let recorded = config.raw.telemetry.metrics.then(|| metrics.clone());
    let upstreams = Arc::new(Upstreams::new(&config).map_err(|e| anyhow::anyhow!(e))?);
    let breakers = Arc::new(Breakers::new(&config));
    let svc = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .layer(CoalesceLayer::new(coalesce.clone()))
        .layer(BreakerLayer::new(breakers.clone(), recorded.clone()))
        .service(Forward::new(&config, upstreams.clone(), recorded));
    let router = Router::new(&config);
    metrics.bind(
        &router
            .routes()
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>(),
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

/// Keys whose change needs a restart (reported by reloads, not applied).
fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.raw, &new.raw);
    let mut v = Vec::new();
    if old.listen != new.listen {
        v.push("server.listen");
    }
    if old.admin_listen != new.admin_listen {
        v.push("server.admin_listen");
    }
    if o.server.worker_threads != n.server.worker_threads {
        v.push("server.worker_threads");
    }
    if o.cache.max_size != n.cache.max_size {
        v.push("cache.max_size");
    }
    if o.cache.max_variants != n.cache.max_variants {
        v.push("cache.max_variants");
    }
    if o.cache.name != n.cache.name
        || o.cache.targeted_fields != n.cache.targeted_fields
        || o.cache.max_object_size != n.cache.max_object_size
    {
        v.push("cache.name/targeted_fields/max_object_size");
    }
    if serde_json::to_value(&o.coalesce).ok() != serde_json::to_value(&n.coalesce).ok() {
        v.push("coalesce.*");
    }
    if serde_json::to_value(&o.server).ok() != serde_json::to_value(&n.server).ok() && v.is_empty()
    {
        v.push("server.* (limits and timeouts)");
    }
    v
}

/// What a reload did.
#[derive(Debug, serde::Serialize)]
pub struct ReloadReport {
    /// Applied.
    pub applied: bool,
    /// Keys that changed but need a restart.
    pub needs_restart: Vec<&'static str>,
    /// Warnings from the new config.
    pub warnings: Vec<String>,
}

impl AppState {
    /// Re-reads the config file; a valid one replaces routes, upstreams, cache rules and the
    /// kill switch; an invalid one is refused and the running config stays.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let old = self.rt.load_full();
        let Some(path) = old.config.source.clone() else {
            self.metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            return Err("this instance was started without a config file".into());
        };
        let new = match Config::load(&path) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(error = %e, "Config reload refused; the running config stays.");
                return Err(e.to_string());
            }
        };
        let needs_restart = restart_keys(&old.config, &new);
        let rt = build_runtime(new.clone(), (&self.cache, &self.coalesce, &self.metrics)).map_err(
            |e| {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                e.to_string()
            },
        )?;
        rt.breakers.inherit_counts(&old.breakers);
        self.cache
            .enabled
            .store(new.raw.cache.enabled, Ordering::Relaxed);
        self.rt.store(Arc::new(rt));
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        tracing::info!(needs_restart = ?needs_restart, "Config reloaded.");
        Ok(ReloadReport {
            applied: true,
            needs_restart,
            warnings: new.warnings.clone(),
        })
    }

    /// Whether `/readyz` says ready.
    pub fn ready(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
            && self.warm.load(Ordering::Relaxed)
            && self.lifecycle.phase() == Phase::Serving
    }

    /// Starts a drain without exiting: not ready at once, then kept-alive connections are
    /// asked to close after the drain delay.
    pub fn drain(self: &Arc<Self>) {
        self.lifecycle.advance(Phase::Draining);
        let delay = self.rt.load().config.raw.server.drain_delay;
        let lc = self.lifecycle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            lc.advance(Phase::Drained);
        });
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
        self.lifecycle.advance(Phase::Draining);
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

/// Binds both listeners and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let token = admin::auth::configured_token(&config)?;
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
    let metrics =
        Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"), &slot).map_err(|e| anyhow::anyhow!(e))?);
    let cache = Arc::new(CacheShared::new(&config));
    if let Some(r) = &config.raw.cache.redis {
        let tier = SharedTier::new(r, cache.targeted().to_vec(), &metrics.registry)?;
        cache.set_tier(tier.clone());
        tier.start(Arc::downgrade(&cache));
        tracing::info!(replica = tier.replica(), "Shared tier on Redis enabled.");
    }
    let coalesce = Arc::new(CoalesceShared::new(
        &config,
        Some(metrics.coalesce_wait.clone()),
    ));
    let rt = build_runtime(config.clone(), (&cache, &coalesce, &metrics))?;
    let lifecycle = Arc::new(Lifecycle::new());
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
    });

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
        Some(metrics),
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
            tracing::info!(drain_delay = ?drain_delay, "Draining: not ready, still serving.");
            lifecycle.advance(Phase::Draining);
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

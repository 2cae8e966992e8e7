//! Builds the shared state, the stack and both servers; runs them until a signal or
//! `shutdown()`; walks the drain phases (not ready → drain delay → close → grace period);
//! SIGHUP reloads the config (`state::AppState::reload`, as `POST /admin/reload` does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin;
use crate::cache::CacheShared;
use crate::cache::coalesce::CoalesceShared;
use crate::cache::governor::{Governor, MemoryProbe};
use crate::cache::store::redis::SharedTier;
use crate::config::Config;
use crate::server::{self, Lifecycle, Phase};
use crate::stack::{Metrics, Proxy, Runtime, Shared};
use crate::state::{AppState, build_runtime, load_secret};
use crate::telemetry::window::Window;
use crate::warm;

/// A started Seawall.
#[derive(Debug)]
pub struct Running {
    /// Cleartext data listener address (useful with port 0); the TLS listener's when
    /// `server.listen = ""` turned the cleartext one off.
    pub addr: SocketAddr,
    /// TLS data listener address (`server.listen_tls`), when there is one.
    pub tls_addr: Option<SocketAddr>,
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
        self.state.runtime()
    }

    /// Waits until everything stopped; true when every connection finished within the grace period.
    pub async fn wait(self) -> bool {
        self.done.await.unwrap_or(false)
    }
}

/// What `preflight` found that does not stop a start.
#[derive(Debug, Default)]
pub struct Preflight {
    /// The configured admin token (`None`: one is generated at start).
    pub admin_token: Option<String>,
    /// Findings to report (a TLS certificate expired or ending within 14 days).
    pub warnings: Vec<String>,
}

/// What `run` refuses before it binds anything; `seawall check` calls the same function, so
/// both say it in the same words: an unreadable or empty token file (admin, read-only, purge),
/// an admin listener off loopback without a configured token, a TLS certificate or key that
/// cannot be read or does not match (the message names the file).
pub fn preflight(config: &Config) -> anyhow::Result<Preflight> {
    let token = admin::auth::configured_token(config)?;
    admin::auth::check_exposure(config, token.is_some())?;
    admin::auth::configured_read_token(config)?;
    load_secret(
        None,
        config.raw.admin.purge_token_file.as_deref(),
        "admin.purge_token_file",
    )?;
    let mut warnings = Vec::new();
    if config.listen_tls.is_some() || config.raw.admin.tls {
        let certs = server::tls::Certificates::load(&config.raw.tls)?;
        warnings = certs.expiry_warnings(std::time::SystemTime::now());
    }
    Ok(Preflight {
        admin_token: token,
        warnings,
    })
}

/// Binds the listeners and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let token = preflight(&config)?.admin_token;
    start_with_token(config, token).await
}

/// Like `start`, with the admin token given explicitly (tests, embedding); `None` means none is
/// configured: one is generated, logged and written as `start` does.
pub async fn start_with_token(
    config: Config,
    admin_token: Option<String>,
) -> anyhow::Result<Running> {
    start_with_probe(config, admin_token, MemoryProbe::system()).await
}

/// Like `start_with_token`, with the memory governor reading `probe` (tests inject the limit
/// and the resident reading) instead of this process's cgroup and `/proc`.
pub async fn start_with_probe(
    config: Config,
    admin_token: Option<String>,
    probe: MemoryProbe,
) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    for w in &config.warnings {
        tracing::warn!(warning = %w, "Configuration warning.");
    }
    let read_token = admin::auth::configured_read_token(&config)?;
    let admin_token = admin::auth::full_token(&config, admin_token)?;
    let admin_auth = admin::auth::Tokens::new(&admin_token, read_token.as_deref());
    let limit = probe.limit.map(|l| l.bytes);
    let max_size = config.raw.cache.max_size.resolve(limit).with_context(|| {
        format!(
            "cache.max_size = \"{}\" is a share of the memory limit, but none could be read (cgroup memory.max, /proc/meminfo); give a size instead",
            config.raw.cache.max_size
        )
    })?;
    crate::telemetry::memory::warn_if_over_limit(max_size);
    let slot = std::env::var("SEAWALL_SLOT").unwrap_or_else(|_| "none".into());
    let registry = crate::telemetry::metrics::registry(env!("CARGO_PKG_VERSION"), &slot)
        .map_err(|e| anyhow::anyhow!(e))?;
    let cache = Arc::new(CacheShared::with_capacity(&config, max_size));
    match Governor::new(&cache, probe, config.raw.cache.memory_high_watermark) {
        Some(g) => {
            tracing::info!(
                limit = limit,
                cache_max_size = max_size,
                "Memory governor on."
            );
            g.spawn();
        }
        None => tracing::info!(
            "Memory governor off: no memory limit to take cache.memory_high_watermark as a share of."
        ),
    }
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
        Arc::new(Metrics::register(registry, &cache, &coalesce).map_err(|e| anyhow::anyhow!(e))?);
    let shared = Shared {
        cache,
        coalesce,
        metrics: metrics.clone(),
    };
    let rt = build_runtime(config.clone(), &shared)?;
    // The admin listener over TLS serves the same certificates (its default one).
    let tls = match config
        .listen_tls
        .or(config.raw.admin.tls.then_some(config.admin_listen))
    {
        Some(_) => {
            let certs = server::tls::Certificates::load(&config.raw.tls)?;
            for w in certs.expiry_warnings(std::time::SystemTime::now()) {
                tracing::warn!(warning = %w, "TLS certificate expiring.");
            }
            let tls = server::TlsServer::new(&config.raw.tls, certs, &metrics.registry)?;
            Some(Arc::new(tls))
        }
        None => None,
    };
    let lifecycle = Arc::new(Lifecycle::new());
    lifecycle
        .register_metrics(&metrics.registry)
        .map_err(|e| anyhow::anyhow!(e))?;
    let window = Arc::new(Window::new());
    let state = Arc::new(AppState::new(
        shared,
        rt,
        lifecycle.clone(),
        window.clone(),
        Some(admin_token),
        config.raw.warmup.is_some(),
        tls.clone(),
    ));
    // The breakers are rebuilt on reload: the scrape reads the running generation's.
    let rt = state.rt.clone();
    crate::breaker::metrics::register_breakers(&metrics.registry, move || {
        rt.load().breakers.clone()
    })
    .map_err(|e| anyhow::anyhow!(e))?;

    let listener = match config.listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot bind server.listen {a}"))?,
        ),
        None => None,
    };
    let tls_listener = match config.listen_tls {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot bind server.listen_tls {a}"))?,
        ),
        None => None,
    };
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot bind server.admin_listen {}", config.admin_listen))?;
    let plain_addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let tls_addr = tls_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let addr = plain_addr
        .or(tls_addr)
        .context("no data listener (server.listen and server.listen_tls are both off)")?;
    let admin_addr = admin_listener.local_addr()?;
    // Warm-up fetches go through the cleartext listener only.
    if let Some(a) = plain_addr {
        let _ = state.data_addr.set(a);
    }

    // Performance history and alert log, sampled every 10 s from process start.
    let since = state
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let history = Arc::new(admin::history::History::new(since));
    let sampler = admin::history::spawn_sampler(state.clone(), history.clone());
    let admin_app = admin::router(state.clone(), admin_auth, history);
    let admin_tls = match (&tls, config.raw.admin.tls) {
        (Some(t), true) => Some(
            t.admin_acceptor()
                .map_err(|e| anyhow::anyhow!("admin.tls: {e}"))?,
        ),
        _ => None,
    };
    let admin_task = tokio::spawn(async move {
        let served = match admin_tls {
            None => {
                axum::serve(
                    admin_listener,
                    admin_app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
            }
            Some(acceptor) => {
                admin::serve_tls(admin_listener, admin_app, acceptor).await;
                Ok(())
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "Admin listener failed.");
        }
    });

    let proxy = Proxy::new(
        state.rt.clone(),
        lifecycle.clone(),
        Some(metrics.requests.clone()),
        Some(window),
    )
    .with_tracing(crate::telemetry::trace::wanted(&config.raw.telemetry))
    .with_https_port(tls_addr.map(|a| a.port()));
    // One accept loop per listener, the same connection handling behind both.
    let mut server_tasks = Vec::new();
    for (l, tls) in [(listener, None), (tls_listener, tls)] {
        if let Some(l) = l {
            server_tasks.push(tokio::spawn(server::serve(
                l,
                proxy.clone(),
                config.raw.server.clone(),
                lifecycle.clone(),
                tls,
            )));
        }
    }
    state.serving.store(true, Ordering::Relaxed);
    if let Some(t) = &state.tls
        && !config.raw.tls.watch_interval.is_zero()
    {
        t.watch(config.raw.tls.watch_interval);
    }
    tracing::info!(
        listen = ?plain_addr,
        listen_tls = ?tls_addr,
        admin = %admin_addr,
        "Seawall is serving."
    );
    if let Some(w) = config.raw.warmup.clone() {
        // Readiness waits for the warm-up: the engine only reports when it is over.
        let over = warm::startup_warmup(&state.warm_handles(), w);
        let state = state.clone();
        tokio::spawn(async move {
            over.await;
            state.warm.store(true, Ordering::Relaxed);
        });
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
            let waits = async {
                let mut clean = true;
                for t in server_tasks {
                    match t.await {
                        Ok(conns) => conns.wait().await,
                        Err(_) => clean = false,
                    }
                }
                clean
            };
            let clean = tokio::time::timeout(grace, waits).await.unwrap_or(false);
            admin_task.abort();
            sampler.abort();
            if let Some(t) = tier {
                t.stop().await;
            }
            clean
        })
    };
    Ok(Running {
        addr,
        tls_addr,
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

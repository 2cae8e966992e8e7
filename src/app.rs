//! Builds the shared state, the stack and both servers; runs them until a signal or
//! `shutdown()`; walks the drain phases (not ready → drain delay → close → grace period).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::breaker::{BreakerLayer, Breakers};
use crate::cache::{CacheLayer, CacheShared};
use crate::coalesce::{CoalesceLayer, CoalesceShared};
use crate::config::Config;
use crate::route::Router;
use crate::server::{self, Lifecycle, Phase};
use crate::stack::{Forward, Inner, Proxy, Runtime};
use crate::upstream::Upstreams;

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
    pub parts: Arc<Parts>,
    shutdown: Arc<Notify>,
    done: JoinHandle<bool>,
}

impl Running {
    /// Starts the drain (as SIGTERM does).
    pub fn shutdown(&self) {
        self.shutdown.notify_one();
    }

    /// Waits until everything stopped; true when every connection finished within the grace period.
    pub async fn wait(self) -> bool {
        self.done.await.unwrap_or(false)
    }
}

/// Shared state that survives reloads.
#[derive(Debug)]
pub struct Parts {
    /// Upstream clients.
    pub upstreams: Arc<Upstreams>,
    /// The cache.
    pub cache: Arc<CacheShared>,
    /// Coalescing.
    pub coalesce: Arc<CoalesceShared>,
    /// Circuit breakers.
    pub breakers: Arc<Breakers>,
}

fn build_inner(cfg: &Config, parts: &Parts) -> Inner {
    let svc = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(parts.cache.clone()))
        .layer(CoalesceLayer::new(parts.coalesce.clone()))
        .layer(BreakerLayer::new(parts.breakers.clone()))
        .service(Forward::new(cfg, parts.upstreams.clone()));
    Inner::new(svc)
}

/// Binds both listeners and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    for w in &config.warnings {
        tracing::warn!(warning = %w, "Configuration warning.");
    }
    let upstreams = Arc::new(Upstreams::new(&config).map_err(|e| anyhow::anyhow!(e))?);
    let parts = Arc::new(Parts {
        upstreams,
        cache: Arc::new(CacheShared::new(&config)),
        coalesce: Arc::new(CoalesceShared::new(&config)),
        breakers: Arc::new(Breakers::new(&config)),
    });
    for u in &parts.upstreams.list {
        u.spawn_health_checks();
    }
    let lifecycle = Arc::new(Lifecycle::new());
    let runtime = Runtime {
        router: Router::new(&config),
        inner: build_inner(&config, &parts),
        cache_name: config.raw.cache.name.as_str().into(),
        config: config.clone(),
    };
    let rt = Arc::new(ArcSwap::from_pointee(runtime));

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot bind server.listen {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot bind server.admin_listen {}", config.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let admin_state = Arc::new(AdminState {
        lifecycle: lifecycle.clone(),
        serving: false.into(),
    });
    let admin_app = admin::router(admin_state.clone());
    let admin_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, admin_app).await {
            tracing::error!(error = %e, "Admin listener failed.");
        }
    });

    let proxy = Proxy::new(rt.clone(), lifecycle.clone());
    let server_task = tokio::spawn(server::serve(
        listener,
        proxy,
        config.raw.server.clone(),
        lifecycle.clone(),
    ));
    admin_state.serving.store(true, Ordering::Relaxed);
    tracing::info!(listen = %addr, admin = %admin_addr, "Seawall is serving.");

    let shutdown = Arc::new(Notify::new());
    let done = {
        let shutdown = shutdown.clone();
        let lifecycle = lifecycle.clone();
        let drain_delay = config.raw.server.drain_delay;
        let grace = config.raw.server.grace_period;
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
            clean
        })
    };
    Ok(Running {
        addr,
        admin_addr,
        lifecycle,
        parts,
        shutdown,
        done,
    })
}

/// Runs until SIGTERM/SIGINT (a second signal exits at once).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
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

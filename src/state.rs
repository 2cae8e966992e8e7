//! The shared application state (what the proxy, the admin API and warm-ups share for the life
//! of the process), readiness and the admin drain; and the reload that swaps config generations.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde_json::Value;

use crate::cache::CacheShared;
use crate::cache::coalesce::CoalesceShared;
use crate::config::{Config, FileConfig};
use crate::http_util::Secret;
use crate::server::{Lifecycle, Phase, TlsServer};
use crate::stack::Metrics;
use crate::stack::{self, Runtime, Shared};
use crate::telemetry::window::Window;
use crate::warm;

/// Everything the proxy and the admin API share for the life of the process.
#[derive(Debug)]
pub struct AppState {
    /// The cache (kept across reloads).
    pub(crate) cache: Arc<CacheShared>,
    /// Coalescing (kept across reloads).
    pub(crate) coalesce: Arc<CoalesceShared>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The current config generation.
    pub(crate) rt: Arc<ArcSwap<Runtime>>,
    /// Drain phase.
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Data listener bound and serving.
    pub(crate) serving: AtomicBool,
    /// Warm-up finished (or none configured).
    pub(crate) warm: AtomicBool,
    /// The full admin bearer token (configured or generated at start): warm-ups send it to
    /// their peer's export.
    pub(crate) admin_token: Option<String>,
    /// Process start.
    pub(crate) started_at: SystemTime,
    /// Recent-window request statistics for `/admin/status`.
    pub(crate) window: Arc<Window>,
    /// Where the data listener is (for URL warm-ups through the cache).
    pub(crate) data_addr: std::sync::OnceLock<SocketAddr>,
    /// Warm-up jobs.
    pub(crate) jobs: Arc<warm::Jobs>,
    /// File values read by a reload that wait for a restart (key → the file's value).
    pub(crate) pending_restart: Mutex<BTreeMap<String, Value>>,
    /// Breakers an operator forced through the admin API (upstream → forced open); kept
    /// across reloads until `reset` or a file change of that upstream's `[upstreams.breaker]`.
    pub(crate) breaker_overrides: Mutex<BTreeMap<String, bool>>,
    /// The TLS listener's certificates (reloaded with the config), when there is one.
    pub(crate) tls: Option<Arc<TlsServer>>,
}

/// A non-empty, trimmed secret from the variable `env`, else from the file at `file` (`key`
/// names it in errors). Here because a reload re-reads the purge token; the admin tokens use
/// it too.
pub fn load_secret(
    env: Option<&str>,
    file: Option<&str>,
    key: &str,
) -> anyhow::Result<Option<String>> {
    if let Some(var) = env
        && let Ok(t) = std::env::var(var)
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_string()));
    }
    match file {
        Some(path) => {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {key} {path}"))?;
            let t = t.trim().to_string();
            anyhow::ensure!(!t.is_empty(), "{key} {path} is empty");
            Ok(Some(t))
        }
        None => Ok(None),
    }
}

/// One config generation: the purge token read from its file, then the stack (`stack::build`).
pub(crate) fn build_runtime(config: Arc<Config>, shared: &Shared) -> anyhow::Result<Runtime> {
    let purge_token = load_secret(
        None,
        config.raw.admin.purge_token_file.as_deref(),
        "admin.purge_token_file",
    )?
    .map(|t| Secret::new(&t));
    stack::build(config, shared, purge_token)
}

/// Copies one key's running value into a freshly read file.
type Pin = fn(&mut FileConfig, &FileConfig);

/// The keys read once at startup: a reload keeps their running values and reports the file's.
fn restart_keys() -> Vec<(&'static str, Pin)> {
    vec![
        ("server.listen", |f, r| {
            f.server.listen.clone_from(&r.server.listen)
        }),
        ("server.listen_tls", |f, r| {
            f.server.listen_tls.clone_from(&r.server.listen_tls)
        }),
        // The watcher's period is set when it starts; the rest of `[tls]` reloads.
        ("tls.watch_interval", |f, r| {
            f.tls.watch_interval = r.tls.watch_interval
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
        ("cache.memory_high_watermark", |f, r| {
            f.cache.memory_high_watermark = r.cache.memory_high_watermark
        }),
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
        ("admin.tls", |f, r| f.admin.tls = r.admin.tls),
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
    file.listen_tls = running.listen_tls;
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
    /// The certificates' reload, with a TLS listener: which file failed and why, when one did
    /// (the running certificates stay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<crate::server::tls::TlsReload>,
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
    /// The state of a process that has built its first generation `rt` and not bound yet;
    /// `warm` says whether readiness waits for a warm-up.
    pub(crate) fn new(
        shared: Shared,
        rt: Runtime,
        lifecycle: Arc<Lifecycle>,
        window: Arc<Window>,
        admin_token: Option<String>,
        warm: bool,
        tls: Option<Arc<TlsServer>>,
    ) -> Self {
        Self {
            cache: shared.cache,
            coalesce: shared.coalesce,
            metrics: shared.metrics,
            rt: Arc::new(ArcSwap::from_pointee(rt)),
            lifecycle,
            serving: AtomicBool::new(false),
            warm: AtomicBool::new(!warm),
            admin_token,
            started_at: SystemTime::now(),
            window,
            data_addr: std::sync::OnceLock::new(),
            jobs: Arc::default(),
            pending_restart: Mutex::new(BTreeMap::new()),
            breaker_overrides: Mutex::new(BTreeMap::new()),
            tls,
        }
    }

    /// The cache (kept across reloads).
    pub fn cache(&self) -> &Arc<CacheShared> {
        &self.cache
    }

    /// Coalescing (kept across reloads).
    pub fn coalesce(&self) -> &Arc<CoalesceShared> {
        &self.coalesce
    }

    /// The drain phase.
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// The current config generation.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.rt.load_full()
    }

    /// The handles every config generation shares (what a reload builds around).
    fn shared(&self) -> Shared {
        Shared {
            cache: self.cache.clone(),
            coalesce: self.coalesce.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// What a warm-up job needs, and nothing else: the cache, the routing table, the token its
    /// peer wants and this instance's data listener.
    pub(crate) fn warm_handles(&self) -> warm::Handles {
        warm::Handles {
            cache: self.cache.clone(),
            rt: self.rt.clone(),
            token: self.admin_token.clone(),
            data_addr: self.data_addr.get().copied(),
            jobs: self.jobs.clone(),
        }
    }

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
        let (mut new, pending) = pin_restart_keys(&old.config, file);
        // Certificates are read before anything is committed; broken ones keep the running
        // `[tls]` (the rest of the file still applies) and the answer says why.
        let tls = self.tls.as_ref().map(|t| match t.prepare(&new.raw.tls) {
            Ok(p) => Ok(p),
            Err(e) => {
                new.raw.tls = t.section();
                Err(e)
            }
        });
        let new = Arc::new(new);
        let rt = build_runtime(new.clone(), &self.shared()).map_err(|e| {
            self.metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            e.to_string()
        })?;
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
        let tls = match (self.tls.as_ref(), tls) {
            (Some(t), Some(Ok(p))) => Some(t.install(p)),
            (Some(t), Some(Err(e))) => Some(t.failed(e)),
            _ => None,
        };
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
            tls,
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

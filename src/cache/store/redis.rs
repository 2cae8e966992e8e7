//! The shared tier (L2) on Redis: entries every replica reads on a memory miss, a fleet-wide
//! fill lock, purge fan-out with a replayable stream, and heartbeats. Every call is cut at
//! `timeout` and sits behind the tier's own breaker, so Redis trouble only ever costs hits.

pub mod bus;
mod cluster;
pub mod codec;
mod journal;
mod lock;
mod purge;
mod sentinel;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{FromRedisValue, RedisError};
use cluster::Conn;
use http::HeaderName;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::breaker::state::{Admission, Breaker, BreakerConfig, StateKind};
use crate::cache::CacheShared;
use crate::cache::entry::Entry;
use crate::config::file::RedisSection;
pub use lock::{FillLock, FillOutcome, Lock};
pub use purge::SharedPurge;

/// The tier's counters, on the process registry.
#[derive(Clone, Debug)]
pub struct TierMetrics {
    errors: IntCounterVec,
    timeouts: IntCounterVec,
    rejected: IntCounter,
    up: IntGauge,
    /// Entries that did not decode (deleted).
    pub corrupt: IntCounter,
    writes: IntCounterVec,
    /// L2 lookups by result.
    pub lookups: IntCounterVec,
    locks: IntCounterVec,
    purges: IntCounterVec,
}

impl TierMetrics {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        let cv = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let c = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let up = IntGauge::new(
            "seawall_redis_up",
            "1 while the shared tier answers (connected, breaker closed), else 0.",
        )?;
        r.register(Box::new(up.clone()))?;
        Ok(Self {
            errors: cv(
                "seawall_redis_errors_total",
                "Failed Redis calls (timeouts included), by operation.",
                &["op"],
            )?,
            timeouts: cv(
                "seawall_redis_timeouts_total",
                "Redis calls cut at cache.redis.timeout, by operation.",
                &["op"],
            )?,
            rejected: c(
                "seawall_redis_rejected_total",
                "Redis calls not made because the tier's breaker was open.",
            )?,
            up,
            corrupt: c(
                "seawall_redis_corrupt_entries_total",
                "Shared-tier entries that did not decode (ignored and deleted).",
            )?,
            writes: cv(
                "seawall_redis_writes_total",
                "Shared-tier writes by result (stored, dropped, too_large, unencodable, error).",
                &["result"],
            )?,
            lookups: cv(
                "seawall_redis_l2_lookups_total",
                "Shared-tier reads on a memory miss, by result (hit, miss, error).",
                &["result"],
            )?,
            locks: cv(
                "seawall_redis_fill_locks_total",
                "Fleet fill-lock attempts by result (acquired, uncertain, stored, not_stored, timeout, skipped).",
                &["result"],
            )?,
            purges: cv(
                "seawall_redis_purges_applied_total",
                "Purges from other replicas applied to this one's memory, by source (live, replay, gap).",
                &["source"],
            )?,
        })
    }
}

/// A stream entry id (`ms-seq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId(pub u64, pub u64);

impl StreamId {
    /// Parses `ms-seq`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('-')?;
        Some(Self(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Where this replica is in the purge stream: the last entry applied and its sequence number
/// (numbers are contiguous, so a jump means purges were trimmed before we read them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor {
    pub(crate) id: StreamId,
    /// Unknown until the first entry is applied.
    pub(crate) seq: Option<u64>,
}

struct Write {
    entry: Arc<Entry>,
    keep: Duration,
    lock: Option<FillLock>,
}

/// Why a call did not happen or failed.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The tier's breaker is open.
    #[error("shared tier unavailable (breaker open)")]
    Open,
    /// Cut at `timeout`.
    #[error("Redis did not answer within the timeout")]
    Timeout,
    /// Redis said no, or the connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] RedisError),
    /// The primary has replicas but none confirmed a purge in time (`WAIT`): a failover now
    /// could lose it, so it stays journalled and goes out again.
    #[error("no replica of the primary confirmed the purge in time")]
    NotReplicated,
}

/// The connection to the current primary (or to the cluster).
struct Link {
    /// The node's own client (pub/sub); none for a cluster (any node will do).
    client: Option<::redis::Client>,
    conn: Conn,
    /// Where it points, when a sentinel named it.
    primary: Option<(String, u16)>,
}

/// The shared tier.
pub struct SharedTier {
    /// None until the sentinels name a primary (or the cluster first answers).
    link: RwLock<Option<Link>>,
    access: sentinel::Access,
    /// Asks the sentinel follower to look for the primary again.
    relink_kick: tokio::sync::Notify,
    /// Bumped when the tier moves to another primary (the listener re-subscribes there).
    relinked: tokio::sync::watch::Sender<u64>,
    cfg: RedisSection,
    prefix: String,
    replica: String,
    targeted: Vec<HeaderName>,
    breaker: Mutex<Breaker>,
    /// Counters.
    pub metrics: TierMetrics,
    writes: mpsc::Sender<Write>,
    writes_rx: Mutex<Option<mpsc::Receiver<Write>>>,
    waiters: Mutex<HashMap<Arc<str>, Vec<oneshot::Sender<FillOutcome>>>>,
    bus_up: AtomicBool,
    last_applied: Mutex<Cursor>,
    journal: journal::Journal,
    /// Wall time (Unix ms) of the newest purge this replica published or applied.
    last_purge_ms: AtomicU64,
    /// L2 entries stored before this (Unix ms) are not served: set when Redis restarted
    /// (its `run_id` changed), so nothing purged comes back from its persistence.
    restart_floor_ms: AtomicU64,
    /// The `run_id` of the Redis the listener last subscribed to.
    run_id: Mutex<Option<String>>,
    nonce: AtomicU64,
    stop: CancellationToken,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// The call error while no primary is known (an outage for the breaker).
fn no_primary() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "no primary known yet (asking the sentinels)",
    ))
}

/// A connection manager (lazy: it connects on first use and reconnects by itself) to the
/// node of `client`.
fn link_to(
    cfg: &RedisSection,
    client: ::redis::Client,
    primary: Option<(String, u16)>,
) -> Result<Link, RedisError> {
    let mgr = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(cfg.timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), mgr)?;
    Ok(Link {
        client: Some(client),
        conn: Conn::Single(conn),
        primary,
    })
}

/// Unix milliseconds.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How far apart replicas' clocks may be: entries stored up to this long after the newest
/// purge known are also refused after a Redis restart (a miss costs less than a resurrection).
const CLOCK_SKEW_MS: u64 = 1_000;

/// `field:value` from an `INFO` section.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "seawall".into());
    let salt = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{salt:x}", std::process::id())
}

impl SharedTier {
    /// Builds the tier (no connection yet: it connects lazily and reconnects by itself).
    pub fn new(
        cfg: &RedisSection,
        targeted: Vec<HeaderName>,
        registry: &Registry,
    ) -> anyhow::Result<Arc<Self>> {
        let access = sentinel::Access::new(cfg)?;
        let link = match &access {
            sentinel::Access::Url { info, login } => Some(
                login
                    .client(info.clone())
                    .and_then(|c| link_to(cfg, c, None))
                    .map_err(|e| anyhow::anyhow!("cache.redis: {e}"))?,
            ),
            // The follower finds it (connecting is async, and Seawall starts without Redis).
            sentinel::Access::Sentinel { .. } | sentinel::Access::Cluster { .. } => None,
        };
        let breaker = Breaker::new(
            BreakerConfig {
                consecutive_failures: cfg.breaker_failures,
                open_duration: cfg.breaker_open,
                max_open_duration: cfg.breaker_open * 4,
                ..BreakerConfig::default()
            },
            tokio::time::Instant::now(),
        );
        let journal = journal::Journal::open(
            cfg.journal_max,
            cfg.journal_file.as_deref().map(std::path::Path::new),
            registry,
        )?;
        let (tx, rx) = mpsc::channel(cfg.write_queue);
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Arc::new(Self {
            link: RwLock::new(link),
            access,
            relink_kick: tokio::sync::Notify::new(),
            relinked: tokio::sync::watch::Sender::new(0),
            prefix: format!("{}:v{}:", cfg.namespace, codec::FORMAT),
            replica: cfg.replica_id.clone().unwrap_or_else(default_replica_id),
            cfg: cfg.clone(),
            targeted,
            breaker: Mutex::new(breaker),
            metrics: TierMetrics::new(registry).map_err(|e| anyhow::anyhow!(e))?,
            writes: tx,
            writes_rx: Mutex::new(Some(rx)),
            waiters: Mutex::new(HashMap::new()),
            bus_up: AtomicBool::new(false),
            // Purges published after this process started are ours to apply.
            last_applied: Mutex::new(Cursor {
                id: StreamId(now_ms, 0),
                seq: None,
            }),
            journal,
            last_purge_ms: AtomicU64::new(0),
            restart_floor_ms: AtomicU64::new(0),
            run_id: Mutex::new(None),
            nonce: AtomicU64::new(0),
            stop: CancellationToken::new(),
        }))
    }

    /// Starts the writer, the heartbeat, the purge/fill listener and the journal's drainer.
    pub fn start(self: &Arc<Self>, cache: Weak<CacheShared>) {
        let rx = self
            .writes_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(self.clone().writer(rx));
        }
        tokio::spawn(self.clone().heartbeat());
        tokio::spawn(bus::run(self.clone(), cache));
        tokio::spawn(self.clone().drain_journal());
        tokio::spawn(sentinel::follow(self.clone()));
        tokio::spawn(cluster::connect(self.clone()));
    }

    /// The primary's connection, if one is known.
    fn conn(&self) -> Option<Conn> {
        let l = self.link.read().unwrap_or_else(|e| e.into_inner());
        l.as_ref().map(|l| l.conn.clone())
    }

    /// A client for the primary (the listener's own connection), if one is known.
    fn client(&self) -> Option<::redis::Client> {
        let l = self.link.read().unwrap_or_else(|e| e.into_inner());
        l.as_ref().and_then(|l| l.client.clone())
    }

    /// The primary a sentinel named, if any.
    fn primary(&self) -> Option<(String, u16)> {
        let l = self.link.read().unwrap_or_else(|e| e.into_inner());
        l.as_ref().and_then(|l| l.primary.clone())
    }

    /// Moves every connection to the primary at `addr`.
    fn relink(&self, addr: (String, u16)) {
        let client = match self.access.data_client(&addr.0, addr.1) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Shared tier: cannot address the new primary.");
                return;
            }
        };
        match link_to(&self.cfg, client, Some(addr.clone())) {
            Ok(l) => {
                let old = self.primary();
                *self.link.write().unwrap_or_else(|e| e.into_inner()) = Some(l);
                // The outage that opened the breaker was the old primary; the new one was just
                // checked (ROLE), so calls go through at once rather than after the open time.
                self.breaker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reset(tokio::time::Instant::now());
                self.refresh_up();
                self.relinked.send_modify(|g| *g += 1);
                tracing::warn!(
                    primary = %format!("{}:{}", addr.0, addr.1),
                    previous = ?old.map(|(h, p)| format!("{h}:{p}")),
                    "Shared tier: following the primary the sentinels name."
                );
            }
            Err(e) => tracing::warn!(error = %e, "Shared tier: cannot connect to the new primary."),
        }
    }

    /// Notes that this replica published or applied a purge now.
    fn purged_now(&self) {
        self.last_purge_ms
            .fetch_max(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// Compares the primary's `run_id` with the last one seen: another one (a restart, or a
    /// failover) may hold entries older than purges it lost, so every entry stored before the
    /// newest purge this replica knows is refused from now on.
    pub(super) async fn check_run_id(&self) -> Result<(), TierError> {
        let info: String = self
            .at_stream_node("replay", ::redis::cmd("INFO").arg("server"))
            .await?;
        let Some(now) = info_field(&info, "run_id").map(str::to_string) else {
            return Ok(());
        };
        let before = self
            .run_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(now.clone());
        let last = self.last_purge_ms.load(Ordering::Relaxed);
        if before.is_some_and(|b| b != now) && last > 0 {
            let floor = last + CLOCK_SKEW_MS;
            self.restart_floor_ms.fetch_max(floor, Ordering::Relaxed);
            tracing::warn!(
                run_id = %now,
                refused_before_ms = floor,
                "Shared tier: Redis restarted or changed; entries stored before the newest purge known are no longer served."
            );
        }
        Ok(())
    }

    /// After a purge reached the primary: when it has replicas, waits (`WAIT 1`) until one
    /// holds it, so a failover right after cannot lose it.
    async fn replicated(&self) -> Result<(), TierError> {
        let info: String = self
            .at_stream_node("purge", ::redis::cmd("INFO").arg("replication"))
            .await?;
        let replicas = info_field(&info, "connected_slaves")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if replicas == 0 {
            return Ok(());
        }
        // Below the call timeout, so a silent replica is a refusal, not a timeout (an outage).
        let wait_ms = (self.cfg.timeout.as_millis() as u64 / 2).max(1);
        let acked: i64 = self
            .at_stream_node("purge", ::redis::cmd("WAIT").arg(1).arg(wait_ms))
            .await?;
        if acked >= 1 {
            Ok(())
        } else {
            Err(TierError::NotReplicated)
        }
    }

    /// Stops the background tasks and withdraws the heartbeat.
    pub async fn stop(&self) {
        self.stop.cancel();
        let _ = self
            .cmd::<i64>(
                "heartbeat",
                ::redis::cmd("DEL").arg(self.hb_key(&self.replica)),
            )
            .await;
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// `ok` while connected with the breaker closed, else `degraded`.
    pub fn status(&self) -> &'static str {
        let closed = self
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
            == StateKind::Closed;
        if closed && self.bus_up.load(Ordering::Relaxed) {
            "ok"
        } else {
            "degraded"
        }
    }

    fn refresh_up(&self) {
        self.metrics.up.set(i64::from(self.status() == "ok"));
    }

    // Key layout (format 2): an entry (all its variants, in one hash) and its fill lock carry
    // the primary key as their Cluster hash tag, so they share a slot; the tag index, the purge
    // stream, its counter and the heartbeats all sit under the fixed tag `{shared}`, so the
    // stream's script and the tag writes never cross slots. Standalone uses the same names.

    fn entry_key(&self, key: &str) -> String {
        format!("{}e:{{{key}}}", self.prefix)
    }

    /// The primary key of an entry key, if it is one.
    fn key_of<'a>(&self, ekey: &'a str) -> Option<&'a str> {
        ekey.strip_prefix(&self.prefix)?
            .strip_prefix("e:{")?
            .strip_suffix('}')
    }

    fn shared_key(&self, rest: &str) -> String {
        format!("{}{{shared}}:{rest}", self.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        self.shared_key(&format!("t:{tag}"))
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}l:{{{key}}}", self.prefix)
    }

    fn hb_key(&self, replica: &str) -> String {
        self.shared_key(&format!("hb:{replica}"))
    }

    fn stream_key(&self) -> String {
        self.shared_key("purges")
    }

    fn seq_key(&self) -> String {
        self.shared_key("purge-seq")
    }

    fn purge_channel(&self) -> String {
        self.shared_key("purge")
    }

    fn fill_channel(&self) -> String {
        self.shared_key("fill")
    }

    /// Runs one call: breaker, timeout, metrics.
    async fn guard<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, TierError> {
        let now = tokio::time::Instant::now();
        let admission = self
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(now)
            .0;
        let probe = match admission {
            Admission::Allowed { probe } => probe,
            Admission::Rejected { .. } => {
                self.metrics.rejected.inc();
                self.refresh_up();
                return Err(TierError::Open);
            }
        };
        let r = match tokio::time::timeout(self.cfg.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(TierError::Redis(e)),
            Err(_) => Err(TierError::Timeout),
        };
        // A refusal from a healthy server (a wrong type, say) is not an outage.
        let outage = match &r {
            Ok(_) => false,
            Err(TierError::Redis(e)) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            Err(_) => true,
        };
        // Behind Sentinel a dead connection, or a write refused by a node demoted to replica,
        // may mean a failover: ask where the primary is.
        let demoted = matches!(&r, Err(TierError::Redis(e)) if e.code() == Some("READONLY"));
        if outage || demoted {
            self.relink_kick.notify_one();
        }
        if let Err(e) = &r {
            self.metrics.errors.with_label_values(&[op]).inc();
            if matches!(e, TierError::Timeout)
                || matches!(e, TierError::Redis(re) if re.is_timeout())
            {
                self.metrics.timeouts.with_label_values(&[op]).inc();
            }
            tracing::warn!(op, error = %e, "Shared tier call failed.");
        }
        {
            let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            let t = if outage {
                b.on_failure(now, probe)
            } else {
                b.on_success(now, probe)
            };
            if let Some(t) = t {
                tracing::warn!(
                    from = t.from.as_str(),
                    to = t.to.as_str(),
                    "Shared tier breaker changed state."
                );
            }
        }
        self.refresh_up();
        r
    }

    pub(super) async fn cmd<T: FromRedisValue>(
        &self,
        op: &'static str,
        c: &::redis::Cmd,
    ) -> Result<T, TierError> {
        let conn = self.conn();
        self.guard(op, async move {
            c.query_async(&mut conn.ok_or_else(no_primary)?).await
        })
        .await
    }

    async fn pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        p: &::redis::Pipeline,
    ) -> Result<T, TierError> {
        let conn = self.conn();
        self.guard(op, async move {
            p.query_async(&mut conn.ok_or_else(no_primary)?).await
        })
        .await
    }

    /// Every decodable variant stored for `key`; undecodable ones are counted and deleted.
    pub async fn read(&self, key: &Arc<str>) -> Result<Vec<Entry>, TierError> {
        let ekey = self.entry_key(key);
        let fields: Vec<(Vec<u8>, Vec<u8>)> =
            match self.cmd("read", ::redis::cmd("HGETALL").arg(&ekey)).await {
                Ok(f) => f,
                Err(e) => {
                    self.metrics.lookups.with_label_values(&["error"]).inc();
                    return Err(e);
                }
            };
        let mut out = Vec::with_capacity(fields.len());
        let floor = self.restart_floor_ms.load(Ordering::Relaxed);
        for (field, raw) in fields {
            match codec::decode(key, &raw, &self.targeted) {
                // Possibly purged before Redis restarted from older data: never served.
                Ok(e) if floor > 0 && unix_ms(e.stored_at) < floor => {}
                Ok(e) => out.push(e),
                Err(err) => {
                    self.metrics.corrupt.inc();
                    tracing::warn!(key = %key, error = %err, "Undecodable shared-tier entry deleted.");
                    let _ = self
                        .cmd::<i64>("delete", ::redis::cmd("HDEL").arg(&ekey).arg(field))
                        .await;
                }
            }
        }
        Ok(out)
    }

    /// Queues a write behind the response; `lock` is reported once the entry is in Redis.
    pub fn enqueue(&self, entry: Arc<Entry>, keep: Duration, lock: Option<FillLock>) {
        if entry.body.len() as u64 > self.cfg.l2_max_object_size {
            self.metrics.writes.with_label_values(&["too_large"]).inc();
            if let Some(l) = lock {
                l.finish(FillOutcome::NotStorable);
            }
            return;
        }
        if self.writes.try_send(Write { entry, keep, lock }).is_err() {
            // The dropped write's lock (if any) publishes `failed` as it goes.
            self.metrics.writes.with_label_values(&["dropped"]).inc();
        }
    }

    async fn writer(self: Arc<Self>, mut rx: mpsc::Receiver<Write>) {
        loop {
            let w = tokio::select! {
                _ = self.stop.cancelled() => return,
                w = rx.recv() => match w {
                    Some(w) => w,
                    None => return,
                },
            };
            let result = self.write(&w.entry, w.keep).await;
            self.metrics.writes.with_label_values(&[result]).inc();
            if let Some(l) = w.lock {
                l.finish(if result == "stored" {
                    FillOutcome::Stored
                } else {
                    FillOutcome::Failed
                });
            }
        }
    }

    async fn write(&self, e: &Entry, keep: Duration) -> &'static str {
        let Some(value) = codec::encode(e) else {
            return "unencodable";
        };
        let ms = keep.as_millis().max(1) as u64;
        let ekey = self.entry_key(&e.key);
        let mut p = ::redis::pipe();
        p.atomic()
            .cmd("HSET")
            .arg(&ekey)
            .arg(codec::vary_field(e))
            .arg(value)
            .ignore();
        // NX sets a first TTL, GT only ever extends it: the longest-lived variant decides.
        p.cmd("PEXPIRE").arg(&ekey).arg(ms).arg("NX").ignore();
        p.cmd("PEXPIRE").arg(&ekey).arg(ms).arg("GT").ignore();
        if self.pipe::<()>("write", &p).await.is_err() {
            return "error";
        }
        if e.tags.is_empty() {
            return "stored";
        }
        // The tag index lives in another slot (`{shared}`): its own transaction, after the
        // entry (a tag naming a missing entry costs a no-op purge; the reverse would miss one).
        let mut p = ::redis::pipe();
        p.atomic();
        for t in &e.tags {
            let tkey = self.tag_key(t);
            p.cmd("SADD").arg(&tkey).arg(&*e.key).ignore();
            p.cmd("PEXPIRE").arg(&tkey).arg(ms).arg("NX").ignore();
            p.cmd("PEXPIRE").arg(&tkey).arg(ms).arg("GT").ignore();
        }
        match self.pipe::<()>("write", &p).await {
            Ok(()) => "stored",
            Err(_) => "error",
        }
    }

    /// Deletes `key` from Redis (unsafe-method invalidation).
    pub async fn invalidate(&self, key: &str) {
        let _ = self
            .cmd::<i64>("delete", ::redis::cmd("UNLINK").arg(self.entry_key(key)))
            .await;
    }

    async fn heartbeat(self: Arc<Self>) {
        let every = self.cfg.heartbeat_interval;
        loop {
            let body = serde_json::json!({
                "replica": self.replica,
                "listening": self.bus_up.load(Ordering::Relaxed),
                "last_purge": self.last_applied.lock().unwrap_or_else(|e| e.into_inner()).id.to_string(),
            })
            .to_string();
            let _ = self
                .cmd::<()>(
                    "heartbeat",
                    ::redis::cmd("SET")
                        .arg(self.hb_key(&self.replica))
                        .arg(body)
                        .arg("PX")
                        .arg((every * 3).as_millis() as u64),
                )
                .await;
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=x\r\n";
        assert_eq!(info_field(info, "connected_slaves"), Some("2"));
        assert_eq!(info_field(info, "role"), Some("master"));
        assert_eq!(info_field(info, "connected"), None);
        assert_eq!(info_field("run_id:abc\n", "run_id"), Some("abc"));
    }
}

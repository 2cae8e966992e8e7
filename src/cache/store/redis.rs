//! The shared tier (L2) on Redis: entries every replica reads on a memory miss, a fleet-wide
//! fill lock, purge fan-out with a replayable stream, and heartbeats. Every call is cut at
//! `timeout` and sits behind the tier's own breaker, so Redis trouble only ever costs hits.

pub mod bus;
pub mod codec;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{FromRedisValue, RedisError};
use http::HeaderName;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::breaker::state::{Admission, Breaker, BreakerConfig, StateKind};
use crate::cache::CacheShared;
use crate::cache::entry::Entry;
use crate::cache::ops::Selector;
use crate::cache::policy;
use crate::config::file::RedisSection;

/// What a fill-lock holder tells the replicas waiting on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillOutcome {
    /// The entry is in Redis now.
    Stored,
    /// The response may not be shared: fetch for yourself.
    NotStorable,
    /// The fetch failed or was abandoned.
    Failed,
}

impl FillOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::NotStorable => "not_storable",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stored" => Self::Stored,
            "not_storable" => Self::NotStorable,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// The result of asking for the fill lock.
#[derive(Debug)]
pub enum Lock {
    /// Ours: fetch, then report through the guard.
    Acquired(FillLock),
    /// Another replica stored the entry while we waited.
    Stored,
    /// Fetch without the lock (taken and not stored in time, not storable, or Redis trouble).
    Skip,
}

/// The fleet-wide fill lock for one key; publishes `Failed` if dropped unfinished.
#[derive(Debug)]
pub struct FillLock {
    tier: Arc<SharedTier>,
    key: Arc<str>,
    token: String,
    done: bool,
}

impl FillLock {
    /// Publishes the outcome and releases the lock (in the background).
    pub fn finish(mut self, outcome: FillOutcome) {
        self.done = true;
        self.release(outcome);
    }

    fn release(&self, outcome: FillOutcome) {
        let tier = self.tier.clone();
        let key = self.key.clone();
        let token = self.token.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { tier.release(&key, &token, outcome).await });
        }
    }
}

impl Drop for FillLock {
    fn drop(&mut self) {
        if !self.done {
            self.release(FillOutcome::Failed);
        }
    }
}

/// What a purge did in the shared tier and across the fleet.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SharedPurge {
    /// Replicas with a live heartbeat.
    pub live_replicas: usize,
    /// Replicas subscribed when the purge was published (this one included).
    pub delivered: usize,
    /// Keys removed or marked stale in Redis.
    pub l2_keys: usize,
    /// Why the purge did not reach Redis (other replicas then keep their copies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

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
}

/// The shared tier.
pub struct SharedTier {
    conn: ConnectionManager,
    client: ::redis::Client,
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

/// Escapes glob characters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl SharedTier {
    /// Builds the tier (no connection yet: it connects lazily and reconnects by itself).
    pub fn new(
        cfg: &RedisSection,
        targeted: Vec<HeaderName>,
        registry: &Registry,
    ) -> anyhow::Result<Arc<Self>> {
        let client = ::redis::Client::open(cfg.url.as_str())
            .map_err(|e| anyhow::anyhow!("cache.redis.url: {e}"))?;
        let mgr = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), mgr)
            .map_err(|e| anyhow::anyhow!("cache.redis: {e}"))?;
        let breaker = Breaker::new(
            BreakerConfig {
                consecutive_failures: cfg.breaker_failures,
                open_duration: cfg.breaker_open,
                max_open_duration: cfg.breaker_open * 4,
                ..BreakerConfig::default()
            },
            tokio::time::Instant::now(),
        );
        let (tx, rx) = mpsc::channel(cfg.write_queue);
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Arc::new(Self {
            conn,
            client,
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
            nonce: AtomicU64::new(0),
            stop: CancellationToken::new(),
        }))
    }

    /// Starts the writer, the heartbeat and the purge/fill listener.
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

    fn entry_key(&self, key: &str) -> String {
        format!("{}e:{key}", self.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}t:{tag}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}l:{key}", self.prefix)
    }

    fn hb_key(&self, replica: &str) -> String {
        format!("{}hb:{replica}", self.prefix)
    }

    fn stream_key(&self) -> String {
        format!("{}purges", self.prefix)
    }

    fn seq_key(&self) -> String {
        format!("{}purge-seq", self.prefix)
    }

    fn purge_channel(&self) -> String {
        format!("{}purge", self.prefix)
    }

    fn fill_channel(&self) -> String {
        format!("{}fill", self.prefix)
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

    async fn cmd<T: FromRedisValue>(
        &self,
        op: &'static str,
        c: &::redis::Cmd,
    ) -> Result<T, TierError> {
        let mut conn = self.conn.clone();
        self.guard(op, async move { c.query_async(&mut conn).await })
            .await
    }

    async fn pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        p: &::redis::Pipeline,
    ) -> Result<T, TierError> {
        let mut conn = self.conn.clone();
        self.guard(op, async move { p.query_async(&mut conn).await })
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
        for (field, raw) in fields {
            match codec::decode(key, &raw, &self.targeted) {
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

    fn register_waiter(&self, key: &Arc<str>) -> oneshot::Receiver<FillOutcome> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .push(tx);
        rx
    }

    fn forget_waiter(&self, key: &Arc<str>) {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = w.get_mut(key) {
            v.retain(|s| !s.is_closed());
            if v.is_empty() {
                w.remove(key);
            }
        }
    }

    /// Wakes the replicas' local waiters for `key`.
    fn notify(&self, key: &str, outcome: FillOutcome) {
        let senders = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        for s in senders.into_iter().flatten() {
            let _ = s.send(outcome);
        }
    }

    /// Takes the fill lock for `key`, or waits (bounded) for the replica holding it.
    pub async fn lock(self: &Arc<Self>, key: &Arc<str>) -> Lock {
        // Without the listener we would not hear the outcome: waiting would only add latency.
        if !self.bus_up.load(Ordering::Relaxed) {
            self.metrics.locks.with_label_values(&["skipped"]).inc();
            return Lock::Skip;
        }
        // Listen before asking, so an outcome published right after our attempt is not lost.
        let rx = self.register_waiter(key);
        let token = format!(
            "{}:{}",
            self.replica,
            self.nonce.fetch_add(1, Ordering::Relaxed)
        );
        let set: Result<Option<String>, TierError> = self
            .cmd(
                "lock",
                ::redis::cmd("SET")
                    .arg(self.lock_key(key))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.cfg.lock_ttl.as_millis() as u64),
            )
            .await;
        match set {
            Ok(Some(_)) => {
                drop(rx);
                self.forget_waiter(key);
                self.metrics.locks.with_label_values(&["acquired"]).inc();
                Lock::Acquired(self.holder(key, token))
            }
            Ok(None) => {
                let r = tokio::time::timeout(self.cfg.lock_wait, rx).await;
                self.forget_waiter(key);
                match r {
                    Ok(Ok(FillOutcome::Stored)) => {
                        self.metrics.locks.with_label_values(&["stored"]).inc();
                        Lock::Stored
                    }
                    Ok(_) => {
                        self.metrics.locks.with_label_values(&["not_stored"]).inc();
                        Lock::Skip
                    }
                    Err(_) => {
                        self.metrics.locks.with_label_values(&["timeout"]).inc();
                        Lock::Skip
                    }
                }
            }
            Err(TierError::Open) => {
                drop(rx);
                self.forget_waiter(key);
                self.metrics.locks.with_label_values(&["skipped"]).inc();
                Lock::Skip
            }
            Err(_) => {
                // The SET may have reached Redis before the answer was lost: act as the
                // holder, so whoever waits on the lock hears the outcome instead of timing out.
                drop(rx);
                self.forget_waiter(key);
                self.metrics.locks.with_label_values(&["uncertain"]).inc();
                Lock::Acquired(self.holder(key, token))
            }
        }
    }

    fn holder(self: &Arc<Self>, key: &Arc<str>, token: String) -> FillLock {
        FillLock {
            tier: self.clone(),
            key: key.clone(),
            token,
            done: false,
        }
    }

    async fn release(&self, key: &str, token: &str, outcome: FillOutcome) {
        let msg = format!("{} {key}", outcome.as_str());
        let _ = self
            .cmd::<i64>(
                "publish",
                ::redis::cmd("PUBLISH").arg(self.fill_channel()).arg(msg),
            )
            .await;
        // Only our own lock: it may have expired and been taken by another replica.
        let _ = self
            .cmd::<i64>(
                "unlock",
                ::redis::cmd("EVAL")
                    .arg("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end")
                    .arg(1)
                    .arg(self.lock_key(key))
                    .arg(token),
            )
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

    /// Keys matching `pattern` (already prefixed and escaped), by `SCAN`.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, TierError> {
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .cmd(
                    "scan",
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Replicas with a live heartbeat.
    pub async fn live_replicas(&self) -> Result<usize, TierError> {
        let pattern = format!("{}hb:*", glob_escape(&self.prefix));
        Ok(self.scan(&pattern).await?.len())
    }

    /// Entry keys (`{prefix}e:…`) that `sel` matches in Redis.
    async fn matching(&self, sel: &Selector) -> Result<Vec<String>, TierError> {
        Ok(match sel {
            Selector::Key(k) => vec![self.entry_key(k)],
            Selector::Tag(t) => {
                let keys: Vec<String> = self
                    .cmd("purge", ::redis::cmd("SMEMBERS").arg(self.tag_key(t)))
                    .await?;
                keys.iter().map(|k| self.entry_key(k)).collect()
            }
            _ => {
                let pattern = format!("{}e:*", glob_escape(&self.prefix));
                let strip = format!("{}e:", self.prefix);
                self.scan(&pattern)
                    .await?
                    .into_iter()
                    .filter(|k| k.strip_prefix(&strip).is_some_and(|k| sel.matches(k)))
                    .collect()
            }
        })
    }

    /// Applies a purge to Redis: removes the entries, or marks every variant stale.
    async fn purge_l2(&self, sel: &Selector, soft: bool) -> Result<usize, TierError> {
        let keys = self.matching(sel).await?;
        let mut n = 0;
        if soft {
            let now = SystemTime::now();
            let strip = format!("{}e:", self.prefix);
            for ekey in &keys {
                let Some(k) = ekey.strip_prefix(&strip) else {
                    continue;
                };
                let k: Arc<str> = k.into();
                let variants = self.read(&k).await?;
                if variants.is_empty() {
                    continue;
                }
                let mut p = ::redis::pipe();
                for e in variants {
                    let mut fresh = e.fresh.clone();
                    fresh.lifetime = fresh.lifetime.min(policy::current_age(&fresh, now));
                    if let Some(v) = codec::encode(&e.with_fresh(fresh)) {
                        p.cmd("HSET")
                            .arg(ekey)
                            .arg(codec::vary_field(&e))
                            .arg(v)
                            .ignore();
                    }
                }
                self.pipe::<()>("purge", &p).await?;
                n += 1;
            }
        } else {
            for chunk in keys.chunks(500) {
                let removed: i64 = self.cmd("purge", ::redis::cmd("UNLINK").arg(chunk)).await?;
                n += removed.max(0) as usize;
            }
            let tags = match sel {
                Selector::Tag(t) => vec![self.tag_key(t)],
                // Clear takes the tag index with it (the namespace only, never the database).
                Selector::All => {
                    self.scan(&format!("{}t:*", glob_escape(&self.prefix)))
                        .await?
                }
                _ => Vec::new(),
            };
            for chunk in tags.chunks(500) {
                self.cmd::<i64>("purge", ::redis::cmd("UNLINK").arg(chunk))
                    .await?;
            }
        }
        Ok(n)
    }

    /// Applies `sels` to Redis and fans them out to every replica (stream, then channel).
    pub async fn purge(&self, sels: &[Selector], soft: bool) -> SharedPurge {
        let mut out = SharedPurge::default();
        for sel in sels {
            match self.purge_l2(sel, soft).await {
                Ok(n) => out.l2_keys += n,
                Err(e) => {
                    out.error = Some(e.to_string());
                    return out;
                }
            }
        }
        let msg = bus::PurgeMsg::new(&self.replica, sels, soft);
        let payload = serde_json::to_string(&msg).unwrap_or_default();
        // Numbered as appended (atomically), so replicas can tell a trimmed gap from none.
        let id: Result<String, TierError> = self
            .cmd(
                "purge",
                ::redis::cmd("EVAL")
                    .arg(
                        "local n = redis.call('INCR', KEYS[2]) \
                         return redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[1], '*', 'm', ARGV[2], 'n', n)",
                    )
                    .arg(2)
                    .arg(self.stream_key())
                    .arg(self.seq_key())
                    .arg(self.cfg.purge_stream_max_len)
                    .arg(payload),
            )
            .await;
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
        match self
            .cmd::<i64>(
                "publish",
                ::redis::cmd("PUBLISH").arg(self.purge_channel()).arg(&id),
            )
            .await
        {
            Ok(n) => out.delivered = n.max(0) as usize,
            Err(e) => out.error = Some(e.to_string()),
        }
        match self.live_replicas().await {
            Ok(n) => out.live_replicas = n,
            Err(e) => out.error = Some(e.to_string()),
        }
        out
    }
}

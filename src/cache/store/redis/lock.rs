//! The fleet-wide fill lock: one replica fetches a key while the others wait, bounded, for
//! its outcome on the fill channel (then read Redis, or fetch for themselves).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{SharedTier, TierError};
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
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::NotStorable => "not_storable",
            Self::Failed => "failed",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
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

impl SharedTier {
    pub(super) fn register_waiter(&self, key: &Arc<str>) -> oneshot::Receiver<FillOutcome> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .push(tx);
        rx
    }

    pub(super) fn forget_waiter(&self, key: &Arc<str>) {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = w.get_mut(key) {
            v.retain(|s| !s.is_closed());
            if v.is_empty() {
                w.remove(key);
            }
        }
    }

    /// Wakes the replicas' local waiters for `key`.
    pub(super) fn notify(&self, key: &str, outcome: FillOutcome) {
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

    pub(super) fn holder(self: &Arc<Self>, key: &Arc<str>, token: String) -> FillLock {
        FillLock {
            tier: self.clone(),
            key: key.clone(),
            token,
            done: false,
        }
    }

    pub(super) async fn release(&self, key: &str, token: &str, outcome: FillOutcome) {
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
}

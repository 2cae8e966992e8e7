//! Purge fan-out: a purge removes (or marks stale) the matching keys in Redis and is published
//! on the replayable stream every replica applies to its memory.

use std::sync::Arc;
use std::time::SystemTime;

use super::{SharedTier, TierError, bus, codec, journal};
use crate::cache::ops::Selector;
use crate::cache::policy;
/// What a purge did in the shared tier and across the fleet.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SharedPurge {
    /// Replicas with a live heartbeat.
    pub live_replicas: usize,
    /// Replicas subscribed when the purge was published (this one included).
    pub delivered: usize,
    /// Keys removed or marked stale in Redis.
    pub l2_keys: usize,
    /// Why the purge did not reach Redis (or was only partly announced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Redis could not take it: journalled here, published once Redis is back.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
    /// Purges journalled on this replica (this one included), when queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_depth: Option<usize>,
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
    /// Keys matching `pattern` (already prefixed and escaped), by `SCAN`.
    pub(super) async fn scan(&self, pattern: &str) -> Result<Vec<String>, TierError> {
        if self.is_cluster() {
            return self.scan_cluster(pattern).await;
        }
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
        let pattern = format!("{}{{shared}}:hb:*", glob_escape(&self.prefix));
        Ok(self.scan(&pattern).await?.len())
    }

    /// Entry keys (`{prefix}e:…`) that `sel` matches in Redis.
    pub(super) async fn matching(&self, sel: &Selector) -> Result<Vec<String>, TierError> {
        Ok(match sel {
            Selector::Key(k) => vec![self.entry_key(k)],
            Selector::Tag(t) => {
                let keys: Vec<String> = self
                    .cmd("purge", ::redis::cmd("SMEMBERS").arg(self.tag_key(t)))
                    .await?;
                keys.iter().map(|k| self.entry_key(k)).collect()
            }
            _ => {
                let pattern = format!("{}e:{{*", glob_escape(&self.prefix));
                self.scan(&pattern)
                    .await?
                    .into_iter()
                    .filter(|k| self.key_of(k).is_some_and(|k| sel.matches(k)))
                    .collect()
            }
        })
    }

    /// Applies a purge to Redis: removes the entries, or marks every variant stale.
    pub(super) async fn purge_l2(&self, sel: &Selector, soft: bool) -> Result<usize, TierError> {
        let keys = self.matching(sel).await?;
        let mut n = 0;
        if soft {
            let now = SystemTime::now();
            for ekey in &keys {
                let Some(k) = self.key_of(ekey) else {
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
                    self.scan(&format!("{}{{shared}}:t:*", glob_escape(&self.prefix)))
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

    /// Applies `sels` to Redis and fans them out to every replica (stream, then channel), after
    /// any purges journalled before it. When Redis cannot take it, it is journalled and
    /// published by the drainer once Redis is back (the caller has applied it locally already).
    pub async fn purge(&self, sels: &[Selector], soft: bool) -> SharedPurge {
        let msg = bus::PurgeMsg::new(&self.replica, sels, soft);
        self.purged_now();
        let _order = self.journal.order.lock().await;
        if let Err(e) = self.flush_journal().await {
            return self.journalled(msg, &e);
        }
        match self.publish(&msg).await {
            Ok(out) => out,
            Err(e) => self.journalled(msg, &e),
        }
    }

    fn journalled(&self, msg: bus::PurgeMsg, e: &TierError) -> SharedPurge {
        let depth = self.journal.push(msg);
        tracing::warn!(error = %e, journal_depth = depth, "Purge not taken or not replicated by Redis: journalled, published again until it is.");
        SharedPurge {
            queued: true,
            journal_depth: Some(depth),
            error: Some(e.to_string()),
            ..SharedPurge::default()
        }
    }

    /// Publishes the journal, oldest first, until it is empty or a call fails. The caller
    /// holds `journal.order`.
    async fn flush_journal(&self) -> Result<(), TierError> {
        let mut n = 0;
        while let Some(next) = self.journal.next() {
            let msg = match &next {
                journal::Next::Gap => bus::PurgeMsg::gap(&self.replica),
                journal::Next::Purge(m) => m.clone(),
            };
            self.publish(&msg).await?;
            self.journal.done(&next);
            n += 1;
        }
        if n > 0 {
            tracing::info!(published = n, "Shared tier: journalled purges published.");
        }
        Ok(())
    }

    /// Every heartbeat interval (or when the listener reconnects): publishes the journal and
    /// keeps its gauges current.
    pub(super) async fn drain_journal(self: Arc<Self>) {
        let every = self.cfg.heartbeat_interval;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.journal.kick.notified() => {}
            }
            if self.journal.depth() > 0 {
                let _order = self.journal.order.lock().await;
                if let Err(e) = self.flush_journal().await {
                    tracing::debug!(error = %e, depth = self.journal.depth(), "Purge journal not published yet.");
                }
            }
            self.journal.refresh_metrics();
        }
    }

    /// One purge through the shared tier: Redis first, then the stream and the channel. An
    /// error means the stream does not have it (it may be sent again: purges are idempotent);
    /// once it is in the stream, a failed announcement is only reported, since every replica
    /// reads the stream when it reconnects.
    async fn publish(&self, msg: &bus::PurgeMsg) -> Result<SharedPurge, TierError> {
        let mut out = SharedPurge::default();
        for sel in msg.selectors() {
            out.l2_keys += self.purge_l2(&sel, msg.soft).await?;
        }
        let payload = serde_json::to_string(msg).unwrap_or_default();
        // Numbered as appended (atomically), so replicas can tell a trimmed gap from none.
        let id: String = self
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
            .await?;
        // Until a replica has it, it stays journalled (and is published again: purges are
        // idempotent), so a failover right now does not lose it.
        self.replicated().await?;
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
        Ok(out)
    }
}

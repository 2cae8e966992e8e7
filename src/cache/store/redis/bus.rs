//! The listener every replica runs: purge doorbells (each answered by reading the stream from
//! the last entry applied, so purges apply once and in order, also after a reconnect) and the
//! fill outcomes other replicas' local waiters are woken by.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::aio::{PubSubSink, PubSubStream};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{Cursor, FillOutcome, SharedTier, StreamId, TierError};
use crate::cache::CacheShared;
use crate::cache::ops::Selector;

/// A purge as it travels between replicas.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PurgeMsg {
    /// The replica that applied it first (it skips its own).
    pub origin: String,
    /// Mark stale instead of removing.
    pub soft: bool,
    /// What to purge.
    pub sels: Vec<WireSelector>,
    /// A gap marker: purges were dropped from a replica's full journal, so this soft purge of
    /// everything stands in for them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
}

/// `ops::Selector` on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum WireSelector {
    /// One primary key.
    Key {
        /// The key.
        key: String,
    },
    /// A path on every host.
    Path {
        /// Path with query.
        path: String,
    },
    /// A path prefix.
    Prefix {
        /// One host, or all.
        host: Option<String>,
        /// The prefix.
        prefix: String,
    },
    /// A tag.
    Tag {
        /// The tag.
        tag: String,
    },
    /// Everything.
    All,
}

impl PurgeMsg {
    /// From the selectors a purge applied.
    pub fn new(origin: &str, sels: &[Selector], soft: bool) -> Self {
        Self {
            origin: origin.to_string(),
            soft,
            sels: sels
                .iter()
                .map(|s| match s {
                    Selector::Key(k) => WireSelector::Key { key: k.to_string() },
                    Selector::Path(p) => WireSelector::Path { path: p.clone() },
                    Selector::Prefix { host, prefix } => WireSelector::Prefix {
                        host: host.clone(),
                        prefix: prefix.clone(),
                    },
                    Selector::Tag(t) => WireSelector::Tag { tag: t.clone() },
                    Selector::All => WireSelector::All,
                })
                .collect(),
            gap: false,
        }
    }

    /// The gap marker `origin` publishes after its journal dropped purges: every replica marks
    /// everything stale, as after a trimmed stream.
    pub fn gap(origin: &str) -> Self {
        Self {
            gap: true,
            ..Self::new(origin, &[Selector::All], true)
        }
    }

    /// Back to selectors.
    pub fn selectors(&self) -> Vec<Selector> {
        self.sels
            .iter()
            .map(|s| match s {
                WireSelector::Key { key } => Selector::Key(key.as_str().into()),
                WireSelector::Path { path } => Selector::Path(path.clone()),
                WireSelector::Prefix { host, prefix } => Selector::Prefix {
                    host: host.clone(),
                    prefix: prefix.clone(),
                },
                WireSelector::Tag { tag } => Selector::Tag(tag.clone()),
                WireSelector::All => Selector::All,
            })
            .collect()
    }
}

/// Subscribes, replays what was missed, listens; reconnects with backoff until stopped.
pub(super) async fn run(tier: Arc<SharedTier>, cache: Weak<CacheShared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if tier.stop.is_cancelled() {
            return;
        }
        // Taken before subscribing, so a move to another primary meanwhile is not missed.
        let mut relinked = tier.relinked.subscribe();
        match subscribe(&tier).await {
            Ok((sink, stream)) => {
                backoff = Duration::from_millis(100);
                tier.bus_up.store(true, Ordering::Relaxed);
                tier.refresh_up();
                // Redis is back: purges journalled meanwhile go out now, not at the next tick.
                tier.journal.kick.notify_one();
                let pending = match resync(&tier, &cache).await {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::warn!(error = %e, "Shared tier: purge replay failed; retrying.");
                        true
                    }
                };
                listen(&tier, &cache, sink, stream, pending, &mut relinked).await;
                tier.bus_up.store(false, Ordering::Relaxed);
                tier.refresh_up();
                if tier.stop.is_cancelled() {
                    return;
                }
                tracing::warn!("Shared tier listener lost its connection; reconnecting.");
            }
            Err(e) => tracing::debug!(error = %e, "Shared tier listener cannot subscribe."),
        }
        tokio::select! {
            _ = tier.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn subscribe(tier: &SharedTier) -> Result<(PubSubSink, PubSubStream), String> {
    let wait = tier.cfg.connect_timeout;
    let mut last = "no primary known yet".to_string();
    let mut ps = None;
    for client in tier.pubsub_clients().await {
        match tokio::time::timeout(wait, client.get_async_pubsub()).await {
            Ok(Ok(p)) => {
                ps = Some(p);
                break;
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connect timed out".to_string(),
        }
    }
    let (mut sink, stream) = ps.ok_or(last)?.split();
    tokio::time::timeout(
        wait,
        sink.subscribe(&[tier.purge_channel(), tier.fill_channel()]),
    )
    .await
    .map_err(|_| "subscribe timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok((sink, stream))
}

async fn listen(
    tier: &Arc<SharedTier>,
    cache: &Weak<CacheShared>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    mut pending: bool,
    relinked: &mut tokio::sync::watch::Receiver<u64>,
) {
    let purge = tier.purge_channel();
    let fill = tier.fill_channel();
    let mut tick = tokio::time::interval(tier.cfg.heartbeat_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tier.stop.cancelled() => return,
            // Subscribed on the old primary: subscribe again on the one the tier follows now.
            _ = relinked.changed() => return,
            m = stream.next() => {
                let Some(m) = m else { return };
                let channel = m.get_channel_name();
                if channel == purge {
                    pending = match replay(tier, cache, "live").await {
                        Ok(()) => false,
                        Err(e) => {
                            tracing::warn!(error = %e, "Shared tier: purge not applied yet; retrying.");
                            true
                        }
                    };
                } else if channel == fill {
                    let payload = String::from_utf8_lossy(m.get_payload_bytes());
                    if let Some((o, key)) = payload.split_once(' ')
                        && let Some(o) = FillOutcome::parse(o)
                    {
                        tier.notify(key, o);
                    }
                }
            }
            _ = tick.tick() => {
                // A silent network (no reset) must not leave us deaf: probe the connection.
                let ping = tokio::time::timeout(
                    tier.cfg.connect_timeout,
                    sink.ping::<::redis::Value>(),
                )
                .await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
                // A replay that failed (the data connection was still reconnecting) is retried
                // every tick until it goes through.
                if pending {
                    pending = resync(tier, cache).await.is_err();
                }
            }
        }
    }
}

/// After (re)subscribing: notes a restarted or other Redis, treats a cursor ahead of this
/// primary's stream as a gap, then replays what was missed.
async fn resync(tier: &SharedTier, cache: &Weak<CacheShared>) -> Result<(), TierError> {
    tier.check_run_id().await?;
    if let Some(c) = cache.upgrade() {
        ahead_of_stream(tier, &c).await?;
    }
    replay(tier, cache, "replay").await
}

/// A cursor past the end of this primary's stream means purges this replica applied are not
/// in it (a failover or a restart lost them): purges published meanwhile may be missing too,
/// so every memory entry is marked stale and the cursor moves back to the stream's end.
async fn ahead_of_stream(tier: &SharedTier, cache: &CacheShared) -> Result<(), TierError> {
    let cur = *tier.last_applied.lock().unwrap_or_else(|e| e.into_inner());
    // Never applied one: the start cursor is a time, not a position in any stream.
    let Some(mine) = cur.seq else {
        return Ok(());
    };
    let theirs: Option<u64> = tier
        .cmd("replay", ::redis::cmd("GET").arg(tier.seq_key()))
        .await?;
    let theirs = theirs.unwrap_or(0);
    let last: Vec<(String, HashMap<String, String>)> = tier
        .cmd(
            "replay",
            ::redis::cmd("XREVRANGE")
                .arg(tier.stream_key())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1),
        )
        .await?;
    let last_id = last
        .first()
        .and_then(|(id, _)| StreamId::parse(id))
        .unwrap_or_default();
    if theirs >= mine && last_id >= cur.id {
        return Ok(());
    }
    tracing::warn!(
        last_applied = %cur.id,
        stream_last = %last_id,
        "Shared tier: this replica applied purges the primary's stream does not hold (failover or restart); marking every cached entry stale."
    );
    cache.purge(&Selector::All, true, false);
    tier.purged_now();
    tier.metrics.purges.with_label_values(&["gap"]).inc();
    *tier.last_applied.lock().unwrap_or_else(|e| e.into_inner()) = Cursor {
        id: last_id,
        seq: (theirs > 0).then_some(theirs),
    };
    Ok(())
}

/// Applies the stream's purges after the last one applied. When purges this replica never saw
/// were trimmed from the stream, it marks every memory entry stale first: it cannot know what
/// they removed, so it trusts nothing it holds.
async fn replay(
    tier: &SharedTier,
    cache: &Weak<CacheShared>,
    source: &'static str,
) -> Result<(), TierError> {
    let Some(cache) = cache.upgrade() else {
        return Ok(());
    };
    let skey = tier.stream_key();
    let mut first = true;
    loop {
        let from = tier
            .last_applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .id;
        let rows: Vec<(String, HashMap<String, String>)> = tier
            .cmd(
                "replay",
                ::redis::cmd("XRANGE")
                    .arg(&skey)
                    .arg(format!("({from}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(500),
            )
            .await?;
        let n = rows.len();
        for (id, fields) in rows {
            let Some(id) = StreamId::parse(&id) else {
                continue;
            };
            let seq = fields.get("n").and_then(|n| n.parse::<u64>().ok());
            if first {
                first = false;
                if missed_some(tier, &skey, seq, &cache).await? {
                    tracing::warn!(
                        last_applied = %from,
                        "Shared tier: purges were trimmed from the stream before this replica read them; marking every cached entry stale."
                    );
                    cache.purge(&Selector::All, true, false);
                    tier.purged_now();
                    tier.metrics.purges.with_label_values(&["gap"]).inc();
                }
            }
            if let Some(msg) = fields
                .get("m")
                .and_then(|m| serde_json::from_str::<PurgeMsg>(m).ok())
                && msg.origin != tier.replica
            {
                if msg.gap {
                    tracing::warn!(
                        from = %msg.origin,
                        "Shared tier: a replica's purge journal overflowed while Redis was away; marking every cached entry stale."
                    );
                }
                for sel in msg.selectors() {
                    cache.purge(&sel, msg.soft, false);
                }
                tier.purged_now();
                let source = if msg.gap { "gap" } else { source };
                tier.metrics.purges.with_label_values(&[source]).inc();
            }
            let mut c = tier.last_applied.lock().unwrap_or_else(|e| e.into_inner());
            if id > c.id {
                c.id = id;
                c.seq = seq.or(c.seq);
            }
        }
        if n < 500 {
            return Ok(());
        }
    }
}

/// Whether purges between our cursor and the oldest unread entry (numbered `seq`) are gone.
async fn missed_some(
    tier: &SharedTier,
    skey: &str,
    seq: Option<u64>,
    cache: &CacheShared,
) -> Result<bool, TierError> {
    let last = tier
        .last_applied
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .seq;
    match (last, seq) {
        (Some(last), Some(seq)) => Ok(seq > last + 1),
        // Never applied one (just started): only a trimmed stream can have lost ours, and only
        // entries already held can be wrong.
        _ => {
            if cache.store.entry_count() == 0 {
                return Ok(false);
            }
            let info: HashMap<String, ::redis::Value> = tier
                .cmd("replay", ::redis::cmd("XINFO").arg("STREAM").arg(skey))
                .await?;
            let num = |k: &str| {
                info.get(k)
                    .and_then(|v| ::redis::from_redis_value_ref::<u64>(v).ok())
            };
            Ok(num("entries-added").unwrap_or(0) > num("length").unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_messages_round_trip() {
        let sels = vec![
            Selector::Key("http://h/a".into()),
            Selector::Path("/b?x=1".into()),
            Selector::Prefix {
                host: Some("h".into()),
                prefix: "/p/".into(),
            },
            Selector::Tag("t1".into()),
            Selector::All,
        ];
        let m = PurgeMsg::new("a", &sels, true);
        let text = serde_json::to_string(&m).expect("serialises");
        let back: PurgeMsg = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, m);
        let again = PurgeMsg::new("a", &back.selectors(), true);
        assert_eq!(again, m);
    }

    #[test]
    fn stream_ids_order_numerically() {
        let a = StreamId::parse("999-5").expect("id");
        let b = StreamId::parse("1000-0").expect("id");
        assert!(a < b);
        assert_eq!(b.to_string(), "1000-0");
        assert!(StreamId::parse("x").is_none());
    }
}

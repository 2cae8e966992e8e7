//! The purge journal: purges accepted while Redis is unreachable, kept (bounded, and in
//! `journal_file` when set) and published in order once it is back, so no purge is lost.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use prometheus::{IntGauge, Registry};
use serde::{Deserialize, Serialize};

use super::bus::PurgeMsg;

/// One line of the journal file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Record {
    /// Purges were dropped (journal full) from `at_ms` on: a gap marker goes out first.
    Gap { at_ms: u64 },
    /// A purge to publish, accepted at `at_ms`.
    Purge { at_ms: u64, msg: PurgeMsg },
}

/// What to publish next.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Next {
    /// Purges were dropped: every replica must distrust what it holds.
    Gap,
    /// The oldest journalled purge.
    Purge(PurgeMsg),
}

#[derive(Default)]
struct State {
    /// Since when purges were dropped, while the gap marker is unpublished.
    gap: Option<u64>,
    purges: VecDeque<(u64, PurgeMsg)>,
    /// Open for appending, when `journal_file` is set.
    file: Option<File>,
}

impl State {
    fn depth(&self) -> usize {
        self.purges.len() + usize::from(self.gap.is_some())
    }

    fn oldest_ms(&self) -> Option<u64> {
        self.gap.or_else(|| self.purges.front().map(|p| p.0))
    }

    fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.gap
            .map(|at_ms| Record::Gap { at_ms })
            .into_iter()
            .chain(self.purges.iter().map(|(at_ms, msg)| Record::Purge {
                at_ms: *at_ms,
                msg: msg.clone(),
            }))
    }

    /// Drops the oldest purges past `max`; true when some went.
    fn trim(&mut self, max: usize) -> bool {
        let mut dropped = false;
        while self.purges.len() > max {
            if let Some((at, _)) = self.purges.pop_front() {
                self.gap = Some(self.gap.map_or(at, |g| g.min(at)));
                dropped = true;
            }
        }
        dropped
    }
}

/// The journal's gauges, on the process registry.
#[derive(Clone, Debug)]
struct JournalMetrics {
    depth: IntGauge,
    oldest_seconds: IntGauge,
}

impl JournalMetrics {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        let g = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(Self {
            depth: g(
                "seawall_redis_purge_journal_depth",
                "Purges accepted while Redis was unreachable and not yet published (a pending gap marker counts as one).",
            )?,
            oldest_seconds: g(
                "seawall_redis_purge_journal_oldest_seconds",
                "Age of the oldest unpublished journalled purge; 0 when the journal is empty.",
            )?,
        })
    }
}

/// Purges waiting for Redis, oldest first.
pub(crate) struct Journal {
    state: Mutex<State>,
    max: usize,
    path: Option<PathBuf>,
    metrics: JournalMetrics,
    /// Held while publishing (journal or live purge), so purges reach the stream in the order
    /// they were accepted; every change of the journal happens under it too.
    pub(crate) order: tokio::sync::Mutex<()>,
    /// Wakes the drainer early (the listener reconnected).
    pub(crate) kick: tokio::sync::Notify,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Journal {
    /// A journal of at most `max` purges, reloaded from `path` when it exists.
    pub(crate) fn open(
        max: usize,
        path: Option<&Path>,
        registry: &Registry,
    ) -> anyhow::Result<Self> {
        let metrics = JournalMetrics::new(registry)?;
        let mut state = State::default();
        if let Some(p) = path {
            let (loaded, skipped) = load(p)?;
            state = loaded;
            let trimmed = state.trim(max);
            if skipped > 0 || trimmed {
                tracing::warn!(
                    path = %p.display(),
                    skipped,
                    trimmed,
                    "Purge journal had unreadable lines or more purges than journal_max."
                );
            }
            rewrite(p, &mut state)
                .map_err(|e| anyhow::anyhow!("cache.redis.journal_file {}: {e}", p.display()))?;
            if state.depth() > 0 {
                tracing::warn!(
                    path = %p.display(),
                    depth = state.depth(),
                    "Purges journalled before the restart are published once Redis answers."
                );
            }
        }
        let j = Self {
            state: Mutex::new(state),
            max: max.max(1),
            path: path.map(Path::to_path_buf),
            metrics,
            order: tokio::sync::Mutex::new(()),
            kick: tokio::sync::Notify::new(),
        };
        j.refresh_metrics();
        Ok(j)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Journalled purges (plus a pending gap marker).
    pub(crate) fn depth(&self) -> usize {
        self.lock().depth()
    }

    /// Keeps `msg` for later; the oldest purge goes when the journal is full. The new depth.
    pub(crate) fn push(&self, msg: PurgeMsg) -> usize {
        let mut s = self.lock();
        let at_ms = now_ms();
        s.purges.push_back((at_ms, msg.clone()));
        if s.trim(self.max) {
            tracing::warn!(
                max = self.max,
                "Purge journal full: the oldest purge was dropped; every replica will mark its cache stale once Redis is back."
            );
            self.persist_all(&mut s);
        } else {
            self.append(&mut s, &Record::Purge { at_ms, msg });
        }
        let depth = s.depth();
        drop(s);
        self.refresh_metrics();
        depth
    }

    /// What to publish next, if anything.
    pub(crate) fn next(&self) -> Option<Next> {
        let s = self.lock();
        if s.gap.is_some() {
            return Some(Next::Gap);
        }
        s.purges.front().map(|(_, m)| Next::Purge(m.clone()))
    }

    /// `next` was published: forget it.
    pub(crate) fn done(&self, published: &Next) {
        let mut s = self.lock();
        match published {
            Next::Gap => s.gap = None,
            Next::Purge(m) => {
                if s.purges.front().is_some_and(|(_, f)| f == m) {
                    s.purges.pop_front();
                }
            }
        }
        self.persist_all(&mut s);
        drop(s);
        self.refresh_metrics();
    }

    /// Sets the gauges (the age moves with the clock, so the drainer calls this every tick).
    pub(crate) fn refresh_metrics(&self) {
        let s = self.lock();
        self.metrics.depth.set(s.depth() as i64);
        let age = s
            .oldest_ms()
            .map_or(0, |at| now_ms().saturating_sub(at) / 1000);
        self.metrics.oldest_seconds.set(age as i64);
    }

    // Blocking file I/O on purpose: it happens only on the admin path and while Redis is down,
    // for a few hundred bytes, and the purge must be on disk before it is acknowledged.
    fn append(&self, s: &mut State, r: &Record) {
        let Some(f) = s.file.as_mut() else {
            return;
        };
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            tracing::warn!(error = %e, "Purge journal file not written: this purge is kept in memory only.");
        }
    }

    fn persist_all(&self, s: &mut State) {
        if let Some(p) = &self.path
            && let Err(e) = rewrite(p, s)
        {
            tracing::warn!(error = %e, "Purge journal file not rewritten.");
        }
    }
}

/// Reads the journal file (absent: empty); unreadable lines (a torn last write) are skipped
/// and counted.
fn load(p: &Path) -> anyhow::Result<(State, usize)> {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("cache.redis.journal_file {}: {e}", p.display()),
    };
    let mut s = State::default();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Record>(line) {
            Ok(Record::Gap { at_ms }) => s.gap = Some(s.gap.map_or(at_ms, |g| g.min(at_ms))),
            Ok(Record::Purge { at_ms, msg }) => s.purges.push_back((at_ms, msg)),
            Err(_) => skipped += 1,
        }
    }
    Ok((s, skipped))
}

/// Replaces the file with `s` (written aside, synced, renamed: a crash leaves old or new) and
/// reopens the append handle on the new file.
fn rewrite(p: &Path, s: &mut State) -> std::io::Result<()> {
    s.file = None;
    let tmp = p.with_extension("tmp");
    let mut out = Vec::new();
    for r in s.records() {
        out.extend(serde_json::to_vec(&r).unwrap_or_default());
        out.push(b'\n');
    }
    let mut f = File::create(&tmp)?;
    f.write_all(&out)?;
    f.sync_all()?;
    std::fs::rename(&tmp, p)?;
    s.file = Some(OpenOptions::new().append(true).open(p)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ops::Selector;

    fn msg(k: &str) -> PurgeMsg {
        PurgeMsg::new("a", &[Selector::Key(k.into())], false)
    }

    fn drain(j: &Journal) -> Vec<Next> {
        let mut out = Vec::new();
        while let Some(n) = j.next() {
            j.done(&n);
            out.push(n);
        }
        out
    }

    #[test]
    fn overflow_drops_the_oldest_and_leads_with_a_gap_marker() {
        let j = Journal::open(2, None, &Registry::new()).expect("journal");
        assert_eq!(j.push(msg("1")), 1);
        assert_eq!(j.push(msg("2")), 2);
        assert_eq!(j.push(msg("3")), 3, "two purges and the gap marker");
        assert_eq!(j.push(msg("4")), 3);
        assert_eq!(
            drain(&j),
            vec![Next::Gap, Next::Purge(msg("3")), Next::Purge(msg("4"))]
        );
        assert_eq!(j.depth(), 0);
        assert_eq!(j.metrics.depth.get(), 0);
        assert_eq!(j.metrics.oldest_seconds.get(), 0);
    }

    #[test]
    fn the_file_keeps_what_is_unpublished_across_a_restart() {
        let dir = std::env::temp_dir().join(format!(
            "seawall-journal-unit-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("j.jsonl");
        {
            let j = Journal::open(10, Some(&path), &Registry::new()).expect("journal");
            j.push(msg("1"));
            j.push(msg("2"));
            j.push(msg("3"));
            let first = j.next().expect("one");
            j.done(&first);
        }
        // A torn last line (a crash mid-append) is skipped.
        let mut f = OpenOptions::new().append(true).open(&path).expect("file");
        f.write_all(b"{\"kind\":\"pur").expect("write");
        drop(f);
        // Reloaded into a smaller journal: the oldest goes, a gap marker leads.
        let j = Journal::open(1, Some(&path), &Registry::new()).expect("reload");
        assert_eq!(j.metrics.depth.get(), 2);
        j.push(msg("4"));
        let j2 = Journal::open(5, Some(&path), &Registry::new()).expect("reload again");
        assert_eq!(drain(&j2), vec![Next::Gap, Next::Purge(msg("4"))]);
        assert_eq!(std::fs::read_to_string(&path).expect("file"), "");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Seawall's own alerts (what `/admin/status` reports) and their history: a bounded log of
//! fired and resolved transitions, found by comparing the alert set at each sampler tick and
//! at each read; `GET /admin/alerts[?history=1]`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Extension, Query, State};
use axum::response::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::history::{History, wall_clock};
use crate::breaker::state::StateKind;
use crate::state::AppState;
use crate::telemetry::window::Summary;

/// Transitions kept in the alert history.
pub(crate) const LOG_CAPACITY: usize = 256;

/// One firing alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Alert {
    /// `hit_ratio_low`, `error_rate_high`, `breaker_open`, `cache_disabled`.
    pub(crate) name: &'static str,
    /// `warning` or `critical`.
    pub(crate) severity: &'static str,
    /// For people.
    pub(crate) message: String,
    /// What it is about, when one alert name can fire for several things (the upstream of
    /// `breaker_open`); with `name` it identifies the alert across ticks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
}

impl Alert {
    fn same(&self, other: &Alert) -> bool {
        self.name == other.name && self.subject == other.subject
    }
}

/// What the alerts are judged from.
pub(crate) struct Inputs<'a> {
    /// The recent window (its hit ratio already `None` below the minimum of requests).
    pub(crate) recent: &'a Summary,
    /// `[admin]` thresholds.
    pub(crate) cfg: &'a crate::config::file::AdminSection,
    /// Breakers by upstream name and state.
    pub(crate) breakers: Vec<(String, StateKind)>,
    /// The kill switch.
    pub(crate) cache_on: bool,
}

/// The alerts that fire for `i`.
pub(crate) fn evaluate(i: &Inputs<'_>) -> Vec<Alert> {
    let a = i.cfg;
    let mut out = Vec::new();
    if let Some(r) = i.recent.hit_ratio
        && r < a.alert_hit_ratio_below
    {
        out.push(Alert {
            name: "hit_ratio_low",
            severity: "warning",
            message: format!("hit ratio {:.2} below {}", r, a.alert_hit_ratio_below),
            subject: None,
        });
    }
    if i.recent.requests >= a.alert_min_requests && i.recent.error_rate > a.alert_error_rate_above {
        out.push(Alert {
            name: "error_rate_high",
            severity: "critical",
            message: format!(
                "5xx rate {:.3} above {}",
                i.recent.error_rate, a.alert_error_rate_above
            ),
            subject: None,
        });
    }
    for (upstream, st) in &i.breakers {
        if *st != StateKind::Closed {
            out.push(Alert {
                name: "breaker_open",
                severity: "warning",
                message: format!("breaker of upstream {upstream} is {}", st.as_str()),
                subject: Some(upstream.clone()),
            });
        }
    }
    if !i.cache_on {
        out.push(Alert {
            name: "cache_disabled",
            severity: "warning",
            message: "the cache is disabled (kill switch): every request goes to the origin".into(),
            subject: None,
        });
    }
    out
}

/// The recent window as `/admin/status` judges it: no hit ratio below the minimum of
/// cacheable requests (a cold or quiet slot has none worth judging).
pub(crate) fn recent(s: &AppState) -> Summary {
    let rt = s.rt.load();
    let a = &rt.config.raw.admin;
    let mut recent = s.window.recent(a.status_window);
    if recent.cacheable_requests < a.alert_min_requests {
        recent.hit_ratio = None;
    }
    recent
}

/// The alerts firing now.
pub(crate) fn current(s: &AppState) -> Vec<Alert> {
    let rt = s.rt.load();
    let recent = recent(s);
    evaluate(&Inputs {
        recent: &recent,
        cfg: &rt.config.raw.admin,
        breakers: rt
            .breakers
            .all()
            .map(|b| (b.upstream.clone(), b.state()))
            .collect(),
        cache_on: s.cache.is_enabled(),
    })
}

/// A fired or resolved alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Event {
    /// Alert name.
    pub(crate) name: &'static str,
    /// Its severity.
    pub(crate) severity: &'static str,
    /// `firing` or `resolved`.
    pub(crate) state: &'static str,
    /// Unix seconds.
    pub(crate) at: u64,
    /// The alert's message (when it fired; the last one seen when it resolved).
    pub(crate) detail: String,
    /// See [`Alert::subject`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
}

/// The transitions from the alert set `prev` to `cur` at `now`: resolved ones first, then
/// fired ones, each in its set's order.
pub(crate) fn transitions(prev: &[Alert], cur: &[Alert], now: u64) -> Vec<Event> {
    let event = |a: &Alert, state| Event {
        name: a.name,
        severity: a.severity,
        state,
        at: now,
        detail: a.message.clone(),
        subject: a.subject.clone(),
    };
    let resolved = prev
        .iter()
        .filter(|p| !cur.iter().any(|c| c.same(p)))
        .map(|a| event(a, "resolved"));
    let fired = cur
        .iter()
        .filter(|c| !prev.iter().any(|p| p.same(c)))
        .map(|a| event(a, "firing"));
    resolved.chain(fired).collect()
}

/// The alert history: the set seen last and the last [`LOG_CAPACITY`] transitions.
#[derive(Debug, Default)]
pub(crate) struct AlertLog {
    active: Vec<Alert>,
    events: VecDeque<Event>,
}

impl AlertLog {
    /// Records the transitions to `cur` at `now`.
    pub(crate) fn observe(&mut self, cur: &[Alert], now: u64) {
        for e in transitions(&self.active, cur, now) {
            if self.events.len() == LOG_CAPACITY {
                self.events.pop_front();
            }
            self.events.push_back(e);
        }
        self.active = cur.to_vec();
    }

    /// Newest first.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.iter().rev().cloned().collect()
    }
}

/// Records `cur` in `history`'s alert log at the wall clock's now.
pub(crate) fn note(history: &Mutex<AlertLog>, cur: &[Alert]) {
    history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .observe(cur, wall_clock());
}

#[derive(Deserialize)]
pub(super) struct AlertsQuery {
    history: Option<String>,
}

/// `GET /admin/alerts`: the alerts firing now; `?history=1` adds the log of transitions,
/// newest first.
pub(super) async fn alerts(
    State(s): State<Arc<AppState>>,
    Extension(h): Extension<Arc<History>>,
    Query(q): Query<AlertsQuery>,
) -> Json<Value> {
    let cur = current(&s);
    note(&h.alerts, &cur);
    let mut out = json!({"alerts": cur});
    if q.history
        .as_deref()
        .is_some_and(|v| v != "0" && v != "false")
    {
        let log = h.alerts.lock().unwrap_or_else(|e| e.into_inner());
        out["history"] = json!(log.events());
        out["history_capacity"] = json!(LOG_CAPACITY);
        out["since"] = json!(h.since);
    }
    Json(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &'static str, subject: Option<&str>, msg: &str) -> Alert {
        Alert {
            name,
            severity: "warning",
            message: msg.into(),
            subject: subject.map(str::to_string),
        }
    }

    #[test]
    fn transitions_fire_and_resolve_by_name_and_subject() {
        let a = alert("breaker_open", Some("a"), "breaker of upstream a is open");
        let a_half = alert(
            "breaker_open",
            Some("a"),
            "breaker of upstream a is half_open",
        );
        let b = alert("breaker_open", Some("b"), "breaker of upstream b is open");
        assert!(transitions(&[], &[], 5).is_empty());
        let fired = transitions(&[], std::slice::from_ref(&a), 10);
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0].state, fired[0].at, fired[0].subject.as_deref()),
            ("firing", 10, Some("a"))
        );
        // Open → half-open is the same alert still firing (its message changed).
        assert!(
            transitions(std::slice::from_ref(&a), std::slice::from_ref(&a_half), 20).is_empty()
        );
        let t = transitions(std::slice::from_ref(&a_half), std::slice::from_ref(&b), 30);
        assert_eq!(
            t.iter()
                .map(|e| (e.state, e.subject.as_deref()))
                .collect::<Vec<_>>(),
            [("resolved", Some("a")), ("firing", Some("b"))]
        );
        assert_eq!(t[0].detail, "breaker of upstream a is half_open");
    }

    #[test]
    fn the_log_is_bounded_and_newest_first() {
        let mut log = AlertLog::default();
        let a = alert("cache_disabled", None, "off");
        for i in 0..300u64 {
            let cur = if i % 2 == 0 { vec![a.clone()] } else { vec![] };
            log.observe(&cur, i);
        }
        let ev = log.events();
        assert_eq!(ev.len(), LOG_CAPACITY);
        assert_eq!((ev[0].at, ev[0].state), (299, "resolved"));
        assert_eq!((ev[1].at, ev[1].state), (298, "firing"));
        assert_eq!(ev[LOG_CAPACITY - 1].at, 300 - LOG_CAPACITY as u64);
    }
}

//! Breakers by upstream: their state, and an operator's `open`, `close` or `reset` (kept across
//! reloads, see `AppState::note_breaker_override`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde_json::{Value, json};

use super::{ApiError, unix};
use crate::state::AppState;

pub(super) async fn breakers(State(s): State<Arc<AppState>>) -> Json<Value> {
    let rt = s.rt.load();
    let now = tokio::time::Instant::now();
    let list: Vec<Value> = rt
        .breakers
        .all()
        .map(|b| {
            let v = b.view();
            let sn = &v.snapshot;
            json!({
                "upstream": v.upstream,
                "state": sn.state.as_str(),
                "forced": sn.forced,
                "trips": sn.trips,
                "consecutive_failures": sn.consecutive_failures,
                "window_requests": sn.window_requests,
                "window_failures": sn.window_failures,
                "window_counted_failures": sn.window_counted_failures,
                "open_for_secs": sn.open_until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
                "last_transition": v.last_transition.map(|(t, tr)| json!({"at": unix(t), "from": tr.from.as_str(), "to": tr.to.as_str()})),
            })
        })
        .collect();
    Json(json!({"breakers": list}))
}

pub(super) async fn breaker_action(
    State(s): State<Arc<AppState>>,
    Path((upstream, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let rt = s.rt.load();
    let b = rt.breakers.by_name(&upstream).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no breaker for upstream {upstream:?}"),
        )
    })?;
    match action.as_str() {
        "open" => b.force_open(),
        "close" => b.force_close(),
        "reset" => b.reset(),
        _ => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "action must be open, close or reset".into(),
            ));
        }
    }
    s.note_breaker_override(&upstream, &action);
    tracing::warn!(upstream = %upstream, action = %action, "Breaker changed by an operator.");
    Ok(Json(
        json!({"upstream": upstream, "state": b.state().as_str()}),
    ))
}

//! Liveness, readiness, Prometheus text and `/admin/status` (the summary a rollout gate reads);
//! the admin drain and its cancel.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use serde_json::{Value, json};

use super::ApiError;
use super::alerts;
use super::history::History;
use crate::breaker::state::StateKind;
use crate::server::Phase;
use crate::state::AppState;

pub(super) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let phase = s.lifecycle.phase();
    let reason = if phase != Phase::Serving {
        "draining"
    } else if !s.serving.load(Ordering::Relaxed) {
        "starting"
    } else if !s.warm.load(Ordering::Relaxed) {
        "warming"
    } else {
        "ready"
    };
    let ready = s.ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Upstream health is reported, never gating: serving stale is the point at the edge.
    let rt = s.rt.load();
    let open: Vec<&str> = rt
        .breakers
        .all()
        .filter(|b| b.state() != crate::breaker::state::StateKind::Closed)
        .map(|b| b.upstream.as_str())
        .collect();
    // The shared tier is reported, never gating: without it we serve from memory and origin.
    let shared = s.cache.tier().map_or("disabled", |t| t.status());
    (
        code,
        Json(
            json!({"ready": ready, "status": reason, "breakers_not_closed": open, "shared_tier": shared}),
        ),
    )
}

pub(super) async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    // Components read their own atomics while the registry is gathered.
    let text = crate::telemetry::metrics::render(&s.metrics.registry);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

pub(super) async fn status(
    State(s): State<Arc<AppState>>,
    Extension(h): Extension<Arc<History>>,
) -> impl IntoResponse {
    let rt = s.rt.load();
    let a = &rt.config.raw.admin;
    let recent = alerts::recent(&s);
    let total = s.window.total();
    let states: Vec<(String, StateKind)> = rt
        .breakers
        .all()
        .map(|b| (b.upstream.clone(), b.state()))
        .collect();
    let cache_on = s.cache.is_enabled();
    let firing = alerts::evaluate(&alerts::Inputs {
        recent: &recent,
        cfg: a,
        breakers: states.clone(),
        cache_on,
    });
    // Whoever looks also feeds the alert history, between two sampler ticks.
    alerts::note(&h.alerts, &firing);
    let breakers: Vec<Value> = states
        .iter()
        .map(|(u, st)| json!({"upstream": u, "state": st.as_str()}))
        .collect();
    let healthy = cache_on && !firing.iter().any(|a| a.severity == "critical");
    Json(json!({
        "healthy": healthy,
        "ready": s.ready(),
        "phase": format!("{:?}", s.lifecycle.phase()).to_lowercase(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": SystemTime::now().duration_since(s.started_at).map_or(0, |d| d.as_secs()),
        "window_secs": a.status_window.as_secs(),
        "hit_ratio": recent.hit_ratio,
        "cacheable_requests": recent.cacheable_requests,
        "uncacheable_share": recent.uncacheable_share,
        "error_rate": recent.error_rate,
        "error_ratio": recent.error_rate,
        "latency_p95_ms": recent.latency_p95_ms,
        "recent": recent,
        "since_start": total,
        "coalesced": s.coalesce.view(),
        "memory": s.cache.memory.view(&s.cache.store),
        "breakers": breakers,
        "components": {
            "cache": if cache_on { "ok" } else { "disabled" },
            "shared_tier": s.cache.tier().map_or("disabled", |t| t.status()),
            "trace_exporter": "not configured",
        },
        "alerts": firing,
    }))
}

pub(super) async fn drain(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    s.drain();
    let delay: Duration = s.rt.load().config.raw.server.drain_delay;
    (
        StatusCode::ACCEPTED,
        Json(json!({"draining": true, "drain_delay_secs": delay.as_secs_f64()})),
    )
}

pub(super) async fn drain_cancel(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    match s.cancel_drain() {
        Ok(from) => Ok(Json(json!({
            "draining": false,
            "cancelled": from.map(|p| format!("{p:?}").to_lowercase()),
        }))),
        Err(_) => Err(ApiError(
            StatusCode::CONFLICT,
            "shutting down (SIGTERM): a drain that ends in exit cannot be cancelled".into(),
        )),
    }
}

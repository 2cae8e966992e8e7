//! Admin listener. Endpoints:
//! - `GET /healthz`: liveness (200 while the process runs).
//! - `GET /readyz`: readiness (200 while serving; 503 while draining or before the data listener is up).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use crate::server::{Lifecycle, Phase};

/// What the admin handlers read.
#[derive(Debug)]
pub struct AdminState {
    /// Drain phase.
    pub lifecycle: Arc<Lifecycle>,
    /// Set once the data listener is bound and serving.
    pub serving: AtomicBool,
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let phase = s.lifecycle.phase();
    let serving = s.serving.load(Ordering::Relaxed);
    let ready = serving && phase == Phase::Serving;
    let reason = match (serving, phase) {
        (_, Phase::Draining | Phase::Closing) => "draining",
        (false, _) => "starting",
        _ => "ready",
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"ready": ready, "status": reason})))
}

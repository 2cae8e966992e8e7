//! `GET /admin/tls`: the certificates the TLS listener serves now (after any reload), with
//! what an operator checks before an expiry: names, issuer, end of validity, fingerprint, file.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Json;
use serde_json::{Value, json};

use crate::state::AppState;

pub(super) async fn certificates(State(s): State<Arc<AppState>>) -> Json<Value> {
    match &s.tls {
        Some(t) => Json(json!({ "listener": true, "certificates": t.views() })),
        None => Json(json!({ "listener": false, "certificates": [] })),
    }
}

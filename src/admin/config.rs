//! The running config (credentials redacted, with the file values that wait for a restart)
//! and the reload.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use serde_json::{Value, json};

use super::ApiError;
use crate::state::AppState;

pub(super) async fn config(State(s): State<Arc<AppState>>) -> Json<Value> {
    let rt = s.rt.load();
    let mut v = serde_json::to_value(&rt.config.raw).unwrap_or(Value::Null);
    // Credentials in endpoint URLs are secrets.
    if let Some(ups) = v.get_mut("upstreams").and_then(Value::as_array_mut) {
        for u in ups {
            if let Some(eps) = u.get_mut("endpoints").and_then(Value::as_array_mut) {
                for e in eps {
                    if let Some(s) = e.as_str()
                        && let Some((scheme, rest)) = s.split_once("://")
                        && let Some((_, host)) = rest.rsplit_once('@')
                    {
                        *e = Value::String(format!("{scheme}://<redacted>@{host}"));
                    }
                }
            }
        }
    }
    if let Some(u) = v.pointer_mut("/cache/redis/url") {
        redact_url(u);
    }
    // File values a reload read that wait for a restart (the running ones are in `config`).
    let mut pending = serde_json::Map::new();
    for (k, val) in s
        .pending_restart
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let mut val = val.clone();
        if k == "cache.redis"
            && let Some(u) = val.get_mut("url")
        {
            redact_url(u);
        }
        pending.insert(k.clone(), val);
    }
    Json(json!({
        "source": rt.config.source.as_ref().map(|p| p.display().to_string()),
        "admin_token": if s.admin_token.is_some() { "<redacted>" } else { "<none>" },
        "config": v,
        "pending_restart": pending,
    }))
}

/// Hides the credentials of a `scheme://user:password@host` URL.
fn redact_url(u: &mut Value) {
    if let Some(s) = u.as_str()
        && let Some((scheme, rest)) = s.split_once("://")
        && let Some((_, host)) = rest.rsplit_once('@')
    {
        *u = Value::String(format!("{scheme}://<redacted>@{host}"));
    }
}

pub(super) async fn reload(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    match s.reload() {
        Ok(r) => Ok(Json(serde_json::to_value(r).unwrap_or(Value::Null))),
        Err(e) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e)),
    }
}

//! Admin listener (JSON, curl-first). Open endpoints:
//! - `GET /healthz` liveness; `GET /readyz` readiness; `GET /metrics` Prometheus text.
//!
//! Under `/admin/`, always with `Authorization: Bearer <token>` (generated at start when none is
//! configured; a read-only token may `GET` everything but the export):
//! - `GET /admin/status` summary, recent window and since start, with alerts
//! - `GET /admin/cache/stats`; `GET /admin/cache/entries?top=N&sort=hits|size|age[&format=csv]`
//! - `GET /admin/cache/entry?url=…` one URL in full (absolute, or a path on every host)
//! - `POST /admin/cache/purge` `{url|urls|prefix[,host]|tag, soft, dry_run}` (everything needs
//!   `confirm: CLEAR-ALL`)
//! - `POST /admin/cache/clear` `{"confirm":"CLEAR-ALL", soft}`; `POST /admin/cache/disable|enable`
//! - `GET /admin/cache/export?top=N` (NDJSON); `POST /admin/cache/warm` `{from, top}|{urls}`;
//!   `GET /admin/cache/warm/{id}`
//! - `GET /admin/breakers`; `POST /admin/breakers/{upstream}/open|close|reset`
//! - `GET /admin/config`; `POST /admin/reload`; `POST /admin/drain`; `POST /admin/drain/cancel`
//! - `GET /admin/tls` the served certificates (names, issuer, expiry, fingerprint, file)
//! - `GET /admin/ui/` the dashboard (no token: static files); `GET /admin/whoami` the role
//! - `GET /admin/stats/history?range=1h|6h|24h|7d|30d[&route=NAME][&format=csv]` performance
//!   over time since process start (`history`)
//! - `GET /admin/alerts[?history=1]` the alerts firing now, and their fired/resolved log
//! - `GET /admin/cache/entries` also filters by `prefix=` (absolute or path) and `tag=`
//!
//! `GET /` redirects (308) to the dashboard at `/admin/ui/`, without a token. A `POST` under
//! `/admin/` from another origin (`Origin` not this `Host`, `Sec-Fetch-Site: cross-site`) gets 403.
//!
//! Any answer is indented with `?pretty`.

mod alerts;
pub(crate) mod auth;
mod breakers;
mod cache;
mod config;
pub(crate) mod history;
mod status;
mod tls;
mod ui;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::state::AppState;

/// A JSON error with its status.
#[derive(Debug)]
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The admin router; `tokens` guard everything under `/admin/` (the router's own, not shared
/// state); `history` is what the sampler fills.
pub(crate) fn router(
    state: Arc<AppState>,
    tokens: auth::Tokens,
    history: Arc<history::History>,
) -> Router {
    let ui = ui::router(tokens.clone());
    let admin = Router::new()
        .route("/admin/status", get(status::status))
        .route("/admin/stats/history", get(history::history))
        .route("/admin/alerts", get(alerts::alerts))
        .route("/admin/cache/stats", get(cache::cache_stats))
        .route("/admin/cache/entries", get(cache::entries))
        .route("/admin/cache/entry", get(cache::entry))
        .route("/admin/cache/purge", post(cache::purge))
        .route("/admin/cache/clear", post(cache::clear))
        .route("/admin/cache/disable", post(cache::disable))
        .route("/admin/cache/enable", post(cache::enable))
        .route("/admin/cache/export", get(cache::export))
        .route("/admin/cache/warm", post(cache::warm))
        .route("/admin/cache/warm/{id}", get(cache::warm_progress))
        .route("/admin/breakers", get(breakers::breakers))
        .route(
            "/admin/breakers/{upstream}/{action}",
            post(breakers::breaker_action),
        )
        .route("/admin/config", get(config::config))
        .route("/admin/reload", post(config::reload))
        .route("/admin/tls", get(tls::certificates))
        .route("/admin/drain", post(status::drain))
        .route("/admin/drain/cancel", post(status::drain_cancel))
        .route_layer(middleware::from_fn_with_state(Arc::new(tokens), auth))
        .route_layer(middleware::from_fn(same_origin));
    Router::new()
        .route("/", get(|| async { Redirect::permanent("/admin/ui/") }))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .merge(admin)
        .merge(ui)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
        })
        .layer(middleware::from_fn(pretty))
        .layer(axum::Extension(history))
        .with_state(state)
}

/// Serves the admin router over TLS (`admin.tls`): each connection's handshake in its own task
/// (bounded, so a silent client holds nothing), then HTTP/1.1 or HTTP/2 as ALPN chose, with the
/// peer address the handlers read as `ConnectInfo`.
pub(crate) async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Admin accept failed.");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        tokio::spawn(async move {
            let handshake = acceptor.accept(tcp);
            let stream =
                match tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "Admin TLS handshake failed.");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Bearer-token check: missing or wrong → 401; the read-only token on a `POST` or the export →
/// 403; two `Authorization` fields → 400. Tokens are compared as digests in constant time.
async fn auth(State(tokens): State<Arc<auth::Tokens>>, req: Request, next: Next) -> Response {
    let mut fields = req.headers().get_all(header::AUTHORIZATION).iter();
    let first = fields.next();
    if fields.next().is_some() {
        return bad("two Authorization fields").into_response();
    }
    let given = first
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let role = given.and_then(|g| tokens.role(g));
    let read_only_ok =
        req.method() == axum::http::Method::GET && req.uri().path() != "/admin/cache/export";
    match role {
        Some(auth::Role::Full) => next.run(req).await,
        Some(auth::Role::Read) if read_only_ok => next.run(req).await,
        Some(auth::Role::Read) => ApiError(
            StatusCode::FORBIDDEN,
            "the read-only token may only GET (and not the export)".into(),
        )
        .into_response(),
        None => {
            let msg = if given.is_some() {
                "wrong bearer token"
            } else {
                "missing bearer token"
            };
            let mut r = ApiError(StatusCode::UNAUTHORIZED, msg.into()).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Refuses a state-changing call (anything but `GET`/`HEAD`/`OPTIONS`) a browser sent from
/// another site: an `Origin` whose host and port are not this listener's `Host`, or
/// `Sec-Fetch-Site: cross-site`. Clients that send neither (curl) pass; the token is still
/// checked after this.
async fn same_origin(req: Request, next: Next) -> Response {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let h = req.headers();
    let cross_site = h
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let foreign_origin = h
        .get(header::ORIGIN)
        .is_some_and(|o| !origin_matches(o.to_str().unwrap_or(""), host));
    if cross_site || foreign_origin {
        return ApiError(StatusCode::FORBIDDEN, "cross-origin request refused".into())
            .into_response();
    }
    next.run(req).await
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (`host[:port]`, the port defaulting
/// to the origin scheme's). `null` and anything unparsable do not.
fn origin_matches(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let Ok(uri) = origin.parse::<axum::http::Uri>() else {
        return false;
    };
    let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Ok(want) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    auth.host().eq_ignore_ascii_case(want.host())
        && auth.port_u16().unwrap_or(default) == want.port_u16().unwrap_or(default)
}

/// `?pretty` re-indents JSON answers.
async fn pretty(req: Request, next: Next) -> Response {
    let wants = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "pretty" || kv.starts_with("pretty="))
    });
    let res = next.run(req).await;
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !wants || !is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "body too large to indent",
        )
            .into_response();
    };
    let text = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .map(|s| s + "\n");
    let mut res = Response::from_parts(parts, Body::from(text.unwrap_or_default()));
    res.headers_mut().remove(header::CONTENT_LENGTH);
    res
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    #[test]
    fn origins_match_host_and_port() {
        let host = Some("127.0.0.1:9090");
        assert!(origin_matches("http://127.0.0.1:9090", host));
        assert!(!origin_matches("http://127.0.0.1:9091", host));
        assert!(!origin_matches("http://evil.example:9090", host));
        assert!(!origin_matches("null", host));
        assert!(!origin_matches("http://127.0.0.1:9090", None));
        assert!(origin_matches("http://Admin.Local", Some("admin.local:80")));
        assert!(origin_matches("https://admin.local", Some("admin.local")));
        assert!(!origin_matches(
            "https://admin.local",
            Some("admin.local:80")
        ));
    }
}

//! The browser dashboard: static assets compiled into the binary, served under `/admin/ui/`
//! without a token (they hold no data) and with a strict CSP; and `GET /admin/whoami`.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::get;
use serde_json::json;

use super::ApiError;
use super::auth::{Role, Tokens};
use crate::state::AppState;

/// One embedded file: its name under `/admin/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Everything the page loads; `index.html` is also served at `/admin/ui/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("ui/index.html"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("ui/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("ui/app.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("ui/charts.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("ui/favicon.svg"),
    },
];

/// Scripts and styles from this origin only (no inline code), nothing framed or posted away.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// FNV-1a over the bytes: a strong-enough validator for files fixed at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// The dashboard's routes; `tokens` answer `whoami` (the same check the `/admin/` layer makes).
pub(super) fn router(tokens: Tokens) -> Router<Arc<AppState>> {
    let tokens = Arc::new(tokens);
    Router::new()
        .route(
            "/admin/ui",
            get(|| async { Redirect::permanent("/admin/ui/") }),
        )
        .route(
            "/admin/ui/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/admin/ui/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move { serve(&file, &h) }),
        )
        .route(
            "/admin/whoami",
            get(move |h: HeaderMap| async move { whoami(&tokens, &h) }),
        )
}

/// The asset `name` with the security headers, or 404; `304` when `If-None-Match` matches.
fn serve(name: &str, req: &HeaderMap) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError(StatusCode::NOT_FOUND, "no such dashboard file".into()).into_response();
    };
    let etag = format!("\"{:016x}\"", fnv1a(a.bytes));
    let matches = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.bytes).into_response()
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidated on every load: a new binary's page never mixes with the old one's script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// `GET /admin/whoami`: `{"role":"full"|"read"}` for a valid token, else 401 like the API.
fn whoami(tokens: &Tokens, req: &HeaderMap) -> Response {
    let mut fields = req.get_all(header::AUTHORIZATION).iter();
    let first = fields.next();
    if fields.next().is_some() {
        return super::bad("two Authorization fields").into_response();
    }
    let role = first
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, t)| tokens.role(t.trim()));
    match role {
        Some(Role::Full) => Json(json!({"role": "full"})).into_response(),
        Some(Role::Read) => Json(json!({"role": "read"})).into_response(),
        None => {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "wrong or missing bearer token".into(),
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_stay_under_300_kib() {
        let total: usize = ASSETS.iter().map(|a| a.bytes.len()).sum();
        assert!(total > 0);
        assert!(total < 300 * 1024, "dashboard assets are {total} bytes");
    }

    #[test]
    fn every_asset_has_the_security_headers_and_an_etag() {
        for a in ASSETS {
            let res = serve(a.name, &HeaderMap::new());
            assert_eq!(res.status(), StatusCode::OK, "{}", a.name);
            let h = res.headers();
            assert_eq!(h[header::CONTENT_TYPE], a.content_type);
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let mut again = HeaderMap::new();
            again.insert(header::IF_NONE_MATCH, h[header::ETAG].clone());
            assert_eq!(serve(a.name, &again).status(), StatusCode::NOT_MODIFIED);
        }
        assert_eq!(
            serve("../admin.rs", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap_or_default();
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains(" style="), "style attribute");
        for handler in [
            "onclick=",
            "onload=",
            "onsubmit=",
            "onchange=",
            "oninput=",
            "onerror=",
        ] {
            assert!(!page.contains(handler), "inline event handler {handler}");
        }
        // Nothing loaded from elsewhere (URLs in placeholders are text).
        for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
            assert!(!page.contains(external), "external resource {external}");
        }
    }

    #[test]
    fn whoami_names_the_role() {
        let t = Tokens::new("full-token", Some("read-token"));
        let ask = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
            whoami(&t, &h).status()
        };
        assert_eq!(ask("Bearer full-token"), StatusCode::OK);
        assert_eq!(ask("Bearer read-token"), StatusCode::OK);
        assert_eq!(ask("Bearer nope"), StatusCode::UNAUTHORIZED);
    }
}

//! The bundled demo origin: a deliberately slow backend with cacheable, uncacheable, validated,
//! Vary, error and large streamed responses, and a hit counter. Used by `seawall demo`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::ProxyBody;

/// Demo origin settings.
#[derive(Clone, Debug)]
pub(crate) struct DemoConfig {
    /// Added to every response except `/hits`.
    pub latency: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(300),
        }
    }
}

/// Hit counts per path.
#[derive(Debug, Default)]
pub(crate) struct Hits {
    map: Mutex<HashMap<String, u64>>,
}

impl Hits {
    fn inc(&self, path: &str) -> u64 {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(path.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn json(&self) -> String {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_string(&*m).unwrap_or_else(|_| "{}".into())
    }
}

/// A running demo origin.
#[derive(Debug)]
pub(crate) struct Demo {
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Starts the demo origin on `addr` (use port 0 for any).
pub(crate) async fn start(addr: SocketAddr, cfg: DemoConfig) -> std::io::Result<Demo> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(Hits::default());
    let h = hits;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hits = h.clone();
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let hits = hits.clone();
                    let cfg = cfg.clone();
                    async move { Ok::<_, Infallible>(handle(req, &hits, &cfg).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Demo { addr })
}

fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn resp(
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().append(*k, v);
        }
    }
    r
}

const INDEX: &str = "Seawall demo origin. Paths:
  /cacheable[/...]    public, max-age=60
  /uncacheable        no-store
  /etag               ETag + max-age=5 (answers If-None-Match with 304)
  /last-modified      Last-Modified + max-age=5 (answers If-Modified-Since with 304)
  /vary               Vary: Accept-Language
  /swr                max-age=2, stale-while-revalidate=30, stale-if-error=300
  /private            private
  /cookie             Set-Cookie
  /tagged             Surrogate-Key: demo products
  /error?status=503   an error
  /large?size=N       N bytes (default 1 MiB), streamed in 64 KiB chunks
  /slow?ms=N          N ms extra latency
  /hits               hit counts (JSON, no latency)
";

async fn handle(req: Request<Incoming>, hits: &Hits, cfg: &DemoConfig) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    if path == "/hits" {
        return resp(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            hits.json(),
        );
    }
    let n = hits.inc(&path);
    tokio::time::sleep(cfg.latency).await;
    let now = httpdate::fmt_http_date(SystemTime::now());
    let text = ("content-type", "text/plain; charset=utf-8".to_string());
    match path.as_str() {
        "/" => resp(StatusCode::OK, &[text], INDEX),
        p if p == "/cacheable" || p.starts_with("/cacheable/") => resp(
            StatusCode::OK,
            &[text, ("cache-control", "public, max-age=60".into())],
            format!("cacheable {p}: origin hit #{n} at {now}\n"),
        ),
        "/uncacheable" => resp(
            StatusCode::OK,
            &[text, ("cache-control", "no-store".into())],
            format!("uncacheable: origin hit #{n}\n"),
        ),
        "/etag" => {
            let etag = "\"demo-v1\"";
            if req
                .headers()
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == etag.as_bytes())
            {
                return resp(
                    StatusCode::NOT_MODIFIED,
                    &[("etag", etag.into()), ("cache-control", "max-age=5".into())],
                    "",
                );
            }
            resp(
                StatusCode::OK,
                &[
                    text,
                    ("etag", etag.into()),
                    ("cache-control", "max-age=5".into()),
                ],
                format!("etag body, origin hit #{n}\n"),
            )
        }
        "/last-modified" => {
            let lm = "Mon, 02 Jan 2023 03:04:05 GMT";
            if req.headers().get(header::IF_MODIFIED_SINCE).is_some() {
                return resp(
                    StatusCode::NOT_MODIFIED,
                    &[
                        ("last-modified", lm.into()),
                        ("cache-control", "max-age=5".into()),
                    ],
                    "",
                );
            }
            resp(
                StatusCode::OK,
                &[
                    text,
                    ("last-modified", lm.into()),
                    ("cache-control", "max-age=5".into()),
                ],
                format!("last-modified body, origin hit #{n}\n"),
            )
        }
        "/vary" => {
            let lang = req
                .headers()
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("en")
                .to_string();
            resp(
                StatusCode::OK,
                &[
                    text,
                    ("vary", "Accept-Language".into()),
                    ("cache-control", "max-age=60".into()),
                ],
                format!("hello in {lang}, origin hit #{n}\n"),
            )
        }
        "/swr" => resp(
            StatusCode::OK,
            &[
                text,
                (
                    "cache-control",
                    "max-age=2, stale-while-revalidate=30, stale-if-error=300".into(),
                ),
            ],
            format!("swr body, origin hit #{n} at {now}\n"),
        ),
        "/private" => resp(
            StatusCode::OK,
            &[text, ("cache-control", "private, max-age=60".into())],
            format!("private, origin hit #{n}\n"),
        ),
        "/cookie" => resp(
            StatusCode::OK,
            &[
                text,
                ("cache-control", "max-age=60".into()),
                ("set-cookie", format!("session={n}")),
            ],
            format!("cookie, origin hit #{n}\n"),
        ),
        "/tagged" => resp(
            StatusCode::OK,
            &[
                text,
                ("cache-control", "max-age=300".into()),
                ("surrogate-key", "demo products".into()),
            ],
            format!("tagged, origin hit #{n}\n"),
        ),
        "/error" => {
            let code = query_param(&req, "status")
                .and_then(|s| s.parse().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            resp(
                code,
                &[text],
                format!("error {}, origin hit #{n}\n", code.as_u16()),
            )
        }
        "/large" => {
            let size: usize = query_param(&req, "size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1 << 20);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = (0..size.div_ceil(chunk.len())).map(move |i| {
                let len = chunk.len().min(size - i * chunk.len());
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            });
            let body = StreamBody::new(futures_util::stream::iter(chunks));
            let mut r = Response::new(ProxyBody::stream(body.map_err(|e: Infallible| match e {})));
            r.headers_mut().insert(
                "cache-control",
                HeaderValue::from_static("public, max-age=60"),
            );
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            r
        }
        "/slow" => {
            let ms: u64 = query_param(&req, "ms")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            resp(
                StatusCode::OK,
                &[text, ("cache-control", "max-age=10".into())],
                format!("slow {ms} ms, origin hit #{n}\n"),
            )
        }
        _ => resp(StatusCode::NOT_FOUND, &[text], "not found\n"),
    }
}

//! Warm-up without the origin: imports a peer's hottest entries (its `GET /admin/cache/export`,
//! NDJSON), or fetches a URL list through this instance's own cache; jobs report progress.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::body::ProxyBody;
use crate::cache::CacheShared;
use crate::cache::ops::Record;
use crate::config::file::WarmupSection;
use crate::stack::Runtime;

/// What a warm-up touches, and nothing more (never the whole application state).
#[derive(Clone, Debug)]
pub(crate) struct Handles {
    /// Where imported entries go.
    pub(crate) cache: Arc<CacheShared>,
    /// The current generation, for its routing table (keys follow `cache_host` aliases).
    pub(crate) rt: Arc<ArcSwap<Runtime>>,
    /// The admin token, sent to a peer's export (replicas share it).
    pub(crate) token: Option<String>,
    /// This instance's data listener, which URL warm-ups fetch through (`None` before bind).
    pub(crate) data_addr: Option<SocketAddr>,
    /// The job table.
    pub(crate) jobs: Arc<Jobs>,
}

/// One warm-up job.
#[derive(Debug, Default, Serialize)]
pub(crate) struct JobView {
    /// Id.
    pub id: u64,
    /// `peer` or `urls`.
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Items expected (0 while unknown).
    pub total: u64,
    /// Items handled.
    pub done: u64,
    /// Entries stored.
    pub imported: u64,
    /// Items that failed.
    pub errors: u64,
    /// Why it failed.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Job {
    kind: String,
    state: Mutex<(String, Option<String>)>,
    total: AtomicU64,
    done: AtomicU64,
    imported: AtomicU64,
    errors: AtomicU64,
}

/// The job table.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<Job>>>,
}

impl Jobs {
    fn create(&self, kind: &str) -> (u64, Arc<Job>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            kind: kind.into(),
            state: Mutex::new(("running".into(), None)),
            ..Job::default()
        });
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, job.clone());
        (id, job)
    }

    /// A job's progress.
    pub(crate) fn view(&self, id: u64) -> Option<JobView> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let j = map.get(&id)?;
        let (state, error) = j.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(JobView {
            id,
            kind: j.kind.clone(),
            state,
            error,
            total: j.total.load(Ordering::Relaxed),
            done: j.done.load(Ordering::Relaxed),
            imported: j.imported.load(Ordering::Relaxed),
            errors: j.errors.load(Ordering::Relaxed),
        })
    }
}

impl Job {
    fn finish(&self, r: Result<(), String>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *st = match r {
            Ok(()) => ("done".into(), None),
            Err(e) => ("failed".into(), Some(e)),
        };
    }
}

/// Starts importing `top` entries from the peer at `from`; returns the job id.
pub(crate) fn spawn_peer(s: &Handles, from: String, top: usize) -> u64 {
    let (id, job) = s.jobs.create("peer");
    let st = s.clone();
    tokio::spawn(async move {
        let r = import_from_peer(&st, &job, &from, top).await;
        if let Err(e) = &r {
            tracing::warn!(from = %from, error = %e, "Warm-up from peer failed.");
        }
        job.finish(r);
    });
    id
}

/// A peer that does not connect, or answer the export's head, within these is given up on:
/// an unreachable peer must not hold readiness back for the whole warm-up timeout.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const PEER_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

async fn import_from_peer(s: &Handles, job: &Job, from: &str, top: usize) -> Result<(), String> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(PEER_CONNECT_TIMEOUT));
    let client: Client<_, ProxyBody> = Client::builder(TokioExecutor::new()).build(connector);
    let url = format!(
        "{}/admin/cache/export?top={top}",
        from.trim_end_matches('/')
    );
    let mut req = http::Request::get(&url)
        .body(ProxyBody::empty())
        .map_err(|e| e.to_string())?;
    if let Some(t) = &s.token
        && let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}"))
    {
        req.headers_mut().insert(header::AUTHORIZATION, v);
    }
    let res = tokio::time::timeout(PEER_HEAD_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("{url}: no answer within {PEER_HEAD_TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("{url}: status {}", res.status()));
    }
    let mut body = res.into_body();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = body.frame().await;
        let chunk = match frame {
            Some(Ok(f)) => f.into_data().unwrap_or_default(),
            Some(Err(e)) => return Err(format!("{url}: {e}")),
            None => Bytes::new(),
        };
        let end = chunk.is_empty() && buf.iter().all(|b| *b != b'\n');
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            import_line(s, job, &line);
        }
        if end {
            if !buf.is_empty() {
                let line = std::mem::take(&mut buf);
                import_line(s, job, &line);
            }
            return Ok(());
        }
    }
}

fn import_line(s: &Handles, job: &Job, line: &[u8]) {
    let line = line.trim_ascii();
    if line.is_empty() {
        return;
    }
    job.total.fetch_add(1, Ordering::Relaxed);
    let rt = s.rt.load();
    let ok = serde_json::from_slice::<Record>(line).is_ok_and(|r| r.import(&s.cache, &rt.router));
    job.done.fetch_add(1, Ordering::Relaxed);
    if ok {
        job.imported.fetch_add(1, Ordering::Relaxed);
    } else {
        job.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts fetching `urls` through the data listener; returns the job id.
pub(crate) fn spawn_urls(s: &Handles, urls: Vec<String>, concurrency: usize) -> u64 {
    let (id, job) = s.jobs.create("urls");
    job.total.store(urls.len() as u64, Ordering::Relaxed);
    let st = s.clone();
    tokio::spawn(async move {
        let r = fetch_urls(&st, &job, urls, concurrency).await;
        job.finish(r);
    });
    id
}

/// Fetches each URL through this instance's data listener, so the cache stores it.
async fn fetch_urls(
    s: &Handles,
    job: &Job,
    urls: Vec<String>,
    concurrency: usize,
) -> Result<(), String> {
    let addr = s.data_addr.ok_or("data listener not bound")?;
    let client: Client<_, ProxyBody> = Client::builder(TokioExecutor::new()).build_http();
    futures_util::stream::iter(urls)
        .for_each_concurrent(concurrency, |u| {
            let client = client.clone();
            async move {
                let ok = async {
                    let uri: http::Uri = u.parse().ok()?;
                    let host = uri
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| addr.to_string());
                    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
                    let req = http::Request::get(format!("http://{addr}{pq}"))
                        .header(header::HOST, host)
                        .body(ProxyBody::empty())
                        .ok()?;
                    let res = tokio::time::timeout(Duration::from_secs(60), client.request(req))
                        .await
                        .ok()?
                        .ok()?;
                    let ok = res.status().is_success();
                    res.into_body().collect().await.ok()?;
                    Some(ok)
                }
                .await
                .unwrap_or(false);
                job.done.fetch_add(1, Ordering::Relaxed);
                if ok {
                    job.imported.fetch_add(1, Ordering::Relaxed);
                } else {
                    job.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    Ok(())
}

/// `[warmup]`: starts the job; the future ends when it finishes or times out (readiness
/// waits for it).
pub(crate) fn startup_warmup(s: &Handles, w: WarmupSection) -> impl Future<Output = ()> + use<> {
    let id = match &w.from {
        Some(from) => spawn_peer(s, from.clone(), w.top),
        None => spawn_urls(s, w.urls.clone(), w.concurrency),
    };
    let jobs = s.jobs.clone();
    async move {
        let deadline = tokio::time::Instant::now() + w.timeout;
        loop {
            let view = jobs.view(id).unwrap_or_default();
            if view.state != "running" {
                match &w.from {
                    // An unreachable or empty peer: start cold at once, and say so.
                    Some(from) if view.total == 0 => tracing::warn!(
                        job = id,
                        from = %from,
                        state = %view.state,
                        error = view.error.as_deref().unwrap_or("-"),
                        "Warm-up: the peer exported 0 entries; starting cold."
                    ),
                    _ => tracing::info!(
                        job = id,
                        state = %view.state,
                        imported = view.imported,
                        errors = view.errors,
                        "Warm-up finished."
                    ),
                }
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(job = id, "Warm-up timed out; reporting ready anyway.");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

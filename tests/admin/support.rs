//! Helpers for the breaker, admin and metrics tests, on top of `support.rs`: admin API calls
//! (JSON in and out, optional bearer token), GETs with extra headers, waiting for the cache to
//! hold a response, a Seawall started from a config file (for reloads), a gated TCP relay,
//! and small readers for the Prometheus text format and CSV.
//! Every wait is bounded.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::Full;
use seawall::app::Running;
use seawall::cache::store::Lookup;
use seawall::config::Config;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------------------------

/// Sends `method url` with an optional bearer token and JSON body (without one, the test token
/// is added for a proxy started with it: see `support::send`).
pub async fn admin_call(method: Method, url: &str, token: Option<&str>, body: &str) -> Answer {
    let mut b = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

/// Parses a JSON body (panics with the text when it is not JSON).
pub fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// GET on the admin listener (with the test token where the proxy uses it); status and JSON.
pub async fn admin_get(url: &str) -> (StatusCode, Value) {
    let (status, _, body) = admin_call(Method::GET, url, None, "").await;
    (status, json_of(&body))
}

/// POST with a JSON body on the admin listener (with the test token where the proxy uses it);
/// status and JSON.
pub async fn admin_post(url: &str, body: &str) -> (StatusCode, Value) {
    let (status, _, body) = admin_call(Method::POST, url, None, body).await;
    (status, json_of(&body))
}

/// GET `url` with extra request headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    request(b.body(Full::default()).unwrap()).await
}

/// Sends `method url` with an empty body.
pub async fn call(method: Method, url: &str) -> Answer {
    request(
        Request::builder()
            .method(method)
            .uri(url)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// The cache key Seawall builds for `host` and `path_and_query` (no route rewrites).
pub fn key_for(host: &str, path_and_query: &str) -> String {
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(":80").unwrap_or(&host);
    format!("http://{host}{path_and_query}")
}

/// Whether a request with `headers` finds a stored variant under `key`.
pub fn is_stored(running: &Running, key: &str, headers: &HeaderMap) -> bool {
    matches!(
        running.state.cache().store.lookup(key, headers),
        Lookup::Hit(_)
    )
}

/// Waits (bounded) until a request with `headers` finds a stored variant under `key`: a fill
/// stores the body right after its last byte went out, so a response read in full may be a
/// moment ahead of the store.
pub async fn wait_stored(running: &Running, key: &str, headers: &HeaderMap) {
    bounded(&format!("{key} stored"), async {
        while !is_stored(running, key, headers) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// GET `url` (with `headers`) and wait until the response is stored under `key`.
pub async fn prime(running: &Running, url: &str, key: &str, headers: &[(&str, &str)]) -> Answer {
    let answer = get_with(url, headers).await;
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    wait_stored(running, key, &map).await;
    answer
}

/// Polls `GET url` on the admin listener until `done(json)` holds (bounded); returns the JSON.
pub async fn poll_json(url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    bounded(what, async {
        loop {
            let (status, v) = admin_get(url).await;
            if status == StatusCode::OK && done(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Text of a header, or "" when absent.
pub fn header_or_empty(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Seawall from a config file
// ---------------------------------------------------------------------------------------------

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A private temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new() -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "seawall-admin-test-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `[server]` table every file-based instance uses (loopback, ephemeral ports, short drain).
pub const FILE_SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
     drain_delay = \"200ms\"\ngrace_period = \"2s\"\n\n";

/// A Seawall started with `Config::load` from a file it can reload.
pub struct FileProxy {
    /// Data listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin_addr: SocketAddr,
    /// The config file.
    pub path: PathBuf,
    running: Running,
    _dir: TempDir,
}

impl FileProxy {
    /// Writes `src` (prefixed with [`FILE_SERVER`]) and starts Seawall from the file.
    pub async fn start(src: &str) -> Self {
        init_tracing();
        let dir = TempDir::new();
        let path = dir.0.join("proxy.toml");
        std::fs::write(&path, format!("{FILE_SERVER}{src}")).unwrap();
        let config = Config::load(&path).unwrap_or_else(|e| panic!("config invalid: {e}"));
        let running = bounded(
            "seawall start from file",
            seawall::app::start_with_token(config, Some(TEST_ADMIN_TOKEN.to_string())),
        )
        .await
        .unwrap();
        register_test_admin(running.admin_addr);
        Self {
            addr: running.addr,
            admin_addr: running.admin_addr,
            path,
            running,
            _dir: dir,
        }
    }

    /// Rewrites the file with `src` (prefixed with [`FILE_SERVER`]).
    pub fn write(&self, src: &str) {
        std::fs::write(&self.path, format!("{FILE_SERVER}{src}")).unwrap();
    }

    /// Rewrites the file with exactly `raw` (for broken files).
    pub fn write_raw(&self, raw: &str) {
        std::fs::write(&self.path, raw).unwrap();
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://admin_addr{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// The running instance.
    pub fn running(&self) -> &Running {
        &self.running
    }
}

// ---------------------------------------------------------------------------------------------
// Gated relay
// ---------------------------------------------------------------------------------------------

/// A TCP relay to `target` that holds every connection until opened.
pub struct GatedRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    gate: watch::Sender<bool>,
    accepted: watch::Sender<u64>,
}

impl GatedRelay {
    /// Starts relaying `127.0.0.1:0` → `target`, gate closed.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = watch::Sender::new(false);
        let accepted = watch::Sender::new(0u64);
        let (g, a) = (gate.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                a.send_modify(|n| *n += 1);
                let mut rx = g.subscribe();
                tokio::spawn(async move {
                    if rx.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self {
            addr,
            gate,
            accepted,
        }
    }

    /// Waits (bounded) until at least `n` connections arrived.
    pub async fn wait_accepted(&self, n: u64) {
        let mut rx = self.accepted.subscribe();
        bounded(&format!("{n} relay connections"), async {
            let _ = rx.wait_for(|v| *v >= n).await;
        })
        .await;
    }

    /// Lets held and future connections through.
    pub fn open(&self) {
        self.gate.send_replace(true);
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------------------------

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with `_count`, `_bucket`… suffixes as written).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses the sample lines of a text exposition (comments skipped).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("bad sample line {line:?}"),
        };
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut end = None;
            let mut key = String::new();
            let mut val = String::new();
            // 0: key, 1: value (inside quotes), 2: after value
            let mut state = 0;
            while let Some((i, c)) = chars.next() {
                match state {
                    0 => match c {
                        '=' => {}
                        '"' => state = 1,
                        '}' => {
                            end = Some(i);
                            break;
                        }
                        ',' | ' ' => {}
                        c => key.push(c),
                    },
                    1 => match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => val.push('\n'),
                            Some(c) => val.push(c),
                            None => {}
                        },
                        '"' => {
                            labels.insert(std::mem::take(&mut key), std::mem::take(&mut val));
                            state = 2;
                        }
                        c => val.push(c),
                    },
                    _ => match c {
                        ',' => state = 0,
                        '}' => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    },
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
            &body[end + 1..]
        } else {
            rest
        };
        let value = rest.split_whitespace().next().unwrap_or("");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The value of the sample named `name` with exactly `labels`.
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// Like [`sample`], panicking with the scrape's matching names when absent.
pub fn must(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(samples, name, labels).unwrap_or_else(|| {
        let near: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
        panic!("no sample {name} {labels:?}; samples of that name: {near:#?}")
    })
}

/// Scrapes `/metrics` on `admin_url` (status checked) and returns the text.
pub async fn scrape(metrics_url: &str) -> String {
    let (status, headers, body) = get(metrics_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        header_str(&headers, "content-type").starts_with("text/plain"),
        "{headers:?}"
    );
    String::from_utf8(body.to_vec()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// Parses RFC 4180 CSV: quoted fields may hold commas, doubled quotes and line breaks.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            c => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    if any {
        row.push(field);
        rows.push(row);
    }
    rows
}

//! Helpers for the deployment tests: the real `seawall` binary as a child process (config file,
//! free loopback ports, log file, SIGTERM, exit status) and a load generator made of
//! keep-alive HTTP/1.1 clients that retry nothing and know, for every failure, whether the
//! request had been sent. Every wait is bounded.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin_support::TempDir;
use crate::support::{WAIT, bounded, send};

// ---------------------------------------------------------------------------------------------
// Seawall as a child process
// ---------------------------------------------------------------------------------------------

/// Two distinct free ports on 127.0.0.1: both bound at once, then released.
pub fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// A `seawall run --config <file>` child process on loopback ports.
pub struct SeawallProcess {
    /// Name in messages (`blue`, `green`, …).
    pub name: String,
    /// Data listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin_addr: SocketAddr,
    /// The config file.
    pub config: PathBuf,
    /// stdout and stderr of the child.
    pub log: PathBuf,
    child: Child,
    _dir: TempDir,
}

/// How long a child may take to answer `/healthz` after it was spawned.
const START_WAIT: Duration = Duration::from_secs(20);

impl SeawallProcess {
    /// Writes a config with a `[server]` table on two free loopback ports (plus
    /// `server_extra` lines) followed by `rest`, spawns the binary with `env`, and waits
    /// (bounded) until `/healthz` answers 200. A child that lost its ports to another
    /// process before binding them is restarted on new ones.
    pub async fn start(name: &str, server_extra: &str, rest: &str, env: &[(&str, &str)]) -> Self {
        for attempt in 1..=3 {
            let (data, admin) = free_ports();
            let dir = TempDir::new();
            let config = dir.0.join("proxy.toml");
            let log = dir.0.join("seawall.log");
            std::fs::write(
                &config,
                format!(
                    "[server]\nlisten = \"127.0.0.1:{data}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                     {server_extra}\n\n{rest}"
                ),
            )
            .unwrap();
            let out = std::fs::File::create(&log).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_seawall"));
            cmd.arg("run")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .kill_on_drop(true);
            // Nothing from the test runner's environment leaks into the child's settings.
            for (k, _) in std::env::vars() {
                if k.starts_with("SEAWALL_") || k == "RUST_LOG" || k.starts_with("OTEL_") {
                    cmd.env_remove(k);
                }
            }
            // `DEPLOY_TEST_CHILD_LOG=seawall=debug` makes the children log more (into their
            // log files, printed when a test fails).
            if let Ok(filter) = std::env::var("DEPLOY_TEST_CHILD_LOG") {
                cmd.env("RUST_LOG", filter);
            }
            // A child without a configured admin token writes the one it generates here,
            // not into the user's runtime directory.
            cmd.env("XDG_RUNTIME_DIR", &dir.0);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().unwrap();
            let mut p = Self {
                name: name.to_string(),
                addr: SocketAddr::from(([127, 0, 0, 1], data)),
                admin_addr: SocketAddr::from(([127, 0, 0, 1], admin)),
                config,
                log,
                child,
                _dir: dir,
            };
            match p.wait_up().await {
                Ok(()) => return p,
                Err(e) if e.contains("cannot bind") && attempt < 3 => {
                    eprintln!("{name}: port taken before the child bound it, retrying: {e}");
                }
                Err(e) => panic!("{name} did not come up: {e}"),
            }
        }
        unreachable!()
    }

    /// Polls `/healthz` until 200; an early exit is an error carrying the log.
    async fn wait_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}: {}", self.log_text()));
            }
            if let Ok(res) = send(
                Request::get(self.admin_url("/healthz"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
                && res.status() == StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no /healthz within {START_WAIT:?}: {}",
                    self.log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("child already reaped")
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://admin_addr{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// `http://admin_addr` (for `[warmup] from`).
    pub fn admin_base(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Everything the child logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM with `kill -TERM <pid>`.
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Whether the child has exited (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits (at most `limit`) for the child to exit; its exit status.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(r) => r.unwrap(),
            Err(_) => panic!(
                "{} did not exit within {limit:?}; log:\n{}",
                self.name,
                self.log_text()
            ),
        }
    }
}

impl Drop for SeawallProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} ({}) log -----\n{}\n----- end of {} log -----",
                self.name,
                self.config.display(),
                self.log_text(),
                self.name
            );
        }
        // kill_on_drop sends SIGKILL if it is still running.
        let _ = self.child.start_kill();
    }
}

/// Polls `url` (fresh connection each time) until it answers `want`; the last body.
pub async fn wait_status(url: &str, want: StatusCode, what: &str) -> Bytes {
    bounded(what, async {
        loop {
            if let Ok(res) = send(Request::get(url).body(Full::default()).unwrap()).await {
                let status = res.status();
                let body = res.into_body().collect().await.map(|c| c.to_bytes());
                if status == want
                    && let Ok(body) = body
                {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// One request the load sends: a path, extra headers, and the exact body expected.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Origin-form target.
    pub path: String,
    /// Extra request headers (`Host` included when wanted; default `Host` is the target).
    pub headers: Vec<(String, String)>,
    /// The body a correct answer carries.
    pub body: Bytes,
}

impl Planned {
    /// A GET of `path` expecting `body`.
    pub fn get(path: &str, body: &str) -> Self {
        Self {
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    /// Adds a request header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

/// What the load saw; shared by every client task.
#[derive(Default, Debug)]
pub struct LoadStats {
    /// Requests answered 2xx with the whole, expected body.
    pub ok: AtomicU64,
    /// Requests that were sent (written to a connection) and got no complete, correct answer.
    pub failed: AtomicU64,
    /// Connections that could not be opened (the request was never sent).
    pub connect_errors: AtomicU64,
    /// Kept-alive connections found closed before the request was handed to them (the
    /// request was never sent; the client opens a new connection).
    pub closed_before_send: AtomicU64,
    /// Answers carrying `Connection: close`.
    pub connection_close: AtomicU64,
    /// Connections opened.
    pub connections: AtomicU64,
    /// Details of the failures (the first 50).
    pub failures: Mutex<Vec<String>>,
    /// Per target: successful requests and the latest send time of one.
    pub per_target: Mutex<HashMap<SocketAddr, (u64, Option<Instant>)>>,
    /// Per client task and target: successful requests.
    pub per_task: Mutex<HashMap<(usize, SocketAddr), u64>>,
}

impl LoadStats {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 50 {
            f.push(what);
        }
    }

    /// Successful requests sent to `target`.
    pub fn ok_on(&self, target: SocketAddr) -> u64 {
        self.per_target
            .lock()
            .unwrap()
            .get(&target)
            .map_or(0, |v| v.0)
    }

    /// When the latest successful request to `target` was sent.
    pub fn last_ok_sent(&self, target: SocketAddr) -> Option<Instant> {
        self.per_target
            .lock()
            .unwrap()
            .get(&target)
            .and_then(|v| v.1)
    }

    /// Successful requests of client task `task` to `target`.
    pub fn task_ok_on(&self, task: usize, target: SocketAddr) -> u64 {
        self.per_task
            .lock()
            .unwrap()
            .get(&(task, target))
            .copied()
            .unwrap_or(0)
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "ok={} failed={} connect_errors={} closed_before_send={} connection_close={} connections={} per_target={:?}",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.connect_errors.load(Ordering::Relaxed),
            self.closed_before_send.load(Ordering::Relaxed),
            self.connection_close.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
            self.per_target
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.port(), v.0))
                .collect::<Vec<_>>(),
        )
    }

    /// The failure details.
    pub fn failure_list(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// Continuous load from several client tasks. Each task keeps one HTTP/1.1 connection alive
/// for as long as the server allows (until `Connection: close` or the server closes it) and
/// only then connects again, to whatever the target is at that moment: like a client behind
/// a load balancer whose backend set changed. Nothing is retried.
pub struct Load {
    /// The counters.
    pub stats: Arc<LoadStats>,
    target: watch::Sender<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Upper bound for one request (send, head, body).
const REQUEST_WAIT: Duration = Duration::from_secs(10);

impl Load {
    /// Starts `clients` tasks sending `plan` round-robin (each task from its own offset) to
    /// `target`, pausing `pause` between requests.
    pub fn start(clients: usize, target: SocketAddr, plan: Vec<Planned>, pause: Duration) -> Self {
        let stats = Arc::new(LoadStats::default());
        let target = watch::Sender::new(target);
        let stop = watch::Sender::new(false);
        let plan = Arc::new(plan);
        let tasks = (0..clients)
            .map(|id| {
                tokio::spawn(client_task(
                    id,
                    stats.clone(),
                    target.subscribe(),
                    stop.subscribe(),
                    plan.clone(),
                    pause,
                ))
            })
            .collect();
        Self {
            stats,
            target,
            stop,
            tasks,
        }
    }

    /// New connections go to `to` from now on (kept-alive ones stay where they are).
    pub fn switch(&self, to: SocketAddr) {
        self.target.send_replace(to);
    }

    /// Waits (bounded) until `done(stats)` holds.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&LoadStats) -> bool) {
        bounded(what, async {
            while !done(&self.stats) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// Stops the tasks after their current request and waits for them (bounded).
    pub async fn stop(self) -> Arc<LoadStats> {
        self.stop.send_replace(true);
        for t in self.tasks {
            bounded("load task stop", t).await.unwrap();
        }
        self.stats
    }
}

enum Outcome {
    /// The request was never written: the connection was already closed.
    NotSent,
    /// A complete, correct answer; whether the server asked to close the connection.
    Ok { close: bool },
    /// Sent, then no complete, correct answer.
    Failed(String),
}

async fn client_task(
    id: usize,
    stats: Arc<LoadStats>,
    target: watch::Receiver<SocketAddr>,
    stop: watch::Receiver<bool>,
    plan: Arc<Vec<Planned>>,
    pause: Duration,
) {
    let mut conn: Option<(SocketAddr, http1::SendRequest<Full<Bytes>>)> = None;
    let mut i = id;
    while !*stop.borrow() {
        let (addr, sender) = match &mut conn {
            Some((addr, sender)) => (*addr, sender),
            None => {
                let addr = *target.borrow();
                match connect(addr).await {
                    Ok(s) => {
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        let (addr, sender) = conn.insert((addr, s));
                        (*addr, sender)
                    }
                    Err(_) => {
                        // Never sent: nothing listens (any more).
                        stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
            }
        };
        let p = &plan[i % plan.len()];
        i += 1;
        let sent_at = Instant::now();
        match exchange(sender, addr, p).await {
            Outcome::NotSent => {
                stats.closed_before_send.fetch_add(1, Ordering::Relaxed);
                conn = None;
                continue;
            }
            Outcome::Ok { close } => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                {
                    let mut per = stats.per_target.lock().unwrap();
                    let e = per.entry(addr).or_insert((0, None));
                    e.0 += 1;
                    e.1 = Some(e.1.map_or(sent_at, |t| t.max(sent_at)));
                }
                *stats
                    .per_task
                    .lock()
                    .unwrap()
                    .entry((id, addr))
                    .or_insert(0) += 1;
                if close {
                    stats.connection_close.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                }
            }
            Outcome::Failed(why) => {
                stats.fail(format!("client {id} → {addr} {}: {why}", p.path));
                conn = None;
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn exchange(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    p: &Planned,
) -> Outcome {
    // A kept-alive connection the server closed while idle: noticed before anything is sent.
    if sender.ready().await.is_err() {
        return Outcome::NotSent;
    }
    let mut b = Request::get(p.path.as_str());
    if !p
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        b = b.header("host", addr.to_string());
    }
    for (k, v) in &p.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(Full::default()).unwrap();
    let res = match tokio::time::timeout(REQUEST_WAIT, sender.try_send_request(req)).await {
        Err(_) => return Outcome::Failed(format!("no response head within {REQUEST_WAIT:?}")),
        Ok(Err(mut e)) => {
            if e.take_message().is_some() {
                // hyper handed the request back: it was never written.
                return Outcome::NotSent;
            }
            return Outcome::Failed(format!("{:?}", e.into_error()));
        }
        Ok(Ok(res)) => res,
    };
    let status = res.status();
    let close = res
        .headers()
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let headers = res.headers().clone();
    let body = match tokio::time::timeout(REQUEST_WAIT, res.into_body().collect()).await {
        Err(_) => {
            return Outcome::Failed(format!(
                "{status}: body not complete within {REQUEST_WAIT:?}"
            ));
        }
        Ok(Err(e)) => return Outcome::Failed(format!("{status}: body error {e:?}")),
        Ok(Ok(b)) => b.to_bytes(),
    };
    if !status.is_success() {
        return Outcome::Failed(format!("status {status} {headers:?} {body:?}"));
    }
    if body != p.body {
        return Outcome::Failed(format!("body {body:?}, expected {:?}", p.body));
    }
    Outcome::Ok { close }
}

/// Samples `url` every `every` until stopped: (when the answer arrived, status, body).
pub struct Prober {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<(Instant, Option<StatusCode>, String)>>,
}

impl Prober {
    /// Starts probing `url` (fresh connection each time; errors recorded as `None`).
    pub fn start(url: String, every: Duration) -> Self {
        let stop = watch::Sender::new(false);
        let rx = stop.subscribe();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !*rx.borrow() {
                let r = tokio::time::timeout(
                    Duration::from_secs(2),
                    send(Request::get(url.as_str()).body(Full::default()).unwrap()),
                )
                .await;
                match r {
                    Ok(Ok(res)) => {
                        let status = res.status();
                        let body =
                            tokio::time::timeout(Duration::from_secs(2), res.into_body().collect())
                                .await
                                .ok()
                                .and_then(|b| b.ok())
                                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                                .unwrap_or_default();
                        seen.push((Instant::now(), Some(status), body));
                    }
                    _ => seen.push((Instant::now(), None, String::new())),
                }
                tokio::time::sleep(every).await;
            }
            seen
        });
        Self { stop, task }
    }

    /// Stops and returns what was seen, in order.
    pub async fn stop(self) -> Vec<(Instant, Option<StatusCode>, String)> {
        self.stop.send_replace(true);
        bounded("prober stop", self.task).await.unwrap()
    }
}

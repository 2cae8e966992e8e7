//! Helpers for the Redis shared-tier tests, on top of `support.rs`: a throwaway `redis-server` on
//! loopback (pause, kill, restart), nodes from a config file (replicas, sentinels, passwords),
//! `redis-cli` calls, a TCP forwarder that cuts one replica off
//! from Redis, a fleet of Seawall replicas sharing one origin and one Redis, admin calls with a
//! common `Host`, and sums over Prometheus samples.
//! Every wait is bounded.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::support::{Answer, TestProxy, WAIT, bounded, request};

/// The `Host` every test request carries, so that all replicas build the same primary keys
/// (their own listen addresses differ).
pub const HOST: &str = "shared.test";

/// The namespace the fleet is configured with.
pub const NS: &str = "seawall";

/// How long a single `redis-cli` call may take.
pub const CLI_WAIT: Duration = Duration::from_secs(5);

/// How long the tests wait for something that happens behind a response (an L2 write, a
/// fanned-out purge, a reconnection).
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// The primary cache key of `path_and_query` under [`HOST`].
pub fn key(path_and_query: &str) -> String {
    format!("http://{HOST}{path_and_query}")
}

/// The Redis hash holding the variants of `path_and_query`.
pub fn entry_key(path_and_query: &str) -> String {
    format!("{NS}:v2:e:{{{}}}", key(path_and_query))
}

/// `{NS}:v2:{rest}`.
pub fn ns_key(rest: &str) -> String {
    format!("{NS}:v2:{rest}")
}

/// `{NS}:v2:{shared}:{rest}`: the tag index, purge stream and heartbeats (one hash tag).
pub fn shared_key(rest: &str) -> String {
    format!("{NS}:v2:{{shared}}:{rest}")
}

// ---------------------------------------------------------------------------------------------
// Bounded polling
// ---------------------------------------------------------------------------------------------

/// A deadline for a polling loop: `while !cond { poll.tick().await }` panics with `what` once
/// the deadline has passed.
pub struct Poll {
    what: String,
    within: Duration,
    deadline: Instant,
}

impl Poll {
    /// A loop that must finish within `within`.
    pub fn new(what: impl Into<String>, within: Duration) -> Self {
        Self {
            what: what.into(),
            within,
            deadline: Instant::now() + within,
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Sleeps a little; panics when the deadline has passed.
    pub async fn tick(&self) {
        if self.expired() {
            panic!("not within {:?}: {}", self.within, self.what);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// redis-server and redis-cli
// ---------------------------------------------------------------------------------------------

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir.
pub fn unique_dir(prefix: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let p = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What `redis-cli` printed, or why it failed.
pub type CliResult = Result<Vec<u8>, String>;

/// Runs `redis-cli -h 127.0.0.1 -p port --raw args…`, killed after `within`. Panics when
/// `redis-cli` is not installed.
pub async fn redis_cli_raw(port: u16, args: &[&str], within: Duration) -> CliResult {
    redis_cli_as(port, None, args, within).await
}

/// Like [`redis_cli_raw`], logged in with `password` (passed in the environment, not argv).
pub async fn redis_cli_as(
    port: u16,
    password: Option<&str>,
    args: &[&str],
    within: Duration,
) -> CliResult {
    let mut cmd = tokio::process::Command::new("redis-cli");
    if let Some(pw) = password {
        cmd.env("REDISCLI_AUTH", pw);
    }
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-cli is not on PATH: the Redis shared-tier tests need redis-server and \
             redis-cli (scripts/test installs them; on Debian: apt-get install redis-server)"
        ),
        Err(e) => panic!("cannot run redis-cli: {e}"),
    };
    match tokio::time::timeout(within, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "redis-cli {args:?} on port {port}: no answer within {within:?}"
        )),
        Ok(Err(e)) => Err(format!("redis-cli {args:?} on port {port}: {e}")),
        Ok(Ok(out)) if out.status.success() => {
            let mut stdout = out.stdout;
            if stdout.last() == Some(&b'\n') {
                stdout.pop();
            }
            Ok(stdout)
        }
        Ok(Ok(out)) => Err(format!(
            "redis-cli {args:?} on port {port} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// `redis-cli … PING` answered `PONG` within `within`.
pub async fn pings(port: u16, within: Duration) -> bool {
    matches!(redis_cli_raw(port, &["PING"], within).await, Ok(out) if out == b"PONG")
}

/// A `redis-server` on 127.0.0.1 with no persistence, in its own temporary directory; killed
/// and removed when dropped.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits (bounded) until it answers
    /// `PING`. Panics, never skips, when `redis-server` is not installed.
    pub async fn start() -> Self {
        let mut server = Self {
            port: 0,
            dir: unique_dir("seawall-redis-test"),
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.launch().await {
                return server;
            }
        }
        panic!(
            "redis-server did not start on a free port in 5 attempts; log:\n{}",
            server.log()
        );
    }

    /// Spawns the process on `self.port`; false when it exited at once (port taken).
    async fn launch(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: the Redis shared-tier tests need it \
                 (scripts/test installs it; on Debian: apt-get install redis-server)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        let poll = Poll::new(
            format!("redis-server on port {} answers PING", self.port),
            Duration::from_secs(5),
        );
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                eprintln!("redis-server on port {} exited: {status}", self.port);
                return false;
            }
            if pings(self.port, Duration::from_secs(1)).await {
                return true;
            }
            if poll.expired() {
                panic!(
                    "redis-server on port {} did not answer PING within 5 s; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            poll.tick().await;
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:port/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    /// `redis-cli --raw args…` (bounded); its output without the final newline, lossily
    /// decoded. Panics when the call fails.
    pub async fn cli(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli_bytes(args).await).into_owned()
    }

    /// Like [`Self::cli`], the raw bytes.
    pub async fn cli_bytes(&self, args: &[&str]) -> Vec<u8> {
        redis_cli_raw(self.port, args, CLI_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Self::cli`], the error instead of a panic.
    pub async fn try_cli(&self, args: &[&str], within: Duration) -> CliResult {
        redis_cli_raw(self.port, args, within).await
    }

    /// `KEYS pattern`, sorted.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["KEYS", pattern])
            .await
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> bool {
        self.cli(&["EXISTS", key]).await == "1"
    }

    /// The fields of the hash `key`.
    pub async fn hkeys(&self, key: &str) -> Vec<String> {
        self.cli(&["HKEYS", key])
            .await
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Waits (bounded by [`EVENTUALLY`]) until the L2 entry of `path_and_query` has a field.
    pub async fn wait_entry(&self, path_and_query: &str) {
        let k = entry_key(path_and_query);
        let poll = Poll::new(format!("{k} written to Redis"), EVENTUALLY);
        while self.cli(&["HLEN", &k]).await == "0" {
            poll.tick().await;
        }
    }

    /// Waits (bounded by [`EVENTUALLY`]) until `key` no longer exists.
    pub async fn wait_gone(&self, key: &str) {
        let poll = Poll::new(format!("{key} removed from Redis"), EVENTUALLY);
        while self.exists(key).await {
            poll.tick().await;
        }
    }

    /// Waits (bounded by [`EVENTUALLY`]) until exactly `n` replica heartbeats exist.
    pub async fn wait_heartbeats(&self, n: usize) {
        let pattern = shared_key("hb:*");
        let poll = Poll::new(format!("{n} heartbeats ({pattern})"), EVENTUALLY);
        loop {
            let hb = self.keys(&pattern).await;
            if hb.len() == n {
                return;
            }
            if poll.expired() {
                panic!("expected {n} heartbeats within {EVENTUALLY:?}, Redis has {hb:?}");
            }
            poll.tick().await;
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} redis-server failed: {status}");
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Same as [`Self::pause`].
    pub fn stop(&self) {
        self.pause();
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL and reap; every key is lost (no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process if it runs, then starts an empty one on the same port (bounded).
    pub async fn restart(&mut self) {
        self.kill();
        // The old listening socket may take a moment to be released.
        let poll = Poll::new(
            format!("redis-server restarted on port {}", self.port),
            Duration::from_secs(10),
        );
        while !self.launch().await {
            poll.tick().await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Processes from a config file (replication, Sentinel)
// ---------------------------------------------------------------------------------------------

/// A `redis-server` or `redis-sentinel` run from a config file that `conf(port, dir)` writes,
/// on a free loopback port in its own temporary directory; killed and removed when dropped.
pub struct RedisNode {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    password: Option<String>,
    program: String,
}

impl RedisNode {
    /// Starts `program` (`redis-server` or `redis-sentinel`) and waits (bounded) until it
    /// answers `PING`.
    pub async fn start(program: &str, conf: impl Fn(u16, &std::path::Path) -> String) -> Self {
        Self::start_as(program, None, conf).await
    }

    /// Like [`Self::start`], for a node whose config sets `requirepass password`.
    pub async fn start_as(
        program: &str,
        password: Option<&str>,
        conf: impl Fn(u16, &std::path::Path) -> String,
    ) -> Self {
        let dir = unique_dir(&format!("seawall-{program}-test"));
        for _ in 0..5 {
            let port = free_port();
            let file = dir.join("node.conf");
            std::fs::write(&file, conf(port, &dir)).unwrap();
            let log = std::fs::File::create(dir.join("node.log")).unwrap();
            let mut child = Command::new(program)
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
            let poll = Poll::new(
                format!("{program} on port {port} answers PING"),
                Duration::from_secs(5),
            );
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let pong = redis_cli_as(port, password, &["PING"], Duration::from_secs(1)).await;
                if matches!(pong, Ok(out) if out == b"PONG") {
                    return Self {
                        port,
                        dir,
                        child: Some(child),
                        password: password.map(str::to_string),
                        program: program.to_string(),
                    };
                }
                poll.tick().await;
            }
        }
        panic!(
            "{program} did not start in 5 attempts; log:\n{}",
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// `redis-cli --raw args…` (bounded), lossily decoded; the error text when it fails.
    pub async fn cli(&self, args: &[&str]) -> String {
        match redis_cli_as(self.port, self.password.as_deref(), args, CLI_WAIT).await {
            Ok(out) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => e,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the process.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "kill {sig} {} failed: {status}",
            self.program
        );
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL, then the same program, config, port and directory again (whatever it
    /// persisted there is loaded), once it answers `PING` (bounded).
    pub async fn restart(&mut self) {
        self.kill();
        let poll = Poll::new(
            format!("{} restarted on port {}", self.program, self.port),
            Duration::from_secs(10),
        );
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("node.log"))
                .unwrap();
            let mut child = Command::new(&self.program)
                .arg(self.dir.join("node.conf"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program));
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let pong = redis_cli_as(
                    self.port,
                    self.password.as_deref(),
                    &["PING"],
                    Duration::from_secs(1),
                )
                .await;
                if matches!(pong, Ok(out) if out == b"PONG") {
                    self.child = Some(child);
                    return;
                }
                if poll.expired() {
                    let _ = child.kill();
                    panic!("{} did not restart; log:\n{}", self.program, self.log());
                }
                poll.tick().await;
            }
            // The old listening socket may take a moment to be released.
            poll.tick().await;
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Cuttable forwarder
// ---------------------------------------------------------------------------------------------

/// Counts a forwarded connection while it lives.
struct Open(watch::Sender<u64>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A TCP forwarder `127.0.0.1:0` → a Redis port. [`CutProxy::cut`] closes every forwarded
/// connection and closes new ones at once, until [`CutProxy::restore`].
pub struct CutProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    open: watch::Sender<u64>,
    accepted: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// Starts forwarding to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = watch::Sender::new(false);
        let open = watch::Sender::new(0u64);
        let accepted = watch::Sender::new(0u64);
        let (c, o, a) = (cut.clone(), open.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task ends them too.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((mut inbound, _)) = r else { continue };
                        a.send_modify(|n| *n += 1);
                        // Subscribe before checking, so a cut racing this accept is seen.
                        let mut rx = c.subscribe();
                        if *rx.borrow_and_update() {
                            drop(inbound);
                            continue;
                        }
                        o.send_modify(|n| *n += 1);
                        let guard = Open(o.clone());
                        conns.spawn(async move {
                            let _guard = guard;
                            let connect = tokio::time::timeout(WAIT, TcpStream::connect(target));
                            let Ok(Ok(mut outbound)) = connect.await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = rx.wait_for(|cut| *cut) => {}
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self {
            addr,
            cut,
            open,
            accepted,
            task,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://127.0.0.1:port/0` through the forwarder.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Connections forwarded right now.
    pub fn open_connections(&self) -> u64 {
        *self.open.borrow()
    }

    /// Connections accepted so far (forwarded or closed at once).
    pub fn accepted(&self) -> u64 {
        *self.accepted.borrow()
    }

    /// Closes every forwarded connection (waits, bounded, until they are gone) and closes new
    /// connections as soon as they are accepted.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        let mut rx = self.open.subscribe();
        bounded("forwarded connections closed", async {
            let _ = rx.wait_for(|n| *n == 0).await;
        })
        .await;
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// A fleet of replicas
// ---------------------------------------------------------------------------------------------

/// Replica ids, in start order.
pub const REPLICA_IDS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// The per-call Redis timeout of most tests: generous, because a debug build serving 900
/// clients on two CPUs can take longer than a production timeout to get to Redis's answer.
pub const TIMEOUT: &str = "1s";

/// A config with the shared tier at `redis_url` (short timings), one upstream `origin` at
/// `origin_url` with its breaker off, and one catch-all route.
pub fn replica_config(
    origin_url: &str,
    redis_url: &str,
    replica_id: &str,
    timeout: &str,
) -> String {
    format!(
        "[cache.redis]\n\
         url = {redis_url:?}\n\
         namespace = {NS:?}\n\
         timeout = {timeout:?}\n\
         connect_timeout = \"500ms\"\n\
         l2_max_object_size = \"1MiB\"\n\
         write_queue = 1024\n\
         lock_ttl = \"10s\"\n\
         lock_wait = \"5s\"\n\
         heartbeat_interval = \"200ms\"\n\
         purge_stream_max_len = 10000\n\
         breaker_failures = 5\n\
         breaker_open = \"500ms\"\n\
         replica_id = {replica_id:?}\n\n\
         [[upstreams]]\n\
         name = \"origin\"\n\
         endpoints = [{origin_url:?}]\n\n\
         [upstreams.breaker]\n\
         enabled = false\n\n\
         [[routes]]\n\
         upstream = \"origin\"\n"
    )
}

/// Seawall replicas sharing one origin and one Redis; replica `i` has id `REPLICA_IDS[i]`.
pub struct Fleet {
    /// The replicas, in id order.
    pub replicas: Vec<TestProxy>,
}

impl Fleet {
    /// `n` replicas in front of `origin_url`, all on `redis`.
    pub async fn start(origin_url: &str, redis: &RedisServer, n: usize) -> Self {
        let urls = vec![redis.url(); n];
        Self::start_with(origin_url, &urls).await
    }

    /// One replica per Redis URL (e.g. one behind a [`CutProxy`]).
    pub async fn start_with(origin_url: &str, redis_urls: &[String]) -> Self {
        Self::start_with_timeout(origin_url, redis_urls, TIMEOUT).await
    }

    /// Like `start_with`, with another per-call Redis timeout.
    pub async fn start_with_timeout(
        origin_url: &str,
        redis_urls: &[String],
        timeout: &str,
    ) -> Self {
        assert!(redis_urls.len() <= REPLICA_IDS.len());
        let mut replicas = Vec::with_capacity(redis_urls.len());
        for (url, id) in redis_urls.iter().zip(REPLICA_IDS) {
            replicas
                .push(TestProxy::with_config(&replica_config(origin_url, url, id, timeout)).await);
        }
        Self { replicas }
    }
}

impl std::ops::Index<usize> for Fleet {
    type Output = TestProxy;

    fn index(&self, i: usize) -> &TestProxy {
        &self.replicas[i]
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// GET `path_and_query` on `proxy` with `Host:` [`HOST`].
pub async fn shared_get(proxy: &TestProxy, path_and_query: &str) -> Answer {
    request(
        Request::get(proxy.url(path_and_query))
            .header("host", HOST)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// An HTTP/1.1 connection to `proxy`, opened now, that sends `GET path_and_query` (with
/// `Host:` [`HOST`]) only when `go` resolves: a burst of these reaches the proxy as requests
/// at once rather than as a wave of connection handshakes.
pub async fn get_when<F: std::future::Future<Output = ()>>(
    proxy: &TestProxy,
    path_and_query: &str,
    go: F,
) -> Answer {
    let stream = bounded("connect", TcpStream::connect(proxy.addr))
        .await
        .unwrap();
    let (mut sender, conn) = bounded(
        "HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let req = Request::get(path_and_query)
        .header("host", HOST)
        .body(Full::<Bytes>::default())
        .unwrap();
    go.await;
    let res = bounded("response head", sender.send_request(req))
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = bounded("response body", http_body_util::BodyExt::collect(body))
        .await
        .unwrap()
        .to_bytes();
    drop(sender);
    driver.abort();
    (parts.status, parts.headers, body)
}

/// Parses a JSON body (panics with the text when it is not JSON).
pub fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// `method` on `proxy`'s admin listener (with the test token, added by `send`) with a JSON body; status and JSON.
pub async fn admin_json(
    proxy: &TestProxy,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(proxy.admin_url(path));
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    let (status, _, body) =
        request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await;
    (status, json_of(&body))
}

/// `POST /admin/cache/purge` with `body` on `proxy`; the JSON answer (status checked).
pub async fn purge(proxy: &TestProxy, body: &str) -> Value {
    let (status, v) = admin_json(proxy, Method::POST, "/admin/cache/purge", body).await;
    assert_eq!(status, StatusCode::OK, "purge {body}: {v}");
    v
}

/// `POST /admin/cache/clear` (confirmed) on `proxy`; the JSON answer (status checked).
pub async fn clear(proxy: &TestProxy) -> Value {
    let body = r#"{"confirm":"CLEAR-ALL"}"#;
    let (status, v) = admin_json(proxy, Method::POST, "/admin/cache/clear", body).await;
    assert_eq!(status, StatusCode::OK, "clear: {v}");
    v
}

/// Percent-encodes everything but unreserved characters (for a URL in a query parameter).
fn encode_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `proxy` holds `path_and_query` in its memory tier (`GET /admin/cache/entry`), so
/// checking never sends the proxy a request for the URL itself.
pub async fn in_l1(proxy: &TestProxy, path_and_query: &str) -> bool {
    let url = encode_param(&key(path_and_query));
    let path = format!("/admin/cache/entry?url={url}");
    let (status, v) = admin_json(proxy, Method::GET, &path, "").await;
    match status {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        s => panic!("GET {path}: {s} {v}"),
    }
}

/// Waits (bounded by `within`) until `proxy`'s `/readyz` says `"shared_tier": "ok"`: a
/// primary is known and subscribed to, so its next fill reaches Redis (behind Sentinel the
/// primary is found after start; a fill before that stays in memory only).
pub async fn wait_shared_ok(proxy: &TestProxy, within: Duration) {
    let poll = Poll::new("the shared tier ok", within);
    while readyz(proxy).await.1["shared_tier"] != "ok" {
        poll.tick().await;
    }
}

/// Waits (bounded by [`EVENTUALLY`]) until `proxy`'s memory tier holds (`want`) or no longer
/// holds (`!want`) `path_and_query`.
pub async fn wait_l1(proxy: &TestProxy, path_and_query: &str, want: bool) {
    let what = if want { "holds" } else { "no longer holds" };
    let poll = Poll::new(
        format!("replica at {} {what} {path_and_query}", proxy.addr),
        EVENTUALLY,
    );
    while in_l1(proxy, path_and_query).await != want {
        poll.tick().await;
    }
}

/// `GET /readyz` on `proxy`: status and JSON.
pub async fn readyz(proxy: &TestProxy) -> (StatusCode, Value) {
    admin_json(proxy, Method::GET, "/readyz", "").await
}

// ---------------------------------------------------------------------------------------------
// Cache-Status
// ---------------------------------------------------------------------------------------------

/// `seawall; hit; ttl=N; detail=shared`: served from the shared tier.
pub fn is_shared_hit(cs: &str) -> bool {
    cs.starts_with("seawall; hit; ttl=") && cs.ends_with("; detail=shared")
}

/// `seawall; hit; ttl=N` without a detail: served from memory.
pub fn is_l1_hit(cs: &str) -> bool {
    cs.starts_with("seawall; hit; ttl=") && !cs.contains("detail=")
}

/// `seawall; fwd=uri-miss…`: fetched from the origin.
pub fn is_miss(cs: &str) -> bool {
    cs.starts_with("seawall; fwd=uri-miss")
}

/// The `ttl=N` of a `Cache-Status` hit.
pub fn ttl_of(cs: &str) -> i64 {
    cs.split("; ")
        .find_map(|p| p.strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl in {cs:?}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------------------------

/// `GET /metrics` on `proxy`'s admin listener (status checked); the text.
pub async fn metrics_text(proxy: &TestProxy) -> String {
    let (status, _, body) = request(
        Request::get(proxy.admin_url("/metrics"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body.to_vec()).unwrap()
}

/// `(name, labels text, value)` of every sample line.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let (name, rest) = line.split_at(name_end);
            let (labels, rest) = match rest.strip_prefix('{') {
                Some(r) => {
                    let end = r
                        .rfind('}')
                        .unwrap_or_else(|| panic!("unterminated labels: {line:?}"));
                    (&r[..end], &r[end + 1..])
                }
                None => ("", rest),
            };
            let value = rest.split_whitespace().next().unwrap_or("");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            (name, labels, value)
        })
}

/// The sum of every sample named `name` (all label values); `None` when there is none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    samples(text)
        .filter(|(n, _, _)| *n == name)
        .map(|(_, _, v)| v)
        .reduce(|a, b| a + b)
}

/// The sum of the samples named `name` whose labels include `label="value"`; 0 when none.
pub fn metric_with(text: &str, name: &str, label: &str, value: &str) -> f64 {
    let want = format!("{label}=\"{value}\"");
    samples(text)
        .filter(|(n, labels, _)| *n == name && labels.split(',').any(|l| l.trim() == want.as_str()))
        .map(|(_, _, v)| v)
        .sum()
}

//! A headless Chromium driven through chromedriver over the W3C WebDriver protocol: the dozen
//! JSON calls the dashboard tests need (a client crate would add two `http` and `cookie` majors).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// How long one WebDriver call or one wait for the page may take (Chromium on a busy machine).
pub const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// A chromedriver with one Chromium session; both end when this is dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Where Chromium saves downloads.
    pub downloads: PathBuf,
    _profile: TempDir,
    _download_dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "seawall-ui-{tag}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
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

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([
        PathBuf::from("/usr/bin"),
        PathBuf::from("/usr/lib/chromium"),
    ]) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

async fn free_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; panics with how to install them when missing.
    pub async fn start() -> Self {
        let missing = "the dashboard tests need Debian's chromium and chromium-driver \
                       (scripts/test installs them; or: apt-get install -y chromium chromium-driver)";
        let driver_bin = find_program(&["chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found: {missing}"));
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("chromium not found: {missing}"));
        let port = free_port().await.port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
        let base = format!("http://127.0.0.1:{port}");
        let client = Client::builder(TokioExecutor::new()).build_http();
        let profile = TempDir::new("profile");
        let download_dir = TempDir::new("downloads");
        let mut b = Self {
            driver,
            base,
            session: String::new(),
            client,
            downloads: download_dir.0.clone(),
            _profile: profile,
            _download_dir: download_dir,
        };
        // chromedriver answers /status once it listens.
        let mut ready = false;
        for _ in 0..200 {
            if b.call(Method::GET, "/status", None).await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not start on port {port}");
        // Without the background-networking flags Chromium waits on a closed network.
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", b._profile.0.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": args,
                "prefs": {
                    "download.default_directory": b.downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let v = b
            .call(Method::POST, "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("chromium did not start a session: {e}"));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_string();
        b
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let res = tokio::time::timeout(BROWSER_WAIT, self.client.request(req))
            .await
            .map_err(|_| format!("WebDriver {path} timed out"))?
            .map_err(|e| format!("WebDriver {path}: {e}"))?;
        let status = res.status();
        let bytes = tokio::time::timeout(BROWSER_WAIT, res.into_body().collect())
            .await
            .map_err(|_| format!("WebDriver {path} body timed out"))?
            .map_err(|e| format!("{e}"))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{e}"))?;
        if !status.is_success() {
            return Err(format!("WebDriver {path}: {status} {v}"));
        }
        Ok(v["value"].clone())
    }

    async fn session_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let p = format!("/session/{}{path}", self.session);
        self.call(method, &p, body).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.session_call(Method::POST, "/url", Some(json!({"url": url})))
            .await
            .unwrap();
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.session_call(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    async fn element(&self, css: &str) -> Result<String, String> {
        let v = self
            .session_call(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        // A web element is an object with one key (the W3C element identifier) and its id.
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no element id for {css}: {v}"))
    }

    /// Waits (bounded) until `css` matches a displayed element; its id.
    async fn visible(&self, css: &str) -> String {
        let mut last = String::new();
        for _ in 0..300 {
            match self.element(css).await {
                Ok(id) => {
                    let shown = self
                        .session_call(Method::GET, &format!("/element/{id}/displayed"), None)
                        .await;
                    if shown == Ok(Value::Bool(true)) {
                        return id;
                    }
                    last = format!("{shown:?}");
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never became visible: {last}");
    }

    /// Clicks the displayed element `css`.
    pub async fn click(&self, css: &str) {
        let id = self.visible(css).await;
        self.session_call(
            Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the displayed field `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.visible(css).await;
        self.session_call(
            Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        self.session_call(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Chooses `value` in the `<select>` `css` (as a user would, firing `change`).
    pub async fn select(&self, css: &str, value: &str) {
        self.visible(css).await;
        let ok = self
            .exec(
                "const s = document.querySelector(arguments[0]); \
                 if (![...s.options].some(o => o.value === arguments[1])) return false; \
                 s.value = arguments[1]; s.dispatchEvent(new Event('change', {bubbles: true})); return true;",
                json!([css, value]),
            )
            .await;
        assert_eq!(ok, Value::Bool(true), "{css} has no option {value}");
    }

    /// The text of `css`, or `None` when nothing matches.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    /// Whether `css` matches an element that is rendered (not hidden, not `display: none`).
    pub async fn shown(&self, css: &str) -> bool {
        self.exec(
            "const e = document.querySelector(arguments[0]); return !!e && e.getClientRects().length > 0;",
            json!([css]),
        )
        .await
            == Value::Bool(true)
    }

    /// Polls `script` (returning a value) until `done` accepts it; bounded, panics with `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        args: Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.exec(script, args.clone()).await;
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}; last value: {last}");
    }

    /// Waits until the text of `css` contains `needle`; returns that text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let v = self
            .wait_for(
                &format!("{css} to contain {needle:?}"),
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([css]),
                |v| v.as_str().is_some_and(|t| t.contains(needle)),
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self
            .session_call(Method::GET, "/screenshot", None)
            .await
            .unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap()
    }

    /// Waits (bounded) for a finished download named `name`; its content.
    pub async fn downloaded(&self, name: &str) -> String {
        let p: &Path = &self.downloads.join(name);
        for _ in 0..300 {
            if let Ok(s) = std::fs::read_to_string(p) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen: Vec<_> = std::fs::read_dir(&self.downloads)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!(
            "no download {name} in {}: {seen:?}",
            self.downloads.display()
        );
    }

    /// Ends the session and chromedriver.
    pub async fn quit(mut self) {
        let _ = self.session_call(Method::DELETE, "", None).await;
        let _ = self.driver.kill().await;
    }
}

//! Command line: `run` (default), `check`, `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Seawall: a caching reverse proxy that shields slow backends.
#[derive(Debug, Parser)]
#[command(name = "seawall", version, about)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file (for the default `run`).
    #[arg(
        long,
        short,
        global = true,
        default_value = "proxy.toml",
        env = "SEAWALL_CONFIG"
    )]
    pub config: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with the config file.
    Run,
    /// Validate the config file (and SEAWALL_* variables) and exit.
    Check,
    /// Start the bundled demo origin and Seawall in front of it, in one process.
    Demo {
        /// Seawall's data listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Seawall's admin listener.
        #[arg(long, default_value = "127.0.0.1:9091")]
        admin_listen: SocketAddr,
        /// The demo origin's listener.
        #[arg(long, default_value = "127.0.0.1:3000")]
        origin: SocketAddr,
        /// The demo origin's added latency.
        #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
        latency: Duration,
    },
    /// Warm a running Seawall: import a peer's hottest entries, or fetch URLs through its cache.
    Warm {
        /// The Seawall to warm (its admin listener).
        #[arg(long, default_value = "http://127.0.0.1:9091")]
        admin: String,
        /// A peer's admin URL to import from (no origin traffic).
        #[arg(long, conflicts_with = "url")]
        from: Option<String>,
        /// How many of the peer's hottest entries.
        #[arg(long, default_value_t = 1000)]
        top: usize,
        /// URLs to fetch through the cache (repeatable).
        #[arg(long)]
        url: Vec<String>,
        /// Admin bearer token (default: the token file a local Seawall generated).
        #[arg(long, env = "SEAWALL_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// `seawall check`: 0 when valid and no unknown `SEAWALL_*` variable is set.
pub fn check(path: &std::path::Path) -> i32 {
    let loaded = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            let token = crate::admin::auth::configured_token(&c)?;
            crate::admin::auth::check_exposure(&c, token.is_some())?;
            crate::admin::auth::configured_read_token(&c)?;
            crate::admin::auth::load_secret(
                None,
                c.raw.admin.purge_token_file.as_deref(),
                "admin.purge_token_file",
            )?;
            Ok(c)
        });
    match loaded {
        Ok(c) if c.warnings.is_empty() => {
            println!(
                "{}: ok ({} upstreams, {} routes)",
                path.display(),
                c.raw.upstreams.len(),
                c.raw.routes.len()
            );
            0
        }
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("error: {w}");
            }
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `seawall demo`.
pub async fn demo(
    listen: SocketAddr,
    admin_listen: SocketAddr,
    origin: SocketAddr,
    latency: Duration,
) -> anyhow::Result<()> {
    let demo = crate::demo::start(origin, crate::demo::DemoConfig { latency }).await?;
    let cfg = Config::builtin(
        &listen.to_string(),
        &admin_listen.to_string(),
        &format!("http://{}", demo.addr),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let p = listen;
    let token_hint = if std::env::var("SEAWALL_ADMIN_TOKEN").is_ok_and(|t| !t.trim().is_empty()) {
        "T=\"Authorization: Bearer $SEAWALL_ADMIN_TOKEN\"".to_string()
    } else {
        format!(
            "T=\"Authorization: Bearer $(cat {})\"   # generated at start",
            crate::admin::auth::token_path().display()
        )
    };
    println!(
        "Seawall demo\n  demo origin: http://{o} ({latency:?} latency)\n  seawall:     http://{p}\n  admin:       http://{admin_listen}\n\nTry:\n  curl -i http://{p}/cacheable      # MISS, then run it again: HIT with Age\n  curl -i http://{p}/uncacheable    # BYPASS (no-store)\n  curl -i http://{p}/vary -H 'Accept-Language: fr'\n  curl -i http://{p}/etag           # wait 5 s, again: revalidated with 304\n  curl -s http://{o}/hits           # what reached the origin\n  curl -s http://{admin_listen}/readyz\n\nAdmin API (needs the bearer token):\n  {token_hint}\n  curl -s -H \"$T\" http://{admin_listen}/admin/status\n",
        o = demo.addr,
    );
    crate::app::run(cfg).await
}

/// `seawall warm`: starts a warm-up job on `admin` and follows it with a progress bar.
pub async fn warm(
    admin: &str,
    from: Option<String>,
    top: usize,
    urls: Vec<String>,
    token: Option<String>,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, crate::body::ProxyBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let token = token.or_else(crate::admin::auth::local_token);
    let body = match from {
        Some(f) => serde_json::json!({"from": f, "top": top}),
        None if !urls.is_empty() => serde_json::json!({"urls": urls}),
        None => anyhow::bail!("give --from PEER_ADMIN_URL or at least one --url"),
    };
    let call = |method: http::Method, path: String, body: Option<serde_json::Value>| {
        let client = client.clone();
        let token = token.clone();
        let url = format!("{}{}", admin.trim_end_matches('/'), path);
        async move {
            let mut req = http::Request::builder().method(method).uri(&url);
            if let Some(t) = &token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req.body(crate::body::ProxyBody::full(
                body.map(|b| b.to_string()).unwrap_or_default(),
            ))?;
            let res = client
                .request(req)
                .await
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            let status = res.status();
            let bytes = res.into_body().collect().await?.to_bytes();
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            anyhow::ensure!(status.is_success(), "{url}: {status}: {v}");
            Ok::<_, anyhow::Error>(v)
        }
    };
    let started = call(http::Method::POST, "/admin/cache/warm".into(), Some(body)).await?;
    let id = started["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no job id in {started}"))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let v = call(http::Method::GET, format!("/admin/cache/warm/{id}"), None).await?;
        bar.set_length(v["total"].as_u64().unwrap_or(0));
        bar.set_position(v["done"].as_u64().unwrap_or(0));
        bar.set_message(format!("imported {} errors {}", v["imported"], v["errors"]));
        match v["state"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(200)).await,
            Some("done") => {
                bar.finish();
                println!(
                    "warm-up {id} done: {} imported, {} errors",
                    v["imported"], v["errors"]
                );
                return Ok(());
            }
            _ => {
                bar.abandon();
                anyhow::bail!("warm-up {id} failed: {}", v["error"]);
            }
        }
    }
}

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
}

/// `seawall check`: 0 when valid and no unknown `SEAWALL_*` variable is set.
pub fn check(path: &std::path::Path) -> i32 {
    match Config::load(path) {
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
    println!(
        "Seawall demo\n  demo origin: http://{o} ({latency:?} latency)\n  seawall:     http://{p}\n  admin:       http://{admin_listen}\n\nTry:\n  curl -i http://{p}/cacheable      # MISS, then run it again: HIT with Age\n  curl -i http://{p}/uncacheable    # BYPASS (no-store)\n  curl -i http://{p}/vary -H 'Accept-Language: fr'\n  curl -i http://{p}/etag           # wait 5 s, again: revalidated with 304\n  curl -s http://{o}/hits           # what reached the origin\n  curl -s http://{admin_listen}/readyz\n",
        o = demo.addr,
    );
    crate::app::run(cfg).await
}

//! Command line: `run` (default), `check`, `demo`, `warm`, `completions`, `man`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::Config;

/// Seawall: a caching reverse proxy that shields slow backends.
#[derive(Debug, Parser)]
#[command(name = "seawall", version = crate::LONG_VERSION, about)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The config file of the default `run` (without a subcommand).
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `--config`, offered only by the commands that read the file.
#[derive(Clone, Debug, Args)]
pub struct ConfigArg {
    /// Config file [default: proxy.toml, if it exists; without it, SEAWALL_UPSTREAM alone].
    #[arg(long, short, env = "SEAWALL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The config file read when neither `--config` nor `SEAWALL_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "proxy.toml";

/// The config `run` and `check` use: the named file (missing is an error), else
/// `proxy.toml` when it exists, else `SEAWALL_UPSTREAM` alone; without any of them, how to start.
pub fn load_config(named: Option<&Path>) -> Result<Config, String> {
    if let Some(path) = named {
        return Config::load(path).map_err(|e| e.to_string());
    }
    let default = Path::new(DEFAULT_CONFIG);
    if default.exists() {
        return Config::load(default).map_err(|e| e.to_string());
    }
    if std::env::var_os(crate::config::UPSTREAM_VAR).is_none() {
        return Err(format!(
            "no config file: {DEFAULT_CONFIG} is not here and neither --config nor SEAWALL_CONFIG names one. \
             To start: `seawall demo` (a demo origin on this machine), `seawall --config FILE`, \
             or {}=http://app:3000 seawall (one upstream, every path)",
            crate::config::UPSTREAM_VAR
        ));
    }
    Config::from_env(std::env::vars()).map_err(|e| e.to_string())
}

impl Cli {
    /// The config file named for `run` or `check` (also when given before the subcommand is
    /// omitted); `None` when neither `--config` nor `SEAWALL_CONFIG` names one.
    pub fn config_path(&self) -> Option<&Path> {
        match &self.command {
            Some(Command::Run(c) | Command::Check(c)) => c.config.as_deref(),
            _ => self.config.config.as_deref(),
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with the config file.
    Run(ConfigArg),
    /// Validate the config file (and SEAWALL_* variables) and exit.
    Check(ConfigArg),
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
    /// Print a shell completion script (e.g. `seawall completions bash > /etc/bash_completion.d/seawall`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; e.g. `seawall man > /usr/local/share/man/man1/seawall.1`).
    Man,
}

/// `seawall completions <shell>`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "seawall",
        &mut std::io::stdout(),
    );
}

/// `seawall man`: the page and one section per subcommand, on stdout.
pub fn man() -> std::io::Result<()> {
    use std::io::Write;
    let mut cmd = Cli::command();
    // Building sets the subcommands' bin names (`seawall run`) used in their synopses.
    cmd.build();
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        writeln!(out)?;
        let man = clap_mangen::Man::new(sub.clone()).title(format!("seawall-{}", sub.get_name()));
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
    }
    out.flush()
}

/// `seawall man | head` closes the pipe early: not an error.
pub fn ignore_broken_pipe(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// `seawall check`: 0 when valid and no unknown `SEAWALL_*` variable is set; 1 when valid
/// with findings (such as an unknown variable); 2 when `run` would refuse to start, with the
/// same words `run` prints.
pub fn check(named: Option<&Path>) -> i32 {
    let c = match load_config(named) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let pre = match crate::app::preflight(&c) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    // Not findings that fail the check: a certificate about to expire still serves.
    for w in &pre.warnings {
        eprintln!("warning: {w}");
    }
    let name = c
        .source
        .as_ref()
        .map_or_else(|| "<env>".to_string(), |p| p.display().to_string());
    if c.warnings.is_empty() {
        println!(
            "{name}: ok ({} upstreams, {} routes)",
            c.raw.upstreams.len(),
            c.raw.routes.len()
        );
        return 0;
    }
    for w in &c.warnings {
        eprintln!("error: {w}");
    }
    1
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
    // The admin calls need the token: the one set in `SEAWALL_ADMIN_TOKEN`, else the one
    // generated at start and written to a file only this user can read.
    let auth = if std::env::var("SEAWALL_ADMIN_TOKEN").is_ok_and(|t| !t.trim().is_empty()) {
        "-H \"Authorization: Bearer $SEAWALL_ADMIN_TOKEN\" ".to_string()
    } else {
        format!(
            "-H \"Authorization: Bearer $(cat {})\" ",
            crate::admin::auth::token_path().display()
        )
    };
    println!(
        "Seawall demo (upstream \"app\")\n  demo origin: http://{o} ({latency:?} latency)\n  seawall:     http://{p}\n  admin:       http://{admin_listen}\n\n\
         Try:\n  \
         curl -i http://{p}/cacheable      # X-Cache: MISS (stored); again: HIT with Age\n  \
         curl -i http://{p}/uncacheable    # X-Cache: MISS every time, Cache-Status: detail=no-store\n  \
         curl -i http://{p}/vary -H 'Accept-Language: fr'   # one stored variant per language\n  \
         curl -i http://{p}/etag           # after 5 s, again: X-Cache: REVALIDATED (origin answered 304)\n  \
         curl -s http://{o}/hits           # what reached the origin\n  \
         curl -s http://{admin_listen}/readyz\n  \
         curl -s {auth}'http://{admin_listen}/admin/status?pretty'\n  \
         curl -s {auth}-XPOST http://{admin_listen}/admin/breakers/app/open   # then /uncacheable: 503 (circuit-open)\n",
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

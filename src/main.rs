//! The `seawall` binary: parse the command line, then hand over to the library.

use std::path::Path;

use clap::Parser;
use seawall::cli::{Cli, Command};
use seawall::config::{Config, FileConfig};

// A request allocates and frees a few dozen small blocks (futures, header maps, extension
// maps) across tasks; glibc malloc spent ~15% of a pass-through request's instructions on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let config_path = cli.config_path().map(Path::to_path_buf);
    let command = cli.command.unwrap_or(Command::Run(cli.config));
    match command {
        Command::Check(_) => std::process::exit(seawall::cli::check(config_path.as_deref())),
        Command::Completions { shell } => {
            seawall::cli::completions(shell);
            return;
        }
        Command::Man => {
            if let Err(e) = seawall::cli::ignore_broken_pipe(seawall::cli::man()) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            return;
        }
        _ => {}
    }
    // What `run` refuses, it refuses here, before anything starts, in the words `check` uses;
    // errors are printed as one line (never a backtrace, whatever RUST_BACKTRACE says).
    let config = match &command {
        Command::Run(_) => match seawall::cli::load_config(config_path.as_deref()) {
            Ok(c) => {
                if let Err(e) = seawall::app::preflight(&c) {
                    eprintln!("error: {e:#}");
                    std::process::exit(2);
                }
                Some(c)
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        },
        _ => None,
    };
    if let Err(e) = run(command, config) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command, config: Option<Config>) -> anyhow::Result<()> {
    let defaults = FileConfig::default();
    let raw = config.as_ref().map_or(&defaults, |c| &c.raw);
    let workers = raw.server.worker_threads;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = rt.build()?;
    let (log, tel) = (raw.log.clone(), raw.telemetry.clone());
    rt.block_on(async move {
        let guard = seawall::telemetry::init(&log, &tel)?;
        let result = match command {
            Command::Demo {
                listen,
                admin_listen,
                origin,
                latency,
            } => seawall::cli::demo(listen, admin_listen, origin, latency).await,
            Command::Warm {
                admin,
                from,
                top,
                url,
                token,
            } => seawall::cli::warm(&admin, from, top, url, token).await,
            _ => match config {
                Some(c) => seawall::app::run(c).await,
                None => Ok(()),
            },
        };
        guard.shutdown().await;
        result
    })
}

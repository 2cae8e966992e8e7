//! The `seawall` binary: parse the command line, then hand over to the library.

use clap::Parser;
use seawall::cli::{Cli, Command};
use seawall::config::{Config, FileConfig};

// A request allocates and frees a few dozen small blocks (futures, header maps, extension
// maps) across tasks; glibc malloc spent ~15% of a pass-through request's instructions on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config_path = cli.config_path().to_path_buf();
    let command = cli.command.unwrap_or(Command::Run(cli.config));
    match command {
        Command::Check(_) => std::process::exit(seawall::cli::check(&config_path)),
        Command::Completions { shell } => {
            seawall::cli::completions(shell);
            return Ok(());
        }
        Command::Man => return Ok(seawall::cli::ignore_broken_pipe(seawall::cli::man())?),
        _ => {}
    }
    let config = match &command {
        Command::Run(_) => match Config::load(&config_path) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        },
        _ => None,
    };
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

//! The `seawall` binary: parse the command line, then hand over to the library.

use clap::Parser;
use seawall::cli::{Cli, Command};
use seawall::config::Config;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Check = command {
        std::process::exit(seawall::cli::check(&cli.config));
    }
    let config = match &command {
        Command::Run => match Config::load(&cli.config) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        },
        _ => None,
    };
    let (level, format) = config
        .as_ref()
        .map(|c| (c.raw.log.level.clone(), c.raw.log.format.clone()))
        .unwrap_or_else(|| ("info".into(), "text".into()));
    seawall::telemetry::init_logging(&level, &format);
    let workers = config.as_ref().map_or(0, |c| c.raw.server.worker_threads);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        match command {
            Command::Demo {
                listen,
                admin_listen,
                origin,
                latency,
            } => seawall::cli::demo(listen, admin_listen, origin, latency).await,
            _ => match config {
                Some(c) => seawall::app::run(c).await,
                None => Ok(()),
            },
        }
    })
}

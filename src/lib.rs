//! Seawall: a caching reverse proxy for slow backends. `stack` shows the request path;
//! `app` wires the parts, `state` is what they share; `config` documents every setting.

pub mod admin;
pub mod app;
pub mod body;
pub mod breaker;
pub mod cache;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod http_util;
pub mod route;
pub mod server;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod upstream;
pub mod warm;

/// The commit this binary was built from (`build.rs`: git, else `SEAWALL_COMMIT`, else `unknown`).
pub const COMMIT: &str = env!("SEAWALL_BUILD_COMMIT");

/// `seawall --version`: the crate version and the commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SEAWALL_BUILD_COMMIT"),
    ")"
);

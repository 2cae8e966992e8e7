//! Seawall: a caching reverse proxy for slow backends. `stack` shows the request path;
//! `app` wires the parts, `state` is what they share; `config` documents every setting.

// Modules are crate-private unless the binary, the tests or the benches need them; within
// those, anything the outside cannot reach says so.
#![warn(unreachable_pub)]

pub(crate) mod admin;
pub mod app;
pub mod body;
pub(crate) mod breaker;
pub mod cache;
pub mod cli;
pub mod config;
pub(crate) mod demo;
pub mod error;
pub(crate) mod http_util;
pub mod route;
pub(crate) mod server;
pub(crate) mod stack;
pub mod state;
pub mod telemetry;
pub(crate) mod upstream;
pub(crate) mod warm;

/// The commit this binary was built from (`build.rs`: git, else `SEAWALL_COMMIT`, else `unknown`).
pub const COMMIT: &str = env!("SEAWALL_BUILD_COMMIT");

/// `seawall --version`: the crate version and the commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SEAWALL_BUILD_COMMIT"),
    ")"
);

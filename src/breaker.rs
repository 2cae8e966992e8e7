//! Per-upstream circuit breaker.

pub mod state;

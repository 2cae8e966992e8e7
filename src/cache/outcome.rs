//! How a response was produced, and its one rendering as `Cache-Status` (RFC 9211), `X-Cache`
//! and the metrics' classification.

use http::HeaderName;

use crate::telemetry::metrics::{CacheClass, Served, StaleReason};

/// How a response was produced, rendered as `Cache-Status` and `X-Cache`.
#[derive(Clone, Debug)]
pub(super) enum Outcome {
    Hit {
        ttl: i64,
        detail: Option<&'static str>,
    },
    Miss {
        fwd: &'static str,
        stored: bool,
        detail: Option<&'static str>,
    },
    Revalidated {
        fwd: &'static str,
        status: u16,
        stored: bool,
    },
    StaleOnError {
        status: Option<u16>,
        detail: &'static str,
    },
    Bypass(&'static str),
}

impl Outcome {
    pub(super) fn render(&self, name: &str, collapsed: bool) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(64);
        s.push_str(name);
        match self {
            Self::Hit { ttl, detail } => {
                let _ = write!(s, "; hit; ttl={ttl}");
                if let Some(d) = detail {
                    let _ = write!(s, "; detail={d}");
                }
            }
            Self::Miss {
                fwd,
                stored,
                detail,
            } => {
                s.push_str("; fwd=");
                s.push_str(fwd);
                if *stored {
                    s.push_str("; stored");
                }
                if let Some(d) = detail {
                    s.push_str("; detail=");
                    s.push_str(d);
                }
            }
            Self::Revalidated {
                fwd,
                status,
                stored,
            } => {
                let _ = write!(s, "; fwd={fwd}; fwd-status={status}");
                if *stored {
                    s.push_str("; stored");
                }
            }
            Self::StaleOnError { status, detail } => {
                s.push_str("; fwd=stale");
                if let Some(st) = status {
                    let _ = write!(s, "; fwd-status={st}");
                }
                s.push_str("; detail=");
                s.push_str(detail);
            }
            Self::Bypass(reason) => {
                s.push_str("; fwd=bypass; detail=");
                s.push_str(reason);
            }
        }
        if collapsed {
            s.push_str("; collapsed");
        }
        s
    }

    pub(super) fn served(&self, collapsed: bool) -> Served {
        let (class, stale) = match self {
            Self::Hit {
                detail: None | Some("shared"),
                ..
            } => (CacheClass::Hit, None),
            Self::Hit {
                detail: Some("max-stale"),
                ..
            } => (CacheClass::Stale, Some(StaleReason::MaxStale)),
            Self::Hit {
                detail: Some("circuit-open"),
                ..
            } => (CacheClass::Stale, Some(StaleReason::CircuitOpen)),
            Self::Hit { .. } => (CacheClass::Stale, Some(StaleReason::StaleWhileRevalidate)),
            Self::StaleOnError { .. } => (CacheClass::Stale, Some(StaleReason::StaleIfError)),
            Self::Revalidated { status: 304, .. } => (CacheClass::Revalidated, None),
            Self::Miss { .. } | Self::Revalidated { .. } => (CacheClass::Miss, None),
            // A cacheable request the open breaker kept from the origin is still a miss.
            Self::Bypass("circuit-open") => (CacheClass::Miss, None),
            Self::Bypass(_) => (CacheClass::Uncacheable, None),
        };
        Served {
            class,
            stale,
            collapsed,
        }
    }

    pub(super) fn x_cache(&self) -> &'static str {
        match self {
            Self::Hit {
                detail: None | Some("shared"),
                ..
            } => "HIT",
            Self::Hit { .. } | Self::StaleOnError { .. } => "STALE",
            Self::Revalidated { status: 304, .. } => "REVALIDATED",
            Self::Miss { .. } | Self::Revalidated { .. } => "MISS",
            Self::Bypass(_) => "BYPASS",
        }
    }
}

pub(super) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

//! How a response was produced, and its one rendering as `Cache-Status` (RFC 9211), `X-Cache`
//! and the metrics' classification.

use http::HeaderName;

use super::policy::NotStorable;

use crate::telemetry::metrics::{CacheClass, Served, StaleReason};

/// Why a response was produced the way it was: `Cache-Status`'s `detail` (RFC 9211 §2.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Detail {
    /// Answered from the shared tier.
    Shared,
    /// Stale, within the client's `max-stale`.
    MaxStale,
    /// Stale while one background refresh runs (RFC 5861).
    StaleWhileRevalidate,
    /// Stale because the origin failed (RFC 5861).
    StaleIfError,
    /// Stale because the origin could not be reached (`stale_if_unreachable`).
    StaleIfUnreachable,
    /// The upstream's breaker is open.
    CircuitOpen,
    /// Passed: no route matched.
    NoRoute,
    /// Passed: the kill switch is off.
    CacheDisabled,
    /// Passed: the route does not cache.
    RouteDisabled,
    /// Passed: a method the cache does not serve.
    Method,
    /// Passed: a protocol upgrade.
    Upgrade,
    /// Passed: a request with a body.
    RequestBody,
    /// Passed: ignored query parameters that could cloak others.
    AmbiguousQuery,
    /// Why the response could not be stored.
    NotStorable(NotStorable),
    /// The error that ended the exchange (`ProxyError::reason`, a closed set).
    Error(&'static str),
}

impl Detail {
    /// The `detail` token.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::MaxStale => "max-stale",
            Self::StaleWhileRevalidate => "stale-while-revalidate",
            Self::StaleIfError => "stale-if-error",
            Self::StaleIfUnreachable => "stale-if-unreachable",
            Self::CircuitOpen => "circuit-open",
            Self::NoRoute => "no-route",
            Self::CacheDisabled => "cache-disabled",
            Self::RouteDisabled => "route-disabled",
            Self::Method => "method",
            Self::Upgrade => "upgrade",
            Self::RequestBody => "request-body",
            Self::AmbiguousQuery => "ambiguous-query",
            Self::NotStorable(r) => r.as_str(),
            Self::Error(reason) => reason,
        }
    }
}

/// How a response was produced, rendered as `Cache-Status` and `X-Cache`.
#[derive(Clone, Debug)]
pub(super) enum Outcome {
    Hit {
        ttl: i64,
        detail: Option<Detail>,
    },
    Miss {
        fwd: &'static str,
        stored: bool,
        detail: Option<Detail>,
    },
    Revalidated {
        fwd: &'static str,
        status: u16,
        stored: bool,
    },
    StaleOnError {
        status: Option<u16>,
        detail: Detail,
    },
    Bypass(Detail),
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
                    let _ = write!(s, "; detail={}", d.as_str());
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
                    s.push_str(d.as_str());
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
                s.push_str(detail.as_str());
            }
            Self::Bypass(reason) => {
                s.push_str("; fwd=bypass; detail=");
                s.push_str(reason.as_str());
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
                detail: None | Some(Detail::Shared),
                ..
            } => (CacheClass::Hit, None),
            Self::Hit {
                detail: Some(Detail::MaxStale),
                ..
            } => (CacheClass::Stale, Some(StaleReason::MaxStale)),
            Self::Hit {
                detail: Some(Detail::CircuitOpen),
                ..
            } => (CacheClass::Stale, Some(StaleReason::CircuitOpen)),
            Self::Hit { .. } => (CacheClass::Stale, Some(StaleReason::StaleWhileRevalidate)),
            Self::StaleOnError { .. } => (CacheClass::Stale, Some(StaleReason::StaleIfError)),
            Self::Revalidated { status: 304, .. } => (CacheClass::Revalidated, None),
            Self::Miss { .. } | Self::Revalidated { .. } => (CacheClass::Miss, None),
            // A cacheable request the open breaker kept from the origin is still a miss.
            Self::Bypass(Detail::CircuitOpen) => (CacheClass::Miss, None),
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
                detail: None | Some(Detail::Shared),
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

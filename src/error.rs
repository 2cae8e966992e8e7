//! Leaf error types of the request path and the one place that maps them to responses.
//! Each error knows its status and a short reason that goes into `Cache-Status: ...; detail=`.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;

#[cfg(test)]
mod tests;

/// The stack's error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a timeout struck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// TCP or TLS connect.
    Connect,
    /// Waiting for the response head.
    FirstByte,
    /// The whole exchange.
    Total,
    /// A pause between body chunks.
    BodyIdle,
}

/// Everything that ends a request with an error status.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the request.
    #[error("no route matches this request")]
    NoRoute,
    /// The request already passed through this Seawall.
    #[error("request loop detected (Via already names this proxy)")]
    Loop,
    /// Malformed or ambiguous request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `Host`, `:authority` or an absolute-form authority that is not `uri-host [":" port]`.
    #[error("invalid host (RFC 9110 §7.2: uri-host [\":\" port])")]
    InvalidHost,
    /// A TLS connection's certificate does not cover the request's host (RFC 9110 §15.5.20):
    /// the client should ask on a connection made for that host.
    #[error("misdirected request: this connection's certificate does not cover the requested host")]
    Misdirected,
    /// A method the proxy listener never serves (`CONNECT`, RFC 9110 §9.3.6).
    #[error("method not supported by this proxy: {0}")]
    NotImplemented(&'static str),
    /// The client's request body failed (bad chunk framing, early close).
    #[error("client request body failed")]
    ClientBody,
    /// The request body is larger than `max_body_size`.
    #[error("request body too large")]
    BodyTooLarge,
    /// The upstream refused or reset the connection.
    #[error("upstream connection failed: {0}")]
    UpstreamConnect(String),
    /// The upstream closed or reset after the request was sent.
    #[error("upstream reset: {0}")]
    UpstreamReset(String),
    /// A deadline passed.
    #[error("upstream timeout ({0:?})")]
    UpstreamTimeout(TimeoutPhase),
    /// The upstream is at its concurrency cap.
    #[error("upstream at its concurrency limit")]
    UpstreamOverloaded,
    /// The circuit breaker is open.
    #[error("circuit open for upstream")]
    CircuitOpen {
        /// Time until the breaker lets a probe through; `None` when forced open.
        retry_after: Option<Duration>,
    },
    /// Too many requests wait for one coalesced fetch.
    #[error("too many waiters for one cache key")]
    TooManyWaiters,
    /// A coalesced follower waited past its deadline.
    #[error("coalesced wait timed out")]
    WaitTimeout,
    /// `only-if-cached` and nothing usable is stored.
    #[error("only-if-cached and no stored response")]
    OnlyIfCached,
    /// The client connection's open requests and the fetches it left behind fill its
    /// `http2_max_concurrent_streams`.
    #[error("connection at its stream limit (fetches it left are still running)")]
    TooManyStreams,
    /// One of our own invariants failed (a coalescing leader vanished, a shared copy went
    /// missing): a bug in this proxy, never the upstream's doing.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Loop => StatusCode::LOOP_DETECTED,
            Self::BadRequest(_) | Self::InvalidHost | Self::ClientBody => StatusCode::BAD_REQUEST,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamConnect(_) | Self::UpstreamReset(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) | Self::WaitTimeout | Self::OnlyIfCached => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::UpstreamOverloaded
            | Self::CircuitOpen { .. }
            | Self::TooManyWaiters
            | Self::TooManyStreams => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short machine-readable reason (a `Cache-Status` detail token).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::Loop => "loop",
            Self::BadRequest(_) => "bad-request",
            Self::InvalidHost => "invalid-host",
            Self::NotImplemented(_) => "not-implemented",
            Self::Misdirected => "misdirected",
            Self::ClientBody => "client-body",
            Self::BodyTooLarge => "body-too-large",
            Self::UpstreamConnect(_) => "upstream-refused",
            Self::UpstreamReset(_) => "upstream-reset",
            Self::UpstreamTimeout(TimeoutPhase::Connect) => "connect-timeout",
            Self::UpstreamTimeout(TimeoutPhase::FirstByte) => "upstream-timeout",
            Self::UpstreamTimeout(TimeoutPhase::Total) => "total-timeout",
            Self::UpstreamTimeout(TimeoutPhase::BodyIdle) => "body-timeout",
            Self::UpstreamOverloaded => "upstream-overloaded",
            Self::CircuitOpen { .. } => "circuit-open",
            Self::TooManyWaiters => "too-many-waiters",
            Self::WaitTimeout => "wait-timeout",
            Self::OnlyIfCached => "only-if-cached",
            Self::TooManyStreams => "too-many-streams",
            Self::Internal(_) => "internal",
        }
    }

    /// The message a client may read: the variant's text without the OS or library error
    /// behind it (that goes to the log, at `warn`).
    fn public(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::UpstreamConnect(_) => "upstream connection failed".into(),
            Self::UpstreamReset(_) => "upstream closed the connection".into(),
            Self::Internal(_) => "internal error".into(),
            other => other.to_string().into(),
        }
    }

    /// Whether this outcome counts against the upstream (breaker, outlier ejection).
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            Self::UpstreamConnect(_) | Self::UpstreamReset(_) | Self::UpstreamTimeout(_)
        )
    }

    /// Whether the response should close the client connection.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_) | Self::InvalidHost | Self::ClientBody | Self::BodyTooLarge
        )
    }

    /// Renders the error. `cache_status` is the full `Cache-Status` value to send.
    pub fn to_response(&self, cache_status: &str) -> Response<ProxyBody> {
        let status = self.status();
        let body = format!("{} {}: {}\n", status.as_u16(), self.reason(), self.public());
        let mut res = Response::new(ProxyBody::full(body));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(cache_status) {
            h.insert("cache-status", v);
        }
        if let Self::CircuitOpen {
            retry_after: Some(retry_after),
        } = self
        {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        if matches!(
            self,
            Self::TooManyWaiters | Self::UpstreamOverloaded | Self::TooManyStreams
        ) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.closes_connection() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

/// Finds a `ProxyError` anywhere in an error's source chain.
pub fn find_proxy_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ProxyError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(p) = e.downcast_ref::<ProxyError>() {
            return Some(p);
        }
        cur = e.source();
    }
    None
}

/// Finds an `io::Error` of the given kind anywhere in an error's source chain.
pub fn has_io_kind(err: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == kind
        {
            return true;
        }
        cur = e.source();
    }
    false
}

//! What one client connection tells every request it carries: the peer and what the IO
//! sniffer saw. The server fills it in; the cache, coalescing and forwarding read it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::time::Instant;

/// Per-connection facts handed to every request in its extensions.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// What the IO sniffer saw.
    pub state: Arc<ConnState>,
    /// The client's IP as a header value, formatted once per connection (`X-Forwarded-For`).
    pub peer_value: http::HeaderValue,
    /// What the TLS handshake settled (`None`: a cleartext connection).
    pub tls: Option<Arc<TlsConn>>,
}

/// What a TLS connection's handshake settled, for its requests.
#[derive(Debug)]
pub(crate) struct TlsConn {
    /// The name the client sent in SNI, if any.
    pub sni: Option<Box<str>>,
    /// The negotiated ALPN protocol: `"h2"`, `"http/1.1"` or `""` (none).
    pub alpn: &'static str,
    /// The protocol version: `"1.3"` or `"1.2"`.
    pub version: &'static str,
    /// The cipher suite's IANA name (`TLS13_AES_128_GCM_SHA256`), `""` if unknown.
    pub cipher: &'static str,
    /// The host names the connection's certificate serves (`[[tls.certificates]] hosts`).
    pub names: Arc<[HostPattern]>,
    /// The verified client certificate's subject DN (RFC 4514), when the client sent one.
    pub client_subject: Option<Box<str>>,
}

impl TlsConn {
    /// Whether the connection's certificate serves `host` (no port; any case): a request for
    /// any other host was misdirected to this connection (RFC 9110 §15.5.20).
    pub(crate) fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|p| p.matches(host))
    }
}

/// A host a certificate serves: an exact name, or `*.example.com` (exactly one more label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// The name, lowercase.
    Exact(Box<str>),
    /// The suffix after `*`, lowercase, starting with `.`.
    Wildcard(Box<str>),
    /// An address (a subjectAltName iPAddress, or an address listed in `hosts`).
    Ip(std::net::IpAddr),
}

impl HostPattern {
    /// `a.example.com` or `*.example.com` (a wildcard only as the whole first label, over at
    /// least two more labels); `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if let Ok(ip) = s.trim().parse::<std::net::IpAddr>() {
            return Some(Self::Ip(ip));
        }
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        match s.strip_prefix("*.") {
            Some(rest) if valid_name(rest) && rest.contains('.') => {
                Some(Self::Wildcard(format!(".{rest}").into()))
            }
            Some(_) => None,
            None if valid_name(&s) => Some(Self::Exact(s.into())),
            None => None,
        }
    }

    /// Whether `host` (no port; an IPv6 address in brackets or not) is this name, one label
    /// under this wildcard, or this address.
    pub(crate) fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            Self::Ip(ip) => {
                let bare = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                bare.parse::<std::net::IpAddr>().is_ok_and(|h| h == *ip)
            }
            Self::Exact(n) => host.eq_ignore_ascii_case(n),
            Self::Wildcard(suffix) => {
                let (h, s) = (host.as_bytes(), suffix.as_bytes());
                h.len() > s.len()
                    && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
                    && !h[..h.len() - s.len()].contains(&b'.')
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Wildcard(s) => write!(f, "*{s}"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// What the sniffer has seen on one connection; shared with the connection's requests.
#[derive(Debug)]
pub struct ConnState {
    /// A header block had both Transfer-Encoding and Content-Length.
    pub te_and_cl: AtomicBool,
    /// The connection speaks HTTP/2.
    pub h2: AtomicBool,
    /// Milliseconds since `epoch` of the last read or write.
    last_io_ms: AtomicU64,
    /// Asks the connection's task to close it at once (a reader cut off for lagging).
    pub close: tokio::sync::Notify,
    /// Requests of this connection waiting for their response head.
    pub requests: AtomicUsize,
    /// Fetches this connection's clients left that go on to be stored.
    pub detached: AtomicUsize,
    /// Requests and detached fetches together at most (`http2_max_concurrent_streams`).
    pub stream_limit: AtomicUsize,
    /// The listener's count of HTTP/2 streams reset by their client.
    pub streams_reset: Arc<AtomicU64>,
    epoch: Instant,
}

impl ConnState {
    /// A fresh state.
    pub fn new() -> Self {
        Self {
            te_and_cl: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            last_io_ms: AtomicU64::new(0),
            close: tokio::sync::Notify::new(),
            requests: AtomicUsize::new(0),
            detached: AtomicUsize::new(0),
            stream_limit: AtomicUsize::new(usize::MAX),
            streams_reset: Arc::default(),
            epoch: Instant::now(),
        }
    }

    /// Notes that a byte moved now.
    pub(crate) fn touch(&self) {
        self.last_io_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A fresh state counting reset streams in `resets` (the listener's counter).
    pub fn counting_resets_in(resets: Arc<AtomicU64>) -> Self {
        Self {
            streams_reset: resets,
            ..Self::new()
        }
    }

    /// Takes a slot for a fetch that goes on after its last client on this connection left;
    /// false when the connection's requests and such fetches already fill its stream limit.
    pub fn detach(&self) -> bool {
        let limit = self.stream_limit.load(Ordering::Relaxed);
        let busy = self.requests.load(Ordering::Relaxed);
        self.detached
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d.saturating_add(busy) < limit).then_some(d + 1)
            })
            .is_ok()
    }

    /// Time since the last byte moved.
    pub fn idle_for(&self) -> std::time::Duration {
        let last = self.last_io_ms.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(last))
    }
}

impl Default for ConnState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::HostPattern;

    #[test]
    fn host_patterns_match_exact_names_and_one_wildcard_label() {
        let exact = HostPattern::parse("A.Test").expect("valid");
        assert!(exact.matches("a.test") && exact.matches("A.TEST."));
        assert!(!exact.matches("b.a.test"));
        let wild = HostPattern::parse("*.wild.test").expect("valid");
        assert!(wild.matches("x.wild.test") && wild.matches("X.Wild.Test"));
        assert!(!wild.matches("wild.test") && !wild.matches("a.b.wild.test"));
        assert!(!wild.matches(".wild.test"));
        for bad in [
            "", "*", "*.test", "a.*.test", "x*.test", "a..test", "a b.test",
        ] {
            assert_eq!(HostPattern::parse(bad), None, "{bad:?}");
        }
        assert_eq!(wild.to_string(), "*.wild.test");
        let v4 = HostPattern::parse("192.0.2.7").expect("valid");
        assert!(v4.matches("192.0.2.7") && !v4.matches("192.0.2.8") && !v4.matches("a.test"));
        let v6 = HostPattern::parse("2001:db8::1").expect("valid");
        assert!(v6.matches("[2001:db8::1]") && v6.matches("2001:db8:0::1"));
        assert!(!exact.matches("[2001:db8::1]"));
    }
}

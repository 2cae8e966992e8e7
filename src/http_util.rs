//! Small HTTP helpers below every component: what a valid authority is, the client address a
//! request carries once trusted proxies are accounted for, tokens compared as digests, and what a connection tells its requests.

pub(crate) mod conn;

use std::net::IpAddr;

use http::{HeaderValue, Request, header};
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

/// The client's address after `[server] trusted_proxies` (request extension): the TCP peer,
/// or, when the peer is a trusted proxy, the nearest untrusted address in `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub std::net::IpAddr);

/// Whether `v` is `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal,
/// IPv4 address or non-empty registered name, never userinfo, `/`, `?`, `#`, whitespace,
/// control or non-ASCII bytes. Anything else could move a path into another URL's key.
pub fn valid_authority(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(end) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let port = match &v[end + 1..] {
            [] => &[][..],
            [b':', p @ ..] => p,
            _ => return false,
        };
        if !ip_literal(&v[1..end]) {
            return false;
        }
        (None, port)
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (Some(&v[..i]), &v[i + 1..]),
            None => (Some(v), &[][..]),
        }
    };
    // RFC 9110 §4.2.1: an empty host identifier is invalid for http URIs.
    host.is_none_or(|h| !h.is_empty() && reg_name(h)) && port.iter().all(u8::is_ascii_digit)
}

fn unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (IPv4 addresses are a subset).
fn reg_name(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'%' => {
                if !(v.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            b if unreserved_or_sub_delim(b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// The inside of `[...]`: an IPv6 address or `IPvFuture`.
fn ip_literal(v: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = v {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (ver, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| b == b':' || unreserved_or_sub_delim(b));
    }
    std::str::from_utf8(v).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

/// A token kept only as its digest.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The digest of `token`.
    pub fn new(token: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        Self(out)
    }

    /// Whether `given` is the token: equal-length digests compared in constant time.
    pub fn matches(&self, given: &str) -> bool {
        bool::from(Self::new(given).0.ct_eq(&self.0))
    }
}

/// The request's host: `Host`, else the URI authority (HTTP/2).
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Whether a request asks for a protocol upgrade (WebSocket and friends).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// An IP address as a header value.
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

//! Forwarding headers: hop-by-hop removal, `Via`, `Forwarded`, `X-Forwarded-*`, loop
//! detection, `Date`.

use std::net::IpAddr;
use std::time::SystemTime;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Headers that are always hop-by-hop (RFC 9110 §7.6.1), besides those `Connection` names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
];

fn is_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || name.as_str().starts_with("proxy-")
}

/// Removes hop-by-hop headers. With `keep_upgrade`, `Upgrade` and `Connection: upgrade` stay
/// (the tunnel handshake must reach the other side). One pass over the names first, since most
/// messages carry none and every removal hashes.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut remove: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        if is_hop(name) {
            remove.push(name.clone());
        }
    }
    if headers.contains_key(header::CONNECTION) {
        for t in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            if let Ok(n) = HeaderName::from_bytes(t.trim().as_bytes())
                && !(keep_upgrade && n == header::UPGRADE)
            {
                remove.push(n);
            }
        }
    }
    for n in remove {
        headers.remove(n);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether `Via` already names this proxy (a loop).
pub(crate) fn via_has(headers: &HeaderMap, via_name: &str) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| {
            // "1.1 name (comment)": the received-by token is the second word.
            hop.split_whitespace()
                .nth(1)
                .is_some_and(|by| by.eq_ignore_ascii_case(via_name))
        })
}

fn version_token(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `Via` for an HTTP/1.1 hop, built once.
pub(crate) fn via_value(via_name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("1.1 {via_name}"))
        .unwrap_or(HeaderValue::from_static("1.1 seawall"))
}

/// Appends this hop to `Via`; `prebuilt` is used when there is no earlier hop and the version is 1.1.
pub(crate) fn append_via_fast(
    headers: &mut HeaderMap,
    version: Version,
    via_name: &str,
    prebuilt: &HeaderValue,
) {
    if version == Version::HTTP_11 && !headers.contains_key(header::VIA) {
        headers.insert(header::VIA, prebuilt.clone());
    } else {
        append_via(headers, version, via_name);
    }
}

/// Appends this hop to `Via`.
pub(crate) fn append_via(headers: &mut HeaderMap, version: Version, via_name: &str) {
    let hop = format!("{} {}", version_token(version), via_name);
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) if headers.get_all(header::VIA).iter().count() == 1 => format!("{prev}, {hop}"),
        _ => {
            let prev: Vec<&str> = headers
                .get_all(header::VIA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if prev.is_empty() {
                hop
            } else {
                format!("{}, {hop}", prev.join(", "))
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::VIA, v);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// The scheme a client used to reach Seawall, for both `X-Forwarded-Proto` and `Forwarded`
/// (`proto=`): `https` on the TLS listener, `http` on the cleartext one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientProto {
    /// The cleartext listener.
    Http,
    /// The TLS listener.
    Https,
}

impl ClientProto {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

#[cfg(test)]
use crate::http_util::ip_value;

/// Sets `X-Forwarded-For/Proto/Host` for a request received from `peer`.
#[cfg(test)]
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    trusted: &[IpNet],
    host: Option<&str>,
) {
    let host = host.and_then(|h| HeaderValue::from_str(h).ok());
    set_forwarded_with(
        headers,
        peer,
        &ip_value(peer),
        trusted,
        host,
        ClientProto::Http,
    );
}

/// [`set_forwarded`] with the peer already formatted (`peer_value`, once per connection) and the
/// host as a header value (moved, not copied).
pub(crate) fn set_forwarded_with(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_value: &HeaderValue,
    trusted: &[IpNet],
    host: Option<HeaderValue>,
    proto: ClientProto,
) {
    let trusted_peer = !trusted.is_empty() && trusted.iter().any(|n| n.contains(&peer));
    // A path prefix for the origin to build links with is Seawall's to set, and it sets none.
    headers.remove(X_FORWARDED_PREFIX);
    set_forwarded_element(
        headers,
        peer,
        peer_value,
        trusted_peer,
        host.as_ref(),
        proto,
    );
    if !trusted_peer || !headers.contains_key(X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, peer_value.clone());
        set_proto_host(headers, host, proto);
        return;
    }
    let prior: Vec<String> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let value = format!("{}, {peer}", prior.join(", "));
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    set_proto_host(headers, host, proto);
}

/// `Forwarded` (RFC 7239): this hop's element `for=<peer>;host=<host>;proto=<proto>`,
/// appended to the earlier ones only from a trusted peer; otherwise it replaces them.
fn set_forwarded_element(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_value: &HeaderValue,
    trusted_peer: bool,
    host: Option<&HeaderValue>,
    proto: ClientProto,
) {
    let mut v = String::with_capacity(64);
    if trusted_peer {
        for prior in headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|f| f.to_str().ok())
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            v.push_str(prior);
            v.push_str(", ");
        }
    }
    // RFC 7239 §6: an IPv6 node is bracketed, and a bracketed value must be quoted.
    // The peer is formatted once per connection (`peer_value`), not per request.
    let ip = peer_value.to_str().unwrap_or_default();
    match peer {
        IpAddr::V4(_) => {
            v.push_str("for=");
            v.push_str(ip);
        }
        IpAddr::V6(_) => {
            v.push_str("for=\"[");
            v.push_str(ip);
            v.push_str("]\"");
        }
    }
    if let Some(h) = host.and_then(|h| h.to_str().ok()) {
        v.push_str(";host=");
        push_token_or_quoted(&mut v, h);
    }
    v.push_str(";proto=");
    v.push_str(proto.as_str());
    // The buffer becomes the value without another copy.
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(v.into_bytes())) {
        Ok(value) => {
            headers.insert(header::FORWARDED, value);
        }
        Err(_) => {
            headers.remove(header::FORWARDED);
        }
    }
}

/// A `Forwarded` parameter value: a token as is, anything else (`:` of a port, brackets) as
/// a quoted-string (RFC 7239 §4, RFC 9110 §5.6.4).
fn push_token_or_quoted(out: &mut String, v: &str) {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !v.is_empty() && v.chars().all(tchar) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// For a request with no known peer (nothing to say `for=`): the client's `Forwarded` and
/// `X-Forwarded-Prefix` still never reach the origin.
pub(crate) fn drop_client_forwarding(headers: &mut HeaderMap) {
    headers.remove(header::FORWARDED);
    headers.remove(X_FORWARDED_PREFIX);
}

fn set_proto_host(headers: &mut HeaderMap, host: Option<HeaderValue>, proto: ClientProto) {
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto.as_str()));
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST, h);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// Adds `Date` when the upstream sent none (RFC 9110 §6.6.1: a recipient with a clock adds it).
pub(crate) fn ensure_date(headers: &mut HeaderMap, now: SystemTime) {
    if !headers.contains_key(header::DATE)
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(now))
    {
        headers.insert(header::DATE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_and_fixed_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("basic x"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn via_loop_detection_matches_received_by_token() {
        let mut h = HeaderMap::new();
        h.insert("via", HeaderValue::from_static("1.1 other, 2 seawall"));
        assert!(via_has(&h, "seawall"));
        assert!(!via_has(&h, "sea"));
        append_via(&mut h, Version::HTTP_11, "edge");
        assert_eq!(h["via"], "1.1 other, 2 seawall, 1.1 edge");
    }

    #[test]
    fn xff_appends_only_for_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        set_forwarded(
            &mut h,
            "10.1.1.1".parse().expect("ip"),
            &trusted,
            Some("a.example"),
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.1.1.1");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        set_forwarded(&mut h, "192.0.2.9".parse().expect("ip"), &trusted, None);
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
    }

    #[test]
    fn forwarded_is_replaced_or_appended_and_quotes_what_is_no_token() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "::1/128".parse().expect("cidr"),
        ];
        let mut h = HeaderMap::new();
        h.append(
            "forwarded",
            HeaderValue::from_static("for=6.6.6.6;proto=https"),
        );
        h.append("forwarded", HeaderValue::from_static("for=7.7.7.7"));
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/evil"));
        set_forwarded(
            &mut h,
            "192.0.2.9".parse().expect("ip"),
            &trusted,
            Some("a.example"),
        );
        assert_eq!(h.get_all("forwarded").iter().count(), 1);
        assert_eq!(h["forwarded"], "for=192.0.2.9;host=a.example;proto=http");
        assert!(!h.contains_key("x-forwarded-prefix"));

        let mut h = HeaderMap::new();
        h.append("forwarded", HeaderValue::from_static("for=192.0.2.1"));
        h.append("forwarded", HeaderValue::from_static("for=192.0.2.2"));
        set_forwarded(
            &mut h,
            "::1".parse().expect("ip"),
            &trusted,
            Some("[::1]:8080"),
        );
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.1, for=192.0.2.2, for=\"[::1]\";host=\"[::1]:8080\";proto=http"
        );

        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "10.1.1.1".parse().expect("ip"), &trusted, None);
        assert_eq!(h["forwarded"], "for=10.1.1.1;proto=http");
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}

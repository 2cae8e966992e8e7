//! Access log lines, written when a response ends (last byte sent, or the client gone): text
//! (key=value), JSON, or nginx's `combined` format; query values named in
//! `[log] redact_query_params` never reach the log.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Version, header};
use ipnet::IpNet;

/// The tracing target of access lines (a layer of its own prints them as they are).
pub const TARGET: &str = "seawall::access";

/// `[log] access_log_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `key=value` pairs after a timestamp.
    Text,
    /// One JSON object a line.
    Json,
    /// nginx's `combined`: `$remote_addr - - [$time_local] "$request" $status
    /// $body_bytes_sent "$http_referer" "$http_user_agent"`.
    Combined,
}

impl Format {
    /// From the validated config value.
    pub fn parse(s: &str) -> Self {
        match s {
            "json" => Self::Json,
            "combined" => Self::Combined,
            _ => Self::Text,
        }
    }
}

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every byte was handed to the connection.
    Complete,
    /// The client went away before the last byte.
    ClientAbort,
    /// The body failed on our side (the origin reset mid-body).
    Error,
    /// A protocol upgrade (101): the tunnel that follows is not timed.
    Upgraded,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::ClientAbort => "client_abort",
            Self::Error => "error",
            Self::Upgraded => "upgraded",
        }
    }
}

/// What the log knows at the request head.
#[derive(Debug)]
pub struct Request {
    format: Format,
    client: Option<IpAddr>,
    host: String,
    method: Method,
    target: String,
    version: Version,
    user_agent: Option<String>,
    referer: Option<String>,
    tls: Option<Tls>,
}

/// What a TLS connection's handshake settled, for its requests' lines.
#[derive(Debug)]
struct Tls {
    version: &'static str,
    cipher: &'static str,
    sni: Option<String>,
}

/// What it adds at the response head.
#[derive(Debug)]
pub struct Record {
    /// The request side.
    pub req: Request,
    /// Response status.
    pub status: u16,
    /// `Cache-Status` as sent.
    pub cache_status: String,
    /// Time to the response head.
    pub first_byte: Duration,
    /// Time spent upstream, when the request went there.
    pub upstream: Option<Duration>,
    /// The trace id, only when the request is traced.
    pub trace_id: Option<String>,
}

fn header_text(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

impl Request {
    /// Captures the request side. `peer` is the TCP peer; the client is the first address in
    /// `X-Forwarded-For`, from the right, that is not a trusted proxy.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        format: Format,
        method: &Method,
        uri: &http::Uri,
        version: Version,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        trusted: &[IpNet],
        redact: &[String],
    ) -> Self {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_string();
        let mut target = uri.path().to_string();
        if let Some(q) = uri.query() {
            target.push('?');
            target.push_str(&redact_query(q, redact));
        }
        Self {
            format,
            client: peer.map(|p| client_ip(p, headers, trusted)),
            host,
            method: method.clone(),
            target,
            version,
            user_agent: header_text(headers, header::USER_AGENT),
            referer: header_text(headers, header::REFERER),
            tls: None,
        }
    }

    /// A request on a TLS connection: its lines gain the protocol version (`1.3`), the cipher
    /// suite and the SNI name the client sent.
    pub fn with_tls(
        mut self,
        version: &'static str,
        cipher: &'static str,
        sni: Option<&str>,
    ) -> Self {
        self.tls = Some(Tls {
            version,
            cipher,
            sni: sni.map(str::to_string),
        });
        self
    }
}

/// The client address after trusted proxies: walking `X-Forwarded-For` from the right (the
/// entry our peer added), skipping trusted addresses; the peer itself when it is not trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// `q` with the values of the `redact` parameters (ASCII case-insensitive) replaced.
pub fn redact_query(q: &str, redact: &[String]) -> String {
    if redact.is_empty() {
        return q.to_string();
    }
    q.split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            if redact.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                format!("{name}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Civil date and time (UTC) of `t`: year, month, day, hour, minute, second, millisecond.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        d.subsec_millis(),
    )
}

/// `2026-12-06T03:56:45.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// nginx's `$time_local` in UTC: `06/Dec/2026:03:56:45 +0000`.
pub fn time_local(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(t);
    let m = MONTHS[(mo as usize).clamp(1, 12) - 1];
    format!("{d:02}/{m}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

/// nginx's default escaping inside quoted fields: `"`, `\` and non-printable bytes as `\xHH`.
fn nginx_escape(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl Record {
    /// Writes the line: `bytes` body bytes sent, `total` from the request's start to its end.
    pub fn write(&self, bytes: u64, total: Duration, end: End) {
        let line = self.render(SystemTime::now(), bytes, total, end);
        tracing::info!(target: TARGET, "{line}");
    }

    /// The line as `format` says.
    pub fn render(&self, now: SystemTime, bytes: u64, total: Duration, end: End) -> String {
        let r = &self.req;
        let client = r.client.map(|c| c.to_string());
        match r.format {
            Format::Combined => {
                let mut out = String::with_capacity(160);
                out.push_str(client.as_deref().unwrap_or("-"));
                out.push_str(" - - [");
                out.push_str(&time_local(now));
                out.push_str("] \"");
                nginx_escape(&mut out, r.method.as_str());
                out.push(' ');
                nginx_escape(&mut out, &r.target);
                out.push(' ');
                out.push_str(version_str(r.version));
                let _ = write!(out, "\" {} {} \"", self.status, bytes);
                nginx_escape(&mut out, r.referer.as_deref().unwrap_or("-"));
                out.push_str("\" \"");
                nginx_escape(&mut out, r.user_agent.as_deref().unwrap_or("-"));
                out.push('"');
                // After the combined fields, as nginx's `$ssl_protocol $ssl_cipher
                // $ssl_server_name` are usually appended: cleartext lines stay plain combined.
                if let Some(t) = &r.tls {
                    let _ = write!(out, " \"TLSv{}\" \"", t.version);
                    nginx_escape(&mut out, if t.cipher.is_empty() { "-" } else { t.cipher });
                    out.push_str("\" \"");
                    nginx_escape(&mut out, t.sni.as_deref().unwrap_or("-"));
                    out.push('"');
                }
                out
            }
            Format::Json => {
                let mut v = serde_json::json!({
                    "timestamp": rfc3339(now),
                    "client": client,
                    "host": r.host,
                    "method": r.method.as_str(),
                    "target": r.target,
                    "protocol": version_str(r.version),
                    "status": self.status,
                    "cache_status": self.cache_status,
                    "bytes": bytes,
                    "duration_ms": ms(total),
                    "first_byte_ms": ms(self.first_byte),
                    "upstream_ms": self.upstream.map(ms),
                    "user_agent": r.user_agent,
                    "referer": r.referer,
                    "outcome": end.as_str(),
                });
                if let (Some(t), Some(o)) = (&self.trace_id, v.as_object_mut()) {
                    o.insert("trace_id".into(), t.clone().into());
                }
                if let (Some(t), Some(o)) = (&r.tls, v.as_object_mut()) {
                    o.insert("tls_version".into(), t.version.into());
                    o.insert("tls_cipher".into(), t.cipher.into());
                    o.insert("sni".into(), t.sni.clone().into());
                }
                v.to_string()
            }
            Format::Text => {
                // Strings are quoted and escaped (`{:?}`), so a header cannot forge a field.
                let mut out = String::with_capacity(256);
                let _ = write!(
                    out,
                    "{} access client={} host={:?} method={} target={:?} protocol={} status={} \
                     cache_status={:?} bytes={} duration_ms={} first_byte_ms={}",
                    rfc3339(now),
                    client.as_deref().unwrap_or("-"),
                    r.host,
                    r.method,
                    r.target,
                    version_str(r.version),
                    self.status,
                    self.cache_status,
                    bytes,
                    ms(total),
                    ms(self.first_byte),
                );
                if let Some(u) = self.upstream {
                    let _ = write!(out, " upstream_ms={}", ms(u));
                }
                let _ = write!(
                    out,
                    " user_agent={:?} referer={:?} outcome={}",
                    r.user_agent.as_deref().unwrap_or("-"),
                    r.referer.as_deref().unwrap_or("-"),
                    end.as_str()
                );
                if let Some(t) = &self.trace_id {
                    let _ = write!(out, " trace_id={t}");
                }
                if let Some(t) = &r.tls {
                    let _ = write!(
                        out,
                        " tls_version={} tls_cipher={} sni={:?}",
                        t.version,
                        if t.cipher.is_empty() { "-" } else { t.cipher },
                        t.sni.as_deref().unwrap_or("-")
                    );
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_529_805_123);
        assert_eq!(rfc3339(t), "2026-12-06T04:03:25.123Z");
        assert_eq!(time_local(t), "06/Dec/2026:04:03:25 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn redaction_replaces_only_named_values() {
        let r = vec!["token".to_string(), "sig".to_string()];
        assert_eq!(
            redact_query("a=1&TOKEN=x&sig&b=token", &r),
            "a=1&TOKEN=REDACTED&sig=REDACTED&b=token"
        );
        assert_eq!(redact_query("a=1", &[]), "a=1");
    }

    #[test]
    fn client_skips_trusted_hops_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("198.51.100.1, 203.0.113.7, 10.0.0.2"),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|_| unreachable!());
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        // An untrusted peer's header is not believed.
        assert_eq!(client_ip(ip("192.0.2.9"), &h, &trusted), ip("192.0.2.9"));
    }

    #[test]
    fn tls_requests_log_version_cipher_and_sni_in_every_format() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, http::HeaderValue::from_static("a.test"));
        let uri: http::Uri = "/p".parse().unwrap_or_else(|_| unreachable!());
        let t = UNIX_EPOCH + Duration::from_secs(1_796_529_805);
        let line = |format, tls: bool| {
            let mut req = Request::new(
                format,
                &Method::GET,
                &uri,
                Version::HTTP_2,
                &h,
                Some("192.0.2.1".parse().unwrap_or_else(|_| unreachable!())),
                &[],
                &[],
            );
            if tls {
                req = req.with_tls("1.3", "TLS13_AES_128_GCM_SHA256", Some("a.test"));
            }
            let rec = Record {
                req,
                status: 200,
                cache_status: String::new(),
                first_byte: Duration::ZERO,
                upstream: None,
                trace_id: None,
            };
            rec.render(t, 1, Duration::ZERO, End::Complete)
        };
        let text = line(Format::Text, true);
        assert!(
            text.ends_with(" tls_version=1.3 tls_cipher=TLS13_AES_128_GCM_SHA256 sni=\"a.test\""),
            "{text}"
        );
        assert!(!line(Format::Text, false).contains("tls_"));
        let json: serde_json::Value =
            serde_json::from_str(&line(Format::Json, true)).unwrap_or_default();
        assert_eq!(json["tls_version"], "1.3");
        assert_eq!(json["tls_cipher"], "TLS13_AES_128_GCM_SHA256");
        assert_eq!(json["sni"], "a.test");
        let plain: serde_json::Value =
            serde_json::from_str(&line(Format::Json, false)).unwrap_or_default();
        assert!(plain.get("tls_version").is_none(), "{plain}");
        let combined = line(Format::Combined, true);
        assert!(
            combined.ends_with("\"-\" \"-\" \"TLSv1.3\" \"TLS13_AES_128_GCM_SHA256\" \"a.test\""),
            "{combined}"
        );
        assert!(line(Format::Combined, false).ends_with("\"-\" \"-\""));
    }

    #[test]
    fn combined_escapes_quotes_and_controls() {
        let mut h = HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            http::HeaderValue::from_static("a \"b\""),
        );
        let uri: http::Uri = "/x?token=s".parse().unwrap_or_else(|_| unreachable!());
        let req = Request::new(
            Format::Combined,
            &Method::GET,
            &uri,
            Version::HTTP_11,
            &h,
            Some("192.0.2.1".parse().unwrap_or_else(|_| unreachable!())),
            &[],
            &["token".to_string()],
        );
        let rec = Record {
            req,
            status: 200,
            cache_status: String::new(),
            first_byte: Duration::ZERO,
            upstream: None,
            trace_id: None,
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_796_529_805);
        assert_eq!(
            rec.render(t, 12, Duration::ZERO, End::Complete),
            "192.0.2.1 - - [06/Dec/2026:04:03:25 +0000] \"GET /x?token=REDACTED HTTP/1.1\" 200 12 \
             \"-\" \"a \\x22b\\x22\""
        );
    }

    #[test]
    fn text_quotes_strings_and_names_traced_requests_only() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, http::HeaderValue::from_static("example.com"));
        h.insert(
            header::USER_AGENT,
            http::HeaderValue::from_static("x\" forged=1"),
        );
        let uri: http::Uri = "/p?a=1".parse().unwrap_or_else(|_| unreachable!());
        let rec = |trace_id: Option<String>| Record {
            req: Request::new(
                Format::Text,
                &Method::HEAD,
                &uri,
                Version::HTTP_2,
                &h,
                Some("192.0.2.1".parse().unwrap_or_else(|_| unreachable!())),
                &[],
                &[],
            ),
            status: 200,
            cache_status: "seawall; hit; ttl=5".into(),
            first_byte: Duration::from_micros(1500),
            upstream: None,
            trace_id,
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_796_529_805);
        let line = rec(None).render(t, 0, Duration::from_millis(3), End::ClientAbort);
        assert_eq!(
            line,
            "2026-12-06T04:03:25.000Z access client=192.0.2.1 host=\"example.com\" method=HEAD \
             target=\"/p?a=1\" protocol=HTTP/2.0 status=200 cache_status=\"seawall; hit; ttl=5\" \
             bytes=0 duration_ms=3 first_byte_ms=1.5 user_agent=\"x\\\" forged=1\" referer=\"-\" \
             outcome=client_abort"
        );
        let traced = rec(Some("4bf92f3577b34da6a3ce929d0e0e4736".into())).render(
            t,
            0,
            Duration::ZERO,
            End::Complete,
        );
        assert!(traced.ends_with(" trace_id=4bf92f3577b34da6a3ce929d0e0e4736"));
    }
}

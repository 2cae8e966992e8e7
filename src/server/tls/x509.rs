//! What Seawall reads of an X.509 certificate beyond what webpki checks (x509-parser): the
//! names it serves (DNS and IP subjectAltNames), issuer and subject as RFC 4514 text, notAfter.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::X509Name;

/// A certificate's facts for `/admin/tls`, metrics and the 421 check.
#[derive(Debug, Default)]
pub(super) struct Facts {
    /// subjectAltName DNS names, as written.
    pub dns: Vec<String>,
    /// subjectAltName IP addresses.
    pub ips: Vec<IpAddr>,
    /// The issuer, RFC 4514.
    pub issuer: String,
    /// The end of validity (RFC 5280 §4.1.2.5).
    pub not_after: Option<SystemTime>,
}

/// Reads a DER certificate; `None` when it does not parse.
pub(super) fn facts(der: &[u8]) -> Option<Facts> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut out = Facts {
        issuer: dn(cert.issuer()),
        not_after: time(cert.validity().not_after.timestamp()),
        ..Facts::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => out.dns.push((*d).to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        out.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        out.ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Some(out)
}

/// A certificate's subject, RFC 4514 (what `client_subject_header` sends).
pub(super) fn subject_dn(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(dn(cert.subject()))
}

fn time(unix: i64) -> Option<SystemTime> {
    let secs = u64::try_from(unix).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// RFC 4514 §2: the last RDN first, `+` within an RDN, short names where there is one, and
/// `#` + hex for values that are not strings.
fn dn(name: &X509Name<'_>) -> String {
    let registry = oid_registry();
    let mut rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type();
                    let key = oid2abbrev(oid, registry)
                        .map_or_else(|_| oid.to_id_string(), str::to_string);
                    let value = match atv.as_str() {
                        Ok(s) => escape(s),
                        Err(_) => format!("#{}", super::hex(atv.as_slice())),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

//! Certificate loading, SNI choice and expiry reading, on certificates rcgen makes here.

use super::*;
use crate::config::file::TlsCertificateSection;

struct Made {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn make(names: &[&str], not_after: Option<(i32, u8, u8)>) -> Made {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    if let Some((y, m, d)) = not_after {
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let cert = params.self_signed(&key).expect("self-signed");
    Made {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Writes each certificate and key into `dir` and returns the `[tls]` section naming them.
fn section(dir: &Path, made: &[(&Made, Option<Vec<&str>>, bool)]) -> TlsSection {
    let mut certs = Vec::new();
    for (i, (m, hosts, default)) in made.iter().enumerate() {
        let cert_file = dir.join(format!("c{i}.pem"));
        let key_file = dir.join(format!("k{i}.pem"));
        std::fs::write(&cert_file, &m.cert_pem).expect("write cert");
        std::fs::write(&key_file, &m.key_pem).expect("write key");
        certs.push(TlsCertificateSection {
            cert_file: cert_file.display().to_string(),
            key_file: key_file.display().to_string(),
            hosts: hosts
                .as_ref()
                .map(|h| h.iter().map(|s| s.to_string()).collect()),
            default: *default,
        });
    }
    TlsSection {
        certificates: certs,
        ..TlsSection::default()
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("seawall-tls-unit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn sni_picks_exact_then_wildcard_then_the_default() {
    let dir = tempdir("pick");
    let a = make(&["a.test"], None);
    let b = make(&["b.test"], None);
    let w = make(&["*.wild.test"], None);
    let mut cfg = section(
        &dir,
        &[(&a, None, false), (&b, None, true), (&w, None, false)],
    );
    let certs = Certificates::load(&cfg).expect("loads");
    assert_eq!(certs.pick(Some("a.test")), Some(0));
    assert_eq!(certs.pick(Some("B.TEST")), Some(1));
    assert_eq!(certs.pick(Some("x.wild.test")), Some(2));
    // `default = true` on the second entry.
    assert_eq!(certs.pick(None), Some(1));
    assert_eq!(certs.pick(Some("other.test")), Some(1));
    cfg.unknown_sni = "refuse".into();
    let certs = Certificates::load(&cfg).expect("loads");
    assert_eq!(certs.pick(None), None);
    assert_eq!(certs.pick(Some("other.test")), None);
    assert_eq!(certs.pick(Some("a.test")), Some(0));
}

#[test]
fn configured_hosts_replace_the_certificate_names() {
    let dir = tempdir("hosts");
    let a = make(&["a.test"], None);
    let cfg = section(&dir, &[(&a, Some(vec!["alias.test"]), false)]);
    let certs = Certificates::load(&cfg).expect("loads");
    assert_eq!(
        &*certs.certs[0].names,
        &[HostPattern::Exact("alias.test".into())]
    );
    assert_eq!(certs.certs[0].label, "alias.test");
}

#[test]
fn addresses_in_the_certificate_are_names_it_serves() {
    let dir = tempdir("ips");
    let a = make(&["a.test", "127.0.0.1", "::1"], None);
    let cfg = section(&dir, &[(&a, None, false)]);
    let certs = Certificates::load(&cfg).expect("loads");
    assert_eq!(
        &*certs.certs[0].names,
        &[
            HostPattern::Exact("a.test".into()),
            HostPattern::Ip([127, 0, 0, 1].into()),
            HostPattern::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
        ]
    );
    // Only addresses: still a certificate that serves something.
    let b = make(&["192.0.2.1"], None);
    let cfg = section(&dir, &[(&b, None, false)]);
    let certs = Certificates::load(&cfg).expect("loads");
    assert_eq!(
        &*certs.certs[0].names,
        &[HostPattern::Ip([192, 0, 2, 1].into())]
    );
}

#[test]
fn mismatched_key_and_missing_pem_items_name_the_file() {
    let dir = tempdir("bad");
    let a = make(&["a.test"], None);
    let b = make(&["b.test"], None);
    let mut cfg = section(&dir, &[(&a, None, false)]);
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &b.key_pem).expect("write");
    cfg.certificates[0].key_file = other_key.display().to_string();
    let e = format!("{:#}", Certificates::load(&cfg).expect_err("mismatch"));
    assert!(
        e.contains("other-key.pem") && e.contains("does not match"),
        "{e}"
    );

    // A key file holding only a certificate, and a certificate file holding only a key.
    let mut cfg = section(&dir, &[(&a, None, false)]);
    cfg.certificates[0].key_file = cfg.certificates[0].cert_file.clone();
    let e = format!("{:#}", Certificates::load(&cfg).expect_err("no key"));
    assert!(
        e.contains("key_file") && e.contains("no PEM private key"),
        "{e}"
    );
    let mut cfg = section(&dir, &[(&a, None, false)]);
    cfg.certificates[0].cert_file = cfg.certificates[0].key_file.clone();
    let e = format!("{:#}", Certificates::load(&cfg).expect_err("no cert"));
    assert!(
        e.contains("cert_file") && e.contains("no PEM certificate"),
        "{e}"
    );

    let mut cfg = section(&dir, &[(&a, None, false)]);
    cfg.certificates[0].cert_file = dir.join("absent.pem").display().to_string();
    let e = format!("{:#}", Certificates::load(&cfg).expect_err("unreadable"));
    assert!(e.contains("absent.pem") && e.contains("cannot read"), "{e}");
}

#[test]
fn not_after_is_read_from_the_certificate() {
    let m = make(&["a.test"], Some((2031, 5, 17)));
    let t = x509::facts(&m.der).and_then(|f| f.not_after).expect("read");
    assert_eq!(
        humantime::format_rfc3339_seconds(t).to_string(),
        "2031-05-17T00:00:00Z"
    );
    // GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5).
    let m = make(&["a.test"], Some((2051, 1, 2)));
    let t = x509::facts(&m.der).and_then(|f| f.not_after).expect("read");
    assert_eq!(
        humantime::format_rfc3339_seconds(t).to_string(),
        "2051-01-02T00:00:00Z"
    );
    assert!(x509::facts(&[0x30, 0x03, 1, 2]).is_none());
}

#[test]
fn expired_and_soon_expiring_certificates_are_warnings() {
    let dir = tempdir("expiry");
    let old = make(&["old.test"], Some((2020, 1, 1)));
    let soon = make(&["soon.test"], Some((2031, 1, 10)));
    let later = make(&["later.test"], Some((2031, 6, 1)));
    let cfg = section(
        &dir,
        &[
            (&old, None, false),
            (&soon, None, false),
            (&later, None, false),
        ],
    );
    let certs = Certificates::load(&cfg).expect("loads: expiry is no error");
    let now = humantime::parse_rfc3339("2031-01-01T00:00:00Z").expect("time");
    let w = certs.expiry_warnings(now);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("c0.pem") && w[0].contains("expired"), "{w:?}");
    assert!(
        w[1].contains("c1.pem") && w[1].contains("expires in 9 days"),
        "{w:?}"
    );
}

#[test]
fn subject_and_issuer_read_as_rfc4514() {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CountryName, "NL");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example, Inc.");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "#client+1");
    let cert = params.self_signed(&key).expect("self-signed");
    let want = "CN=\\#client\\+1,O=Example\\, Inc.,C=NL";
    assert_eq!(x509::subject_dn(cert.der()).as_deref(), Some(want));
    // Self-signed: the issuer is the subject.
    assert_eq!(x509::facts(cert.der()).expect("parses").issuer, want);
    assert_eq!(x509::subject_dn(b"not der"), None);
}

//! The TLS listener from outside (rustls clients and curl): certificates chosen by SNI (and refused for unknown names),
//! ALPN h2 and http/1.1, one cache across TLS and cleartext, 421 for a host the connection's
//! certificate does not cover, `X-Forwarded-Proto: https`, the handshake timeout under idle
//! connections, `seawall check` on broken key pairs, and the handshake counter.
//! Certificates come from a CA that rcgen makes for each test; clients trust only that CA.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

#[path = "admin/support.rs"]
mod admin_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use admin_support::{must, parse_exposition, scrape};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "seawall-tls-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA and the leaf certificates it issued, written as PEM files into a temp dir.
struct Pki {
    dir: TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// One issued certificate: its files and its DER (what a client sees as the peer's).
struct Leaf {
    cert_file: PathBuf,
    key_file: PathBuf,
    der: Vec<u8>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Seawall test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        Self {
            dir: TempDir::new(name),
            ca,
        }
    }

    /// Issues a certificate for `names`, written as `<file>.pem` and `<file>-key.pem`.
    fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        self.leaf_until(file, names, None)
    }

    /// Like `leaf`, valid until `not_after` (default: rcgen's, far away).
    fn leaf_until(&self, file: &str, names: &[&str], not_after: Option<SystemTime>) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if let Some(t) = not_after {
            params.not_after = t.into();
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_file = self.dir.0.join(format!("{file}.pem"));
        let key_file = self.dir.0.join(format!("{file}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Leaf {
            cert_file,
            key_file,
            der: cert.der().to_vec(),
        }
    }

    /// A rustls client trusting only this CA, offering `alpn`.
    fn client(&self, alpn: &[&str], sni: bool) -> TlsConnector {
        self.client_with(alpn, sni, rustls::DEFAULT_VERSIONS)
    }

    /// Like `client`, offering only `versions`.
    fn client_with(
        &self,
        alpn: &[&str],
        sni: bool,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        cfg.enable_sni = sni;
        TlsConnector::from(Arc::new(cfg))
    }
}

/// A `[[tls.certificates]]` entry.
fn cert_entry(l: &Leaf, extra: &str) -> String {
    format!(
        "[[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n",
        l.cert_file.display().to_string(),
        l.key_file.display().to_string()
    )
}

/// A config with both listeners (or only TLS when `server` says `listen = ""`), `[tls]`
/// settings, the certificate entries and one catch-all route to `origin`.
fn tls_config(origin: &str, server: &str, tls: &str, certs: &[String]) -> String {
    format!(
        "[server]\nlisten_tls = \"127.0.0.1:0\"\n{server}\n\n[tls]\n{tls}\n\n{}\n{}",
        certs.concat(),
        upstream_config(origin, "")
    )
}

/// The TLS listener's address.
fn tls_addr(p: &TestProxy) -> SocketAddr {
    p.running().tls_addr.expect("a TLS listener")
}

/// Connects and completes the handshake, verifying the certificate for `name`; sends SNI
/// `name` unless `sni` is false.
async fn connect(
    pki: &Pki,
    addr: SocketAddr,
    name: &str,
    sni: bool,
    alpn: &[&str],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = bounded("tcp connect", TcpStream::connect(addr)).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    bounded(
        "tls handshake",
        pki.client(alpn, sni).connect(server_name, tcp),
    )
    .await
}

fn peer_der(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// GET `path` for `host` over an established TLS stream: HTTP/2 when ALPN chose h2, else
/// HTTP/1.1.
async fn tls_get(
    s: TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(s);
    let res = if h2 {
        let (mut send, conn) = bounded(
            "h2 handshake",
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("https://{host}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        bounded("h2 request", send.send_request(req)).await.unwrap()
    } else {
        let (mut send, conn) = bounded("h1 handshake", hyper::client::conn::http1::handshake(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        bounded("h1 request", send.send_request(req)).await.unwrap()
    };
    let (parts, body) = res.into_parts();
    let body = bounded("body", body.collect()).await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// Three certificates: A (a.test, the default), B (b.test) and a wildcard (*.wild.test).
struct Three {
    pki: Pki,
    a: Leaf,
    b: Leaf,
    w: Leaf,
}

fn three(name: &str) -> Three {
    let pki = Pki::new(name);
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test"]);
    let w = pki.leaf("w", &["*.wild.test"]);
    Three { pki, a, b, w }
}

impl Three {
    fn entries(&self) -> Vec<String> {
        vec![
            cert_entry(&self.b, ""),
            cert_entry(&self.a, "default = true"),
            cert_entry(&self.w, ""),
        ]
    }
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_no_sni_gets_the_default() {
    let t = three("sni");
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("hi"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(&origin.url(), "", "", &t.entries())).await;
    let addr = tls_addr(&proxy);
    for (name, want) in [
        ("a.test", &t.a.der),
        ("b.test", &t.b.der),
        ("x.wild.test", &t.w.der),
    ] {
        let s = connect(&t.pki, addr, name, true, &["http/1.1"])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&peer_der(&s), want, "{name} got another certificate");
        let (status, _, body) = tls_get(s, name, "/").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hi"[..]), "{name}");
    }
    // Without SNI: the `default = true` entry (A), although B is listed first.
    let s = connect(&t.pki, addr, "a.test", false, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_der(&s), t.a.der);
    // An unknown name gets the default too (the client then refuses it: not its name).
    let e = connect(&t.pki, addr, "unknown.test", true, &["http/1.1"]).await;
    assert!(
        e.is_err(),
        "the default certificate does not name unknown.test"
    );
}

/// The base64 body of a PEM certificate, without line breaks.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

/// Runs curl (OpenSSL backend) with `args`; returns what `-w` printed.
async fn curl(args: &[&str]) -> String {
    let out = bounded(
        "curl",
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl runs (the test command installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn curl_gets_each_names_certificate_over_h2_and_http11() {
    let t = three("curl");
    let origin = MockOrigin::new()
        .route(
            "/c",
            MockResponse::ok("c").header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(&origin.url(), "", "", &t.entries())).await;
    let port = tls_addr(&proxy).port();
    let ca = t.pki.dir.0.join("ca.pem");
    std::fs::write(&ca, t.pki.ca.pem()).unwrap();
    let ca = ca.display().to_string();
    let pem = |l: &Leaf| pem_body(&std::fs::read_to_string(&l.cert_file).unwrap());
    // `%{certs}` prints the chain curl verified against the test CA, leaf first.
    let fmt = "%{http_code} %{http_version}\n%{certs}";
    for (name, leaf) in [("a.test", &t.a), ("b.test", &t.b), ("x.wild.test", &t.w)] {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/c");
        for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let out = curl(&[
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                flag,
                "-w",
                fmt,
                &url,
            ])
            .await;
            let first = out.lines().next().unwrap_or_default();
            assert_eq!(first, format!("200 {version}"), "{name} {flag}: {out}");
            let flat: String = out.split_whitespace().collect();
            assert!(
                flat.contains(&pem(leaf)),
                "{name} {flag}: another certificate"
            );
        }
        // A host this connection's certificate does not serve: 421, on both versions.
        if name != "a.test" {
            for flag in ["--http2", "--http1.1"] {
                let out = curl(&[
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    flag,
                    "-H",
                    "Host: a.test",
                    "-w",
                    "%{http_code}",
                    &url,
                ])
                .await;
                assert_eq!(out, "421", "{name} {flag} asking for a.test");
            }
        }
    }
    // No SNI (an address): the default certificate, A, which curl is told not to verify.
    let out = curl(&[
        "-k",
        "-H",
        &format!("Host: a.test:{port}"),
        "-w",
        fmt,
        &format!("https://127.0.0.1:{port}/c"),
    ])
    .await;
    assert!(out.starts_with("200 2"), "{out}");
    let flat: String = out.split_whitespace().collect();
    assert!(
        flat.contains(&pem(&t.a)),
        "no SNI: not the default certificate"
    );
    // One fetch per host: the second protocol and the no-SNI client are hits.
    assert_eq!(origin.hits("/c"), 3);
}

#[tokio::test]
async fn unknown_sni_refuse_fails_the_handshake() {
    let t = three("refuse");
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("hi"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "",
        "unknown_sni = \"refuse\"",
        &t.entries(),
    ))
    .await;
    let addr = tls_addr(&proxy);
    // The server has no certificate to send: the handshake fails before any verification.
    let e = connect(&t.pki, addr, "unknown.test", true, &["http/1.1"])
        .await
        .expect_err("refused");
    assert!(!e.to_string().contains("UnknownIssuer"), "{e}");
    let e = connect(&t.pki, addr, "a.test", false, &["http/1.1"]).await;
    assert!(e.is_err(), "no SNI is refused too");
    let s = connect(&t.pki, addr, "b.test", true, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_der(&s), t.b.der);
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn alpn_h2_and_http11_both_work_and_tls_only_runs_without_cleartext() {
    let t = three("alpn");
    let origin = MockOrigin::new()
        .route("/v", MockResponse::ok("v"))
        .start()
        .await;
    // `listen = ""`: the TLS listener alone.
    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "listen = \"\"",
        "min_version = \"1.3\"",
        &t.entries(),
    ))
    .await;
    let addr = tls_addr(&proxy);
    assert_eq!(proxy.addr, addr, "the only data listener");

    let s = connect(&t.pki, addr, "a.test", true, &["h2", "http/1.1"])
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (status, _, body) = tls_get(s, "a.test", "/v").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"v"[..]));

    let s = connect(&t.pki, addr, "a.test", true, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, _, body) = tls_get(s, "a.test", "/v").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"v"[..]));

    // No ALPN at all: HTTP/1.1.
    let s = connect(&t.pki, addr, "a.test", true, &[]).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    let (status, _, _) = tls_get(s, "a.test", "/v").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.hits("/v"), 3);
}

#[tokio::test]
async fn tls_and_cleartext_share_one_cache_entry() {
    let t = three("cache");
    let origin = MockOrigin::new()
        .route(
            "/c",
            MockResponse::ok("cached body").header("cache-control", "max-age=300"),
        )
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(&origin.url(), "", "", &t.entries())).await;
    let s = connect(&t.pki, tls_addr(&proxy), "a.test", true, &["h2"])
        .await
        .unwrap();
    let (status, headers, tls_body) = tls_get(s, "a.test", "/c").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        cache_status(&headers).contains("stored"),
        "{}",
        cache_status(&headers)
    );
    let (status, headers, plain_body) = request(
        Request::get(proxy.url("/c"))
            .header(http::header::HOST, "a.test")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        cache_status(&headers).contains("hit"),
        "{}",
        cache_status(&headers)
    );
    assert_eq!(tls_body, plain_body);
    assert_eq!(origin.hits("/c"), 1);
}

#[tokio::test]
async fn a_host_the_certificate_does_not_cover_gets_421() {
    let t = three("misdirected");
    let origin = MockOrigin::new()
        .route("/m", MockResponse::ok("m"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(&origin.url(), "", "", &t.entries())).await;
    for alpn in ["http/1.1", "h2"] {
        let s = connect(&t.pki, tls_addr(&proxy), "a.test", true, &[alpn])
            .await
            .unwrap();
        let (status, headers, _) = tls_get(s, "b.test", "/m").await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{alpn}");
        assert_eq!(
            cache_status(&headers),
            "seawall; fwd=bypass; detail=misdirected",
            "{alpn}"
        );
    }
    // The covered host on the same kind of connection, with a port: served.
    let s = connect(&t.pki, tls_addr(&proxy), "x.wild.test", true, &["http/1.1"])
        .await
        .unwrap();
    let (status, _, _) = tls_get(s, "x.wild.test:8443", "/m").await;
    assert_eq!(status, StatusCode::OK);
    // Cleartext has no certificate to cover anything: any host is routed.
    let (status, _, _) = request(
        Request::get(proxy.url("/m"))
            .header(http::header::HOST, "b.test")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.hits("/m"), 2);
}

#[tokio::test]
async fn the_origin_sees_https_as_the_forwarded_proto() {
    let t = three("proto");
    let origin = MockOrigin::new()
        .route("/p", MockResponse::ok("p"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(&origin.url(), "", "", &t.entries())).await;
    let s = connect(&t.pki, tls_addr(&proxy), "a.test", true, &["h2"])
        .await
        .unwrap();
    assert_eq!(tls_get(s, "a.test", "/p").await.0, StatusCode::OK);
    let (status, _, _) = get(&proxy.url("/p")).await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/p");
    assert_eq!(seen.len(), 2);
    assert_eq!(header_str(&seen[0], "x-forwarded-proto"), "https");
    assert!(
        header_str(&seen[0], "forwarded").ends_with(";proto=https"),
        "{:?}",
        seen[0]
    );
    assert_eq!(header_str(&seen[1], "x-forwarded-proto"), "http");
    assert!(header_str(&seen[1], "forwarded").ends_with(";proto=http"));
}

#[tokio::test]
async fn silent_clients_are_closed_at_the_handshake_timeout_without_blocking_others() {
    let t = three("timeout");
    let origin = MockOrigin::new()
        .route("/t", MockResponse::ok("t"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "",
        "handshake_timeout = \"300ms\"",
        &t.entries(),
    ))
    .await;
    let addr = tls_addr(&proxy);
    let mut idle = Vec::new();
    // The test command raises the open-file limit; 1,000 sockets on each side fit in it.
    for _ in 0..1000 {
        idle.push(
            bounded("idle connect", TcpStream::connect(addr))
                .await
                .unwrap(),
        );
    }
    // While 1,000 connections say nothing, a real client is served.
    let s = connect(&t.pki, addr, "a.test", true, &["http/1.1"])
        .await
        .unwrap();
    let (status, _, body) = tls_get(s, "a.test", "/t").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"t"[..]));
    // Every silent one is closed by the proxy (EOF or reset) well within 5 s.
    for mut c in idle {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("the proxy closed the silent connection within 5 s");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    let s = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    assert_eq!(
        must(
            &s,
            "seawall_tls_handshakes_total",
            &[("result", "timeout"), ("version", ""), ("alpn", "")]
        ),
        1000.0
    );
}

#[tokio::test]
async fn handshake_counter_and_expiry_gauge_are_exported() {
    let t = three("metrics");
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("x"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(&origin.url(), "", "", &t.entries())).await;
    let addr = tls_addr(&proxy);
    for alpn in ["h2", "h2", "http/1.1"] {
        let s = connect(&t.pki, addr, "a.test", true, &[alpn])
            .await
            .unwrap();
        assert_eq!(tls_get(s, "a.test", "/").await.0, StatusCode::OK);
    }
    let text = scrape(&proxy.admin_url("/metrics")).await;
    let s = parse_exposition(&text);
    let ok = |alpn| {
        must(
            &s,
            "seawall_tls_handshakes_total",
            &[("result", "ok"), ("version", "1.3"), ("alpn", alpn)],
        )
    };
    assert_eq!(ok("h2"), 2.0, "{text}");
    assert_eq!(ok("http/1.1"), 1.0, "{text}");
    // rcgen's default notAfter is 4096-01-01.
    let expiry = must(
        &s,
        "seawall_tls_certificate_expiry_timestamp_seconds",
        &[("name", "*.wild.test")],
    );
    assert!(expiry > 4.0e9, "{expiry}");
}

/// Runs `seawall <cmd> --config <cfg>` with listeners on port 0 (bounded).
async fn run_binary(cmd: &str, cfg: &Path) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_seawall"));
    // Only the settings below: a stray SEAWALL_* variable would be a finding of its own.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SEAWALL_")) {
        command.env_remove(k);
    }
    let out = command
        .arg(cmd)
        .arg("--config")
        .arg(cfg)
        .env("SEAWALL_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
        .env("SEAWALL_SERVER_LISTEN", "127.0.0.1:0")
        .env("SEAWALL_SERVER_ADMIN_LISTEN", "127.0.0.1:0")
        .kill_on_drop(true)
        .output();
    bounded(cmd, out).await.unwrap()
}

#[tokio::test]
async fn check_and_run_refuse_a_key_that_does_not_match_and_name_unreadable_files() {
    let pki = Pki::new("check");
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test"]);
    let write = |name: &str, cert: &Path, key: &Path| {
        let cfg = pki.dir.0.join(name);
        let entry = format!(
            "[[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        std::fs::write(&cfg, tls_config("http://127.0.0.1:9", "", "", &[entry])).unwrap();
        cfg
    };

    let good = write("good.toml", &a.cert_file, &a.key_file);
    let out = run_binary("check", &good).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mismatched = write("mismatch.toml", &a.cert_file, &b.key_file);
    for cmd in ["check", "run"] {
        let out = run_binary(cmd, &mismatched).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} accepted it: {err}");
        assert!(
            err.contains(&b.key_file.display().to_string()) && err.contains("does not match"),
            "{cmd}: {err}"
        );
    }

    // Ending in five days: a warning, not an error.
    let soon = pki.leaf_until(
        "soon",
        &["soon.test"],
        Some(SystemTime::now() + Duration::from_secs(5 * 86_400)),
    );
    let expiring = write("expiring.toml", &soon.cert_file, &soon.key_file);
    let out = run_binary("check", &expiring).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:")
            && err.contains(&soon.cert_file.display().to_string())
            && err.contains("expires in"),
        "{err}"
    );

    let missing = pki.dir.0.join("missing.pem");
    let unreadable = write("unreadable.toml", &missing, &a.key_file);
    let out = run_binary("check", &unreadable).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn tls12_is_offered_unless_min_version_is_13() {
    let t = three("versions");
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("x"))
        .start()
        .await;
    let tls12_only = t
        .pki
        .client_with(&["http/1.1"], true, &[&rustls::version::TLS12]);
    let name = || ServerName::try_from("a.test".to_string()).unwrap();

    let proxy = TestProxy::with_config(&tls_config(&origin.url(), "", "", &t.entries())).await;
    let tcp = TcpStream::connect(tls_addr(&proxy)).await.unwrap();
    let s = bounded("tls 1.2", tls12_only.connect(name(), tcp))
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(tls_get(s, "a.test", "/").await.0, StatusCode::OK);
    let m = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    let ok12 = [("result", "ok"), ("version", "1.2"), ("alpn", "http/1.1")];
    assert_eq!(must(&m, "seawall_tls_handshakes_total", &ok12), 1.0);

    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "",
        "min_version = \"1.3\"",
        &t.entries(),
    ))
    .await;
    let tcp = TcpStream::connect(tls_addr(&proxy)).await.unwrap();
    let r = bounded("tls 1.2 refused", tls12_only.connect(name(), tcp)).await;
    assert!(
        r.is_err(),
        "a TLS 1.2 client was served with min_version 1.3"
    );
    let m = parse_exposition(&scrape(&proxy.admin_url("/metrics")).await);
    let error = [("result", "error"), ("version", ""), ("alpn", "")];
    assert_eq!(must(&m, "seawall_tls_handshakes_total", &error), 1.0);
}

#[tokio::test]
async fn decrypted_connections_get_the_header_read_timeout_and_the_drain() {
    let t = three("conn");
    let origin = MockOrigin::new()
        .route("/d", MockResponse::ok("d"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "header_read_timeout = \"300ms\"\ndrain_delay = \"2s\"",
        "",
        &t.entries(),
    ))
    .await;
    let addr = tls_addr(&proxy);

    // Handshake done, then half a request head: closed by the header-read timeout (slowloris).
    let mut s = connect(&t.pki, addr, "a.test", true, &["http/1.1"])
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(b"GET /d HTTP/1.1\r\nHost: a.test\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed within 5 s");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        r.is_err() || buf.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{r:?} {text:?}"
    );

    // Draining: still served over TLS, told to close (HTTP/1.1).
    proxy.shutdown();
    let s = connect(&t.pki, addr, "a.test", true, &["http/1.1"])
        .await
        .unwrap();
    let (status, headers, _) = tls_get(s, "a.test", "/d").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_str(&headers, "connection"), "close");
}

// ---------------------------------------------------------------------------------------------
// Reload without dropping anything; GET /admin/tls
// ---------------------------------------------------------------------------------------------

/// A config file with both listeners, `[tls]` settings and `certs`, written as `name` in the
/// PKI's directory (reloads re-read it).
fn write_config(pki: &Pki, name: &str, origin: &str, tls: &str, certs: &[String]) -> PathBuf {
    let path = pki.dir.0.join(name);
    let server = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                  drain_delay = \"200ms\"\ngrace_period = \"2s\"";
    std::fs::write(&path, tls_config(origin, server, tls, certs)).unwrap();
    path
}

/// An HTTP/1.1 keep-alive connection over TLS: the sender for further requests.
async fn h1_over(s: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (send, conn) = bounded(
        "h1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(s)),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

async fn h1_send(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> StatusCode {
    bounded("ready", send.ready()).await.unwrap();
    let req = Request::get(path)
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = bounded("h1 request", send.send_request(req)).await.unwrap();
    let status = res.status();
    bounded("body", res.into_body().collect()).await.unwrap();
    status
}

/// The DER a fresh handshake for `name` is served.
async fn served_der(pki: &Pki, addr: SocketAddr, name: &str) -> Vec<u8> {
    peer_der(&connect(pki, addr, name, true, &["http/1.1"]).await.unwrap())
}

fn reloads(text: &str, result: &str) -> f64 {
    admin_support::sample(
        &parse_exposition(text),
        "seawall_tls_certificate_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

#[cfg(unix)]
#[tokio::test]
async fn a_swapped_certificate_serves_new_handshakes_while_old_connections_carry_on() {
    let pki = Pki::new("swap");
    // Kubernetes' layout: the configured paths go through a `..data` symlink that is swapped
    // to a new directory at once.
    let v1 = pki.dir.0.join("v1");
    let v2 = pki.dir.0.join("v2");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    let first = pki.leaf("first", &["a.test"]);
    let second = pki.leaf("second", &["a.test"]);
    std::fs::copy(&first.cert_file, v1.join("tls.crt")).unwrap();
    std::fs::copy(&first.key_file, v1.join("tls.key")).unwrap();
    std::fs::copy(&second.cert_file, v2.join("tls.crt")).unwrap();
    std::fs::copy(&second.key_file, v2.join("tls.key")).unwrap();
    let data = pki.dir.0.join("..data");
    std::os::unix::fs::symlink("v1", &data).unwrap();
    let entry = format!(
        "[[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n",
        data.join("tls.crt").display().to_string(),
        data.join("tls.key").display().to_string()
    );
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("x"))
        .start()
        .await;
    let cfg = write_config(
        &pki,
        "swap.toml",
        &origin.url(),
        "watch_interval = \"200ms\"",
        &[entry],
    );
    let proxy = TestProxy::from_file(&cfg).await;
    let addr = tls_addr(&proxy);

    let old = connect(&pki, addr, "a.test", true, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_der(&old), first.der);
    let mut old = h1_over(old).await;
    assert_eq!(h1_send(&mut old, "a.test", "/").await, StatusCode::OK);

    let next = pki.dir.0.join("..data.next");
    std::os::unix::fs::symlink("v2", &next).unwrap();
    std::fs::rename(&next, &data).unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_der(&pki, addr, "a.test").await != second.der {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection made before the swap carries on.
    assert_eq!(h1_send(&mut old, "a.test", "/").await, StatusCode::OK);
    let text = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(reloads(&text, "ok"), 1.0, "{text}");
    assert_eq!(reloads(&text, "error"), 0.0, "{text}");
}

#[tokio::test]
async fn a_broken_certificate_keeps_the_running_one_and_the_reload_says_why() {
    let pki = Pki::new("broken");
    let a = pki.leaf("a", &["a.test"]);
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("x"))
        .start()
        .await;
    // No watcher: only the reload below reads the files.
    let tls = "watch_interval = \"0s\"";
    let cfg = write_config(
        &pki,
        "broken.toml",
        &origin.url(),
        tls,
        &[cert_entry(&a, "")],
    );
    let proxy = TestProxy::from_file(&cfg).await;
    let addr = tls_addr(&proxy);
    let old = connect(&pki, addr, "a.test", true, &["http/1.1"])
        .await
        .unwrap();
    let mut old = h1_over(old).await;
    assert_eq!(h1_send(&mut old, "a.test", "/").await, StatusCode::OK);

    std::fs::write(&a.cert_file, "not a certificate\n").unwrap();
    let (status, v) = admin_support::admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["tls"]["result"], "error", "{v}");
    assert_eq!(v["tls"]["file"], a.cert_file.display().to_string(), "{v}");
    assert!(
        v["tls"]["error"]
            .as_str()
            .unwrap()
            .contains("holds no PEM certificate"),
        "{v}"
    );
    assert_eq!(served_der(&pki, addr, "a.test").await, a.der);
    assert_eq!(h1_send(&mut old, "a.test", "/").await, StatusCode::OK);

    // A fixed file and a second certificate in the config: both served after a reload, with
    // no restart.
    let fixed = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test"]);
    write_config(
        &pki,
        "broken.toml",
        &origin.url(),
        tls,
        &[cert_entry(&fixed, ""), cert_entry(&b, "")],
    );
    let (status, v) = admin_support::admin_post(&proxy.admin_url("/admin/reload"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["tls"]["result"], "ok", "{v}");
    assert_eq!(v["tls"]["certificates"], 2, "{v}");
    assert_eq!(v["needs_restart"], serde_json::json!([]), "{v}");
    assert_eq!(served_der(&pki, addr, "a.test").await, fixed.der);
    assert_eq!(served_der(&pki, addr, "b.test").await, b.der);
    assert_eq!(h1_send(&mut old, "a.test", "/").await, StatusCode::OK);
    let text = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(reloads(&text, "ok"), 1.0, "{text}");
    assert_eq!(reloads(&text, "error"), 1.0, "{text}");
}

#[tokio::test]
async fn admin_tls_lists_the_served_certificates() {
    let pki = Pki::new("admin");
    let a = pki.leaf("a", &["a.test", "www.a.test"]);
    let soon = pki.leaf_until(
        "soon",
        &["soon.test"],
        Some(SystemTime::now() + Duration::from_secs(5 * 86_400 + 3600)),
    );
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("x"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "",
        "",
        &[cert_entry(&a, ""), cert_entry(&soon, "default = true")],
    ))
    .await;
    let (status, v) = admin_support::admin_get(&proxy.admin_url("/admin/tls")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let certs = v["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{v}");
    let (first, second) = (&certs[0], &certs[1]);
    assert_eq!(
        first["names"],
        serde_json::json!(["a.test", "www.a.test"]),
        "{v}"
    );
    assert_eq!(first["issuer"], "CN=Seawall test CA", "{v}");
    assert_eq!(first["file"], a.cert_file.display().to_string(), "{v}");
    assert_eq!(first["default"], false, "{v}");
    let digest = ring::digest::digest(&ring::digest::SHA256, &a.der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first["sha256"], hex, "{v}");
    assert!(first["days_left"].as_i64().unwrap() > 365 * 100, "{v}");
    assert_eq!(second["default"], true, "{v}");
    assert_eq!(second["days_left"], 5, "{v}");
    let unix = second["not_after_unix"].as_u64().unwrap();
    let rfc = second["not_after"].as_str().unwrap();
    assert_eq!(
        humantime::parse_rfc3339(rfc)
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        unix,
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Edge conveniences: https_redirect, HSTS, key_scheme
// ---------------------------------------------------------------------------------------------

/// A GET on the cleartext listener for `host`.
async fn plain_get(proxy: &TestProxy, host: &str, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    request(
        Request::get(proxy.url(path))
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

/// A GET over a fresh TLS connection for `host`.
async fn secure_get(
    pki: &Pki,
    proxy: &TestProxy,
    host: &str,
    path: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let s = connect(pki, tls_addr(proxy), host, true, &["http/1.1"])
        .await
        .unwrap();
    tls_get(s, host, path).await
}

#[tokio::test]
async fn https_redirect_sends_cleartext_to_the_tls_port_except_acme_challenges() {
    let pki = Pki::new("redirect");
    let a = pki.leaf("a", &["a.test"]);
    let origin = MockOrigin::new()
        .route("/some/path", MockResponse::ok("x"))
        .route("/.well-known/acme-challenge/token", MockResponse::ok("x"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "https_redirect = true",
        "",
        &[cert_entry(&a, "")],
    ))
    .await;
    let port = tls_addr(&proxy).port();
    let (status, headers, _) = plain_get(&proxy, "a.test:8080", "/some/path?x=1&y=%20").await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        headers[http::header::LOCATION],
        format!("https://a.test:{port}/some/path?x=1&y=%20").as_str()
    );
    assert!(
        cache_status(&headers).contains("detail=https-redirect"),
        "{headers:?}"
    );
    // ACME HTTP-01 challenges pass through (the default exemption).
    let (status, _, body) = plain_get(&proxy, "a.test", "/.well-known/acme-challenge/token").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "x");
    // TLS requests are served.
    let (status, _, _) = secure_get(&pki, &proxy, "a.test", "/some/path").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.hits("/some/path"), 1);

    // Behind a port mapping (a Service's 443 → 8443) the public port is named, 443 left out.
    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "https_redirect = true\nhttps_redirect_port = 443",
        "",
        &[cert_entry(&a, "")],
    ))
    .await;
    let (status, headers, _) = plain_get(&proxy, "a.test", "/p").await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[http::header::LOCATION], "https://a.test/p");
}

#[tokio::test]
async fn hsts_is_added_on_tls_responses_only() {
    let pki = Pki::new("hsts");
    let a = pki.leaf("a", &["a.test"]);
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("x"))
        .start()
        .await;
    let proxy = TestProxy::with_config(&tls_config(
        &origin.url(),
        "",
        "hsts = \"max-age=31536000\"",
        &[cert_entry(&a, "")],
    ))
    .await;
    let (status, headers, _) = secure_get(&pki, &proxy, "a.test", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[http::header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000"
    );
    // Answers Seawall makes itself (here a 421) carry it too.
    let s = connect(&pki, tls_addr(&proxy), "a.test", true, &["http/1.1"])
        .await
        .unwrap();
    let (status, headers, _) = tls_get(s, "other.test", "/").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(headers.contains_key(http::header::STRICT_TRANSPORT_SECURITY));
    let (status, headers, _) = plain_get(&proxy, "a.test", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !headers.contains_key(http::header::STRICT_TRANSPORT_SECURITY),
        "{headers:?}"
    );
}

#[tokio::test]
async fn key_scheme_stores_https_and_http_apart_and_admin_urls_follow_it() {
    let pki = Pki::new("scheme");
    let a = pki.leaf("a", &["a.test", "k.test"]);
    let origin = MockOrigin::new()
        .route(
            "/c",
            MockResponse::ok("cached").header("cache-control", "max-age=300"),
        )
        .start()
        .await;
    let cfg = format!(
        "[server]\nlisten_tls = \"127.0.0.1:0\"\n\n{}\n\
         [[upstreams]]\nname = \"origin\"\nendpoints = [{:?}]\n\n\
         [[routes]]\nupstream = \"origin\"\nhost = \"k.test\"\nkey_scheme = true\n\n\
         [[routes]]\nupstream = \"origin\"\n\n[admin]\npurge_allow = [\"127.0.0.1/32\"]\n",
        cert_entry(&a, ""),
        origin.url()
    );
    let proxy = TestProxy::with_config(&cfg).await;
    let is_hit = |h: &HeaderMap| cache_status(h).contains("hit");

    // k.test keys on the scheme: the TLS fetch does not serve cleartext, nor the other way.
    let (_, h, _) = secure_get(&pki, &proxy, "k.test", "/c").await;
    assert!(!is_hit(&h));
    let (_, h, _) = plain_get(&proxy, "k.test", "/c").await;
    assert!(!is_hit(&h), "{}", cache_status(&h));
    assert_eq!(origin.hits("/c"), 2);
    let (_, h, _) = secure_get(&pki, &proxy, "k.test", "/c").await;
    assert!(is_hit(&h));
    let (_, h, _) = plain_get(&proxy, "k.test", "/c").await;
    assert!(is_hit(&h));
    assert_eq!(origin.hits("/c"), 2);

    // Admin URLs name the scheme's own entry on k.test ...
    let (status, v) =
        admin_support::admin_get(&proxy.admin_url("/admin/cache/entry?url=https://k.test/c")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = admin_support::admin_post(
        &proxy.admin_url("/admin/cache/purge"),
        r#"{"url": "https://k.test/c"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, h, _) = plain_get(&proxy, "k.test", "/c").await;
    assert!(is_hit(&h), "the http entry stays: {}", cache_status(&h));
    let (_, h, _) = secure_get(&pki, &proxy, "k.test", "/c").await;
    assert!(!is_hit(&h), "{}", cache_status(&h));
    assert_eq!(origin.hits("/c"), 3);

    // A PURGE sent over TLS names the https entry, as a GET over TLS does; http stays.
    let (_, h, _) = secure_get(&pki, &proxy, "k.test", "/c").await;
    assert!(is_hit(&h), "{}", cache_status(&h));
    let s = connect(&pki, tls_addr(&proxy), "k.test", true, &["http/1.1"])
        .await
        .unwrap();
    let mut send = h1_over(s).await;
    let req = Request::builder()
        .method("PURGE")
        .uri("/c")
        .header(http::header::HOST, "k.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = bounded("purge", send.send_request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = bounded("body", res.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["purged"], 1, "{v}");
    assert!(v["key"].as_str().unwrap().starts_with("https://"), "{v}");
    let (_, h, _) = plain_get(&proxy, "k.test", "/c").await;
    assert!(is_hit(&h), "the http entry stays: {}", cache_status(&h));
    let (_, h, _) = secure_get(&pki, &proxy, "k.test", "/c").await;
    assert!(!is_hit(&h), "{}", cache_status(&h));
    assert_eq!(origin.hits("/c"), 4);

    // ... and the same entry as http:// elsewhere (one entry for both schemes).
    let (_, h, _) = secure_get(&pki, &proxy, "a.test", "/c").await;
    assert!(!is_hit(&h));
    let (_, h, _) = plain_get(&proxy, "a.test", "/c").await;
    assert!(is_hit(&h));
    let (status, v) =
        admin_support::admin_get(&proxy.admin_url("/admin/cache/entry?url=https://a.test/c")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = admin_support::admin_post(
        &proxy.admin_url("/admin/cache/purge"),
        r#"{"url": "https://a.test/c"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["keys"], 1, "{v}");
    let (_, h, _) = plain_get(&proxy, "a.test", "/c").await;
    assert!(!is_hit(&h), "{}", cache_status(&h));
}

// ---------------------------------------------------------------------------------------------
// Client certificates: tls.client_auth, client_subject_header, upstream mutual TLS
// ---------------------------------------------------------------------------------------------

impl Pki {
    /// The CA certificate as a PEM file (what `client_ca_file` and `ca_file` name).
    fn ca_file(&self) -> PathBuf {
        let path = self.dir.0.join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    /// A client certificate with subject `CN=<cn>` (no subjectAltName).
    fn client_leaf(&self, file: &str, cn: &str) -> Leaf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_file = self.dir.0.join(format!("{file}.pem"));
        let key_file = self.dir.0.join(format!("{file}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Leaf {
            cert_file,
            key_file,
            der: cert.der().to_vec(),
        }
    }

    /// A client trusting this CA that presents `leaf` when asked.
    fn client_presenting(&self, leaf: &Leaf) -> TlsConnector {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::from_pem_file(&leaf.key_file).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![CertificateDer::from(leaf.der.clone())], key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(cfg))
    }
}

/// A GET over a connection made by `connector` for `a.test`, with `extra` headers; `Err` when
/// the handshake or the exchange fails (TLS 1.3 clients learn of a refused certificate only
/// at their first read).
async fn get_via(
    connector: &TlsConnector,
    addr: SocketAddr,
    extra: &[(&str, &str)],
) -> Result<StatusCode, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("a.test").unwrap();
    let s = bounded("handshake", connector.connect(name, tcp))
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::get("/who").header(http::header::HOST, "a.test");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = bounded(
        "request",
        send.send_request(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(res.status())
}

fn client_auth_config(pki: &Pki, origin: &str, a: &Leaf, mode: &str) -> String {
    let tls = format!(
        "client_ca_file = {:?}\nclient_auth = {mode:?}\nclient_subject_header = \"x-client-subject\"",
        pki.ca_file().display().to_string()
    );
    tls_config(origin, "", &tls, &[cert_entry(a, "")])
}

#[tokio::test]
async fn required_client_certificates_are_verified_and_their_subject_reaches_the_origin() {
    let pki = Pki::new("mtls-required");
    let a = pki.leaf("a", &["a.test"]);
    let client = pki.client_leaf("client", "Doe, Jane");
    let origin = MockOrigin::new()
        .route("/who", MockResponse::ok("x"))
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&client_auth_config(&pki, &origin.url(), &a, "required")).await;
    let addr = tls_addr(&proxy);

    // Without a certificate: no request gets through.
    let anonymous = get_via(&pki.client(&["http/1.1"], true), addr, &[]).await;
    assert!(anonymous.is_err(), "{anonymous:?}");
    assert_eq!(origin.hits("/who"), 0);

    // With one the CA signed, and a forged header beside it: only the verified subject arrives.
    let status = get_via(
        &pki.client_presenting(&client),
        addr,
        &[("x-client-subject", "CN=admin")],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/who");
    let values: Vec<_> = seen[0].get_all("x-client-subject").iter().collect();
    assert_eq!(values, ["CN=Doe\\, Jane"], "{seen:?}");

    // A certificate from another CA is refused.
    let other = Pki::new("mtls-other");
    let stranger = other.client_leaf("stranger", "stranger");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca.der().to_vec()))
        .unwrap();
    let key = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::PrivateKeyDer::from_pem_file(&stranger.key_file).unwrap()
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![CertificateDer::from(stranger.der.clone())], key)
    .unwrap();
    let refused = get_via(&TlsConnector::from(Arc::new(cfg)), addr, &[]).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(origin.hits("/who"), 1);
}

#[tokio::test]
async fn a_forged_subject_header_never_reaches_the_origin() {
    let pki = Pki::new("mtls-optional");
    let a = pki.leaf("a", &["a.test"]);
    let origin = MockOrigin::new()
        .route("/who", MockResponse::ok("x"))
        .start()
        .await;
    let proxy =
        TestProxy::with_config(&client_auth_config(&pki, &origin.url(), &a, "optional")).await;
    // Optional: a client without a certificate is served, its forged header dropped.
    let status = get_via(
        &pki.client(&["http/1.1"], true),
        tls_addr(&proxy),
        &[("x-client-subject", "CN=admin")],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    // So is the cleartext listener's.
    let (status, _, _) = request(
        Request::get(proxy.url("/who"))
            .header(http::header::HOST, "a.test")
            .header("x-client-subject", "CN=admin")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/who");
    assert_eq!(seen.len(), 2);
    for h in &seen {
        assert!(!h.contains_key("x-client-subject"), "{h:?}");
    }
}

/// An HTTPS origin on `localhost` that requires a client certificate from `pki`'s CA and
/// answers `mtls ok`.
async fn mtls_origin(pki: &Pki) -> SocketAddr {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let leaf = pki.leaf("origin", &["localhost"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca.der().to_vec()))
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(leaf.der.clone())],
            PrivateKeyDer::from_pem_file(&leaf.key_file).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"mtls ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_requiring_client_certificates_is_reached_with_the_configured_one() {
    let pki = Pki::new("upstream-mtls");
    let origin = mtls_origin(&pki).await;
    let client = pki.client_leaf("seawall-client", "seawall");
    let upstream = |extra: &str| {
        format!(
            "[[upstreams]]\nname = \"origin\"\nendpoints = [\"https://localhost:{}\"]\n\
             ca_file = {:?}\n{extra}\n\n[[routes]]\nupstream = \"origin\"\n",
            origin.port(),
            pki.ca_file().display().to_string()
        )
    };
    let with_cert = upstream(&format!(
        "client_cert_file = {:?}\nclient_key_file = {:?}",
        client.cert_file.display().to_string(),
        client.key_file.display().to_string()
    ));
    let proxy = TestProxy::with_config(&with_cert).await;
    let (status, _, body) = request(
        Request::get(proxy.url("/x"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(body, "mtls ok");

    // Without it the origin refuses the handshake: a 502.
    let proxy = TestProxy::with_config(&upstream("")).await;
    let (status, _, _) = request(
        Request::get(proxy.url("/x"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

// ---------------------------------------------------------------------------------------------
// Admin over TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_admin_listener_serves_tls_with_the_default_certificate() {
    let pki = Pki::new("admin-tls");
    let b = pki.leaf("b", &["b.test"]);
    let a = pki.leaf("a", &["a.test"]);
    let origin = MockOrigin::new()
        .route("/", MockResponse::ok("x"))
        .start()
        .await;
    // No TLS data listener: the certificates serve the admin listener alone.
    let cfg = format!(
        "[admin]\ntls = true\n\n{}{}\n{}",
        cert_entry(&b, ""),
        cert_entry(&a, "default = true"),
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;
    assert!(proxy.running().tls_addr.is_none());
    let admin = proxy.admin_addr;

    // Whatever name the client asks for, it gets the default certificate (a.test).
    let s = connect(&pki, admin, "a.test", false, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_der(&s), a.der);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (path, auth, want) in [
        ("/healthz", None, StatusCode::OK),
        ("/admin/tls", None, StatusCode::UNAUTHORIZED),
        ("/admin/tls", Some(TEST_ADMIN_TOKEN), StatusCode::OK),
    ] {
        let mut req = Request::get(path).header(http::header::HOST, "a.test");
        if let Some(t) = auth {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        bounded("ready", send.ready()).await.unwrap();
        let res = bounded(
            "admin request",
            send.send_request(req.body(Full::new(Bytes::new())).unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), want, "{path}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        if want == StatusCode::OK && path == "/admin/tls" {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["certificates"].as_array().unwrap().len(), 2, "{v}");
        }
    }
    // HTTP/2 by ALPN too.
    let s = connect(&pki, admin, "a.test", true, &["h2"]).await.unwrap();
    assert_eq!(tls_get(s, "a.test", "/healthz").await.0, StatusCode::OK);
    // Cleartext HTTP gets no HTTP answer.
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET /healthz HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
}

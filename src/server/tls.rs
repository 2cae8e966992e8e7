//! TLS termination for `server.listen_tls`: `[[tls.certificates]]` loaded and checked, chosen by
//! SNI (a rustls `ResolvesServerCert`), the bounded handshake each connection task runs, and its metrics.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::file::TlsSection;
use crate::http_util::conn::{HostPattern, TlsConn};

/// A certificate within this long of its end is a warning in `check` and at start.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// One `[[tls.certificates]]` entry, read and checked.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Arc<[HostPattern]>,
    /// `tls.certificates[i].cert_file` and its path, for messages.
    what: String,
    /// The metric's `name` label: the first host name, else the file name.
    label: String,
    not_after: Option<SystemTime>,
}

/// Every configured certificate and the SNI policy: what the resolver chooses from.
#[derive(Debug)]
pub(crate) struct Certificates {
    certs: Vec<Loaded>,
    default: usize,
    refuse_unknown: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Certificates {
    /// Reads every `[[tls.certificates]]` entry: an unreadable file, a PEM without a
    /// certificate or a key, a key its certificate does not match, or a certificate without
    /// names (and no `hosts`) is an error naming the file.
    pub(crate) fn load(cfg: &TlsSection) -> anyhow::Result<Self> {
        let provider = provider();
        let mut certs = Vec::with_capacity(cfg.certificates.len());
        for (i, c) in cfg.certificates.iter().enumerate() {
            let cert_what = format!("tls.certificates[{i}].cert_file {}", c.cert_file);
            let key_what = format!("tls.certificates[{i}].key_file {}", c.key_file);
            let cert_pem =
                std::fs::read(&c.cert_file).with_context(|| format!("{cert_what}: cannot read"))?;
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("{cert_what}: not a PEM certificate chain: {e}"))?;
            let Some(leaf) = chain.first() else {
                anyhow::bail!("{cert_what}: holds no PEM certificate");
            };
            let key_pem =
                std::fs::read(&c.key_file).with_context(|| format!("{key_what}: cannot read"))?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                anyhow::anyhow!(
                    "{key_what}: holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {e}"
                )
            })?;
            let signing = provider
                .key_provider
                .load_private_key(key_der)
                .map_err(|e| anyhow::anyhow!("{key_what}: unusable private key: {e}"))?;
            let parsed = webpki::EndEntityCert::try_from(leaf)
                .map_err(|e| anyhow::anyhow!("{cert_what}: not an X.509 certificate: {e:?}"))?;
            let names: Vec<HostPattern> = match &c.hosts {
                Some(hosts) => hosts.iter().filter_map(|h| HostPattern::parse(h)).collect(),
                None => parsed
                    .valid_dns_names()
                    .filter_map(HostPattern::parse)
                    .collect(),
            };
            if names.is_empty() {
                anyhow::bail!(
                    "{cert_what}: the certificate names no DNS host in its subjectAltName; \
                     list them in `hosts`"
                );
            }
            let not_after = not_after(leaf);
            let key = CertifiedKey::new(chain.clone(), signing);
            match key.keys_match() {
                Ok(()) => {}
                Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
                Err(e) => anyhow::bail!(
                    "{key_what}: the key does not match the certificate in {}: {e}",
                    c.cert_file
                ),
            }
            let file_name = Path::new(&c.cert_file)
                .file_name()
                .map_or_else(|| c.cert_file.clone(), |n| n.to_string_lossy().into_owned());
            let label = names
                .first()
                .map_or(file_name, std::string::ToString::to_string);
            certs.push(Loaded {
                key: Arc::new(key),
                names: names.into(),
                what: cert_what,
                label,
                not_after,
            });
        }
        let default = cfg.certificates.iter().position(|c| c.default).unwrap_or(0);
        Ok(Self {
            certs,
            default,
            refuse_unknown: cfg.unknown_sni == "refuse",
        })
    }

    /// A line for each certificate past its end or ending within 14 days of `now`.
    pub(crate) fn expiry_warnings(&self, now: SystemTime) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.certs {
            let Some(end) = c.not_after else { continue };
            let at = humantime::format_rfc3339_seconds(end);
            match end.duration_since(now) {
                Err(_) => out.push(format!("{}: the certificate expired at {at}", c.what)),
                Ok(left) if left < EXPIRY_WARNING => out.push(format!(
                    "{}: the certificate expires in {} days, at {at}",
                    c.what,
                    left.as_secs() / 86_400
                )),
                Ok(_) => {}
            }
        }
        out
    }

    /// The entry for a client's SNI: an exact host first, then a wildcard, in file order;
    /// without a match the default entry, or none when unknown names are refused.
    fn pick(&self, sni: Option<&str>) -> Option<usize> {
        let found = sni.and_then(|name| {
            let exact = |p: &HostPattern| matches!(p, HostPattern::Exact(_)) && p.matches(name);
            let wild = |p: &HostPattern| matches!(p, HostPattern::Wildcard(_)) && p.matches(name);
            self.certs
                .iter()
                .position(|c| c.names.iter().any(exact))
                .or_else(|| self.certs.iter().position(|c| c.names.iter().any(wild)))
        });
        match found {
            Some(i) => Some(i),
            None if self.refuse_unknown => None,
            None => Some(self.default),
        }
    }
}

/// Chooses the certificate by SNI (never by anything the request says later).
#[derive(Debug)]
struct SniResolver(Arc<Certificates>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.0.pick(hello.server_name())?;
        self.0.certs.get(i).map(|c| c.key.clone())
    }
}

/// `seawall_tls_*`, registered by the TLS listener on the injected registry.
#[derive(Clone, Debug)]
struct TlsMetrics {
    handshakes: prometheus::IntCounterVec,
}

impl TlsMetrics {
    fn register(r: &prometheus::Registry, certs: &Certificates) -> prometheus::Result<Self> {
        let handshakes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "seawall_tls_handshakes_total",
                "TLS handshakes on server.listen_tls by result (ok, error, timeout), protocol \
                 version and negotiated ALPN protocol.",
            ),
            &["result", "version", "alpn"],
        )?;
        r.register(Box::new(handshakes.clone()))?;
        let expiry = prometheus::GaugeVec::new(
            prometheus::Opts::new(
                "seawall_tls_certificate_expiry_timestamp_seconds",
                "End of validity (notAfter, Unix seconds) of each served certificate, by its \
                 first host name.",
            ),
            &["name"],
        )?;
        r.register(Box::new(expiry.clone()))?;
        for c in &certs.certs {
            if let Some(end) = c.not_after {
                let secs = end
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                expiry.with_label_values(&[c.label.as_str()]).set(secs);
            }
        }
        Ok(Self { handshakes })
    }

    fn count(&self, result: &str, version: &str, alpn: &str) {
        self.handshakes
            .with_label_values(&[result, version, alpn])
            .inc();
    }
}

/// The TLS side of the TLS listener: hands each accepted TCP stream through its handshake.
pub(crate) struct TlsServer {
    acceptor: TlsAcceptor,
    certs: Arc<Certificates>,
    handshake_timeout: Duration,
    metrics: TlsMetrics,
}

impl TlsServer {
    /// The rustls server (ring; TLS 1.2 and 1.3 or 1.3 only; ALPN `h2`, `http/1.1`) over
    /// `certs`, with its metrics on `registry`.
    pub(crate) fn new(
        cfg: &TlsSection,
        certs: Certificates,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Self> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_version.as_str()
        {
            "1.3" => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let certs = Arc::new(certs);
        let mut sc = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .context("tls.min_version")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver(certs.clone())));
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let metrics = TlsMetrics::register(registry, &certs)
            .map_err(|e| anyhow::anyhow!("tls metrics: {e}"))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(sc)),
            certs,
            handshake_timeout: cfg.handshake_timeout,
            metrics,
        })
    }

    /// Runs the handshake on `stream`, at most `handshake_timeout`; `None` (counted, logged at
    /// debug) when it failed or timed out: the caller just drops the connection.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, TlsConn)> {
        let s = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
        {
            Err(_) => {
                tracing::debug!(peer = %peer, "TLS handshake timed out.");
                self.metrics.count("timeout", "", "");
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed.");
                self.metrics.count("error", "", "");
                return None;
            }
            Ok(Ok(s)) => s,
        };
        let (_, conn) = s.get_ref();
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
            _ => "",
        };
        let alpn = match conn.alpn_protocol() {
            Some(b"h2") => "h2",
            Some(b"http/1.1") => "http/1.1",
            _ => "",
        };
        let sni = conn.server_name().map(Into::into);
        // The resolver's choice again, from the same SNI: the names of the certificate sent.
        let names = self
            .certs
            .pick(conn.server_name())
            .and_then(|i| self.certs.certs.get(i))
            .map_or_else(|| Arc::from(Vec::new()), |c| c.names.clone());
        self.metrics.count("ok", version, alpn);
        Some((s, TlsConn { sni, alpn, names }))
    }
}

/// One DER element: (tag, contents, what follows).
fn der(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, d) = d.split_first()?;
    let (&first, d) = d.split_first()?;
    let (len, d) = if first < 0x80 {
        (usize::from(first), d)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || d.len() < n {
            return None;
        }
        let len = d[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &d[n..])
    };
    (d.len() >= len).then(|| (tag, &d[..len], &d[len..]))
}

/// The certificate's notAfter (RFC 5280 §4.1.2.5), read by walking the DER: webpki checks
/// validity but does not expose it, and this is all we need of X.509.
fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, certificate, _) = der(cert.as_ref())?;
    let (_, tbs, _) = der(certificate)?;
    let (tag, _, after_version) = der(tbs)?;
    let serial = if tag == 0xa0 { after_version } else { tbs };
    let (_, _, rest) = der(serial)?; // serialNumber
    let (_, _, rest) = der(rest)?; // signature
    let (_, _, rest) = der(rest)?; // issuer
    let (_, validity, _) = der(rest)?;
    let (_, _, rest) = der(validity)?; // notBefore
    let (tag, time, _) = der(rest)?;
    let time = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let full = match tag {
        // UTCTime, YYMMDDHHMMSS: years 50-99 are 19xx (RFC 5280 §4.1.2.5.1).
        0x17 if time.len() == 12 => {
            let yy: u32 = time[..2].parse().ok()?;
            format!("{}{time}", if yy >= 50 { "19" } else { "20" })
        }
        // GeneralizedTime, YYYYMMDDHHMMSS.
        0x18 if time.len() == 14 => time.to_string(),
        _ => return None,
    };
    if !full.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

#[cfg(test)]
mod tests;

//! TLS termination for `server.listen_tls`: `[[tls.certificates]]` loaded and checked, chosen by
//! SNI (a rustls `ResolvesServerCert`), reloaded without a restart, the bounded handshake each
//! connection task runs, and its metrics.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
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
    /// The certificate file, as configured.
    file: String,
    /// The leaf's issuer, RFC 4514.
    issuer: String,
    /// SHA-256 of the leaf's DER, lowercase hex.
    sha256: String,
}

/// What a certificate or key file looked like when it was read: a change of either is what
/// the watcher reloads on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    path: String,
    modified: Option<SystemTime>,
    hash: Option<[u8; 32]>,
}

impl Seen {
    /// Through the path (so a Kubernetes `..data` symlink swap is seen), never the inode.
    fn of(path: &str, bytes: Option<&[u8]>) -> Self {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let hash = bytes.map(sha256);
        Self {
            path: path.to_string(),
            modified,
            hash,
        }
    }

    /// Every file `cfg` names, as it is now.
    fn now(cfg: &TlsSection) -> Vec<Self> {
        let mut out = Vec::with_capacity(cfg.certificates.len() * 2);
        for c in &cfg.certificates {
            for path in [&c.cert_file, &c.key_file] {
                let bytes = std::fs::read(path).ok();
                out.push(Self::of(path, bytes.as_deref()));
            }
        }
        out
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Why `[tls]` could not be loaded: the file and the reason, for messages and the reload
/// answer.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct CertError {
    /// The file that failed (empty when no one file is to blame).
    pub(crate) file: String,
    /// Why.
    pub(crate) error: String,
    /// `tls.certificates[i].cert_file` (or `key_file`), for the message.
    #[serde(skip)]
    what: String,
}

impl CertError {
    fn new(what: &str, file: &str, error: impl fmt::Display) -> Self {
        Self {
            file: file.to_string(),
            error: error.to_string(),
            what: what.to_string(),
        }
    }
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "{}: {}", self.what, self.error)
        } else {
            write!(f, "{} {}: {}", self.what, self.file, self.error)
        }
    }
}

impl std::error::Error for CertError {}

/// Every configured certificate and the SNI policy: what the resolver chooses from.
#[derive(Debug)]
pub(crate) struct Certificates {
    certs: Vec<Loaded>,
    default: usize,
    refuse_unknown: bool,
    /// The files as they were read.
    seen: Vec<Seen>,
}

/// One certificate as `GET /admin/tls` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct CertView {
    /// The host names it serves.
    pub(crate) names: Vec<String>,
    /// The issuer's distinguished name (RFC 4514).
    pub(crate) issuer: String,
    /// End of validity, RFC 3339.
    pub(crate) not_after: Option<String>,
    /// End of validity, Unix seconds.
    pub(crate) not_after_unix: Option<u64>,
    /// Whole days until then (negative once past).
    pub(crate) days_left: Option<i64>,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub(crate) sha256: String,
    /// The certificate file.
    pub(crate) file: String,
    /// Whether clients without SNI or with an unknown name get it.
    pub(crate) default: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Certificates {
    /// Reads every `[[tls.certificates]]` entry: an unreadable file, a PEM without a
    /// certificate or a key, a key its certificate does not match, or a certificate without
    /// names (and no `hosts`) is an error naming the file.
    pub(crate) fn load(cfg: &TlsSection) -> anyhow::Result<Self> {
        Ok(Self::read(cfg)?)
    }

    /// `load`, with the failing file and the reason apart (what a reload reports).
    fn read(cfg: &TlsSection) -> Result<Self, CertError> {
        let provider = provider();
        let mut certs = Vec::with_capacity(cfg.certificates.len());
        let mut seen = Vec::with_capacity(cfg.certificates.len() * 2);
        for (i, c) in cfg.certificates.iter().enumerate() {
            let cw = format!("tls.certificates[{i}].cert_file");
            let kw = format!("tls.certificates[{i}].key_file");
            let cert_err = |e: String| CertError::new(&cw, &c.cert_file, e);
            let key_err = |e: String| CertError::new(&kw, &c.key_file, e);
            let cert_pem =
                std::fs::read(&c.cert_file).map_err(|e| cert_err(format!("cannot read: {e}")))?;
            seen.push(Seen::of(&c.cert_file, Some(&cert_pem)));
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
            let Some(leaf) = chain.first() else {
                return Err(cert_err("holds no PEM certificate".into()));
            };
            let key_pem =
                std::fs::read(&c.key_file).map_err(|e| key_err(format!("cannot read: {e}")))?;
            seen.push(Seen::of(&c.key_file, Some(&key_pem)));
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                key_err(format!(
                    "holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {e}"
                ))
            })?;
            let signing = provider
                .key_provider
                .load_private_key(key_der)
                .map_err(|e| key_err(format!("unusable private key: {e}")))?;
            let facts = x509::facts(leaf.as_ref())
                .ok_or_else(|| cert_err("not an X.509 certificate".into()))?;
            let names: Vec<HostPattern> = match &c.hosts {
                Some(hosts) => hosts.iter().filter_map(|h| HostPattern::parse(h)).collect(),
                // Its subjectAltNames: DNS names (webpki's rules for a valid one) and addresses.
                None => facts
                    .dns
                    .iter()
                    .filter_map(|d| HostPattern::parse(d))
                    .chain(facts.ips.iter().copied().map(HostPattern::Ip))
                    .collect(),
            };
            if names.is_empty() {
                return Err(cert_err(
                    "the certificate names no host (DNS name or IP address) in its \
                     subjectAltName; list them in `hosts`"
                        .into(),
                ));
            }
            let not_after = facts.not_after;
            let issuer = facts.issuer;
            let fingerprint = hex(&sha256(leaf.as_ref()));
            let key = CertifiedKey::new(chain.clone(), signing);
            match key.keys_match() {
                Ok(()) => {}
                Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
                Err(e) => {
                    return Err(key_err(format!(
                        "the key does not match the certificate in {}: {e}",
                        c.cert_file
                    )));
                }
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
                what: format!("{cw} {}", c.cert_file),
                label,
                not_after,
                file: c.cert_file.clone(),
                issuer,
                sha256: fingerprint,
            });
        }
        let default = cfg.certificates.iter().position(|c| c.default).unwrap_or(0);
        Ok(Self {
            certs,
            default,
            refuse_unknown: cfg.unknown_sni == "refuse",
            seen,
        })
    }

    /// Each certificate as `GET /admin/tls` lists it, seen from `now`.
    pub(crate) fn views(&self, now: SystemTime) -> Vec<CertView> {
        self.certs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let unix = c.not_after.and_then(|t| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs())
                });
                let days_left = c.not_after.map(|end| match end.duration_since(now) {
                    Ok(d) => (d.as_secs() / 86_400) as i64,
                    Err(e) => -((e.duration().as_secs() / 86_400) as i64) - 1,
                });
                CertView {
                    names: c.names.iter().map(ToString::to_string).collect(),
                    issuer: c.issuer.clone(),
                    not_after: c
                        .not_after
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                    not_after_unix: unix,
                    days_left,
                    sha256: c.sha256.clone(),
                    file: c.file.clone(),
                    default: i == self.default,
                }
            })
            .collect()
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
    expiry: prometheus::GaugeVec,
    reloads: prometheus::IntCounterVec,
}

impl TlsMetrics {
    fn register(r: &prometheus::Registry) -> prometheus::Result<Self> {
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
        let reloads = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "seawall_tls_certificate_reloads_total",
                "Certificate reloads (SIGHUP, POST /admin/reload, a changed file) by result \
                 (ok, error: the running certificates stay).",
            ),
            &["result"],
        )?;
        r.register(Box::new(reloads.clone()))?;
        Ok(Self {
            handshakes,
            expiry,
            reloads,
        })
    }

    /// The expiry gauge for exactly the certificates served (a reload may drop some).
    fn set_expiry(&self, certs: &Certificates) {
        self.expiry.reset();
        for c in &certs.certs {
            if let Some(end) = c.not_after {
                let secs = end
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.expiry.with_label_values(&[c.label.as_str()]).set(secs);
            }
        }
    }

    fn count(&self, result: &str, version: &str, alpn: &str) {
        self.handshakes
            .with_label_values(&[result, version, alpn])
            .inc();
    }
}

/// What new handshakes use: the rustls server and the certificates its resolver chooses from,
/// swapped whole by a reload (a connection keeps the one it shook hands with).
struct Live {
    acceptor: TlsAcceptor,
    certs: Arc<Certificates>,
    cfg: TlsSection,
}

impl Live {
    /// The rustls server (ring; TLS 1.2 and 1.3 or 1.3 only; ALPN `h2`, `http/1.1`) over
    /// `certs`.
    fn new(cfg: &TlsSection, certs: Certificates) -> Result<Self, CertError> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_version.as_str()
        {
            "1.3" => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let certs = Arc::new(certs);
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| CertError::new("tls.min_version", "", e))?;
        let builder = match (cfg.client_auth.as_deref(), cfg.client_ca_file.as_deref()) {
            (Some(mode), Some(ca)) => builder.with_client_cert_verifier(client_verifier(mode, ca)?),
            _ => builder.with_no_client_auth(),
        };
        let mut sc = builder.with_cert_resolver(Arc::new(SniResolver(certs.clone())));
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(sc)),
            certs,
            cfg: cfg.clone(),
        })
    }
}

/// Verifies client certificates against the CA bundle `ca`; `optional` lets clients without
/// one in (their requests just carry no subject).
fn client_verifier(
    mode: &str,
    ca: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, CertError> {
    let what = "tls.client_ca_file";
    let pem =
        std::fs::read(ca).map_err(|e| CertError::new(what, ca, format!("cannot read: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| CertError::new(what, ca, format!("not a PEM certificate: {e}")))?;
        roots
            .add(c)
            .map_err(|e| CertError::new(what, ca, format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(CertError::new(what, ca, "holds no PEM certificate"));
    }
    let b =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let b = if mode == "optional" {
        b.allow_unauthenticated()
    } else {
        b
    };
    b.build()
        .map_err(|e| CertError::new(what, ca, format!("cannot verify clients with it: {e}")))
}

/// What a certificate reload did, as `POST /admin/reload` reports it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct TlsReload {
    /// `ok` (new handshakes use the new certificates) or `error` (the running ones stay).
    pub(crate) result: &'static str,
    /// Certificates served now.
    pub(crate) certificates: usize,
    /// The file that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A `[tls]` read and checked, waiting to be installed (see `TlsServer::prepare`).
pub(crate) struct Prepared(Live);

/// The admin listener's choice: always the default certificate of the set being served.
#[derive(Debug)]
struct DefaultResolver(Arc<ArcSwap<Live>>);

impl ResolvesServerCert for DefaultResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let live = self.0.load();
        live.certs
            .certs
            .get(live.certs.default)
            .map(|c| c.key.clone())
    }
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

/// The TLS side of the TLS listener: hands each accepted TCP stream through its handshake.
pub(crate) struct TlsServer {
    live: Arc<ArcSwap<Live>>,
    metrics: TlsMetrics,
    /// One reload at a time (the watcher, SIGHUP and the admin API may meet).
    reloading: std::sync::Mutex<()>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("certificates", &self.live.load().certs.certs.len())
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// The TLS server over `certs` as `cfg` configures it, with its metrics on `registry`.
    pub(crate) fn new(
        cfg: &TlsSection,
        certs: Certificates,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Self> {
        let live = Live::new(cfg, certs)?;
        let metrics =
            TlsMetrics::register(registry).map_err(|e| anyhow::anyhow!("tls metrics: {e}"))?;
        metrics.set_expiry(&live.certs);
        Ok(Self {
            live: Arc::new(ArcSwap::from_pointee(live)),
            metrics,
            reloading: std::sync::Mutex::new(()),
        })
    }

    /// Reads `cfg`'s certificates without serving them yet: a config reload checks them
    /// before it commits to anything. A failure is counted and logged at WARN.
    pub(crate) fn prepare(&self, cfg: &TlsSection) -> Result<Prepared, CertError> {
        match Certificates::read(cfg).and_then(|c| Live::new(cfg, c)) {
            Ok(live) => Ok(Prepared(live)),
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::warn!(file = %e.file, error = %e.error, "TLS certificates not reloaded; the running ones stay.");
                Err(e)
            }
        }
    }

    /// Serves `p` to every new handshake from now on (established connections keep theirs).
    pub(crate) fn install(&self, p: Prepared) -> TlsReload {
        let live = p.0;
        self.metrics.set_expiry(&live.certs);
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        let n = live.certs.certs.len();
        for w in live.certs.expiry_warnings(SystemTime::now()) {
            tracing::warn!(warning = %w, "TLS certificate expiring.");
        }
        self.live.store(Arc::new(live));
        tracing::info!(certificates = n, "TLS certificates reloaded.");
        TlsReload {
            result: "ok",
            certificates: n,
            file: None,
            error: None,
        }
    }

    /// Reloads the certificates `cfg` names: new ones on success, else the running ones
    /// stay and the answer says which file failed and why.
    pub(crate) fn reload(&self, cfg: &TlsSection) -> TlsReload {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        match self.prepare(cfg) {
            Ok(p) => self.install(p),
            Err(e) => self.failed(e),
        }
    }

    /// The answer for a reload that kept the running certificates.
    pub(crate) fn failed(&self, e: CertError) -> TlsReload {
        TlsReload {
            result: "error",
            certificates: self.live.load().certs.certs.len(),
            file: Some(e.file),
            error: Some(e.error),
        }
    }

    /// The admin listener's TLS (`admin.tls`): the default certificate of whatever set is
    /// served (reloads included), no client certificates, ALPN `h2` and `http/1.1`.
    pub(crate) fn admin_acceptor(&self) -> Result<TlsAcceptor, rustls::Error> {
        let mut sc = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(DefaultResolver(self.live.clone())));
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(sc)))
    }

    /// The `[tls]` section being served.
    pub(crate) fn section(&self) -> TlsSection {
        self.live.load().cfg.clone()
    }

    /// The certificates being served, as `GET /admin/tls` lists them.
    pub(crate) fn views(&self) -> Vec<CertView> {
        self.live.load().certs.views(SystemTime::now())
    }

    /// Polls the served files every `every` (modification time and content hash, read through
    /// the path) and reloads when one changed; a broken file is reported once, until it
    /// changes again. Ends when the server is dropped.
    pub(crate) fn watch(self: &Arc<Self>, every: Duration) {
        let me: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut failed: Option<Vec<Seen>> = None;
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                let live = me.live.load_full();
                let cfg = live.cfg.clone();
                let now = tokio::task::spawn_blocking(move || Seen::now(&cfg))
                    .await
                    .unwrap_or_default();
                if now == live.certs.seen || failed.as_ref() == Some(&now) {
                    continue;
                }
                tracing::info!("A TLS certificate or key file changed; reloading.");
                let r = me.reload(&live.cfg);
                failed = (r.result == "error").then_some(now);
            }
        });
    }

    /// Runs the handshake on `stream`, at most `handshake_timeout`; `None` (counted, logged at
    /// debug) when it failed or timed out: the caller just drops the connection.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, TlsConn)> {
        // One generation for the whole handshake: the names below are those of the
        // certificate the resolver chose, even if a reload lands meanwhile.
        let live = self.live.load_full();
        let s = match tokio::time::timeout(live.cfg.handshake_timeout, live.acceptor.accept(stream))
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
        // Verified by the client verifier before the handshake completed.
        let client_subject = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| x509::subject_dn(leaf.as_ref()))
            .map(Into::into);
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("");
        let names = live
            .certs
            .pick(conn.server_name())
            .and_then(|i| live.certs.certs.get(i))
            .map_or_else(|| Arc::from(Vec::new()), |c| c.names.clone());
        self.metrics.count("ok", version, alpn);
        Some((
            s,
            TlsConn {
                sni,
                alpn,
                version,
                cipher,
                names,
                client_subject,
            },
        ))
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests;
mod x509;

//! The connection pool: one idle stack per endpoint, connections made (http or https) when
//! none is idle, checked back in when their response body ended; exchange errors classified.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::{Conn, Endpoint, Upstream};
use crate::body::ProxyBody;
use crate::error::{BoxError, ProxyError, TimeoutPhase, has_io_kind};

/// A pooled connection and when it went idle.
#[derive(Debug)]
pub(super) struct IdleConn {
    pub(super) tx: Conn,
    pub(super) since: Instant,
}

/// The rustls client for `https://` endpoints: `ca_file`'s roots (else webpki's) and, for
/// origins that ask for one, the client certificate and key in `client` (mutual TLS).
pub(super) fn tls_config(
    ca_file: Option<&str>,
    client: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, BoxError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| format!("ca_file {path}: {e}"))?
            {
                roots.add(cert.map_err(|e| format!("ca_file {path}: {e}"))?)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client_cert_file {cert}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("client_cert_file {cert}: holds no PEM certificate").into());
            }
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client_key_file {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("client_cert_file {cert} / client_key_file {key}: {e}"))?
        }
    })
}

impl Upstream {
    /// Sends `req` (origin-form) to endpoint `ep_idx` on an idle pooled connection, else on a
    /// new one. A request that a pooled connection could not take (closed while idle) goes
    /// on the next one: it was never sent.
    pub(super) async fn send(
        &self,
        ep_idx: usize,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Conn), ProxyError> {
        let ep = &self.endpoints[ep_idx];
        loop {
            let (mut tx, reused) = match self.checkout(ep) {
                Some(tx) => (tx, true),
                // Boxed: the connect and TLS handshake state would otherwise make every
                // request's future (moved by value a few times) several times larger.
                None => (Box::pin(self.connect(ep)).await?, false),
            };
            if tx.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(ProxyError::UpstreamReset(
                    "connection closed before the request".into(),
                ));
            }
            match tx.try_send_request(req).await {
                Ok(res) => return Ok((res, tx)),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(classify(&e.into_error())),
                },
            }
        }
    }

    pub(super) fn checkout(&self, ep: &Endpoint) -> Option<Conn> {
        let mut idle = ep.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop_back() {
            if !c.tx.is_closed() && c.since.elapsed() < self.cfg.pool_idle_timeout {
                return Some(c.tx);
            }
        }
        None
    }

    /// Pools a connection whose exchange ended cleanly; closes those idle too long.
    pub(super) fn checkin(&self, ep_idx: usize, tx: Conn) {
        let Some(ep) = self.endpoints.get(ep_idx) else {
            return;
        };
        if tx.is_closed() || self.cfg.pool_max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = ep.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.since) >= self.cfg.pool_idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() >= self.cfg.pool_max_idle {
            idle.pop_front();
        }
        idle.push_back(IdleConn { tx, since: now });
    }

    pub(super) async fn connect(&self, ep: &Endpoint) -> Result<Conn, ProxyError> {
        let io = self
            .connector
            .clone()
            .oneshot(ep.base.clone())
            .await
            .map_err(|e| {
                // hyper-util reports its connect timeout, and the OS its own, as
                // `io::ErrorKind::TimedOut` in the source chain: a typed check, not the message.
                if has_io_kind(&*e, std::io::ErrorKind::TimedOut) {
                    ProxyError::UpstreamTimeout(TimeoutPhase::Connect)
                } else {
                    ProxyError::UpstreamConnect(source_text(&*e))
                }
            })?;
        let (tx, conn) = http1::handshake(io)
            .await
            .map_err(|e| ProxyError::UpstreamConnect(source_text(&e)))?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %name, error = %e, "Upstream connection ended with an error.");
            }
        });
        Ok(tx)
    }
}

/// A client body error as the proxy error it carries (413 or 400).
pub(super) fn client_body_error(e: &(dyn std::error::Error + 'static)) -> ProxyError {
    match crate::error::find_proxy_error(e) {
        Some(ProxyError::BodyTooLarge) => ProxyError::BodyTooLarge,
        _ => ProxyError::ClientBody,
    }
}

/// Maps an exchange error to a proxy error: reset vs client body trouble (connect errors are
/// mapped where the connection is made).
pub(super) fn classify(e: &hyper::Error) -> ProxyError {
    if e.is_user() {
        return client_body_error(e);
    }
    ProxyError::UpstreamReset(source_text(e))
}

pub(super) fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

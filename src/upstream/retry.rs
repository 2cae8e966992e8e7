//! One upstream exchange under the concurrency cap and deadlines, retried on another endpoint
//! within the retry budget; upgrades become a tunnel.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::retry::budget::Budget;

use super::Upstream;
use super::balance::Outstanding;
use super::body::{Checkin, UpstreamBody};
use super::pool::client_body_error;
use crate::body::ProxyBody;
use crate::error::{ProxyError, TimeoutPhase};

impl Upstream {
    /// Sends `req` (already routed; headers prepared by the caller) and returns the response
    /// with its body under the body deadlines. Retries per the retry policy.
    pub async fn forward(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let permit = self
            .limit
            .clone()
            .try_acquire_owned()
            .map_err(|_| ProxyError::UpstreamOverloaded)?;
        let started = Instant::now();
        let deadline = started + self.cfg.total_timeout;
        let (mut parts, body) = req.into_parts();
        let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();

        // Keep small bodies for replay; larger or unknown-length bodies stream once.
        let max_replay = self.cfg.retry.max_replay_body;
        let (replay, mut body) = match body.size_hint().exact() {
            Some(0) => (Some(Bytes::new()), None),
            Some(n) if n <= max_replay && client_upgrade.is_none() => {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| client_body_error(&*e))?
                    .to_bytes();
                (Some(bytes), None)
            }
            _ => (None, Some(body)),
        };
        self.budget.deposit();

        let idempotent = matches!(
            parts.method,
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::PUT
                | http::Method::DELETE
        );
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let ep_idx = self.pick(&tried);
            tried.push(ep_idx);
            let ep = &self.endpoints[ep_idx];
            // Origin-form: the connection already goes to the endpoint.
            let uri = Uri::from(path_and_query.clone());
            let mut out = Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(Version::HTTP_11)
                .body(match (&replay, body.take()) {
                    (Some(b), _) => ProxyBody::full(b.clone()),
                    (None, Some(b)) => b,
                    (None, None) => ProxyBody::empty(),
                })
                .map_err(|_| ProxyError::BadRequest("target cannot be forwarded"))?;
            *out.headers_mut() = parts.headers.clone();
            if out.headers().get(header::HOST).is_none()
                && let Some(a) = ep.base.authority()
                && let Ok(v) = HeaderValue::from_str(a.as_str())
            {
                out.headers_mut().insert(header::HOST, v);
            }
            ep.attempts.fetch_add(1, Ordering::Relaxed);
            ep.outstanding.fetch_add(1, Ordering::Relaxed);
            let guard = Outstanding(self.clone(), ep_idx);
            let ttfb = self
                .cfg
                .ttfb_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let result = tokio::time::timeout(ttfb, self.send(ep_idx, out)).await;
            let err = match result {
                Ok(Ok((mut res, conn))) => {
                    self.record_endpoint(ep_idx, true);
                    if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_up) = client_upgrade {
                            let upstream_up = hyper::upgrade::on(&mut res);
                            spawn_tunnel(client_up, upstream_up);
                        }
                        let (p, _) = res.into_parts();
                        return Ok(Response::from_parts(p, ProxyBody::empty()));
                    }
                    let (p, b) = res.into_parts();
                    let ended = b.is_end_stream();
                    let body = UpstreamBody {
                        checkin: Checkin {
                            up: self.clone(),
                            ep: ep_idx,
                            conn: Some(conn),
                            ended,
                        },
                        inner: b,
                        idle_timeout: self.cfg.body_idle_timeout,
                        idle: None,
                        deadline,
                        _permit: permit,
                        _outstanding: guard,
                    };
                    return Ok(Response::from_parts(p, ProxyBody::stream(body)));
                }
                Ok(Err(e)) => e,
                Err(_) if Instant::now() >= deadline => {
                    ProxyError::UpstreamTimeout(TimeoutPhase::Total)
                }
                Err(_) => ProxyError::UpstreamTimeout(TimeoutPhase::FirstByte),
            };
            drop(guard);
            if !matches!(err, ProxyError::ClientBody | ProxyError::BodyTooLarge) {
                self.record_endpoint(ep_idx, false);
            }
            // Never-sent requests may be retried whatever the method; a reset before any
            // response byte only for idempotent requests. Only replayable bodies.
            let retryable = replay.is_some()
                && match &err {
                    ProxyError::UpstreamConnect(_) => true,
                    ProxyError::UpstreamReset(_) => idempotent,
                    _ => false,
                };
            if !retryable
                || tried.len() > self.cfg.retry.max_retries as usize
                || Instant::now() >= deadline
                || !self.budget.withdraw()
            {
                tracing::warn!(upstream = %self.name, reason = err.reason(), error = %err, attempts = tried.len(), "Upstream request failed.");
                return Err(err);
            }
            tracing::debug!(upstream = %self.name, error = %err, "Retrying upstream request.");
            parts.extensions = http::Extensions::new();
        }
    }
}

pub(super) fn spawn_tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(c), Ok(u)) = tokio::join!(client, upstream) else {
            tracing::debug!("Upgrade handshake did not complete.");
            return;
        };
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
    });
}

//! The RFC 9110 responders on a stored or fetched response: conditional requests (§13) and
//! byte ranges (§14).

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::compress::{DecodeBody, Repr};
use super::entry::Entry;
use super::{date, policy};
use crate::body::ProxyBody;
/// RFC 9110 §13.1–13.2: answers a client's `If-None-Match` / `If-Modified-Since` on a 200.
pub(super) fn answer_conditional(
    req: &Request<ProxyBody>,
    res: Response<ProxyBody>,
) -> Response<ProxyBody> {
    answer_conditional_to(req.method(), req.headers(), res)
}

/// [`answer_conditional`] for a request given by its method and header fields.
pub(super) fn answer_conditional_to(
    method: &Method,
    h: &HeaderMap,
    mut res: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if res.status() != StatusCode::OK || !(method == Method::GET || method == Method::HEAD) {
        return res;
    }
    let not_modified = if let Some(inm) = h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())
    {
        res.headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|etag| policy::none_match(inm, etag))
    } else if let Some(ims) = h
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(date::parse_http_date)
    {
        res.headers()
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(date::parse_http_date)
            .is_some_and(|lm| lm <= ims)
    } else {
        false
    };
    if not_modified {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        *res.body_mut() = ProxyBody::empty();
        for n in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_LANGUAGE,
            header::CONTENT_RANGE,
            header::TRANSFER_ENCODING,
        ] {
            res.headers_mut().remove(n);
        }
    }
    res
}

/// The body of a stored 200 in the representation `repr` the client gets, with a single byte
/// range answered against that representation (RFC 9110 §14): the encoded bytes for a client
/// that receives the coding, the decoded content for one that does not. Anything else gets the
/// full 200.
pub(super) fn answer_body(
    req: &Request<ProxyBody>,
    mut res: Response<ProxyBody>,
    entry: &Entry,
    repr: Repr,
    decoded: &AtomicU64,
) -> Response<ProxyBody> {
    let len = match repr {
        Repr::Decoded(t) => t.identity_len,
        _ => entry.body.len() as u64,
    };
    let body = |start: u64, end: u64| match repr {
        Repr::Decoded(t) => {
            decoded.fetch_add(1, Ordering::Relaxed);
            ProxyBody::stream(DecodeBody::new(
                t,
                entry.body.clone(),
                start,
                end + 1 - start,
            ))
        }
        _ if start == 0 && end + 1 == len => ProxyBody::full(entry.body.clone()),
        _ => ProxyBody::full(entry.body.slice(start as usize..=end as usize)),
    };
    match range_of(req, res.headers(), len) {
        None => {
            *res.body_mut() = if len == 0 {
                ProxyBody::empty()
            } else {
                body(0, len - 1)
            };
        }
        Some(None) => {
            *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            *res.body_mut() = ProxyBody::empty();
            res.headers_mut().remove(header::CONTENT_LENGTH);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        Some(Some((start, end))) => {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            *res.body_mut() = body(start, end);
            res.headers_mut().remove(header::CONTENT_LENGTH);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
    }
    res
}

/// The single byte range a request asks of a `len`-byte representation whose head is `h`:
/// `None` to send it whole (no range, several ranges, an unparsable one, or a failed
/// `If-Range`), `Some(None)` when it cannot be satisfied, else the inclusive range.
fn range_of(req: &Request<ProxyBody>, h: &HeaderMap, len: u64) -> Option<Option<(u64, u64)>> {
    let range = req.headers().get(header::RANGE)?.to_str().ok()?;
    if let Some(ir) = req
        .headers()
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let etag = h.get(header::ETAG).and_then(|v| v.to_str().ok());
        let lm = h.get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok());
        // If-Range needs a strong match.
        let matches = if ir.starts_with('"') {
            etag == Some(ir)
        } else {
            lm == Some(ir)
        };
        if !matches {
            return None;
        }
    }
    let spec = range.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => match n.parse::<u64>() {
            Ok(n) if n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
            _ => return None,
        },
        (s, "") => (s.parse::<u64>().ok()?, len.saturating_sub(1)),
        (s, e) => match (s.parse::<u64>(), e.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
            _ => return None,
        },
    };
    if start >= len || len == 0 {
        return Some(None);
    }
    Some(Some((start, end)))
}

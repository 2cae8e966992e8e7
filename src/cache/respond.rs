//! The RFC 9110 responders on a stored or fetched response: conditional requests (§13) and
//! byte ranges (§14).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

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

/// Single byte ranges from a stored 200 (RFC 9110 §14); anything else gets the full 200.
pub(super) fn answer_range(
    req: &Request<ProxyBody>,
    mut res: Response<ProxyBody>,
    body: &Bytes,
) -> Response<ProxyBody> {
    let Some(range) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return res;
    };
    if let Some(ir) = req
        .headers()
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let etag = res
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok());
        let lm = res
            .headers()
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok());
        // If-Range needs a strong match.
        let matches = if ir.starts_with('"') {
            etag == Some(ir)
        } else {
            lm == Some(ir)
        };
        if !matches {
            return res;
        }
    }
    let len = body.len() as u64;
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return res;
    };
    if spec.contains(',') {
        return res;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return res;
    };
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => match n.parse::<u64>() {
            Ok(n) if n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
            _ => return res,
        },
        (s, "") => match s.parse::<u64>() {
            Ok(s) => (s, len.saturating_sub(1)),
            _ => return res,
        },
        (s, e) => match (s.parse::<u64>(), e.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
            _ => return res,
        },
    };
    if start >= len || len == 0 {
        *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
        *res.body_mut() = ProxyBody::empty();
        res.headers_mut().remove(header::CONTENT_LENGTH);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return res;
    }
    *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    *res.body_mut() = ProxyBody::full(body.slice(start as usize..=end as usize));
    res.headers_mut().remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
        res.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    res
}

//! The L2 entry format (version 2: version 1's value under hash-tagged keys): a magic, a
//! length-prefixed JSON head with the freshness facts, then the body bytes. A body Seawall
//! compressed itself is written under its own magic (`SWE3`, with the coding in the head), which
//! replicas from before `[cache.compression]` refuse instead of serving it as identity content.
//! Anything that does not decode is reported, never guessed at.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::cache::compress::{Coding, Transformed};
use crate::cache::entry::{self, Entry};
use crate::cache::policy::{self, Freshness};

/// Entry format version; part of every key's namespace.
pub const FORMAT: u32 = 2;

const MAGIC: &[u8; 4] = b"SWE1";
/// An entry whose body Seawall encoded (`Head::transformed` set).
const MAGIC_TRANSFORMED: &[u8; 4] = b"SWE3";

#[derive(Serialize, Deserialize)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    vary: Vec<(String, Option<String>)>,
    ae: bool,
    /// Unix milliseconds.
    response_time: u64,
    stored_at: u64,
    initial_age_ms: u64,
    lifetime_ms: u64,
    heuristic: bool,
    set_cookie: bool,
    route_sie_ms: Option<u64>,
    /// The coding Seawall applied to the body and the identity length (`[cache.compression]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transformed: Option<(String, u64)>,
}

/// Why an L2 value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not an entry of this format.
    #[error("not a format-{FORMAT} entry")]
    Magic,
    /// Cut short or garbled.
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The hash field that tells variants apart (`-` without Vary).
pub fn vary_field(e: &Entry) -> String {
    if e.vary.is_empty() {
        return "-".into();
    }
    let mut s = String::new();
    for (k, v) in &e.vary {
        s.push_str(k.as_str());
        s.push('=');
        s.push_str(v.as_deref().unwrap_or("\u{0}"));
        s.push('\n');
    }
    s
}

/// Encodes a stored entry; `None` when a header value is not text (kept in memory only).
pub fn encode(e: &Entry) -> Option<Vec<u8>> {
    let mut headers = Vec::with_capacity(e.headers.len());
    for (k, v) in &e.headers {
        headers.push((k.as_str().to_string(), v.to_str().ok()?.to_string()));
    }
    let head = Head {
        status: e.status.as_u16(),
        headers,
        vary: e
            .vary
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.clone()))
            .collect(),
        ae: e.normalise_ae,
        response_time: unix_ms(e.fresh.response_time),
        stored_at: unix_ms(e.stored_at),
        initial_age_ms: e.fresh.initial_age.as_millis() as u64,
        lifetime_ms: e.fresh.lifetime.as_millis() as u64,
        heuristic: e.fresh.heuristic,
        set_cookie: e.fresh.set_cookie,
        route_sie_ms: e.fresh.route_stale_if_error.map(|d| d.as_millis() as u64),
        transformed: e
            .transformed
            .map(|t| (t.coding.token().to_string(), t.identity_len)),
    };
    let json = serde_json::to_vec(&head).ok()?;
    let mut out = Vec::with_capacity(8 + json.len() + e.body.len());
    out.extend_from_slice(if e.transformed.is_some() {
        MAGIC_TRANSFORMED
    } else {
        MAGIC
    });
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&e.body);
    Some(out)
}

/// Decodes an entry stored under `key`; `targeted` are the configured targeted CC fields.
pub fn decode(key: &Arc<str>, raw: &[u8], targeted: &[HeaderName]) -> Result<Entry, DecodeError> {
    let (rest, transformed_magic) = match raw.strip_prefix(MAGIC) {
        Some(rest) => (rest, false),
        None => (
            raw.strip_prefix(MAGIC_TRANSFORMED)
                .ok_or(DecodeError::Magic)?,
            true,
        ),
    };
    if rest.len() < 4 {
        return Err(DecodeError::Malformed("short header"));
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len {
        return Err(DecodeError::Malformed("short head"));
    }
    let (json, body) = rest.split_at(len);
    let head: Head =
        serde_json::from_slice(json).map_err(|_| DecodeError::Malformed("head is not JSON"))?;
    let status = StatusCode::from_u16(head.status).map_err(|_| DecodeError::Malformed("status"))?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (k, v) in &head.headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            return Err(DecodeError::Malformed("header field"));
        };
        headers.append(k, v);
    }
    let mut vary = Vec::with_capacity(head.vary.len());
    for (k, v) in head.vary {
        let k = HeaderName::from_bytes(k.as_bytes()).map_err(|_| DecodeError::Malformed("vary"))?;
        vary.push((k, v));
    }
    let fresh = Freshness {
        cc: policy::effective_cc(&headers, targeted),
        lifetime: Duration::from_millis(head.lifetime_ms),
        initial_age: Duration::from_millis(head.initial_age_ms),
        response_time: from_unix_ms(head.response_time),
        heuristic: head.heuristic,
        set_cookie: head.set_cookie,
        route_stale_if_error: head.route_sie_ms.map(Duration::from_millis),
    };
    let transformed = match head.transformed {
        None if transformed_magic => return Err(DecodeError::Malformed("coding missing")),
        None => None,
        Some(_) if !transformed_magic => return Err(DecodeError::Malformed("coding")),
        Some((coding, identity_len)) => Some(Transformed {
            coding: Coding::parse(&coding).ok_or(DecodeError::Malformed("coding"))?,
            identity_len,
        }),
    };
    Ok(Entry {
        key: key.clone(),
        transformed,
        status,
        tags: entry::tags_of(&headers),
        headers,
        body: Bytes::copy_from_slice(body),
        fresh,
        vary,
        normalise_ae: head.ae,
        stored_at: from_unix_ms(head.stored_at),
        hits: AtomicU64::new(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.insert("surrogate-key", HeaderValue::from_static("a b"));
        headers.append("set-cookie", HeaderValue::from_static("x=1"));
        let targeted = [HeaderName::from_static("cdn-cache-control")];
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        Entry {
            key: "http://h/p".into(),
            status: StatusCode::OK,
            tags: entry::tags_of(&headers),
            fresh: Freshness {
                cc: policy::effective_cc(&headers, &targeted),
                lifetime: Duration::from_secs(60),
                initial_age: Duration::from_millis(1500),
                response_time: now,
                heuristic: false,
                set_cookie: true,
                route_stale_if_error: Some(Duration::from_secs(30)),
            },
            headers,
            body: Bytes::from_static(b"hello\x00world"),
            transformed: Some(Transformed {
                coding: Coding::Br,
                identity_len: 42,
            }),
            vary: vec![
                (
                    HeaderName::from_static("accept-encoding"),
                    Some("gzip".into()),
                ),
                (HeaderName::from_static("x-absent"), None),
            ],
            normalise_ae: true,
            stored_at: now,
            hits: AtomicU64::new(7),
        }
    }

    #[test]
    fn round_trip_keeps_everything_but_hits() {
        let e = sample();
        let raw = encode(&e).expect("encodes");
        let targeted = [HeaderName::from_static("cdn-cache-control")];
        let d = decode(&e.key, &raw, &targeted).expect("decodes");
        assert_eq!(d.status, e.status);
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.body, e.body);
        assert_eq!(d.transformed, e.transformed);
        assert_eq!(d.fresh, e.fresh);
        assert_eq!(d.vary, e.vary);
        assert_eq!(d.tags, e.tags);
        assert!(d.normalise_ae);
        assert_eq!(d.stored_at, e.stored_at);
        assert_eq!(vary_field(&d), vary_field(&e));
    }

    #[test]
    fn garbage_and_truncation_are_refused() {
        let e = sample();
        let raw = encode(&e).expect("encodes");
        let k: Arc<str> = "k".into();
        assert_eq!(decode(&k, b"garbage", &[]).err(), Some(DecodeError::Magic));
        assert_eq!(decode(&k, b"SWE0rest", &[]).err(), Some(DecodeError::Magic));
        assert!(matches!(
            decode(&k, &raw[..6], &[]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&k, &raw[..20], &[]),
            Err(DecodeError::Malformed(_))
        ));
        let mut bad = raw.clone();
        bad[10] = b'!';
        assert!(decode(&k, &bad, &[]).is_err());
    }

    #[test]
    fn only_compressed_entries_get_the_new_magic() {
        let mut e = sample();
        let raw = encode(&e).expect("encodes");
        assert_eq!(&raw[..4], b"SWE3");
        // A replica from before compression looks for SWE1 only.
        assert!(!raw.starts_with(b"SWE1"));
        e.transformed = None;
        let raw = encode(&e).expect("encodes");
        assert_eq!(&raw[..4], b"SWE1");
        let d = decode(&e.key, &raw, &[]).expect("decodes");
        assert!(d.transformed.is_none());
        // A compressed head under the old magic is refused, not served as identity.
        let mut forged = encode(&sample()).expect("encodes");
        forged[..4].copy_from_slice(b"SWE1");
        assert_eq!(
            decode(&e.key, &forged, &[]).err(),
            Some(DecodeError::Malformed("coding"))
        );
    }

    #[test]
    fn binary_header_values_stay_in_memory() {
        let mut e = sample();
        e.headers.insert(
            "x-bin",
            HeaderValue::from_bytes(b"\xff\xfe").expect("opaque value"),
        );
        assert!(encode(&e).is_none());
    }

    #[test]
    fn variants_get_distinct_fields() {
        let mut a = sample();
        let b = sample();
        a.vary[0].1 = Some("br".into());
        assert_ne!(vary_field(&a), vary_field(&b));
        a.vary.clear();
        assert_eq!(vary_field(&a), "-");
    }
}

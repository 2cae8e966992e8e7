//! One compressed copy per object (`[cache.compression]`): an identity response of a listed
//! type is encoded once when it is stored; on a hit the stored coding goes to clients that
//! accept it and is decoded while streaming for the others (`decode`).

mod decode;

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::entry::Entry;
use crate::config::file::CompressionSection;
pub(crate) use decode::DecodeBody;

/// A content coding Seawall encodes and decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// RFC 9110 §8.4.1.3.
    Gzip,
    /// RFC 7932.
    Br,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Br => "br",
        }
    }

    /// From a configured or stored token.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gzip" => Some(Self::Gzip),
            "br" => Some(Self::Br),
            _ => None,
        }
    }
}

/// What Seawall did to a stored body: the origin sent identity content of `identity_len`
/// bytes, stored encoded with `coding`. The stored head stays the origin's (identity) one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transformed {
    /// The stored body's coding.
    pub coding: Coding,
    /// Length of the identity content the origin sent.
    pub identity_len: u64,
}

/// Counters behind `seawall_cache_compressed_*` and `seawall_cache_decode_total`.
#[derive(Debug, Default)]
pub struct CompressStats {
    /// Responses stored encoded.
    pub compressed: AtomicU64,
    /// Identity bytes minus stored bytes, summed over compressed responses.
    pub bytes_saved: AtomicU64,
    /// Hits decoded for a client that does not accept the stored coding.
    pub decoded: AtomicU64,
}

/// The configured compressor.
#[derive(Debug)]
pub struct Compressor {
    enabled: bool,
    coding: Coding,
    level: u32,
    /// `(type, subtype)`, lowercase; subtype `*` matches any.
    types: Vec<(String, String)>,
    min_size: u64,
    /// Its counters.
    pub stats: CompressStats,
}

/// Bodies above this are compressed off the async worker (`block_in_place`).
const BLOCKING_ABOVE: usize = 256 * 1024;

impl Compressor {
    /// From a validated `[cache.compression]`.
    pub fn new(c: &CompressionSection) -> Self {
        let types = c
            .types
            .iter()
            .filter_map(|t| t.split_once('/'))
            .map(|(a, b)| (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase()))
            .collect();
        Self {
            enabled: c.enabled,
            coding: Coding::parse(&c.encoding).unwrap_or(Coding::Gzip),
            level: c.level,
            types,
            min_size: c.min_size,
            stats: CompressStats::default(),
        }
    }

    /// Whether a complete response qualifies: a 200 with identity content of a listed type,
    /// at least `min_size`, no range, and no `no-transform` (RFC 9111 §5.2.2.6).
    pub fn qualifies(&self, status: StatusCode, h: &HeaderMap, len: usize) -> bool {
        self.enabled
            && status == StatusCode::OK
            && len as u64 >= self.min_size
            && len > 0
            && h.get(header::CONTENT_ENCODING).is_none_or(|v| {
                v.to_str()
                    .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
            })
            && !h.contains_key(header::CONTENT_RANGE)
            && !no_transform(h)
            && h.get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| self.type_listed(ct))
    }

    fn type_listed(&self, ct: &str) -> bool {
        let essence = ct.split(';').next().unwrap_or("").trim();
        let Some((a, b)) = essence.split_once('/') else {
            return false;
        };
        self.types
            .iter()
            .any(|(ta, tb)| ta.eq_ignore_ascii_case(a) && (tb == "*" || tb.eq_ignore_ascii_case(b)))
    }

    /// A complete response's body in the form it is stored in: encoded once when it
    /// qualifies, else as it came.
    pub fn stored_form(
        &self,
        status: StatusCode,
        h: &HeaderMap,
        body: Bytes,
    ) -> (Bytes, Option<Transformed>) {
        match self.encode(status, h, &body) {
            Some((b, t)) => (b, Some(t)),
            None => (body, None),
        }
    }

    /// The encoded body when the response qualifies and encoding made it smaller.
    pub fn encode(
        &self,
        status: StatusCode,
        h: &HeaderMap,
        body: &Bytes,
    ) -> Option<(Bytes, Transformed)> {
        if !self.qualifies(status, h, body.len()) {
            return None;
        }
        let run = || encode(self.coding, self.level, body);
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let out = if body.len() > BLOCKING_ABOVE && multi {
            tokio::task::block_in_place(run)
        } else {
            run()
        }?;
        if out.len() >= body.len() {
            return None;
        }
        self.stats.compressed.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_saved
            .fetch_add((body.len() - out.len()) as u64, Ordering::Relaxed);
        Some((
            Bytes::from(out),
            Transformed {
                coding: self.coding,
                identity_len: body.len() as u64,
            },
        ))
    }
}

fn encode(coding: Coding, level: u32, body: &[u8]) -> Option<Vec<u8>> {
    let out = Vec::with_capacity(body.len() / 3 + 64);
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            e.write_all(body).ok()?;
            e.finish().ok()
        }
        Coding::Br => {
            let mut e = brotli::CompressorWriter::new(out, 16 * 1024, level, 22);
            e.write_all(body).ok()?;
            e.flush().ok()?;
            Some(e.into_inner())
        }
    }
}

/// `Cache-Control: no-transform` in `h` (request or response).
pub fn no_transform(h: &HeaderMap) -> bool {
    h.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

/// Whether the request's `Accept-Encoding` names `coding` (or `*`) with a q-value above 0
/// (RFC 9110 §12.5.3). Without the field Seawall sends identity: clients that say nothing
/// (curl, many libraries) expect it.
pub fn accepts(req: &HeaderMap, coding: Coding) -> bool {
    let mut named = None;
    let mut star = None;
    for item in req
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim();
        let q_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().map_or(true, |q| q <= 0.0))
        });
        let this = token.eq_ignore_ascii_case(coding.token())
            || (coding == Coding::Gzip && token.eq_ignore_ascii_case("x-gzip"));
        if this {
            named = Some(!q_zero);
        } else if token == "*" {
            star = Some(!q_zero);
        }
    }
    named.or(star).unwrap_or(false)
}

/// Which representation of a stored entry a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr {
    /// The stored response as it is (nothing was transformed).
    AsStored,
    /// The stored encoded body, to a client that accepts its coding.
    Encoded(Transformed),
    /// The origin's identity content, decoded while streaming.
    Decoded(Transformed),
}

impl Repr {
    /// For `req` from `entry`. A `no-transform` request (RFC 9111 §5.2.1.6) gets the origin's
    /// identity content back, byte for byte: never a coding the origin did not apply; so does
    /// every request once a 304 added `no-transform` to the stored response.
    pub fn choose(req: &HeaderMap, entry: &Entry) -> Self {
        match entry.transformed {
            None => Self::AsStored,
            Some(t)
                if accepts(req, t.coding)
                    && !no_transform(req)
                    && !no_transform(&entry.headers) =>
            {
                Self::Encoded(t)
            }
            Some(t) => Self::Decoded(t),
        }
    }

    /// Rewrites the stored (identity) head into this representation's: `Vary:
    /// Accept-Encoding`, `Content-Length`, and for the encoded form `Content-Encoding`, a
    /// suffixed `ETag` (RFC 9110 §8.8.3: another coding, another entity tag) and no digests of
    /// the identity content.
    pub fn head(self, h: &mut HeaderMap, stored_len: usize) {
        let t = match self {
            Self::AsStored => return,
            Self::Encoded(t) | Self::Decoded(t) => t,
        };
        add_vary_accept_encoding(h);
        match self {
            Self::Encoded(t) => {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(stored_len));
                h.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(t.coding.token()),
                );
                if let Some(e) = h.get(header::ETAG).and_then(|e| suffixed_etag(e, t.coding)) {
                    h.insert(header::ETAG, e);
                }
                for n in ["content-digest", "repr-digest", "content-md5", "digest"] {
                    h.remove(n);
                }
            }
            _ => {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(t.identity_len));
                h.remove(header::CONTENT_ENCODING);
            }
        }
    }
}

/// `"abc"` → `"abc-gzip"`, `W/"abc"` → `W/"abc-gzip"`.
pub fn suffixed_etag(etag: &HeaderValue, coding: Coding) -> Option<HeaderValue> {
    let s = etag.to_str().ok()?.trim();
    let (weak, tag) = match s.strip_prefix("W/") {
        Some(t) => ("W/", t),
        None => ("", s),
    };
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    HeaderValue::from_str(&format!("{weak}\"{inner}-{}\"", coding.token())).ok()
}

fn add_vary_accept_encoding(h: &mut HeaderMap) {
    let listed = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim().eq_ignore_ascii_case("accept-encoding") || f.trim() == "*");
    if !listed {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// The identity content of a stored entry, whole (exports and admin views, not hits).
pub fn identity_body(entry: &Entry) -> Option<Bytes> {
    match entry.transformed {
        None => Some(entry.body.clone()),
        Some(t) => decode::decode_all(t, &entry.body).map(Bytes::from),
    }
}

#[cfg(test)]
mod tests;

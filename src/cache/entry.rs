//! A stored response: status, headers (hop-by-hop already removed), body as `Bytes`, its
//! freshness facts, the Vary values that select it, and the tags purges use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::compress::Transformed;
use super::policy::Freshness;

/// One stored variant.
#[derive(Debug)]
pub struct Entry {
    /// Primary key.
    pub key: Arc<str>,
    /// Stored status.
    pub status: StatusCode,
    /// Stored header fields.
    pub headers: HeaderMap,
    /// Stored body.
    pub body: Bytes,
    /// Set when Seawall encoded the body itself (`[cache.compression]`); `headers` stay the
    /// origin's identity ones.
    pub transformed: Option<Transformed>,
    /// Freshness facts.
    pub fresh: Freshness,
    /// The request values of the Vary fields that select this variant.
    pub vary: Vec<(HeaderName, Option<String>)>,
    /// Whether Accept-Encoding values were bucketed when `vary` was computed.
    pub normalise_ae: bool,
    /// Surrogate keys / cache tags.
    pub tags: Vec<Arc<str>>,
    /// When it was stored.
    pub stored_at: SystemTime,
    /// Hits served from it.
    pub hits: AtomicU64,
}

impl Entry {
    /// Bytes this entry costs (key, headers, body, bookkeeping), as `benches/entry_overhead.rs`
    /// measures them: a header field is its name and value plus a `HeaderMap` bucket, index
    /// slot and value allocation (about 130 bytes); the entry itself, its key allocation, moka's
    /// node and the variant list come to about 900 bytes.
    pub fn weight(&self) -> u64 {
        const PER_FIELD: usize = 128;
        const FIXED: usize = std::mem::size_of::<Entry>() + 480;
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + PER_FIELD)
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(k, v)| k.as_str().len() + v.as_ref().map_or(0, String::len) + 32)
            .sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 48).sum();
        (self.key.len() + headers + vary + tags + self.body.len() + FIXED) as u64
    }

    /// The stored `ETag`.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }

    /// The stored `Last-Modified`.
    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(header::LAST_MODIFIED)
    }

    /// The same stored response with other freshness facts (soft purge).
    pub fn with_fresh(&self, fresh: Freshness) -> Entry {
        Entry {
            key: self.key.clone(),
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            transformed: self.transformed,
            fresh,
            vary: self.vary.clone(),
            normalise_ae: self.normalise_ae,
            tags: self.tags.clone(),
            stored_at: self.stored_at,
            hits: AtomicU64::new(self.hits.load(Ordering::Relaxed)),
        }
    }

    /// Counts a hit.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Tags from `Surrogate-Key` (space separated) and `Cache-Tag` (comma separated).
pub fn tags_of(headers: &HeaderMap) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = Vec::new();
    let mut push = |t: &str| {
        let t = t.trim();
        if !t.is_empty() && !out.iter().any(|o| &**o == t) {
            out.push(t.into());
        }
    };
    for v in headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        v.split_ascii_whitespace().for_each(&mut push);
    }
    for v in headers
        .get_all("cache-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        v.split(',').for_each(&mut push);
    }
    out
}

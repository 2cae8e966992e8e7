//! Cache-Control header parsing (RFC 9111 §5.2) for request and response fields,
//! including targeted fields such as CDN-Cache-Control (RFC 9213).

use http::{HeaderMap, HeaderValue, header::HeaderName};

pub mod targeted;

/// RFC 9111 §1.2.2: delta-seconds too large to represent are treated as 2^31.
const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// Parsed Cache-Control directives (RFC 9111 §5.2), request or response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age` in seconds; `Some(0)` when present with an invalid argument.
    pub max_age: Option<u64>,
    /// `s-maxage` in seconds; `Some(0)` when present with an invalid argument.
    pub s_maxage: Option<u64>,
    /// `max-stale` (request): any staleness, or at most this many seconds.
    pub max_stale: Option<MaxStale>,
    /// `min-fresh` in seconds (request).
    pub min_fresh: Option<u64>,
    /// `stale-while-revalidate` in seconds (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` in seconds (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// `no-cache`, also set for the qualified form `no-cache="field"`.
    pub no_cache: bool,
    /// Lowercased field names from `no-cache="a, b"`; empty for the plain form.
    pub no_cache_fields: Vec<String>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `only-if-cached` (request).
    pub only_if_cached: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `must-understand`.
    pub must_understand: bool,
    /// `public`.
    pub public: bool,
    /// `private`, also set for the qualified form `private="field"`.
    pub private: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
}

/// Argument of the `max-stale` request directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without a value: a response of any staleness is acceptable.
    Any,
    /// `max-stale=N`: stale by at most N seconds.
    Seconds(u64),
}

/// Argument of one directive, borrowed from the header bytes.
#[derive(Clone, Copy)]
enum Arg<'a> {
    Missing,
    Token(&'a [u8]),
    /// Content between the quotes, escapes not yet removed.
    Quoted(&'a [u8]),
    /// Unterminated quote or trailing garbage after the directive.
    Malformed,
}

impl CacheControl {
    /// Parses every value of all the given header values (a field may be split over several lines).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        let mut cc = Self::default();
        for value in values {
            cc.parse_bytes(value.as_bytes());
        }
        cc
    }

    /// Convenience: parse the `name` field of a HeaderMap (e.g. "cache-control", "cdn-cache-control").
    pub fn from_headers(headers: &HeaderMap, name: &HeaderName) -> Self {
        Self::parse(headers.get_all(name))
    }

    /// Parses a single field value given as a string.
    pub fn parse_str(s: &str) -> Self {
        let mut cc = Self::default();
        cc.parse_bytes(s.as_bytes());
        cc
    }

    /// True when no directive at all was found (used for targeted-field precedence, RFC 9213:
    /// a targeted field that is present but has no valid directive is ignored).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Works on bytes so obs-text / non-UTF-8 input only spoils the element it appears in.
    fn parse_bytes(&mut self, b: &[u8]) {
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            if matches!(c, b' ' | b'\t' | b',') {
                i += 1;
                continue;
            }
            let start = i;
            i = skip_while(b, i, is_tchar);
            let name = &b[start..i];
            i = skip_while(b, i, is_ows);
            let mut arg = Arg::Missing;
            if b.get(i) == Some(&b'=') {
                i = skip_while(b, i + 1, is_ows);
                if b.get(i) == Some(&b'"') {
                    let end = closing_quote(b, i + 1);
                    arg = end.map_or(Arg::Malformed, |e| Arg::Quoted(&b[i + 1..e]));
                    i = end.map_or(b.len(), |e| e + 1);
                } else {
                    let vs = i;
                    i = skip_while(b, i, is_tchar);
                    arg = Arg::Token(&b[vs..i]);
                }
                i = skip_while(b, i, is_ows);
            }
            if i < b.len() && b[i] != b',' {
                arg = Arg::Malformed;
                i = next_comma(b, i);
            }
            if !name.is_empty() {
                self.apply(name, arg);
            }
        }
    }

    fn apply(&mut self, name: &[u8], arg: Arg<'_>) {
        // Longest known name is 22 bytes; anything longer is unknown, so no allocation needed.
        let mut buf = [0u8; 24];
        let Some(lower) = buf.get_mut(..name.len()) else {
            return;
        };
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        let (value, well_formed) = match arg {
            Arg::Token(v) | Arg::Quoted(v) => (Some(v), true),
            Arg::Missing => (None, true),
            Arg::Malformed => (None, false),
        };
        let secs = value.and_then(parse_delta_seconds_bytes);
        match &*lower {
            // RFC 9111 §4.2.1 encourages treating invalid freshness info as stale, so an
            // invalid max-age/s-maxage becomes 0 rather than being dropped. Duplicates keep
            // the lowest value, which is the most conservative reading.
            b"max-age" => self.max_age = min_some(self.max_age, Some(secs.unwrap_or(0))),
            b"s-maxage" => self.s_maxage = min_some(self.s_maxage, Some(secs.unwrap_or(0))),
            // Larger min-fresh is the stricter requirement; Option's Ord keeps any Some.
            b"min-fresh" => self.min_fresh = self.min_fresh.max(secs),
            b"stale-while-revalidate" => {
                self.stale_while_revalidate = min_some(self.stale_while_revalidate, secs);
            }
            b"stale-if-error" => self.stale_if_error = min_some(self.stale_if_error, secs),
            b"max-stale" => {
                let new = match (arg, secs) {
                    (Arg::Missing, _) => MaxStale::Any,
                    (_, Some(s)) => MaxStale::Seconds(s),
                    _ => return,
                };
                self.max_stale = Some(match (self.max_stale, new) {
                    (Some(MaxStale::Seconds(a)), MaxStale::Seconds(b)) => {
                        MaxStale::Seconds(a.min(b))
                    }
                    (Some(MaxStale::Seconds(a)), MaxStale::Any) => MaxStale::Seconds(a),
                    (_, new) => new,
                });
            }
            // Directives that only restrict caching are honoured even when malformed.
            b"no-cache" => {
                self.no_cache = true;
                if let Some(v) = value {
                    self.add_no_cache_fields(v);
                }
            }
            b"no-store" => self.no_store = true,
            b"no-transform" => self.no_transform = true,
            b"must-revalidate" => self.must_revalidate = true,
            b"proxy-revalidate" => self.proxy_revalidate = true,
            b"private" => self.private = true,
            // Directives that relax caching are ignored when malformed.
            b"public" => self.public |= well_formed,
            b"immutable" => self.immutable |= well_formed,
            b"only-if-cached" => self.only_if_cached |= well_formed,
            // Ignoring must-understand falls back to the accompanying no-store.
            b"must-understand" => self.must_understand |= well_formed,
            _ => {}
        }
    }

    fn add_no_cache_fields(&mut self, list: &[u8]) {
        for field in list.split(|&c| c == b',').filter_map(field_name) {
            if !self.no_cache_fields.contains(&field) {
                self.no_cache_fields.push(field);
            }
        }
    }
}

/// Parses a delta-seconds value (RFC 9111 §1.2.2): digits only; values too large saturate to
/// 2^31 (RFC says use 2147483648); anything else (negative, fractional, empty) is invalid -> None.
pub fn parse_delta_seconds(s: &str) -> Option<u64> {
    parse_delta_seconds_bytes(s.as_bytes())
}

fn parse_delta_seconds_bytes(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Clamping at every step keeps the accumulator far from u64 overflow.
    Some(b.iter().fold(0u64, |acc, &d| {
        (acc * 10 + u64::from(d - b'0')).min(DELTA_SECONDS_MAX)
    }))
}

/// Smaller of two optional values, where None means "not given" rather than smallest.
fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One entry of a no-cache field list, unescaped and lowercased; None unless a valid token.
fn field_name(part: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut escaped = false;
    for &c in part.trim_ascii() {
        if c == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        if !is_tchar(c) {
            return None;
        }
        escaped = false;
        out.push(char::from(c.to_ascii_lowercase()));
    }
    (!escaped && !out.is_empty()).then_some(out)
}

fn skip_while(b: &[u8], mut i: usize, pred: fn(u8) -> bool) -> usize {
    while b.get(i).is_some_and(|&c| pred(c)) {
        i += 1;
    }
    i
}

/// Index of the closing quote of a quoted-string whose content starts at `i`.
fn closing_quote(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// Index of the next list separator at or after `i`, skipping over quoted-strings.
fn next_comma(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        match c {
            b',' => break,
            b'"' => match closing_quote(b, i + 1) {
                Some(end) => i = end + 1,
                None => return b.len(),
            },
            _ => i += 1,
        }
    }
    i
}

fn is_ows(c: u8) -> bool {
    matches!(c, b' ' | b'\t')
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests;

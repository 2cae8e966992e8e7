//! Targeted cache-control fields (`CDN-Cache-Control`, `Seawall-Cache-Control`; RFC 9213 §2.1)
//! read as RFC 9651 Structured Field Dictionaries into the same [`CacheControl`].

use http::HeaderValue;

use super::{Arg, CacheControl};

/// A dictionary member's value, as far as cache directives care.
enum Value {
    Bool(bool),
    Integer(i64),
    /// A String's content with escapes removed.
    String(String),
    /// Decimal, Token, Byte Sequence, Date, Display String or Inner List: no cache directive
    /// takes one.
    Other,
}

impl CacheControl {
    /// Parses a targeted field from all its field lines (combined as one list). `None` when
    /// the value is not a valid Dictionary: such a field is ignored as a whole. A known
    /// directive whose value has the wrong type (e.g. `max-age=1.5`, `max-age="60"`,
    /// `no-store=?0`) is not consumed (RFC 9213 §2.1); parameters are ignored.
    pub fn parse_targeted<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Option<Self> {
        let mut joined = Vec::new();
        for v in values {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        let members = parse_dictionary(&joined)?;
        let mut cc = Self::default();
        for (name, value) in members {
            cc.apply_targeted(name, value);
        }
        Some(cc)
    }

    fn apply_targeted(&mut self, name: &[u8], value: Value) {
        match (name, value) {
            (
                b"max-age"
                | b"s-maxage"
                | b"stale-while-revalidate"
                | b"stale-if-error"
                | b"min-fresh"
                | b"max-stale",
                Value::Integer(n),
            ) if n >= 0 => {
                let digits = n.to_string();
                self.apply(name, Arg::Token(digits.as_bytes()));
            }
            (b"no-cache" | b"private", Value::String(s)) => {
                self.apply(name, Arg::Quoted(s.as_bytes()));
            }
            (
                b"no-cache" | b"private" | b"no-store" | b"no-transform" | b"must-revalidate"
                | b"proxy-revalidate" | b"must-understand" | b"public" | b"immutable"
                | b"only-if-cached",
                Value::Bool(true),
            ) => self.apply(name, Arg::Missing),
            // Wrong type for a known directive, or an unknown one: not consumed.
            _ => {}
        }
    }
}

/// RFC 9651 §4.2.2. Members in order; a later duplicate key overrides an earlier one, which
/// `CacheControl::apply` would instead combine, so duplicates are resolved here.
fn parse_dictionary(b: &[u8]) -> Option<Vec<(&[u8], Value)>> {
    let mut members: Vec<(&[u8], Value)> = Vec::new();
    let mut i = skip_sp(b, 0);
    // An empty field is an empty dictionary.
    while i < b.len() {
        let (key, next) = parse_key(b, i)?;
        i = next;
        let value = if b.get(i) == Some(&b'=') {
            let (v, next) = parse_item_or_inner_list(b, i + 1)?;
            i = next;
            v
        } else {
            i = parse_parameters(b, i)?;
            Value::Bool(true)
        };
        members.retain(|(k, _)| *k != key);
        members.push((key, value));
        i = skip_ows(b, i);
        if i == b.len() {
            break;
        }
        if b[i] != b',' {
            return None;
        }
        i = skip_ows(b, i + 1);
        if i == b.len() {
            // A trailing comma.
            return None;
        }
    }
    Some(members)
}

fn parse_item_or_inner_list(b: &[u8], i: usize) -> Option<(Value, usize)> {
    if b.get(i) == Some(&b'(') {
        let mut i = i + 1;
        loop {
            i = skip_sp(b, i);
            match b.get(i) {
                Some(b')') => {
                    i = parse_parameters(b, i + 1)?;
                    return Some((Value::Other, i));
                }
                Some(_) => {
                    let (_, next) = parse_bare_item(b, i)?;
                    i = parse_parameters(b, next)?;
                    if !matches!(b.get(i), Some(b' ' | b')')) {
                        return None;
                    }
                }
                None => return None,
            }
        }
    }
    let (v, next) = parse_bare_item(b, i)?;
    Some((v, parse_parameters(b, next)?))
}

fn parse_parameters(b: &[u8], mut i: usize) -> Option<usize> {
    while b.get(i) == Some(&b';') {
        i = skip_sp(b, i + 1);
        let (_, next) = parse_key(b, i)?;
        i = next;
        if b.get(i) == Some(&b'=') {
            i = parse_bare_item(b, i + 1)?.1;
        }
    }
    Some(i)
}

fn parse_key(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let first = *b.get(i)?;
    if !(first.is_ascii_lowercase() || first == b'*') {
        return None;
    }
    let mut j = i + 1;
    while b
        .get(j)
        .is_some_and(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c))
    {
        j += 1;
    }
    Some((&b[i..j], j))
}

fn parse_bare_item(b: &[u8], i: usize) -> Option<(Value, usize)> {
    match *b.get(i)? {
        b'-' | b'0'..=b'9' => parse_number(b, i),
        b'"' => parse_string(b, i + 1),
        b'*' | b'A'..=b'Z' | b'a'..=b'z' => {
            let mut j = i + 1;
            while b
                .get(j)
                .is_some_and(|&c| super::is_tchar(c) || c == b':' || c == b'/')
            {
                j += 1;
            }
            Some((Value::Other, j))
        }
        b':' => {
            let mut j = i + 1;
            while b
                .get(j)
                .is_some_and(|&c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
            {
                j += 1;
            }
            (b.get(j) == Some(&b':')).then(|| (Value::Other, j + 1))
        }
        b'?' => match b.get(i + 1)? {
            b'0' => Some((Value::Bool(false), i + 2)),
            b'1' => Some((Value::Bool(true), i + 2)),
            _ => None,
        },
        b'@' => match parse_number(b, i + 1)? {
            (Value::Integer(_), next) => Some((Value::Other, next)),
            _ => None,
        },
        b'%' => parse_display_string(b, i),
        _ => None,
    }
}

/// RFC 9651 §4.2.4: Integer (up to 15 digits) or Decimal (up to 12 + 3 digits).
fn parse_number(b: &[u8], i: usize) -> Option<(Value, usize)> {
    let mut j = i;
    let negative = b.get(j) == Some(&b'-');
    if negative {
        j += 1;
    }
    let digits_start = j;
    while b.get(j).is_some_and(u8::is_ascii_digit) {
        j += 1;
    }
    let int_digits = j - digits_start;
    if int_digits == 0 {
        return None;
    }
    if b.get(j) == Some(&b'.') {
        if int_digits > 12 {
            return None;
        }
        let frac_start = j + 1;
        let mut k = frac_start;
        while b.get(k).is_some_and(u8::is_ascii_digit) {
            k += 1;
        }
        if !(1..=3).contains(&(k - frac_start)) {
            return None;
        }
        return Some((Value::Other, k));
    }
    if int_digits > 15 {
        return None;
    }
    let n = b[digits_start..j]
        .iter()
        .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    Some((Value::Integer(if negative { -n } else { n }), j))
}

/// RFC 9651 §4.2.5, from just after the opening quote.
fn parse_string(b: &[u8], mut i: usize) -> Option<(Value, usize)> {
    let mut out = String::new();
    loop {
        let c = *b.get(i)?;
        match c {
            b'"' => return Some((Value::String(out), i + 1)),
            b'\\' => {
                let e = *b.get(i + 1)?;
                if e != b'"' && e != b'\\' {
                    return None;
                }
                out.push(char::from(e));
                i += 2;
            }
            0x20..=0x7e => {
                out.push(char::from(c));
                i += 1;
            }
            _ => return None,
        }
    }
}

/// RFC 9651 §4.2.10: `%"` then printable ASCII with `%xx` (lowercase hex) escapes of UTF-8.
fn parse_display_string(b: &[u8], i: usize) -> Option<(Value, usize)> {
    if b.get(i + 1) != Some(&b'"') {
        return None;
    }
    let mut j = i + 2;
    let mut bytes = Vec::new();
    loop {
        let c = *b.get(j)?;
        match c {
            b'"' => {
                std::str::from_utf8(&bytes).ok()?;
                return Some((Value::Other, j + 1));
            }
            b'%' => {
                let hex = |c: u8| match c {
                    b'0'..=b'9' => Some(c - b'0'),
                    b'a'..=b'f' => Some(c - b'a' + 10),
                    _ => None,
                };
                let hi = hex(*b.get(j + 1)?)?;
                let lo = hex(*b.get(j + 2)?)?;
                bytes.push(hi << 4 | lo);
                j += 3;
            }
            0x20..=0x7e => {
                bytes.push(c);
                j += 1;
            }
            _ => return None,
        }
    }
}

fn skip_sp(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

fn skip_ows(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<CacheControl> {
        CacheControl::parse_targeted([&HeaderValue::from_str(s).expect("value")])
    }

    #[test]
    fn dictionaries_map_to_directives() {
        let cc = t("max-age=600, public, stale-if-error=30;p=1, no-cache=\"set-cookie\"")
            .expect("valid");
        assert_eq!(cc.max_age, Some(600));
        assert!(cc.public);
        assert_eq!(cc.stale_if_error, Some(30));
        assert!(cc.no_cache);
        assert_eq!(cc.no_cache_fields, vec!["set-cookie".to_string()]);
        assert!(t("").expect("empty is valid").is_empty());
        // The last duplicate wins (a dictionary), not the lowest.
        assert_eq!(
            t("max-age=5, max-age=600").and_then(|c| c.max_age),
            Some(600)
        );
    }

    #[test]
    fn a_field_that_is_not_a_dictionary_is_ignored_whole() {
        for bad in [
            "MAX-AGE=600",
            "max-age=600,",
            "max-age=600 public",
            ", max-age=600",
            "max-age=600,,public",
            "max-age=\"60",
            "max-age=1234567890123456",
            "no-store=?2",
            "private=(\"a\"",
            "max-age=600; X=1",
        ] {
            assert!(t(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn known_directives_of_the_wrong_type_are_not_consumed() {
        for v in [
            "max-age=1.5",
            "max-age=\"600\"",
            "max-age=-1",
            "max-age=?1",
            "max-age=(600)",
            "no-store=?0",
            "public=1",
            "private=tok",
        ] {
            let cc = t(v).expect("valid dictionary");
            assert!(cc.is_empty(), "{v}: {cc:?}");
        }
        let cc = t("s-maxage=1.5, max-age=600, no-store=\"x\"").expect("valid");
        assert_eq!(
            (cc.s_maxage, cc.max_age, cc.no_store),
            (None, Some(600), false)
        );
    }

    #[test]
    fn field_lines_combine_and_other_item_types_parse() {
        let a = HeaderValue::from_static("max-age=60");
        let b = HeaderValue::from_static(
            "x=:aGk=:, y=@1700000000, z=%\"caf%c3%a9\", w=(a 1 \"s\");q=1",
        );
        let cc = CacheControl::parse_targeted([&a, &b]).expect("valid");
        assert_eq!(cc.max_age, Some(60));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            if let Ok(v) = HeaderValue::from_bytes(&b) {
                let _ = CacheControl::parse_targeted([&v]);
            }
            let _ = parse_dictionary(&b);
        }

        #[test]
        fn dictionary_shaped_text_never_panics(s in "[a-z*=?;,\" ()%:@0-9.\\-]{0,60}") {
            let _ = parse_dictionary(s.as_bytes());
        }
    }
}

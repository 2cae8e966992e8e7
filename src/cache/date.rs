//! HTTP-date parsing (RFC 9110 §5.6.7), the one function every date field is read with:
//! IMF-fixdate, RFC 850 and asctime, day and month names in any case (RFC 9111 §4.2).

use std::time::SystemTime;

/// Longest HTTP-date (RFC 850 with "Wednesday") is 33 bytes; anything much longer is invalid.
const MAX_LEN: usize = 64;

/// Parses an HTTP-date in any of the three formats. Day and month names may be in any case;
/// the zone must be `GMT` exactly (another zone makes the date invalid), so `None` for
/// anything else.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim_matches([' ', '\t']);
    if s.len() > MAX_LEN || !s.is_ascii() {
        return None;
    }
    // httpdate matches names byte for byte: give every alphabetic run the canonical case
    // ("Sun", "Nov", "Sunday"), except the zone, which stays as sent.
    let b = s.as_bytes();
    let mut out = [0u8; MAX_LEN];
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i == start {
            out[i] = b[i];
            i += 1;
            continue;
        }
        let run = &b[start..i];
        if run == b"GMT" {
            out[start..i].copy_from_slice(run);
        } else {
            for (k, &c) in run.iter().enumerate() {
                out[start + k] = if k == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                };
            }
        }
    }
    let canon = std::str::from_utf8(&out[..b.len()]).ok()?;
    httpdate::parse_http_date(canon).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t() -> SystemTime {
        // Sun, 06 Nov 1994 08:49:37 GMT
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn the_three_formats_in_any_case() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "sun, 06 nov 1994 08:49:37 GMT",
            "SUNDAY, 06-NOV-94 08:49:37 GMT",
            "sUN nOV  6 08:49:37 1994",
            " Sun, 06 Nov 1994 08:49:37 GMT\t",
        ] {
            assert_eq!(parse_http_date(s), Some(t()), "{s}");
        }
    }

    #[test]
    fn other_zones_and_junk_are_invalid() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 06 Nov 1994 08:49:37",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "0",
            "",
            "Sun, 06 Nov 1994 08:49:37 GMTx",
            "Sün, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(s), None, "{s}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let s = String::from_utf8_lossy(&b);
            let _ = parse_http_date(&s);
        }

        #[test]
        fn date_shaped_text_never_panics(s in "[A-Za-z]{0,10}[, ]{0,2}[0-9]{0,2}[- ][A-Za-z]{0,4}[- ][0-9]{0,4} [0-9:]{0,8} [A-Za-z]{0,4}") {
            let _ = parse_http_date(&s);
        }
    }
}

//! Negotiation, validators and the streaming decoder of `compress`.

use http_body_util::BodyExt;

use super::*;

fn req(ae: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in ae {
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn text_head(ct: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
    h
}

fn corpus(n: usize) -> Bytes {
    (0..n)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item {}\"}},", i % 97))
        .collect::<String>()
        .into()
}

#[test]
fn accept_encoding_honours_q_zero_star_and_absence() {
    assert!(accepts(&req(&["gzip, deflate, br"]), Coding::Gzip));
    assert!(accepts(&req(&["deflate", "x-gzip;q=0.5"]), Coding::Gzip));
    assert!(accepts(&req(&["*"]), Coding::Br));
    assert!(!accepts(&req(&[]), Coding::Gzip), "no field: identity");
    assert!(!accepts(&req(&["identity"]), Coding::Gzip));
    assert!(!accepts(&req(&["gzip;q=0"]), Coding::Gzip));
    assert!(
        !accepts(&req(&["gzip;q=0.000, *"]), Coding::Gzip),
        "named wins over *"
    );
    assert!(!accepts(&req(&["*;q=0"]), Coding::Gzip));
    assert!(!accepts(&req(&["br"]), Coding::Gzip));
    assert!(!accepts(&req(&["gzip;q=nonsense"]), Coding::Gzip));
}

#[test]
fn encoded_representations_get_their_own_entity_tag() {
    let v = |s: &'static str| HeaderValue::from_static(s);
    assert_eq!(
        suffixed_etag(&v("\"abc\""), Coding::Gzip).unwrap(),
        "\"abc-gzip\""
    );
    assert_eq!(
        suffixed_etag(&v("W/\"abc\""), Coding::Br).unwrap(),
        "W/\"abc-br\""
    );
    assert!(suffixed_etag(&v("unquoted"), Coding::Gzip).is_none());
}

#[test]
fn only_listed_identity_types_above_min_size_qualify() {
    let c = Compressor::new(&CompressionSection::default());
    let ok = StatusCode::OK;
    assert!(c.qualifies(ok, &text_head("text/html; charset=utf-8"), 4096));
    assert!(c.qualifies(ok, &text_head("Application/JSON"), 4096));
    assert!(!c.qualifies(ok, &text_head("image/png"), 4096));
    assert!(
        !c.qualifies(ok, &text_head("text/html"), 1023),
        "below min_size"
    );
    assert!(!c.qualifies(StatusCode::NOT_FOUND, &text_head("text/html"), 4096));
    let mut h = text_head("text/html");
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    assert!(!c.qualifies(ok, &h, 4096), "already encoded");
    let mut h = text_head("text/html");
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60, No-Transform"),
    );
    assert!(!c.qualifies(ok, &h, 4096), "no-transform");
    let off = Compressor::new(&CompressionSection {
        enabled: false,
        ..CompressionSection::default()
    });
    assert!(!off.qualifies(ok, &text_head("text/html"), 4096));
    assert!(c.qualifies(ok, &text_head("text/html"), 4096));
}

async fn collect(b: DecodeBody) -> Vec<u8> {
    b.collect().await.unwrap().to_bytes().to_vec()
}

#[tokio::test]
async fn both_codings_decode_whole_and_in_ranges() {
    let body = corpus(5000);
    for encoding in ["gzip", "br"] {
        let c = Compressor::new(&CompressionSection {
            encoding: encoding.into(),
            ..CompressionSection::default()
        });
        let (stored, t) = c
            .encode(StatusCode::OK, &text_head("application/json"), &body)
            .unwrap();
        assert!(stored.len() * 3 < body.len(), "{encoding} compresses");
        assert_eq!(t.identity_len, body.len() as u64);
        assert_eq!(
            c.stats.bytes_saved.load(Ordering::Relaxed),
            (body.len() - stored.len()) as u64
        );
        let whole = collect(DecodeBody::new(t, stored.clone(), 0, t.identity_len)).await;
        assert_eq!(whole, body.to_vec(), "{encoding} whole");
        // A range crossing several decode frames, and one at the very end.
        let (a, n) = (40_000u64, 70_001u64);
        let part = collect(DecodeBody::new(t, stored.clone(), a, n)).await;
        assert_eq!(part, body[a as usize..(a + n) as usize].to_vec());
        let tail = collect(DecodeBody::new(t, stored.clone(), t.identity_len - 1, 1)).await;
        assert_eq!(tail, body[body.len() - 1..].to_vec());
        assert_eq!(decode::decode_all(t, &stored).unwrap(), body.to_vec());
    }
}

#[tokio::test]
async fn a_corrupt_stored_body_is_an_error_not_a_panic() {
    let t = Transformed {
        coding: Coding::Gzip,
        identity_len: 100,
    };
    let r = DecodeBody::new(t, Bytes::from_static(b"\x1f\x8bnot gzip at all"), 0, 100)
        .collect()
        .await;
    assert!(r.is_err());
    assert!(decode::decode_all(t, &Bytes::from_static(b"junk")).is_none());
}

#[test]
fn incompressible_bodies_are_stored_as_they_came() {
    let c = Compressor::new(&CompressionSection::default());
    // High-entropy bytes: gzip output would be larger.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Bytes = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into();
    let (b, t) = c.stored_form(StatusCode::OK, &text_head("text/plain"), noise.clone());
    assert!(t.is_none());
    assert_eq!(b, noise);
}

//! `[cache.compression]`: one stored copy, sent encoded to clients that accept its coding and
//! decoded for the others; `no-transform`, validators, ranges, HEAD and the size budget.

use std::io::{Read, Write};

use super::*;

/// A compressible JSON document of about `n` bytes.
fn doc(n: usize, seed: usize) -> Bytes {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{},\"name\":\"item {}\",\"tags\":[\"a\",\"b\"]}},",
            i + seed,
            (i * 7 + seed) % 113
        ));
        i += 1;
    }
    s.push_str("{}]");
    s.into()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn json_route(body: Bytes, extra: &'static [(&'static str, &'static str)]) -> MockResponse {
    let mut r = MockResponse::ok(body)
        .header("content-type", "application/json")
        .header("cache-control", "max-age=60")
        .header("etag", "\"v1\"")
        .header("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT");
    for (k, v) in extra {
        r = r.header(k, v);
    }
    r
}

/// The one stored variant of `path`.
fn stored(proxy: &TestProxy, path: &str) -> Arc<seawall::cache::entry::Entry> {
    let vs = proxy
        .running()
        .state
        .cache()
        .store
        .variants(&key_of(proxy, path))
        .expect("stored");
    assert_eq!(vs.entries.len(), 1, "one stored variant");
    vs.entries[0].clone()
}

fn vary_lists_accept_encoding(h: &http::HeaderMap) -> bool {
    h.get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("accept-encoding"))
}

#[tokio::test]
async fn gzip_and_identity_clients_get_exact_bodies_from_one_stored_copy() {
    let body = doc(8 * 1024, 1);
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/doc", json_route(body.clone(), &[]))
        .behind_proxy()
        .await;
    let url = proxy.url("/doc");
    // The miss streams the origin's identity response as it came.
    let (s, h, b) = get_with(&url, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_status(&h), STORED);
    assert_eq!(b, body);
    settle(&proxy).await;

    let e = stored(&proxy, "/doc");
    assert!(e.body.len() * 3 < body.len(), "stored encoded");
    assert_eq!(&e.body[..2], b"\x1f\x8b");

    let (s, h, b) = get_with(&url, &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_hit(&h);
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(hv(&h, "etag"), "\"v1-gzip\"");
    assert_eq!(hv(&h, "content-length"), e.body.len().to_string());
    assert!(vary_lists_accept_encoding(&h), "{h:?}");
    assert_eq!(b, e.body);
    assert_eq!(gunzip(&b), body.to_vec());

    // Identity clients, after the entry was stored: no field, identity only, gzip refused.
    for ae in [None, Some("identity"), Some("gzip;q=0, identity")] {
        let headers: Vec<(&str, &str)> = ae.map(|v| ("accept-encoding", v)).into_iter().collect();
        let (s, h, b) = get_with(&url, &headers).await;
        assert_eq!(s, StatusCode::OK, "{ae:?}");
        assert_hit(&h);
        assert_eq!(hv(&h, "content-encoding"), "", "{ae:?}");
        assert_eq!(hv(&h, "etag"), "\"v1\"");
        assert_eq!(hv(&h, "content-length"), body.len().to_string());
        assert!(vary_lists_accept_encoding(&h));
        assert_eq!(b, body, "{ae:?}: byte-exact identity content");
    }
    // Over h2 too.
    let (_, h, b) = h2_get(&url).await;
    assert_hit(&h);
    assert_eq!(b, body);

    assert_eq!(origin.hits("/doc"), 1);
    let (s, _, v) = get(&proxy.admin_url(&format!("/admin/cache/entry?url={url}"))).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&v).unwrap();
    let var = &v["variants"][0];
    assert_eq!(var["stored_encoding"], "gzip", "{v}");
    assert_eq!(var["identity_bytes"], body.len());
    assert_eq!(var["body_bytes"], e.body.len());
    let z = &proxy.running().state.cache().compressor.stats;
    assert_eq!(z.compressed.load(Ordering::Relaxed), 1);
    assert_eq!(z.decoded.load(Ordering::Relaxed), 4);
    let (_, _, metrics) = get(&proxy.admin_url("/metrics")).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("seawall_cache_decode_total 4"),
        "{metrics}"
    );
    let saved = format!(
        "seawall_cache_compressed_bytes_saved_total {}",
        body.len() - e.body.len()
    );
    assert!(metrics.contains(&saved), "{metrics}");
}

#[tokio::test]
async fn an_origin_vary_on_accept_encoding_collapses_into_the_one_copy() {
    let body = doc(4 * 1024, 2);
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/v",
            json_route(
                body.clone(),
                &[("vary", "Accept-Encoding, Accept-Language")],
            ),
        )
        .behind_proxy()
        .await;
    let url = proxy.url("/v");
    get_with(
        &url,
        &[("accept-encoding", "gzip"), ("accept-language", "en")],
    )
    .await;
    settle(&proxy).await;
    for ae in ["br", "gzip, br", "identity"] {
        let (s, h, b) = get_with(&url, &[("accept-encoding", ae), ("accept-language", "en")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_hit(&h);
        let b = if hv(&h, "content-encoding") == "gzip" {
            gunzip(&b).into()
        } else {
            b
        };
        assert_eq!(b, body, "{ae}");
    }
    assert_eq!(origin.hits("/v"), 1);
    // A real Vary field still tells variants apart.
    let (_, h, _) = get_with(
        &url,
        &[("accept-encoding", "gzip"), ("accept-language", "de")],
    )
    .await;
    assert!(!cache_status(&h).contains("hit"), "{}", cache_status(&h));
    assert_eq!(origin.hits("/v"), 2);
}

#[tokio::test]
async fn a_no_transform_response_is_stored_and_served_untouched() {
    let body = doc(8 * 1024, 3);
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/nt",
            MockResponse::ok(body.clone())
                .header("content-type", "text/html")
                .header("cache-control", "max-age=60, no-transform")
                .header("etag", "\"nt\"")
                .header("content-digest", "sha-256=:abc=:"),
        )
        .behind_proxy()
        .await;
    let url = proxy.url("/nt");
    let (_, first, _) = get_with(&url, &[("accept-encoding", "gzip")]).await;
    settle(&proxy).await;
    assert_eq!(stored(&proxy, "/nt").body, body);
    let (s, h, b) = get_with(&url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_hit(&h);
    assert_eq!(b, body);
    for name in [
        "etag",
        "content-type",
        "cache-control",
        "content-length",
        "content-digest",
    ] {
        assert_eq!(hv(&h, name), hv(&first, name), "{name}");
    }
    assert!(!h.contains_key("content-encoding"));
    assert!(!h.contains_key("vary"));
    assert_eq!(origin.hits("/nt"), 1);
}

#[tokio::test]
async fn a_no_transform_request_gets_the_origins_identity_bytes() {
    let body = doc(8 * 1024, 4);
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/rq", json_route(body.clone(), &[]))
        .behind_proxy()
        .await;
    let url = proxy.url("/rq");
    get(&url).await;
    settle(&proxy).await;
    assert!(stored(&proxy, "/rq").transformed.is_some());
    let (s, h, b) = get_with(
        &url,
        &[
            ("accept-encoding", "gzip"),
            ("cache-control", "no-transform"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_hit(&h);
    assert_eq!(hv(&h, "content-encoding"), "");
    assert_eq!(hv(&h, "etag"), "\"v1\"");
    assert_eq!(b, body);
    assert_eq!(origin.hits("/rq"), 1);
}

#[tokio::test]
async fn conditionals_and_ranges_answer_the_representation_sent() {
    let body = doc(16 * 1024, 5);
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/c", json_route(body.clone(), &[]))
        .behind_proxy()
        .await;
    let url = proxy.url("/c");
    get(&url).await;
    settle(&proxy).await;
    let gz = stored(&proxy, "/c").body.clone();
    let gzip_ae = ("accept-encoding", "gzip");

    // If-None-Match with either representation's tag, each to its own client.
    let (s, h, b) = get_with(&url, &[gzip_ae, ("if-none-match", "\"v1-gzip\"")]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(hv(&h, "etag"), "\"v1-gzip\"");
    assert!(b.is_empty());
    let (s, h, _) = get_with(&url, &[("if-none-match", "W/\"v1\"")]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(hv(&h, "etag"), "\"v1\"");
    // The identity tag does not validate the gzip representation.
    let (s, h, b) = get_with(&url, &[gzip_ae, ("if-none-match", "\"v1\"")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(b, gz);
    let ims = ("if-modified-since", "Tue, 01 Dec 2026 10:00:00 GMT");
    let (s, _, _) = get_with(&url, &[gzip_ae, ims]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, _, _) = get_with(&url, &[ims]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);

    // An identity client's range is a range of the decoded content.
    let (s, h, b) = get_with(&url, &[("range", "bytes=1000-4999")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, body.slice(1000..5000));
    assert_eq!(
        hv(&h, "content-range"),
        format!("bytes 1000-4999/{}", body.len())
    );
    assert_eq!(hv(&h, "content-length"), "4000");
    let (s, _, b) = get_with(&url, &[("range", "bytes=-10")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, body.slice(body.len() - 10..));
    let (s, h, _) = get_with(
        &url,
        &[("range", format!("bytes={}-", body.len()).as_str())],
    )
    .await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hv(&h, "content-range"), format!("bytes */{}", body.len()));

    // A gzip client's range is a range of the encoded bytes, If-Range with its own tag.
    let (s, h, b) = get_with(&url, &[gzip_ae, ("range", "bytes=0-9")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(b, gz.slice(0..10));
    assert_eq!(hv(&h, "content-range"), format!("bytes 0-9/{}", gz.len()));
    let (s, _, b) = get_with(
        &url,
        &[gzip_ae, ("range", "bytes=0-9"), ("if-range", "\"v1-gzip\"")],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, gz.slice(0..10));
    let (s, _, b) = get_with(
        &url,
        &[gzip_ae, ("range", "bytes=0-9"), ("if-range", "\"v1\"")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "If-Range with the other tag: whole");
    assert_eq!(b, gz);
    assert_eq!(origin.hits("/c"), 1);
}

#[tokio::test]
async fn head_reports_the_encoding_a_get_would_get() {
    let body = doc(8 * 1024, 6);
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/hd", json_route(body.clone(), &[]))
        .behind_proxy()
        .await;
    let url = proxy.url("/hd");
    get(&url).await;
    settle(&proxy).await;
    for ae in ["gzip", "identity"] {
        let (_, get_h, get_b) = get_with(&url, &[("accept-encoding", ae)]).await;
        let req = Request::head(&url)
            .header("accept-encoding", ae)
            .body(Full::default())
            .unwrap();
        let (s, h, b) = request(req).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.is_empty());
        assert_hit(&h);
        for name in ["content-encoding", "content-length", "etag", "vary"] {
            assert_eq!(hv(&h, name), hv(&get_h, name), "{ae}: {name}");
        }
        assert_eq!(hv(&h, "content-length"), get_b.len().to_string());
    }
    assert_eq!(origin.hits("/hd"), 1);
}

#[tokio::test]
async fn bodies_below_min_size_and_unlisted_types_are_untouched() {
    let small = doc(600, 7);
    let png = doc(8 * 1024, 8);
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/small", json_route(small.clone(), &[]))
        .route(
            "/png",
            MockResponse::ok(png.clone())
                .header("content-type", "image/png")
                .header("cache-control", "max-age=60"),
        )
        .behind_proxy()
        .await;
    for (path, body) in [("/small", &small), ("/png", &png)] {
        let url = proxy.url(path);
        get(&url).await;
        settle(&proxy).await;
        assert_eq!(&stored(&proxy, path).body, body);
        let (_, h, b) = get_with(&url, &[("accept-encoding", "gzip")]).await;
        assert_hit(&h);
        assert_eq!(&b, body, "{path}");
        assert!(!h.contains_key("content-encoding"), "{path}");
        assert!(!h.contains_key("vary"), "{path}");
        assert_eq!(origin.hits(path), 1);
    }
}

#[tokio::test]
async fn an_origin_gzipped_response_is_stored_as_it_came() {
    let body = doc(8 * 1024, 9);
    let gz = Bytes::from(gzip(&body));
    let Scene { origin, proxy } = MockOrigin::new()
        .route(
            "/pre",
            MockResponse::ok(gz.clone())
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .header("cache-control", "max-age=60")
                .header("etag", "\"pre\""),
        )
        .behind_proxy()
        .await;
    let url = proxy.url("/pre");
    get_with(&url, &[("accept-encoding", "gzip")]).await;
    settle(&proxy).await;
    let e = stored(&proxy, "/pre");
    assert_eq!(e.body, gz);
    assert!(e.transformed.is_none());
    let (_, h, b) = get_with(&url, &[("accept-encoding", "gzip")]).await;
    assert_hit(&h);
    assert_eq!(b, gz);
    assert_eq!(hv(&h, "etag"), "\"pre\"");
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(origin.hits("/pre"), 1);
}

#[tokio::test]
async fn compressed_bytes_count_against_max_size() {
    // 24 documents of 64 KiB are 1.5 MiB as sent: twice the budget, yet all of them fit.
    let mut builder = MockOrigin::new();
    let docs: Vec<Bytes> = (0..24).map(|i| doc(64 * 1024, 100 + i)).collect();
    for (i, d) in docs.iter().enumerate() {
        builder = builder.route(&format!("/big/{i}"), json_route(d.clone(), &[]));
    }
    let origin = builder.start().await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[cache]\nmax_size = \"768KiB\"\nmax_object_size = \"128KiB\"",
        "",
        "",
    ))
    .await;
    for i in 0..docs.len() {
        get(&proxy.url(&format!("/big/{i}"))).await;
        settle(&proxy).await;
    }
    let (s, _, b) = get(&proxy.admin_url("/admin/cache/stats")).await;
    assert_eq!(s, StatusCode::OK);
    let stats: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let bytes = stats["bytes"].as_u64().unwrap();
    let stored_bodies: usize = (0..docs.len())
        .map(|i| stored(&proxy, &format!("/big/{i}")).body.len())
        .sum();
    assert_eq!(stats["entries"].as_u64(), Some(docs.len() as u64));
    assert_eq!(stats["evictions"]["size"].as_u64(), Some(0));
    assert!(bytes >= stored_bodies as u64, "{bytes} < {stored_bodies}");
    assert!(
        bytes < 768 * 1024 / 2,
        "weighed by the stored body: {bytes}"
    );
    for (i, d) in docs.iter().enumerate() {
        let (_, h, b) = get(&proxy.url(&format!("/big/{i}"))).await;
        assert_hit(&h);
        assert_eq!(&b, d);
    }
}

#[tokio::test]
async fn compression_off_stores_responses_as_they_came() {
    let body = doc(8 * 1024, 10);
    let origin = MockOrigin::new()
        .route("/off", json_route(body.clone(), &[]))
        .start()
        .await;
    let proxy = TestProxy::with_config(&config(
        &origin.url(),
        "[cache.compression]\nenabled = false",
        "",
        "",
    ))
    .await;
    let url = proxy.url("/off");
    get(&url).await;
    settle(&proxy).await;
    assert_eq!(stored(&proxy, "/off").body, body);
    let (_, h, b) = get_with(&url, &[("accept-encoding", "gzip")]).await;
    assert_hit(&h);
    assert_eq!(b, body);
    assert!(!h.contains_key("content-encoding"));
}

#[tokio::test]
async fn a_304_adding_no_transform_stops_the_encoded_copy_going_out() {
    let body = doc(8 * 1024, 11);
    let b2 = body.clone();
    let Scene { origin, proxy } = MockOrigin::new()
        .route("/nt304", move |parts: &Parts, _: &Bytes| {
            if parts
                .headers
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"")
            {
                MockResponse::with_status(304)
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=600, no-transform")
            } else {
                MockResponse::ok(b2.clone())
                    .header("content-type", "application/json")
                    .header("cache-control", "max-age=30")
                    .header("etag", "\"v1\"")
            }
        })
        .behind_proxy()
        .await;
    let url = proxy.url("/nt304");
    get(&url).await;
    settle(&proxy).await;
    let (_, h, _) = get_with(&url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        hv(&h, "content-encoding"),
        "gzip",
        "fresh: the stored coding"
    );
    advance(&proxy, 60);
    for _ in 0..2 {
        let (s, h, b) = get_with(&url, &[("accept-encoding", "gzip")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(hv(&h, "content-encoding"), "", "{h:?}");
        assert_eq!(hv(&h, "etag"), "\"v1\"");
        assert_eq!(b, body);
    }
    assert_eq!(origin.hits("/nt304"), 2, "one fill, one revalidation");
}

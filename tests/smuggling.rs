//! Request-smuggling vectors, each sent raw on one keep-alive connection with a second
//! request glued behind it: the client gets one 400, the connection closes, and the origin
//! never sees the smuggled request.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

use support::*;

/// The request hidden behind each vector.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

async fn setup() -> (MockOrigin, TestProxy) {
    let origin = MockOrigin::new()
        .route(
            "/a",
            MockResponse::ok("a").header("cache-control", "no-store"),
        )
        .route("/smuggled", MockResponse::ok("SMUGGLED"))
        .start()
        .await;
    let proxy = TestProxy::start(&origin.url()).await;
    (origin, proxy)
}

/// Sends `vector` followed by [`SMUGGLED`] and checks the outcome.
async fn assert_rejected(name: &str, vector: &str) {
    let (origin, proxy) = setup().await;
    let mut bytes = vector.as_bytes().to_vec();
    bytes.extend_from_slice(SMUGGLED.as_bytes());
    let reply = raw_exchange_detail(proxy.addr, &bytes).await;
    assert!(
        reply.text.starts_with("HTTP/1.1 400 "),
        "{name}: expected 400, got {:?}",
        reply.text
    );
    assert_eq!(
        reply.responses(),
        1,
        "{name}: only one response on the connection: {:?}",
        reply.text
    );
    assert!(
        !reply.text.contains("SMUGGLED"),
        "{name}: smuggled response leaked: {:?}",
        reply.text
    );
    assert!(
        reply.closed,
        "{name}: connection left open: {:?}",
        reply.text
    );
    assert_eq!(
        origin.hits("/smuggled"),
        0,
        "{name}: the origin saw the smuggled request"
    );

    // The proxy itself is fine afterwards.
    let (status, _, body) = get(&proxy.url("/a")).await;
    assert_eq!(status, http::StatusCode::OK, "{name}");
    assert_eq!(body, "a", "{name}");
    assert_eq!(origin.hits("/smuggled"), 0, "{name}");
}

#[tokio::test]
async fn content_length_then_transfer_encoding() {
    // A CL-honouring hop would read 44 bytes of body; a TE-honouring one sees the smuggled GET.
    assert_rejected(
        "CL.TE",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_then_content_length() {
    assert_rejected(
        "TE.CL",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_lengths() {
    assert_rejected(
        "CL.CL",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    )
    .await;
}

#[tokio::test]
async fn negative_content_length() {
    assert_rejected(
        "CL=-1",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn non_numeric_content_length() {
    assert_rejected(
        "CL=abc",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn obs_fold_header_line() {
    assert_rejected(
        "obs-fold",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn obs_folded_transfer_encoding() {
    assert_rejected(
        "obs-fold TE",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn invalid_chunk_size() {
    assert_rejected(
        "chunk size",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn absolute_form_authority_differs_from_host() {
    assert_rejected(
        "absolute-form",
        "GET http://evil.example/a HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn missing_host_on_http11() {
    assert_rejected("no Host", "GET /a HTTP/1.1\r\n\r\n").await;
}

#[tokio::test]
async fn repeated_host() {
    assert_rejected("two Hosts", "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n").await;
}

#[tokio::test]
async fn well_formed_pipelined_requests_are_both_answered() {
    // The control case: two honest requests on one connection are both served, in order.
    let (origin, proxy) = setup().await;
    let reply = raw_exchange_detail(
        proxy.addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.responses(), 2, "{:?}", reply.text);
    let first = reply.text.find("\r\n\r\na").unwrap();
    let second = reply.text.find("SMUGGLED").unwrap();
    assert!(first < second, "{:?}", reply.text);
    assert!(reply.closed);
    assert_eq!(origin.hits("/a"), 1);
    assert_eq!(origin.hits("/smuggled"), 1);
}

#[tokio::test]
async fn absolute_form_matching_host_is_served() {
    // The control case for the absolute-form vector: a consistent target is fine.
    let (origin, proxy) = setup().await;
    let reply = raw_exchange_detail(
        proxy.addr,
        b"GET http://x/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.text.starts_with("HTTP/1.1 200 "), "{:?}", reply.text);
    assert_eq!(origin.hits("/a"), 1);
    let seen = origin.received("/a");
    assert_eq!(seen[0].uri, "/a", "origin-form upstream");
}

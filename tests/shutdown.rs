//! Graceful shutdown: readiness drops at once, the drain delay still serves (with
//! `Connection: close`), in-flight requests finish, and `wait()` reports a clean stop.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

use http::StatusCode;
use support::*;

async fn origin() -> MockOrigin {
    MockOrigin::new()
        .route(
            "/slow",
            MockResponse::ok("slow done")
                .delay(500)
                .header("cache-control", "no-store"),
        )
        .route(
            "/fast",
            MockResponse::ok("fast").header("cache-control", "no-store"),
        )
        .start()
        .await
}

#[tokio::test]
async fn in_flight_request_completes_after_shutdown() {
    let origin = origin().await;
    let proxy = TestProxy::start(&origin.url()).await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    origin.wait_hits("/slow", 1).await;

    proxy.shutdown();
    let (status, _, body) = bounded("in-flight request", in_flight).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow done");
    assert!(proxy.wait().await, "stopped cleanly");
}

#[tokio::test]
async fn readyz_turns_503_right_after_shutdown() {
    let origin = origin().await;
    let proxy = TestProxy::start(&origin.url()).await;

    let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&body).contains("\"ready\":true"),
        "{body:?}"
    );

    proxy.shutdown();
    let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&body).contains("draining"),
        "{body:?}"
    );

    // Liveness is unaffected by the drain.
    let (status, _, _) = get(&proxy.admin_url("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(proxy.wait().await);
}

#[tokio::test]
async fn drain_delay_still_serves_new_requests_with_connection_close() {
    let origin = origin().await;
    // A drain delay long enough that the request below surely lands inside it.
    let cfg = format!(
        "[server]\ndrain_delay = \"2s\"\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;

    let (status, headers, _) = get(&proxy.url("/fast")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("connection").is_none(), "{headers:?}");

    proxy.shutdown();
    let (status, headers, body) = get(&proxy.url("/fast")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "fast");
    assert_eq!(header_str(&headers, "connection"), "close");

    // The same over a raw keep-alive connection: the server closes after the response.
    let reply = raw_exchange_detail(proxy.addr, b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(reply.text.starts_with("HTTP/1.1 200 "), "{:?}", reply.text);
    assert!(
        reply
            .text
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{:?}",
        reply.text
    );
    assert!(reply.closed, "connection closed after the response");
    assert_eq!(origin.hits("/fast"), 3);
    assert!(proxy.wait().await);
}

#[tokio::test]
async fn kept_alive_connection_is_told_to_close_during_the_drain() {
    let origin = origin().await;
    let cfg = format!(
        "[server]\ndrain_delay = \"2s\"\n\n{}",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;

    // Opened and used before the drain: keep-alive.
    let mut s = bounded("connect", tokio::net::TcpStream::connect(proxy.addr))
        .await
        .unwrap();
    let req = b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n";
    bounded("write", tokio::io::AsyncWriteExt::write_all(&mut s, req))
        .await
        .unwrap();
    let first = String::from_utf8_lossy(&read_until(&mut s, b"fast").await).into_owned();
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );

    // The same connection during the drain: served, then closed.
    proxy.shutdown();
    bounded("write", tokio::io::AsyncWriteExt::write_all(&mut s, req))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = bounded(
        "read to close",
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
    )
    .await;
    let second = String::from_utf8_lossy(&rest).into_owned();
    assert!(read.is_ok(), "{read:?}");
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "{second}"
    );
    assert!(proxy.wait().await);
}

#[tokio::test]
async fn idle_keep_alive_connection_does_not_hold_up_the_stop() {
    let origin = origin().await;
    let proxy = TestProxy::start(&origin.url()).await;

    // One answered request, then the connection stays open and idle.
    let mut s = bounded("connect", tokio::net::TcpStream::connect(proxy.addr))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut s, b"fast").await;
    assert!(head.starts_with(b"HTTP/1.1 200 "));

    proxy.shutdown();
    assert!(
        proxy.wait().await,
        "an idle connection is closed, not waited for"
    );
    drop(s);
}

#[tokio::test]
async fn http2_connection_with_in_flight_stream_finishes_after_shutdown() {
    let origin = origin().await;
    let proxy = TestProxy::start(&origin.url()).await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { h2_get(&url).await });
    origin.wait_hits("/slow", 1).await;

    proxy.shutdown();
    let (status, _, body) = bounded("in-flight h2 stream", in_flight).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow done");
    assert!(proxy.wait().await);
}

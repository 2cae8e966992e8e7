//! The one error-to-response mapping: status, `Cache-Status` detail and what a client may read.

use http::StatusCode;
use http_body_util::BodyExt;

use super::*;

async fn body_text(res: Response<ProxyBody>) -> String {
    let bytes = res
        .into_body()
        .collect()
        .await
        .expect("full body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_internal_failure_is_a_500_with_detail_internal_not_an_upstream_failure() {
    let e = ProxyError::Internal("fetch task ended");
    assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(e.reason(), "internal");
    assert!(!e.is_upstream_failure(), "counts against the upstream");
    let res = e.to_response("seawall; fwd=uri-miss; detail=internal");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        res.headers()["cache-status"],
        "seawall; fwd=uri-miss; detail=internal"
    );
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(!res.headers().contains_key("retry-after"));
    assert!(!res.headers().contains_key("connection"));
    // Which invariant failed goes to the log, not to the client.
    assert_eq!(body_text(res).await, "500 internal: internal error\n");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_upstream_reset_stays_a_502_upstream_failure() {
    let e = ProxyError::UpstreamReset("connection reset by peer".into());
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(e.reason(), "upstream-reset");
    assert!(e.is_upstream_failure());
    let res = e.to_response("seawall; fwd=uri-miss; detail=upstream-reset");
    assert_eq!(
        body_text(res).await,
        "502 upstream-reset: upstream closed the connection\n"
    );
}

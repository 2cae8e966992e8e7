//! Traces reach an OTLP collector (a fake one here, as Jaeger would receive them): request and
//! upstream spans with their attributes, parent/child, and `traceparent` sent to the origin.
#![allow(clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::*;

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_collector() -> (SocketAddr, Collector) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .http2_only()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    (addr, collector)
}

fn attrs(s: &Span) -> HashMap<String, String> {
    s.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_attributes_and_parentage() {
    let (collector_addr, collector) = start_collector().await;
    let tel = seawall::config::file::TelemetrySection {
        enabled: true,
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        sampling_ratio: 1.0,
        ..Default::default()
    };
    // Installed before the harness's own subscriber, so this one wins.
    let guard =
        seawall::telemetry::init(&seawall::config::file::LogSection::default(), &tel).unwrap();

    let origin = MockOrigin::new()
        .route(
            "/traced",
            MockResponse::ok("hello").header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let cfg = format!(
        "{}\n[telemetry]\nenabled = true\notlp_endpoint = \"http://{collector_addr}\"\nsampling_ratio = 1.0\n",
        upstream_config(&origin.url(), "")
    );
    let proxy = TestProxy::with_config(&cfg).await;

    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let req = Request::get(proxy.url("/traced"))
        .header(
            "traceparent",
            format!("00-{client_trace}-00f067aa0ba902b7-01"),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = request(req).await;
    assert_eq!(status, 200);
    assert_eq!(body, "hello");

    // The origin got a traceparent of the same trace.
    let sent = origin.requests("/traced");
    let tp = sent[0]
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        tp.starts_with(&format!("00-{client_trace}-")),
        "origin saw {tp}"
    );

    guard.shutdown().await;
    let mut spans = Vec::new();
    // Bounded at 10 s: on a loaded machine the batch export can lag the shutdown call.
    for _ in 0..200 {
        spans = collector.spans.lock().unwrap().clone();
        if spans.iter().any(|s| s.name == "upstream origin")
            && spans.iter().any(|s| s.name == "GET /traced")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Span names are the `otel.name` fields: "METHOD path" and "upstream NAME".
    let request_span = spans
        .iter()
        .find(|s| s.name == "GET /traced")
        .expect("request span exported");
    let upstream_span = spans
        .iter()
        .find(|s| s.name == "upstream origin")
        .expect("upstream span exported");
    assert_eq!(hex(&request_span.trace_id), client_trace);
    assert_eq!(upstream_span.trace_id, request_span.trace_id);
    assert_eq!(
        upstream_span.parent_span_id, request_span.span_id,
        "upstream span is a child of the request span"
    );
    // The origin's traceparent names the upstream span as its parent.
    assert!(
        tp.contains(&hex(&upstream_span.span_id)),
        "origin traceparent {tp}"
    );
    let a = attrs(request_span);
    assert_eq!(
        a.get("http.request.method").map(String::as_str),
        Some("GET")
    );
    assert_eq!(a.get("http.route").map(String::as_str), Some("origin"));
    assert_eq!(
        a.get("http.response.status_code").map(String::as_str),
        Some("200")
    );
    assert_eq!(
        a.get("seawall.upstream").map(String::as_str),
        Some("origin")
    );
    assert_eq!(
        a.get("seawall.coalesced").map(String::as_str),
        Some("false")
    );
    assert_eq!(
        a.get("seawall.breaker_state").map(String::as_str),
        Some("closed")
    );
    assert!(
        a.get("seawall.cache_status")
            .is_some_and(|c| c.contains("fwd=uri-miss")),
        "{a:?}"
    );
    assert_eq!(
        attrs(upstream_span)
            .get("seawall.upstream")
            .map(String::as_str),
        Some("origin")
    );
}

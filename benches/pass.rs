//! Criterion benchmarks through the whole proxy over loopback: a real Seawall (`app::start`,
//! launcher defaults: metrics on, tracing and access log off) in front of a real origin.
//! `pass_unique/*` is the e2e pass-through scenario (`no-store`, a new URL per request);
//! `origin_direct` is the same requests without Seawall, so the difference is Seawall's cost.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// A loopback origin: 1 KiB, `Cache-Control` from the `cc` query (`no-store` by default).
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind origin: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("origin addr: {e}"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let cc = if req.uri().query().is_some_and(|q| q.contains("cc=max-age")) {
                            "max-age=3600"
                        } else {
                            "no-store"
                        };
                        let res = Response::builder()
                            .header("cache-control", cc)
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(&[b'x'; 1024])))
                            .unwrap_or_default();
                        Ok::<_, Infallible>(res)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// One keep-alive HTTP/1.1 connection to `addr`, as a load generator holds one.
async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = tcp.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap_or_else(|e| panic!("handshake {addr}: {e}"));
    tokio::spawn(conn);
    send
}

/// Sends `GET path` and reads the whole body; panics on anything but 200 (a broken setup must
/// not be measured as a fast one).
async fn get(send: &mut SendRequest<Empty<Bytes>>, path: &str) -> usize {
    let req = Request::get(path)
        .header("host", "bench.example")
        .header("user-agent", "criterion")
        .body(Empty::new())
        .unwrap_or_default();
    let res = send
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(res.status(), 200, "GET {path}");
    let body = res
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("body {path}: {e}"))
        .to_bytes();
    body.len()
}

fn benches(c: &mut Criterion) {
    // Servers (origin and Seawall) on their own runtime, the client on criterion's.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let origin = servers.block_on(origin());
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[[upstreams]]
name = "app"
endpoints = ["http://{origin}"]
[[routes]]
upstream = "app"
"#
    );
    let config = seawall::config::Config::parse(&cfg, "bench.toml", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let running = servers
        .block_on(seawall::app::start_with_token(config, Some("bench".into())))
        .unwrap_or_else(|e| panic!("start: {e}"));
    let proxy = running.addr;

    let n = AtomicU64::new(0);
    let mut group = c.benchmark_group("pass_unique");
    let mut direct = client.block_on(connect(origin));
    group.bench_function("origin_direct", |b| {
        b.iter(|| {
            let path = format!("/miss/p?n=1024&u={}", n.fetch_add(1, Ordering::Relaxed));
            client.block_on(get(&mut direct, &path))
        })
    });
    let mut via = client.block_on(connect(proxy));
    group.bench_function("seawall", |b| {
        b.iter(|| {
            let path = format!("/miss/p?n=1024&u={}", n.fetch_add(1, Ordering::Relaxed));
            client.block_on(get(&mut via, &path))
        })
    });
    group.finish();

    // A hit through the listener, for scale against the pass-through above (a new
    // connection: the previous one may have idled out while criterion analysed).
    let mut via = client.block_on(connect(proxy));
    client.block_on(get(&mut via, "/hot?cc=max-age"));
    c.bench_function("hit_1k_via_listener", |b| {
        b.iter(|| client.block_on(get(&mut via, "/hot?cc=max-age")))
    });
    running.shutdown();
}

criterion_group! {
    name = pass;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(pass);

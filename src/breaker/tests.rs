//! The breaker layer over a scripted mock upstream on tokio's paused clock: one test per rule,
//! no sockets, no real sleeps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::state::StateKind;
use super::{BreakerLayer, Breakers, CircuitBreaker};
use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::{ProxyError, TimeoutPhase};
use crate::http_util::ClientAddr;
use crate::route::Router;

/// Trips after 3 connect failures in a row (or half of 3 requests failing, one client may count
/// fully), open 30 s at first, at most 60 s.
const BREAKER: &str = r#"
consecutive_failures = 3
min_requests = 3
failure_rate = 0.5
open_duration = "30s"
max_open_duration = "60s"
max_client_share = 1.0
"#;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9091"

[[upstreams]]
name = "app"
endpoints = ["http://127.0.0.1:3000"]
"#;

/// One scripted answer of the mock upstream, after `delay`.
#[derive(Clone)]
struct Step {
    delay: Duration,
    answer: Result<StatusCode, ProxyError>,
}

fn ok() -> Step {
    status(StatusCode::OK)
}

fn status(s: StatusCode) -> Step {
    Step {
        delay: Duration::ZERO,
        answer: Ok(s),
    }
}

fn fail(e: ProxyError) -> Step {
    Step {
        delay: Duration::ZERO,
        answer: Err(e),
    }
}

fn refused() -> Step {
    fail(ProxyError::UpstreamConnect("connection refused".into()))
}

/// A mock upstream: answers from its script in order (200 when the script is empty) and
/// counts the calls that reached it.
#[derive(Clone, Default)]
struct Upstream {
    script: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<AtomicUsize>,
}

impl Upstream {
    fn push(&self, steps: impl IntoIterator<Item = Step>) {
        self.script.lock().expect("script").extend(steps);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request<ProxyBody>> for Upstream {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<ProxyBody>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let step = self
            .script
            .lock()
            .expect("script")
            .pop_front()
            .unwrap_or_else(ok);
        Box::pin(async move {
            tokio::time::sleep(step.delay).await;
            step.answer.map(|s| {
                let mut res = Response::new(ProxyBody::full("answer"));
                *res.status_mut() = s;
                res
            })
        })
    }
}

struct Fixture {
    svc: CircuitBreaker<Upstream>,
    upstream: Upstream,
    breakers: Arc<Breakers>,
    router: Router,
}

fn fixture() -> Fixture {
    fixture_with(BREAKER)
}

/// A breaker configured by `breaker` (the `[upstreams.breaker]` keys) over a mock upstream.
fn fixture_with(breaker: &str) -> Fixture {
    let src = format!("{CONFIG}[upstreams.breaker]\n{breaker}\n[[routes]]\nupstream = \"app\"\n");
    let cfg = Config::parse(&src, "t.toml", Vec::new()).expect("valid config");
    let breakers = Arc::new(Breakers::new(&cfg));
    let upstream = Upstream::default();
    let svc = BreakerLayer::new(breakers.clone(), None).layer(upstream.clone());
    Fixture {
        svc,
        upstream,
        breakers,
        router: Router::new(&cfg),
    }
}

impl Fixture {
    fn request(&self) -> Request<ProxyBody> {
        let mut req = Request::new(ProxyBody::empty());
        req.extensions_mut().insert(self.router.routes()[0].clone());
        req.extensions_mut()
            .insert(ClientAddr([192, 0, 2, 1].into()));
        req
    }

    async fn send(&self) -> Result<Response<ProxyBody>, ProxyError> {
        self.svc.clone().oneshot(self.request()).await
    }

    fn state(&self) -> StateKind {
        self.breakers.get(0).expect("breaker").state()
    }

    /// The last transition, as `GET /admin/breakers` shows it.
    fn last(&self) -> (StateKind, StateKind) {
        let (_, t) = self
            .breakers
            .get(0)
            .expect("breaker")
            .view()
            .last_transition
            .expect("a transition happened");
        (t.from, t.to)
    }

    fn trips(&self) -> u32 {
        self.breakers.get(0).expect("breaker").view().snapshot.trips
    }

    /// Trips the breaker with three refused connections.
    async fn trip(&self) {
        self.upstream.push([refused(), refused(), refused()]);
        for _ in 0..3 {
            let e = self.send().await.expect_err("refused");
            assert!(matches!(e, ProxyError::UpstreamConnect(_)), "{e:?}");
        }
        assert_eq!(self.state(), StateKind::Open);
    }
}

/// The wait a fail-fast answer promises, or a panic naming what came instead.
fn circuit_open(r: Result<Response<ProxyBody>, ProxyError>) -> Duration {
    match r {
        Err(e @ ProxyError::CircuitOpen { retry_after }) => {
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
            retry_after.expect("a breaker opened by failures promises a retry time")
        }
        Err(e) => panic!("expected CircuitOpen, got {e:?}"),
        Ok(r) => panic!("expected CircuitOpen, got {}", r.status()),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn consecutive_connect_failures_open_the_breaker() {
    // The rate needs more requests than this test makes: only the run can open it.
    let f = fixture_with(&BREAKER.replace("min_requests = 3", "min_requests = 100"));
    f.upstream.push([refused(), refused()]);
    for _ in 0..2 {
        f.send().await.expect_err("refused");
    }
    assert_eq!(
        f.state(),
        StateKind::Closed,
        "two failures stay under the run"
    );
    // A success breaks the run: two more failures do not open it either.
    f.send().await.expect("200");
    f.upstream.push([refused(), refused()]);
    for _ in 0..2 {
        f.send().await.expect_err("refused");
    }
    assert_eq!(f.state(), StateKind::Closed);
    f.upstream
        .push([fail(ProxyError::UpstreamTimeout(TimeoutPhase::Connect))]);
    f.send().await.expect_err("connect timeout");
    assert_eq!(
        f.state(),
        StateKind::Open,
        "the third failure in a row opens it"
    );
    assert_eq!(f.last(), (StateKind::Closed, StateKind::Open));
    assert_eq!(f.trips(), 1);
    assert_eq!(f.upstream.calls(), 6);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_open_breaker_fails_fast_without_calling_the_upstream() {
    let f = fixture();
    f.trip().await;
    for _ in 0..5 {
        let wait = circuit_open(f.send().await);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }
    assert_eq!(f.upstream.calls(), 3, "no upstream call while open");
    // The promised wait counts down with the clock.
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(circuit_open(f.send().await) <= Duration::from_secs(10));
    assert_eq!(f.upstream.calls(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_probe_goes_through_after_the_open_period_and_its_success_closes() {
    let f = fixture();
    f.trip().await;
    tokio::time::advance(Duration::from_secs(29)).await;
    circuit_open(f.send().await);
    assert_eq!(
        f.upstream.calls(),
        3,
        "still open just before the period ends"
    );
    tokio::time::advance(Duration::from_secs(1)).await;

    let res = f.send().await.expect("the probe reaches the upstream");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(f.upstream.calls(), 4, "exactly one probe");
    assert_eq!(f.state(), StateKind::Closed);
    assert_eq!(f.trips(), 0, "a proven recovery clears the trip count");
    assert_eq!(f.last(), (StateKind::HalfOpen, StateKind::Closed));
    for _ in 0..3 {
        assert_eq!(f.send().await.expect("closed").status(), StatusCode::OK);
    }
    assert_eq!(f.upstream.calls(), 7);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_probe_reopens_for_a_doubled_period() {
    let f = fixture();
    f.trip().await;
    tokio::time::advance(Duration::from_secs(30)).await;
    f.upstream.push([refused()]);
    f.send().await.expect_err("the probe fails");
    assert_eq!(f.upstream.calls(), 4);
    assert_eq!(f.state(), StateKind::Open);
    assert_eq!(f.trips(), 2);
    assert_eq!(f.last(), (StateKind::HalfOpen, StateKind::Open));
    let wait = circuit_open(f.send().await);
    assert!(
        wait > Duration::from_secs(30) && wait <= Duration::from_secs(60),
        "second open period is doubled: {wait:?}"
    );
    tokio::time::advance(Duration::from_secs(59)).await;
    circuit_open(f.send().await);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(f.send().await.expect("probe").status(), StatusCode::OK);
    assert_eq!(f.state(), StateKind::Closed);
    assert_eq!(f.upstream.calls(), 5);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn only_one_probe_is_in_flight_while_half_open() {
    let f = fixture();
    f.trip().await;
    tokio::time::advance(Duration::from_secs(30)).await;
    f.upstream.push([Step {
        delay: Duration::from_millis(1500),
        answer: Ok(StatusCode::OK),
    }]);
    let probe = tokio::spawn(f.svc.clone().oneshot(f.request()));
    // Let the probe reach the upstream (the clock does not move while it waits).
    while f.upstream.calls() < 4 {
        tokio::task::yield_now().await;
    }
    assert_eq!(f.state(), StateKind::HalfOpen);
    for _ in 0..3 {
        assert_eq!(circuit_open(f.send().await), Duration::from_secs(1));
    }
    assert_eq!(f.upstream.calls(), 4, "nobody else reached the upstream");
    let res = probe.await.expect("probe task").expect("probe answer");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(f.state(), StateKind::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failure_statuses_open_the_breaker_through_the_rate() {
    let f = fixture();
    let bad = StatusCode::SERVICE_UNAVAILABLE;
    f.upstream
        .push([status(bad), ok(), status(bad), status(bad)]);
    for want in [bad, StatusCode::OK, bad] {
        assert_eq!(f.send().await.expect("answer").status(), want);
    }
    // 2 of 3 failed: over the 0.5 rate once min_requests (3) are in the window.
    assert_eq!(f.state(), StateKind::Open);
    circuit_open(f.send().await);
    assert_eq!(f.upstream.calls(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn internal_errors_never_count_against_the_upstream() {
    let f = fixture();
    f.upstream
        .push((0..10).map(|_| fail(ProxyError::Internal("leader vanished"))));
    for _ in 0..10 {
        let e = f.send().await.expect_err("internal");
        assert!(matches!(e, ProxyError::Internal(_)), "{e:?}");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(f.state(), StateKind::Closed);
    let snap = f.breakers.get(0).expect("breaker").view().snapshot;
    assert_eq!(snap.window_failures, 0, "{snap:?}");
    assert_eq!(snap.consecutive_failures, 0, "{snap:?}");
    assert_eq!(f.upstream.calls(), 10, "every request reached the upstream");

    // Nor does one end a half-open probe: the slot is released and the next probe decides.
    f.trip().await;
    tokio::time::advance(Duration::from_secs(30)).await;
    f.upstream.push([fail(ProxyError::Internal("fill lost"))]);
    f.send().await.expect_err("internal");
    assert_ne!(f.state(), StateKind::Open, "an internal error reopened it");
    assert_eq!(f.send().await.expect("next probe").status(), StatusCode::OK);
    assert_eq!(f.state(), StateKind::Closed);
}

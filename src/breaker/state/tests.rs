use super::*;
use tokio::time::advance;

const CLOSED_TO_OPEN: Transition = Transition {
    from: StateKind::Closed,
    to: StateKind::Open,
};
const OPEN_TO_HALF: Transition = Transition {
    from: StateKind::Open,
    to: StateKind::HalfOpen,
};
const HALF_TO_CLOSED: Transition = Transition {
    from: StateKind::HalfOpen,
    to: StateKind::Closed,
};
const HALF_TO_OPEN: Transition = Transition {
    from: StateKind::HalfOpen,
    to: StateKind::Open,
};
const ALLOWED: Admission = Admission::Allowed { probe: false };
const PROBE: Admission = Admission::Allowed { probe: true };

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rejected(s: u64) -> Admission {
    Admission::Rejected {
        retry_after: Some(secs(s)),
    }
}

fn breaker() -> Breaker {
    Breaker::new(BreakerConfig::default(), Instant::now())
}

/// Trips a closed breaker via consecutive failures (default 5).
fn trip(b: &mut Breaker) -> Option<Transition> {
    let mut last = None;
    for _ in 0..b.config().consecutive_failures {
        assert_eq!(b.admit(Instant::now()).0, ALLOWED);
        last = b.on_failure(Instant::now(), false);
    }
    last
}

/// Waits out the open period and admits the first probe.
async fn wait_and_probe(b: &mut Breaker) {
    let until = b.snapshot().open_until.expect("open_until set");
    advance(until - Instant::now()).await;
    assert_eq!(b.admit(Instant::now()), (PROBE, Some(OPEN_TO_HALF)));
}

#[test]
fn defaults_and_labels() {
    let c = BreakerConfig::default();
    assert_eq!(c.window, secs(10));
    assert_eq!(c.failure_rate, 0.5);
    assert_eq!(c.min_requests, 20);
    assert_eq!(c.consecutive_failures, 5);
    assert_eq!(c.open_duration, secs(30));
    assert_eq!(c.max_open_duration, secs(300));
    assert_eq!(c.half_open_probes, 1);
    assert_eq!(StateKind::Closed.as_str(), "closed");
    assert_eq!(StateKind::Open.as_str(), "open");
    assert_eq!(StateKind::HalfOpen.as_str(), "half_open");
    assert_eq!(StateKind::Closed.as_gauge(), 0);
    assert_eq!(StateKind::Open.as_gauge(), 1);
    assert_eq!(StateKind::HalfOpen.as_gauge(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn consecutive_failures_trip() {
    let mut b = breaker();
    let t0 = Instant::now();
    for _ in 0..4 {
        assert_eq!(b.on_failure(Instant::now(), false), None);
    }
    // A success breaks the run.
    assert_eq!(b.on_success(Instant::now(), false), None);
    assert_eq!(b.snapshot().consecutive_failures, 0);
    assert_eq!(trip(&mut b), Some(CLOSED_TO_OPEN));
    let s = b.snapshot();
    assert_eq!(s.state, StateKind::Open);
    assert_eq!(s.since, t0);
    assert_eq!(s.trips, 1);
    assert_eq!(s.open_until, Some(t0 + secs(30)));
    assert_eq!((s.window_requests, s.window_failures), (10, 9));
    assert!(!s.forced);
    assert_eq!(b.admit(Instant::now()), (rejected(30), None));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rate_trip_needs_min_requests() {
    let cfg = BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(cfg, Instant::now());
    // 18 requests at 100% failure: rate met but below min_requests.
    for _ in 0..18 {
        assert_eq!(b.on_failure(Instant::now(), false), None);
    }
    assert_eq!(b.on_success(Instant::now(), false), None);
    let s = b.snapshot();
    assert_eq!((s.window_requests, s.window_failures), (19, 18));
    assert_eq!(s.state, StateKind::Closed);
    // 20th request, 19/20 failures.
    assert_eq!(b.on_failure(Instant::now(), false), Some(CLOSED_TO_OPEN));
    assert_eq!(b.snapshot().window_requests, 20);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rate_below_threshold_stays_closed() {
    let cfg = BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(cfg, Instant::now());
    for _ in 0..11 {
        assert_eq!(b.on_success(Instant::now(), false), None);
    }
    for _ in 0..10 {
        assert_eq!(b.on_failure(Instant::now(), false), None);
    }
    // 10/21 < 0.5; one more failure makes 11/22 = 0.5.
    assert_eq!(b.state(), StateKind::Closed);
    assert_eq!(b.on_failure(Instant::now(), false), Some(CLOSED_TO_OPEN));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failures_outside_window_do_not_count() {
    let cfg = BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(cfg, Instant::now());
    for _ in 0..19 {
        assert_eq!(b.on_failure(Instant::now(), false), None);
    }
    advance(secs(5)).await;
    // Still inside the window: counts accumulate.
    assert_eq!(b.on_success(Instant::now(), false), None);
    assert_eq!(b.snapshot().window_requests, 20);
    advance(secs(6)).await;
    // The 19 failures at t=0 have aged out; only the success at t=5 remains.
    assert_eq!(b.on_failure(Instant::now(), false), None);
    let s = b.snapshot();
    assert_eq!((s.window_requests, s.window_failures), (2, 1));
    advance(secs(20)).await;
    assert_eq!(b.on_failure(Instant::now(), false), None);
    let s = b.snapshot();
    assert_eq!((s.window_requests, s.window_failures), (1, 1));
    assert_eq!(s.state, StateKind::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn half_open_probe_success_closes() {
    let mut b = breaker();
    trip(&mut b);
    advance(secs(29)).await;
    assert_eq!(b.admit(Instant::now()), (rejected(1), None));
    advance(secs(1)).await;
    let t = Instant::now();
    assert_eq!(b.admit(t), (PROBE, Some(OPEN_TO_HALF)));
    assert_eq!(b.state(), StateKind::HalfOpen);
    assert_eq!(b.snapshot().since, t);
    // Probe limit: the second request is rejected while the probe is out.
    assert_eq!(b.admit(Instant::now()), (rejected(1), None));
    advance(secs(2)).await;
    assert_eq!(b.on_success(Instant::now(), true), Some(HALF_TO_CLOSED));
    let s = b.snapshot();
    assert_eq!(s.state, StateKind::Closed);
    assert_eq!(s.since, t + secs(2));
    assert_eq!(s.trips, 0);
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!((s.window_requests, s.window_failures), (0, 0));
    assert_eq!(s.open_until, None);
    assert_eq!(b.admit(Instant::now()), (ALLOWED, None));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn probe_failure_reopens_with_longer_time() {
    let mut b = breaker();
    trip(&mut b);
    wait_and_probe(&mut b).await;
    let t = Instant::now();
    assert_eq!(b.on_failure(t, true), Some(HALF_TO_OPEN));
    let s = b.snapshot();
    assert_eq!(s.trips, 2);
    assert_eq!(s.open_until, Some(t + secs(60)));
    assert_eq!(b.admit(t), (rejected(60), None));
    advance(secs(59)).await;
    assert_eq!(b.admit(Instant::now()), (rejected(1), None));
    advance(Duration::from_millis(700)).await;
    // 300 ms left still reports the 1 s floor.
    assert_eq!(b.admit(Instant::now()), (rejected(1), None));
    advance(Duration::from_millis(300)).await;
    assert_eq!(b.admit(Instant::now()), (PROBE, Some(OPEN_TO_HALF)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn open_time_grows_and_caps_then_resets_on_close() {
    let mut b = breaker();
    trip(&mut b);
    let mut seen = vec![b.snapshot().open_until.expect("open") - Instant::now()];
    for _ in 0..5 {
        wait_and_probe(&mut b).await;
        assert_eq!(b.on_failure(Instant::now(), true), Some(HALF_TO_OPEN));
        seen.push(b.snapshot().open_until.expect("open") - Instant::now());
    }
    let want: Vec<Duration> = [30, 60, 120, 240, 300, 300].map(secs).to_vec();
    assert_eq!(seen, want);
    assert_eq!(b.snapshot().trips, 6);
    // A successful close resets growth: the next trip is back to 30 s.
    wait_and_probe(&mut b).await;
    assert_eq!(b.on_success(Instant::now(), true), Some(HALF_TO_CLOSED));
    assert_eq!(trip(&mut b), Some(CLOSED_TO_OPEN));
    assert_eq!(b.snapshot().trips, 1);
    assert_eq!(b.admit(Instant::now()), (rejected(30), None));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn cancel_releases_probe_slot_without_outcome() {
    let mut b = breaker();
    trip(&mut b);
    wait_and_probe(&mut b).await;
    assert_eq!(b.admit(Instant::now()), (rejected(1), None));
    b.on_cancel(true);
    assert_eq!(b.state(), StateKind::HalfOpen);
    assert_eq!(b.snapshot().trips, 1);
    assert_eq!(b.admit(Instant::now()), (PROBE, None));
    assert_eq!(b.on_success(Instant::now(), true), Some(HALF_TO_CLOSED));
    // Cancels while closed change nothing.
    b.on_cancel(false);
    let s = b.snapshot();
    assert_eq!((s.window_requests, s.consecutive_failures), (0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn multiple_probes() {
    let cfg = BreakerConfig {
        half_open_probes: 2,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(cfg, Instant::now());
    trip(&mut b);
    wait_and_probe(&mut b).await;
    assert_eq!(b.admit(Instant::now()), (PROBE, None));
    assert_eq!(b.admit(Instant::now()), (rejected(1), None));
    assert_eq!(b.on_failure(Instant::now(), true), Some(HALF_TO_OPEN));
    // The other probe finishing after the re-open is ignored.
    assert_eq!(b.on_success(Instant::now(), true), None);
    assert_eq!(b.state(), StateKind::Open);
    assert_eq!(b.snapshot().trips, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stale_outcomes_while_open_are_ignored() {
    let mut b = breaker();
    trip(&mut b);
    let before = b.snapshot();
    // Requests admitted while closed that complete after the trip.
    assert_eq!(b.on_failure(Instant::now(), false), None);
    assert_eq!(b.on_success(Instant::now(), false), None);
    b.on_cancel(false);
    wait_and_probe(&mut b).await;
    assert_eq!(b.on_failure(Instant::now(), false), None);
    assert_eq!(b.on_success(Instant::now(), false), None);
    let after = b.snapshot();
    assert_eq!(after.state, StateKind::HalfOpen);
    assert_eq!(after.trips, before.trips);
    assert_eq!(after.consecutive_failures, before.consecutive_failures);
    assert_eq!(after.window_requests, before.window_requests);
    // The probe slot is still taken.
    assert_eq!(b.admit(Instant::now()), (rejected(1), None));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn force_open_ignores_time_until_force_close() {
    let mut b = breaker();
    let t = Instant::now();
    assert_eq!(b.force_open(t), Some(CLOSED_TO_OPEN));
    assert_eq!(b.force_open(t), None);
    let s = b.snapshot();
    assert!(s.forced);
    assert_eq!(s.open_until, None);
    assert_eq!(s.trips, 0);
    advance(secs(3600)).await;
    let forced = Admission::Rejected { retry_after: None };
    assert_eq!(
        b.admit(Instant::now()),
        (forced, None),
        "no time to promise"
    );
    assert_eq!(b.state(), StateKind::Open);
    let t2 = Instant::now();
    let closed = Transition {
        from: StateKind::Open,
        to: StateKind::Closed,
    };
    assert_eq!(b.force_close(t2), Some(closed));
    assert_eq!(b.force_close(t2), None);
    let s = b.snapshot();
    assert_eq!((s.state, s.since, s.forced), (StateKind::Closed, t2, false));
    assert_eq!(b.admit(Instant::now()), (ALLOWED, None));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn force_open_over_timed_open_and_half_open() {
    let mut b = breaker();
    trip(&mut b);
    // Already open: becomes forced without a transition.
    assert_eq!(b.force_open(Instant::now()), None);
    assert_eq!(b.snapshot().open_until, None);
    advance(secs(31)).await;
    let forced = Admission::Rejected { retry_after: None };
    assert_eq!(b.admit(Instant::now()), (forced, None));
    b.force_close(Instant::now());
    trip(&mut b);
    wait_and_probe(&mut b).await;
    assert_eq!(b.force_open(Instant::now()), Some(HALF_TO_OPEN));
    // The in-flight probe's result no longer matters.
    assert_eq!(b.on_success(Instant::now(), true), None);
    assert_eq!(b.state(), StateKind::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn force_close_keeps_trips_reset_clears_them() {
    let mut b = breaker();
    trip(&mut b);
    b.on_failure(Instant::now(), false);
    b.force_close(Instant::now());
    let s = b.snapshot();
    assert_eq!(
        (s.trips, s.consecutive_failures, s.window_requests),
        (1, 0, 0)
    );
    // Growth continues after a forced close.
    trip(&mut b);
    assert_eq!(b.admit(Instant::now()), (rejected(60), None));
    let t = Instant::now();
    let to_closed = Transition {
        from: StateKind::Open,
        to: StateKind::Closed,
    };
    assert_eq!(b.reset(t), Some(to_closed));
    let s = b.snapshot();
    assert_eq!((s.state, s.since, s.trips), (StateKind::Closed, t, 0));
    assert_eq!((s.window_requests, s.window_failures), (0, 0));
    assert_eq!(b.reset(t), None);
    trip(&mut b);
    assert_eq!(b.admit(Instant::now()), (rejected(30), None));
}

#[test]
fn counted_failures_cap_every_client_at_its_share() {
    // One client alone: none of its failures count.
    assert_eq!(counted(0.0, &mut [100], 0.2), 0.0);
    // Four clients cannot stay under 20 % each; five equal ones count in full.
    assert_eq!(counted(0.0, &mut [5, 5, 5, 5], 0.2), 0.0);
    assert_eq!(counted(0.0, &mut [5, 5, 5, 5, 5], 0.2), 25.0);
    // A loud client among five quiet ones is capped at a fifth of the total.
    let f = counted(0.0, &mut [100, 2, 2, 2, 2, 2], 0.2);
    assert!((f - 12.5).abs() < 1e-9, "{f}");
    // Backend failures always count and make room for client failures.
    assert_eq!(counted(10.0, &mut [100], 0.2), 12.5);
    // A share of 1 caps nothing.
    assert_eq!(counted(0.0, &mut [7, 3], 1.0), 10.0);
}

#[tokio::test(start_paused = true)]
async fn one_client_failures_never_trip_but_many_clients_do() {
    let cfg = BreakerConfig {
        max_client_share: 0.2,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(cfg.clone(), Instant::now());
    let attacker = Some(std::net::IpAddr::from([198, 51, 100, 7]));
    for _ in 0..200 {
        assert_eq!(b.on_request_failure(Instant::now(), false, attacker), None);
    }
    assert_eq!(b.state(), StateKind::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 0);

    let mut b = Breaker::new(cfg, Instant::now());
    let mut tripped = None;
    for i in 0..40u8 {
        let client = Some(std::net::IpAddr::from([203, 0, 113, i % 10]));
        if b.on_request_failure(Instant::now(), false, client)
            .is_some()
        {
            tripped = Some(i + 1);
            break;
        }
    }
    assert_eq!(tripped, Some(20), "at min_requests");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_client_failing_its_probes_cannot_keep_the_breaker_open() {
    let cfg = BreakerConfig {
        max_client_share: 0.2,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(cfg, Instant::now());
    trip(&mut b);
    wait_and_probe(&mut b).await;
    let attacker = Some(std::net::IpAddr::from([198, 51, 100, 7]));
    // The attacker wins the probe slot again and again: its 503s free the slot, never re-trip.
    for _ in 0..5 {
        assert_eq!(b.on_request_failure(Instant::now(), true, attacker), None);
        assert_eq!(b.state(), StateKind::HalfOpen);
        assert_eq!(b.admit(Instant::now()), (PROBE, None));
    }
    // Another client's probe succeeds: closed for everyone, with the open time not grown.
    assert_eq!(b.on_success(Instant::now(), true), Some(HALF_TO_CLOSED));
    assert_eq!(b.snapshot().trips, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn probes_failing_for_two_clients_reopen_the_breaker() {
    let cfg = BreakerConfig {
        max_client_share: 0.2,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(cfg, Instant::now());
    trip(&mut b);
    wait_and_probe(&mut b).await;
    let (a, c) = (
        Some(std::net::IpAddr::from([203, 0, 113, 1])),
        Some(std::net::IpAddr::from([203, 0, 113, 2])),
    );
    assert_eq!(b.on_request_failure(Instant::now(), true, a), None);
    assert_eq!(b.admit(Instant::now()), (PROBE, None));
    assert_eq!(
        b.on_request_failure(Instant::now(), true, c),
        Some(HALF_TO_OPEN)
    );
    assert_eq!(b.snapshot().trips, 2);
    // A connect failure on a probe says the backend is down, whoever sent it.
    wait_and_probe(&mut b).await;
    assert_eq!(b.on_failure(Instant::now(), true), Some(HALF_TO_OPEN));
}

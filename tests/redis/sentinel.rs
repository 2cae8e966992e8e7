//! Sentinel failover under load: three Seawall replicas share a primary watched by three
//! sentinels while clients keep requesting; the primary is killed, the standby promoted.

use super::*;

/// What a client loop saw: answers, failures (status), the slowest answer.
struct Seen {
    ok: u64,
    failed: Vec<StatusCode>,
    slowest: Duration,
}

/// Requests `/load?…` on `proxy` every 10 ms until `stop`.
async fn client_loop(
    fleet: Arc<Fleet>,
    i: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Seen {
    let mut seen = Seen {
        ok: 0,
        failed: Vec::new(),
        slowest: Duration::ZERO,
    };
    let mut j = 0u64;
    while !stop.load(Ordering::Relaxed) {
        j += 1;
        let started = tokio::time::Instant::now();
        let (status, _, _) = shared_get(&fleet[i], &format!("/load?r={i}&j={j}")).await;
        seen.slowest = seen.slowest.max(started.elapsed());
        if status == StatusCode::OK {
            seen.ok += 1;
        } else {
            seen.failed.push(status);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_sentinel_three_replicas_under_traffic_lose_no_request_and_purge_after_failover() {
    let _alone = HEAVY.write().await;
    let (mut primary, standby, sentinels) = super::sentinel_group().await;
    let origin = MockOrigin::new()
        .route("/load", by_query)
        .route("/after", by_query)
        .start()
        .await;
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let mut replicas = Vec::new();
    for id in ["a", "b", "c"] {
        let cfg = replica_config(&origin.url(), "redis://unused:1", id, TIMEOUT).replace(
            "url = \"redis://unused:1\"\n",
            &format!("sentinels = {nodes:?}\nmaster_name = \"main\"\n"),
        );
        replicas.push(TestProxy::with_config(&cfg).await);
    }
    for r in &replicas {
        wait_shared_ok(r, FAILOVER).await;
    }
    let fleet = Arc::new(Fleet { replicas });
    let poll = Poll::new("three heartbeats on the primary", FAILOVER);
    while redis_cli_raw(primary.port(), &["KEYS", &shared_key("hb:*")], CLI_WAIT)
        .await
        .map(|o| o.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count())
        != Ok(3)
    {
        poll.tick().await;
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|i| tokio::spawn(client_loop(fleet.clone(), i, stop.clone())))
        .collect();
    // Traffic before the kill reaches the primary: sharing works there.
    super::share_through(&fleet, primary.port(), &sentinels).await;

    let killed_at = tokio::time::Instant::now();
    primary.kill();
    let path = super::share_through(&fleet, standby.port(), &sentinels).await;
    let resumed = killed_at.elapsed();
    assert!(standby.cli(&["ROLE"]).await.starts_with("master"));
    // C too reads what A stored on the new primary.
    let (_, h, _) = shared_get(&fleet[2], &path).await;
    let cs = cache_status(&h);
    assert!(is_shared_hit(&cs), "C: {cs}");

    // A purge after the failover reaches all three.
    for r in &fleet.replicas {
        wait_l1(r, &path, true).await;
    }
    let answer = purge(&fleet[1], &format!(r#"{{"url": "{}"}}"#, key(&path))).await;
    assert!(answer["shared"]["queued"].is_null(), "{answer}");
    for r in &fleet.replicas {
        wait_l1(r, &path, false).await;
    }
    let hits = origin.hits("/after");
    let (_, h, _) = shared_get(&fleet[2], &path).await;
    assert!(is_miss(&cache_status(&h)));
    assert_eq!(origin.hits("/after"), hits + 1);

    stop.store(true, Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    for (i, c) in clients.into_iter().enumerate() {
        let seen = c.await.unwrap();
        assert!(
            seen.failed.is_empty(),
            "replica {i}: failed {:?} ({} ok)",
            seen.failed,
            seen.ok
        );
        assert!(seen.ok > 0, "replica {i} answered");
        slowest = slowest.max(seen.slowest);
    }
    eprintln!(
        "sentinel failover under traffic: sharing resumed {resumed:?} after the kill; slowest client answer {slowest:?}"
    );
}

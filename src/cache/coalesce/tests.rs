//! The coalescing layer under the cache, as in the stack, on a scripted mock upstream on tokio's
//! paused clock: one test per rule, no sockets, no real sleeps.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::cache::tests::{Answer, Fixture, Reply, Upstream, fixture};

/// Starts `n` requests for `path` at once (each with `headers`) and returns their answers.
async fn at_once(f: &Fixture, n: usize, path: &str, headers: &[(&str, &str)]) -> Vec<Answer> {
    let reqs: Vec<_> = (0..n)
        .map(|_| f.request(Method::GET, path, headers))
        .collect();
    futures_util::future::join_all(reqs.into_iter().map(|r| f.send(r))).await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn concurrent_requests_for_one_key_make_one_upstream_call() {
    let f = fixture(Upstream::new(|_, n| {
        Ok(Reply::ok(format!("body of fetch {n}"), "max-age=60").after(Duration::from_secs(1)))
    }));
    let answers = at_once(&f, 5, "/a", &[]).await;
    assert_eq!(f.upstream.calls(), 1);
    assert_eq!(f.coalesce.stats.leaders.load(Ordering::Relaxed), 1);
    assert_eq!(f.coalesce.stats.coalesced.load(Ordering::Relaxed), 4);
    let collapsed = answers
        .iter()
        .filter(|a| a.cache_status().contains("collapsed"))
        .count();
    assert_eq!(collapsed, 4, "every follower says so: {answers:?}");
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "body of fetch 1", "followers get the leader's body");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_for_different_keys_are_not_coalesced() {
    let f = fixture(Upstream::new(|req, _| {
        Ok(Reply::ok(req.uri().path().to_string(), "max-age=60").after(Duration::from_secs(1)))
    }));
    let (a, b) = tokio::join!(f.get("/a"), f.get("/b"));
    assert_eq!((a.body.as_str(), b.body.as_str()), ("/a", "/b"));
    assert_eq!(f.upstream.calls(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_answer_personal_to_the_leaders_request_makes_followers_elect_anew() {
    // The leader asks `no-store` for itself: its answer is its own, and the followers (who
    // did not ask so) elect a new leader whose fetch they share.
    let f = fixture(Upstream::new(|req, n| {
        let own = req
            .headers()
            .get("cache-control")
            .is_some_and(|v| v == "no-store");
        let body = if own {
            "for the leader".to_string()
        } else {
            format!("shared {n}")
        };
        Ok(Reply::ok(body, "max-age=60").after(Duration::from_secs(1)))
    }));
    let leader = f.request(Method::GET, "/a", &[("cache-control", "no-store")]);
    let leader = f.send(leader);
    let followers = async {
        // Let the leader take the key first.
        tokio::task::yield_now().await;
        at_once(&f, 3, "/a", &[]).await
    };
    let (leader, followers) = tokio::join!(leader, followers);
    assert_eq!(leader.body, "for the leader");
    assert_eq!(
        f.upstream.calls(),
        2,
        "the leader's fetch and one re-elected fetch"
    );
    assert_eq!(f.coalesce.stats.reelected.load(Ordering::Relaxed), 3);
    for a in &followers {
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "shared 2", "never the first leader's body: {a:?}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hit_for_pass_key_goes_straight_through() {
    // `private` is the response's own doing: every client would get it, so the key is marked
    // hit-for-pass and later requests do not queue behind one another.
    let f = fixture(Upstream::new(|_, n| {
        Ok(Reply::ok(format!("private {n}"), "private").after(Duration::from_secs(1)))
    }));
    let first = f.get("/a").await;
    assert_eq!(first.body, "private 1");
    assert_eq!(f.upstream.calls(), 1);
    let start = tokio::time::Instant::now();
    let answers = at_once(&f, 3, "/a", &[]).await;
    assert_eq!(f.upstream.calls(), 4, "each request went upstream");
    assert_eq!(f.coalesce.stats.hit_for_pass.load(Ordering::Relaxed), 3);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "in parallel, not one after another"
    );
    let mut bodies: Vec<_> = answers.iter().map(|a| a.body.clone()).collect();
    bodies.sort();
    assert_eq!(bodies, ["private 2", "private 3", "private 4"]);
    for a in &answers {
        assert!(!a.cache_status().contains("collapsed"), "{a:?}");
    }
}

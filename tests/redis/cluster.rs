//! Redis Cluster: three primaries joined by `redis-cli --cluster create`, three replicas on
//! `cluster_nodes` (one on a `redis+cluster://` URL): shared hits, one fill, purges, clear.

use super::*;

/// Cluster-enabled `redis-server`s, joined: `primaries` share the slots, each with `replicas`.
struct RedisCluster {
    nodes: Vec<RedisNode>,
    /// False once killed.
    alive: Vec<bool>,
}

impl RedisCluster {
    /// Starts `n` primaries, creates the cluster and waits (bounded) until every node says
    /// `cluster_state:ok`.
    async fn start(n: usize) -> Self {
        Self::start_with_replicas(n, 0).await
    }

    /// `primaries` primaries with `replicas` replicas each.
    async fn start_with_replicas(primaries: usize, replicas: usize) -> Self {
        let n = primaries * (replicas + 1);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(
                RedisNode::start("redis-server", |port, dir| {
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\n\
                         cluster-enabled yes\ncluster-config-file nodes-{port}.conf\n\
                         cluster-node-timeout 2000\ndir {}\nsave \"\"\nappendonly no\n",
                        dir.display()
                    )
                })
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        let per = replicas.to_string();
        args.extend(["--cluster-replicas", per.as_str(), "--cluster-yes"]);
        if let Err(e) = redis_cli_raw(nodes[0].port(), &args, Duration::from_secs(60)).await {
            panic!("redis-cli --cluster create failed: {e}");
        }
        for node in &nodes {
            let poll = Poll::new(
                format!("cluster_state:ok on port {}", node.port()),
                Duration::from_secs(30),
            );
            while !node
                .cli(&["CLUSTER", "INFO"])
                .await
                .contains("cluster_state:ok")
            {
                poll.tick().await;
            }
        }
        let alive = vec![true; nodes.len()];
        Self { nodes, alive }
    }

    /// The first node still running.
    fn live(&self) -> &RedisNode {
        let i = self.alive.iter().position(|a| *a).expect("a node running");
        &self.nodes[i]
    }

    /// `["127.0.0.1:p1", …]` as a TOML array.
    fn seeds_toml(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"127.0.0.1:{}\"", n.port()))
            .collect();
        format!("[{}]", seeds.join(", "))
    }

    /// `redis+cluster://127.0.0.1:p1,…`.
    fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `redis-cli -c --raw args…` (follows MOVED), lossily decoded.
    async fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        match redis_cli_raw(self.live().port(), &all, CLI_WAIT).await {
            Ok(out) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => e,
        }
    }

    /// Keys matching `pattern` on every node, sorted.
    async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (n, _) in self.nodes.iter().zip(&self.alive).filter(|(_, a)| **a) {
            let text = n.cli(&["KEYS", pattern]).await;
            out.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
        out.sort();
        out
    }

    async fn exists(&self, key: &str) -> bool {
        self.cli(&["EXISTS", key]).await == "1"
    }

    async fn wait_entry(&self, path_and_query: &str) {
        let k = entry_key(path_and_query);
        let poll = Poll::new(format!("{k} in the cluster"), EVENTUALLY);
        while !self.exists(&k).await {
            poll.tick().await;
        }
    }

    async fn wait_gone(&self, key: &str) {
        let poll = Poll::new(format!("{key} gone from the cluster"), EVENTUALLY);
        while self.exists(key).await {
            poll.tick().await;
        }
    }

    async fn wait_heartbeats(&self, n: usize) {
        let poll = Poll::new(format!("{n} heartbeats in the cluster"), EVENTUALLY);
        while self.keys(&shared_key("hb:*")).await.len() != n {
            poll.tick().await;
        }
    }
}

/// Three replicas: A and B with `cluster_nodes`, C with a `redis+cluster://` URL; each waits
/// until its shared tier is ok (the cluster connection is made after start).
async fn cluster_fleet(origin_url: &str, cluster: &RedisCluster) -> Fleet {
    let mut replicas = Vec::new();
    for (i, id) in REPLICA_IDS.iter().take(3).enumerate() {
        let cfg = if i < 2 {
            replica_config(origin_url, "", id, TIMEOUT).replace(
                "url = \"\"\n",
                &format!("cluster_nodes = {}\n", cluster.seeds_toml()),
            )
        } else {
            replica_config(origin_url, &cluster.url(), id, TIMEOUT)
        };
        replicas.push(TestProxy::with_config(&cfg).await);
    }
    for r in &replicas {
        wait_shared_ok(r, EVENTUALLY).await;
    }
    Fleet { replicas }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_entries_are_shared_and_a_cold_key_is_one_origin_request() {
    const CLIENTS: usize = 300;
    let _heavy = HEAVY.write().await;
    let cluster = RedisCluster::start(3).await;
    let origin = MockOrigin::new()
        .route("/shared", fresh("shared body", 60))
        .route(
            "/hot",
            MockResponse::ok(payload(16 * 1024))
                .header("cache-control", "max-age=60")
                .delay(500),
        )
        .route("/m", by_query)
        .start()
        .await;
    let fleet = Arc::new(cluster_fleet(&origin.url(), &cluster).await);
    cluster.wait_heartbeats(3).await;

    let (status, h, body) = shared_get(&fleet[0], "/shared").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "shared body");
    assert_eq!(cache_status(&h), STORED);
    cluster.wait_entry("/shared").await;
    for r in &fleet.replicas[1..] {
        let (status, h, body) = shared_get(r, "/shared").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "shared body");
        let cs = cache_status(&h);
        assert!(is_shared_hit(&cs), "{cs}");
    }
    assert_eq!(origin.hits("/shared"), 1);

    // Keys spread over the slots (so over the three primaries) are all shared.
    for i in 0..30 {
        let p = format!("/m?k={i}");
        let (status, _, _) = shared_get(&fleet[0], &p).await;
        assert_eq!(status, StatusCode::OK);
        cluster.wait_entry(&p).await;
    }
    for n in &cluster.nodes {
        let held = n.cli(&["DBSIZE"]).await;
        assert_ne!(held, "0", "node {} holds nothing", n.port());
    }
    for i in 0..30 {
        let (_, h, _) = shared_get(&fleet[1], &format!("/m?k={i}")).await;
        let cs = cache_status(&h);
        assert!(is_shared_hit(&cs), "/m?k={i}: {cs}");
    }

    let start = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (fleet, start) = (fleet.clone(), start.clone());
            tokio::spawn(async move {
                get_when(&fleet[i % 3], "/hot", async {
                    start.wait().await;
                })
                .await
            })
        })
        .collect();
    let answers = match tokio::time::timeout(WAIT * 3, async {
        let mut out = Vec::with_capacity(CLIENTS);
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    })
    .await
    {
        Ok(v) => v,
        Err(_) => panic!("{CLIENTS} clients did not finish within {:?}", WAIT * 3),
    };
    for (i, (status, h, _)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "client {i}: {h:?}");
    }
    assert_eq!(origin.hits("/hot"), 1, "one origin request for the fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_purges_by_url_prefix_and_tag_and_clear_reach_every_replica() {
    let _shared = HEAVY.read().await;
    let cluster = RedisCluster::start(3).await;
    let origin = MockOrigin::new()
        .route("/u", fresh("u", 300))
        .route("/p/one", fresh("p1", 300))
        .route("/p/two", fresh("p2", 300))
        .route("/t", fresh("t", 300).header("surrogate-key", "t1 t2"))
        .route("/keep", fresh("keep", 300))
        .start()
        .await;
    let fleet = cluster_fleet(&origin.url(), &cluster).await;
    cluster.wait_heartbeats(3).await;
    let all = ["/u", "/p/one", "/p/two", "/t", "/keep"];
    for p in all {
        let (status, _, _) = shared_get(&fleet[0], p).await;
        assert_eq!(status, StatusCode::OK);
        cluster.wait_entry(p).await;
    }
    for r in &fleet.replicas[1..] {
        for p in all {
            let (_, h, _) = shared_get(r, p).await;
            let cs = cache_status(&h);
            assert!(is_shared_hit(&cs), "{p}: {cs}");
        }
    }
    for r in &fleet.replicas {
        for p in all {
            wait_l1(r, p, true).await;
        }
    }
    let poll = Poll::new("tag index t1 written", EVENTUALLY);
    while !cluster.exists(&shared_key("t:t1")).await {
        poll.tick().await;
    }

    let b = &fleet[1];
    let answer = purge(b, &format!(r#"{{"url": "{}"}}"#, key("/u"))).await;
    assert_fanned_out(&answer, 3);
    gone_everywhere(&cluster, &fleet, &["/u"], &["/p/one", "/t", "/keep"]).await;

    let answer = purge(b, r#"{"prefix": "/p/"}"#).await;
    assert_fanned_out(&answer, 3);
    gone_everywhere(&cluster, &fleet, &["/p/one", "/p/two"], &["/t", "/keep"]).await;

    let answer = purge(b, r#"{"tag": "t2"}"#).await;
    assert_fanned_out(&answer, 3);
    gone_everywhere(&cluster, &fleet, &["/t"], &["/keep"]).await;

    let answer = clear(&fleet[2]).await;
    assert_fanned_out(&answer, 3);
    gone_everywhere(&cluster, &fleet, &["/keep"], &[]).await;
    let poll = Poll::new("no entry or tag left on any primary", EVENTUALLY);
    while !cluster.keys(&ns_key("e:*")).await.is_empty()
        || !cluster.keys(&shared_key("t:*")).await.is_empty()
    {
        poll.tick().await;
    }

    // After the purges the origin is asked again.
    let before = origin.hits("/u");
    let (_, h, _) = shared_get(&fleet[2], "/u").await;
    assert!(is_miss(&cache_status(&h)));
    assert_eq!(origin.hits("/u"), before + 1);
}

/// After a purge of `gone`: no replica holds them and the cluster has no entry; `kept` is
/// still everywhere.
async fn gone_everywhere(cluster: &RedisCluster, fleet: &Fleet, gone: &[&str], kept: &[&str]) {
    for p in gone {
        cluster.wait_gone(&entry_key(p)).await;
        for r in &fleet.replicas {
            wait_l1(r, p, false).await;
        }
    }
    for p in kept {
        assert!(cluster.exists(&entry_key(p)).await, "{p} left in Redis");
        for r in &fleet.replicas {
            assert!(in_l1(r, p).await, "{p} left on {}", r.addr);
        }
    }
}

//! Redis Cluster: three primaries joined by `redis-cli --cluster create`, three replicas on
//! `cluster_nodes` (one on a `redis+cluster://` URL): shared hits, one fill, purges, clear, and
//! a primary killed under traffic while its replica is promoted.

use super::*;

/// Cluster-enabled `redis-server`s, joined: `primaries` share the slots, each with `replicas`.
pub(super) struct RedisCluster {
    pub(super) nodes: Vec<RedisNode>,
    /// False once killed.
    alive: Vec<bool>,
    /// Each node's TLS port (empty without TLS).
    pub(super) tls_ports: Vec<u16>,
}

impl RedisCluster {
    /// Starts `n` primaries, creates the cluster and waits (bounded) until every node says
    /// `cluster_state:ok`.
    async fn start(n: usize) -> Self {
        Self::start_with_replicas(n, 0, 2000).await
    }

    /// `primaries` primaries with `replicas` replicas each; a node is failed (and its replica
    /// promoted) after `node_timeout_ms` without an answer.
    async fn start_with_replicas(primaries: usize, replicas: usize, node_timeout_ms: u64) -> Self {
        Self::start_with(primaries, replicas, node_timeout_ms, None).await
    }

    /// Like [`Self::start_with_replicas`]; with `tls`, each node also listens on a TLS port
    /// (in [`Self::tls_ports`]) and the cluster bus and replication run over TLS.
    pub(super) async fn start_with(
        primaries: usize,
        replicas: usize,
        node_timeout_ms: u64,
        tls: Option<&super::tls::Certs>,
    ) -> Self {
        let n = primaries * (replicas + 1);
        let mut nodes = Vec::with_capacity(n);
        let mut tls_ports = Vec::new();
        for _ in 0..n {
            // The bus port is set: the default (port + 10000) can be past 65535.
            let bus = free_port();
            let tls_conf = match tls {
                Some(certs) => {
                    let p = free_port();
                    tls_ports.push(p);
                    format!("{}tls-cluster yes\n", certs.conf(p))
                }
                None => String::new(),
            };
            nodes.push(
                RedisNode::start("redis-server", move |port, dir| {
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\n\
                         cluster-enabled yes\ncluster-config-file nodes-{port}.conf\n\
                         cluster-port {bus}\n\
                         cluster-node-timeout {node_timeout_ms}\ndir {}\nsave \"\"\nappendonly no\n{tls_conf}",
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
        Self {
            nodes,
            alive,
            tls_ports,
        }
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

    pub(super) async fn wait_entry(&self, path_and_query: &str) {
        let k = entry_key(path_and_query);
        let poll = Poll::new(format!("{k} in the cluster"), EVENTUALLY);
        while !self.exists(&k).await {
            poll.tick().await;
        }
    }

    pub(super) async fn wait_gone(&self, key: &str) {
        let poll = Poll::new(format!("{key} gone from the cluster"), EVENTUALLY);
        while self.exists(key).await {
            poll.tick().await;
        }
    }

    pub(super) async fn wait_heartbeats(&self, n: usize) {
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

/// The node of `cluster` listening on `port`.
fn node_on(cluster: &RedisCluster, port: u16) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| n.port() == port)
        .expect("a node of the cluster")
}

/// `(primary port, [(first, last) slot])` of every live primary, and `(replica port, its
/// primary's id)` of every replica, from `CLUSTER NODES` on a live node.
async fn topology(
    cluster: &RedisCluster,
) -> (Vec<(u16, String, Vec<(u16, u16)>)>, Vec<(u16, String)>) {
    let text = cluster.live().cli(&["CLUSTER", "NODES"]).await;
    let (mut primaries, mut replicas) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 8 || f[2].contains("fail") {
            continue;
        }
        let Some(port) = f[1]
            .split(['@', ','])
            .next()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
        else {
            continue;
        };
        if f[2].contains("master") {
            let slots = f[8..]
                .iter()
                .filter_map(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            primaries.push((port, f[0].to_string(), slots));
        } else if f[2].contains("slave") {
            replicas.push((port, f[3].to_string()));
        }
    }
    (primaries, replicas)
}

/// The hash slot of `key`.
async fn slot_of(cluster: &RedisCluster, key: &str) -> u16 {
    let out = cluster.live().cli(&["CLUSTER", "KEYSLOT", key]).await;
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {out}"))
}

/// The port of the primary serving `key`'s slot now.
async fn primary_of(cluster: &RedisCluster, key: &str) -> u16 {
    let slot = slot_of(cluster, key).await;
    let (primaries, _) = topology(cluster).await;
    primaries
        .iter()
        .find(|(_, _, slots)| slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|(p, _, _)| *p)
        .unwrap_or_else(|| panic!("no primary serves slot {slot}: {primaries:?}"))
}

/// The next `{prefix}?k=N` (counting on from `from`) whose entry lives on the primary on `port`.
async fn path_on(cluster: &RedisCluster, port: u16, prefix: &str, from: &mut u32) -> String {
    for _ in 0..2000 {
        *from += 1;
        let p = format!("{prefix}?k={from}");
        if primary_of(cluster, &entry_key(&p)).await == port {
            return p;
        }
    }
    panic!("no key of {prefix} on port {port} in 2000 tries");
}

/// `master_repl_offset` (on a primary) or `slave_repl_offset` (on a replica).
async fn repl_offset(node: &RedisNode, field: &str) -> u64 {
    let info = node.cli(&["INFO", "replication"]).await;
    info.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_a_primary_killed_under_traffic_fails_over_and_sharing_and_purges_resume() {
    /// Failure detection (1 s node timeout), the replica's election and promotion, and the
    /// replicas' clients finding the new slot map (generous for a debug build on two cores).
    const FAILOVER: Duration = Duration::from_secs(30);
    let _alone = HEAVY.write().await;
    let mut cluster = RedisCluster::start_with_replicas(3, 1, 1000).await;
    let origin = MockOrigin::new()
        .route("/m", by_query)
        .route("/load", by_query)
        .start()
        .await;
    let fleet = Arc::new(cluster_fleet(&origin.url(), &cluster).await);
    cluster.wait_heartbeats(3).await;

    // The victim: the primary of the `{shared}` slot (purge stream, heartbeats, pub/sub), and
    // its replica, once that replica is in sync.
    let victim = primary_of(&cluster, &shared_key("hb:a")).await;
    let poll = Poll::new("the victim's replica in sync", FAILOVER);
    let standby = loop {
        let (primaries, replicas) = topology(&cluster).await;
        let id = primaries
            .iter()
            .find(|(p, _, _)| *p == victim)
            .map(|(_, id, _)| id.clone())
            .unwrap();
        if let Some((port, _)) = replicas.iter().find(|(_, of)| *of == id) {
            let node = &cluster.nodes[node_on(&cluster, *port)];
            if node
                .cli(&["INFO", "replication"])
                .await
                .contains("master_link_status:up")
            {
                break *port;
            }
        }
        poll.tick().await;
    };

    // An entry on the victim's shard, stored by A and held in every replica's memory.
    let mut n = 0;
    let before = path_on(&cluster, victim, "/m", &mut n).await;
    let (status, _, _) = shared_get(&fleet[0], &before).await;
    assert_eq!(status, StatusCode::OK);
    cluster.wait_entry(&before).await;
    for r in &fleet.replicas[1..] {
        let (_, h, _) = shared_get(r, &before).await;
        let cs = cache_status(&h);
        assert!(is_shared_hit(&cs), "{before}: {cs}");
    }
    for r in &fleet.replicas {
        wait_l1(r, &before, true).await;
    }
    // A second one only A holds: B reads it from the promoted replica after the failover.
    let kept = path_on(&cluster, victim, "/m", &mut n).await;
    let (status, _, _) = shared_get(&fleet[0], &kept).await;
    assert_eq!(status, StatusCode::OK);
    cluster.wait_entry(&kept).await;
    let primary_node = &cluster.nodes[node_on(&cluster, victim)];
    let written = repl_offset(primary_node, "master_repl_offset").await;
    let standby_node = &cluster.nodes[node_on(&cluster, standby)];
    let poll = Poll::new("the replica caught up", FAILOVER);
    while repl_offset(standby_node, "slave_repl_offset").await < written {
        poll.tick().await;
    }

    // Continuous traffic on every replica through the failover: every answer is a 200.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..3)
        .map(|i| {
            let (fleet, stop) = (fleet.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                let mut j = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    j += 1;
                    let (status, _, _) = shared_get(&fleet[i], &format!("/load?r={i}&j={j}")).await;
                    if status == StatusCode::OK {
                        ok += 1;
                    } else {
                        failed.push(status);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (ok, failed)
            })
        })
        .collect();

    let killed_at = tokio::time::Instant::now();
    let victim_index = node_on(&cluster, victim);
    cluster.nodes[victim_index].kill();
    cluster.alive[victim_index] = false;
    let poll = Poll::new(format!("replica on port {standby} promoted"), FAILOVER);
    while !cluster.nodes[node_on(&cluster, standby)]
        .cli(&["ROLE"])
        .await
        .starts_with("master")
    {
        poll.tick().await;
    }
    let promoted = killed_at.elapsed();

    // Sharing resumes on the victim's slots: a fill by A on the promoted node is B's shared hit.
    let poll = Poll::new("sharing on the promoted replica's slots", FAILOVER);
    let after = loop {
        let p = path_on(&cluster, standby, "/m", &mut n).await;
        let (status, _, _) = shared_get(&fleet[0], &p).await;
        assert_eq!(status, StatusCode::OK);
        let mut stored = false;
        for _ in 0..20 {
            if cluster.exists(&entry_key(&p)).await {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if stored {
            let (_, h, _) = shared_get(&fleet[1], &p).await;
            if is_shared_hit(&cache_status(&h)) {
                break p;
            }
        }
        poll.tick().await;
    };
    let resumed = killed_at.elapsed();
    eprintln!(
        "cluster failover: replica promoted {promoted:?} after the kill, sharing resumed after {resumed:?}"
    );
    assert!(
        cluster.exists(&entry_key(&after)).await,
        "{after} stored on the promoted node"
    );
    // What A wrote before the kill is served to B from the promoted replica.
    let (_, h, body) = shared_get(&fleet[1], &kept).await;
    let cs = cache_status(&h);
    assert!(is_shared_hit(&cs), "{kept}: {cs}");
    assert_eq!(body, format!("m:{}", kept.split_once('?').unwrap().1));

    // A purge made after the failover (its stream and doorbell now on the promoted node)
    // reaches every replica.
    let answer = purge(&fleet[2], &format!(r#"{{"url": "{}"}}"#, key(&before))).await;
    assert!(answer["shared"]["queued"].is_null(), "{answer}");
    cluster.wait_gone(&entry_key(&before)).await;
    for r in &fleet.replicas {
        wait_l1(r, &before, false).await;
    }
    let hits = origin.hits("/m");
    let (_, h, _) = shared_get(&fleet[0], &before).await;
    assert!(is_miss(&cache_status(&h)));
    assert_eq!(origin.hits("/m"), hits + 1);

    stop.store(true, Ordering::Relaxed);
    for (i, t) in traffic.into_iter().enumerate() {
        let (ok, failed) = t.await.unwrap();
        assert!(failed.is_empty(), "replica {i}: {failed:?} ({ok} ok)");
        assert!(ok > 0, "replica {i} served traffic");
    }
}

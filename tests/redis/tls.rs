//! Redis over TLS beyond a `rediss://` URL: a Sentinel group and a Redis Cluster listening on
//! `tls-port` (replication, the sentinels and the cluster bus over TLS too), reached by Seawall
//! with `tls = true` and `tls_ca_file`. The nodes keep a plain port for the test's `redis-cli`.

use super::*;

/// A self-signed certificate for 127.0.0.1 (server certificate and CA at once).
pub(super) struct Certs {
    dir: std::path::PathBuf,
    /// The certificate, PEM: also the CA file.
    pub(super) cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Certs {
    pub(super) fn new() -> Self {
        let dir = unique_dir("seawall-redis-tls");
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let (cert, key) = (dir.join("redis.crt"), dir.join("redis.key"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        Self { dir, cert, key }
    }

    /// A redis-server / redis-sentinel config fragment: TLS on `tls_port`, and TLS for the
    /// connections it makes (replication, sentinels to nodes and to each other).
    pub(super) fn conf(&self, tls_port: u16) -> String {
        format!(
            "tls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients no\ntls-replication yes\n",
            self.cert.display(),
            self.key.display(),
            self.cert.display()
        )
    }

    /// The `[cache.redis]` lines that turn TLS on and trust this certificate.
    fn seawall_conf(&self) -> String {
        format!(
            "tls = true\ntls_ca_file = {:?}\n",
            self.cert.display().to_string()
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli --tls` on `tls_port` answers `PONG`: the port speaks TLS with this certificate.
async fn pings_over_tls(certs: &Certs, tls_port: u16) -> bool {
    let cacert = certs.cert.display().to_string();
    let out = redis_cli_raw(tls_port, &["--tls", "--cacert", &cacert, "PING"], CLI_WAIT).await;
    matches!(out, Ok(o) if o == b"PONG")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_behind_sentinel_the_named_primary_is_reached_over_tls_and_a_failover_followed() {
    let _alone = HEAVY.write().await;
    let certs = Certs::new();
    let (primary_tls, standby_tls) = (free_port(), free_port());
    let primary_conf = certs.conf(primary_tls);
    let mut primary = RedisNode::start("redis-server", move |port, dir| {
        format!("{}{primary_conf}", super::data_node_conf(port, dir))
    })
    .await;
    let standby_conf = certs.conf(standby_tls);
    let standby = RedisNode::start("redis-server", move |port, dir| {
        format!(
            "{}{standby_conf}replicaof 127.0.0.1 {primary_tls}\n",
            super::data_node_conf(port, dir)
        )
    })
    .await;
    assert!(
        pings_over_tls(&certs, primary_tls).await,
        "primary TLS port"
    );
    let mut sentinels = Vec::new();
    let mut sentinel_tls = Vec::new();
    for _ in 0..3 {
        let tls_port = free_port();
        sentinel_tls.push(tls_port);
        let conf = certs.conf(tls_port);
        sentinels.push(
            RedisNode::start("redis-sentinel", move |port, dir| {
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n{conf}\
                     sentinel monitor main 127.0.0.1 {primary_tls} 2\n\
                     sentinel down-after-milliseconds main 1000\n\
                     sentinel failover-timeout main 5000\n",
                    dir.display()
                )
            })
            .await,
        );
    }
    let poll = Poll::new("standby in sync over TLS, sentinels acquainted", FAILOVER);
    loop {
        let mut ready = standby
            .cli(&["INFO", "replication"])
            .await
            .contains("master_link_status:up");
        for s in &sentinels {
            ready &= s
                .cli(&["INFO", "sentinel"])
                .await
                .contains("slaves=1,sentinels=3");
        }
        if ready {
            break;
        }
        poll.tick().await;
    }

    let origin = MockOrigin::new()
        .route("/before", fresh("before", 300))
        .route("/after", by_query)
        .start()
        .await;
    let nodes: Vec<String> = sentinel_tls
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let config = |id: &str| {
        replica_config(&origin.url(), "redis://unused:1", id, TIMEOUT).replace(
            "url = \"redis://unused:1\"\n",
            &format!(
                "sentinels = {nodes:?}\nmaster_name = \"main\"\n{}",
                certs.seawall_conf()
            ),
        )
    };
    let fleet = Fleet {
        replicas: vec![
            TestProxy::with_config(&config("a")).await,
            TestProxy::with_config(&config("b")).await,
        ],
    };
    for r in &fleet.replicas {
        wait_shared_ok(r, FAILOVER).await;
    }
    // The sentinels name the primary's TLS port: only a TLS client gets an answer there.
    let answer = sentinels[0]
        .cli(&["SENTINEL", "get-master-addr-by-name", "main"])
        .await;
    assert_eq!(answer, format!("127.0.0.1\n{primary_tls}"));
    let path = super::share_through(&fleet, primary.port(), &sentinels).await;
    let (_, h, _) = shared_get(&fleet[1], &path).await;
    assert!(is_l1_hit(&cache_status(&h)));

    primary.kill();
    let path = super::share_through(&fleet, standby.port(), &sentinels).await;
    assert!(standby.cli(&["ROLE"]).await.starts_with("master"));
    super::purge_reaches_b(&fleet, &path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_cluster_nodes_are_reached_over_tls_entries_shared_and_purged() {
    let _shared = HEAVY.read().await;
    let certs = Certs::new();
    let cluster = super::cluster::RedisCluster::start_with(3, 0, 2000, Some(&certs)).await;
    for p in &cluster.tls_ports {
        assert!(pings_over_tls(&certs, *p).await, "TLS port {p}");
    }
    let origin = MockOrigin::new().route("/m", by_query).start().await;
    let seeds: Vec<String> = cluster
        .tls_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut replicas = Vec::new();
    for id in ["a", "b"] {
        let cfg = replica_config(&origin.url(), "", id, TIMEOUT).replace(
            "url = \"\"\n",
            &format!("cluster_nodes = {seeds:?}\n{}", certs.seawall_conf()),
        );
        replicas.push(TestProxy::with_config(&cfg).await);
    }
    for r in &replicas {
        wait_shared_ok(r, EVENTUALLY).await;
    }
    let fleet = Fleet { replicas };
    cluster.wait_heartbeats(2).await;
    // Keys over the three primaries: A's fills are B's shared hits.
    for i in 0..12 {
        let p = format!("/m?k={i}");
        let (status, _, _) = shared_get(&fleet[0], &p).await;
        assert_eq!(status, StatusCode::OK);
        cluster.wait_entry(&p).await;
    }
    for n in &cluster.nodes {
        assert_ne!(
            n.cli(&["DBSIZE"]).await,
            "0",
            "node {} holds nothing",
            n.port()
        );
    }
    for i in 0..12 {
        let p = format!("/m?k={i}");
        let (_, h, _) = shared_get(&fleet[1], &p).await;
        let cs = cache_status(&h);
        assert!(is_shared_hit(&cs), "{p}: {cs}");
    }
    let answer = purge(&fleet[0], r#"{"prefix": "/m"}"#).await;
    assert_eq!(answer["shared"]["delivered"], 2, "{answer}");
    for i in 0..12 {
        let p = format!("/m?k={i}");
        cluster.wait_gone(&entry_key(&p)).await;
        wait_l1(&fleet[1], &p, false).await;
    }
    assert_eq!(origin.hits("/m"), 12);
}

//! Redis Cluster: data calls on one `ClusterConnection` (it follows MOVED/ASK and refreshes the
//! slot map itself), `SCAN` on every primary, and stream-slot calls routed to that slot's node.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

use super::sentinel::{Access, Login};
use super::{Link, SharedTier, TierError};
use crate::config::file::RedisSection;

/// The tier's data connection: one node (standalone or the Sentinel primary), or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to the cluster from its seed nodes, retrying until it answers (Seawall starts
/// without Redis); the connection then keeps itself current across failovers and resharding.
pub(super) async fn connect(tier: Arc<SharedTier>) {
    let Access::Cluster { nodes, data } = tier.access.clone() else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt =
            tokio::time::timeout(tier.cfg.connect_timeout * 2, open(&tier.cfg, &nodes, &data))
                .await;
        match attempt {
            Ok(Ok(conn)) => {
                *tier.link.write().unwrap_or_else(|e| e.into_inner()) = Some(Link {
                    client: None,
                    conn: Conn::Cluster(conn),
                    primary: None,
                });
                // No `relinked` bump: no listener was subscribed to the cluster before this.
                tier.refresh_up();
                tracing::info!(
                    seeds = nodes.len(),
                    "Shared tier: connected to the Redis Cluster."
                );
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Shared tier: cannot reach the Redis Cluster yet.")
            }
            Err(_) => tracing::warn!("Shared tier: the Redis Cluster did not answer in time."),
        }
        tokio::select! {
            _ = tier.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn open(
    cfg: &RedisSection,
    nodes: &[(String, u16)],
    login: &Login,
) -> RedisResult<ClusterConnection> {
    // Credentials go to the builder (for every node it discovers), TLS to the seeds and to it.
    let seeds = nodes
        .iter()
        .map(|(h, p)| super::sentinel::node(h, *p, &login.transport()))
        .collect::<RedisResult<Vec<_>>>()?;
    let mut b = ClusterClientBuilder::new(seeds)
        .connection_timeout(cfg.connect_timeout)
        .response_timeout(cfg.timeout)
        .retries(2);
    if login.tls {
        b = b.tls(::redis::TlsMode::Secure);
    }
    if let Some(certs) = login.certificates() {
        b = b.certs(certs);
    }
    if let Some(u) = &login.username {
        b = b.username(u);
    }
    if let Some(p) = &login.password {
        b = b.password(p);
    }
    b.build()?.get_async_connection().await
}

/// A primary's (`host`, `port`) and the slot ranges it serves.
type Primary = ((String, u16), Vec<(u16, u16)>);

/// The live primaries of a `CLUSTER NODES` answer.
fn primaries_of(nodes: &str) -> Vec<Primary> {
    nodes
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let flags: Vec<&str> = f.get(2)?.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let addr = f.get(1)?.split(['@', ',']).next()?;
            let slots = f
                .iter()
                .skip(8)
                .filter_map(|&r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            Some((crate::config::redis::parse_node(addr)?, slots))
        })
        .collect()
}

impl SharedTier {
    /// The cluster connection, in cluster mode.
    fn cluster(&self) -> Option<ClusterConnection> {
        match self.conn()? {
            Conn::Cluster(c) => Some(c),
            Conn::Single(_) => None,
        }
    }

    /// True when the tier talks to a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.access, Access::Cluster { .. })
    }

    /// One command routed by hand (cluster mode).
    async fn routed<T: FromRedisValue>(
        &self,
        op: &'static str,
        c: &Cmd,
        to: SingleNodeRoutingInfo,
    ) -> Result<T, TierError> {
        let conn = self.cluster();
        self.guard(op, async move {
            let mut conn = conn.ok_or_else(super::no_primary)?;
            let v = conn
                .route_command(c.clone(), RoutingInfo::SingleNode(to))
                .await?;
            Ok(::redis::from_redis_value(v)?)
        })
        .await
    }

    /// A command about the purge stream's node (`INFO`, `WAIT`): in a cluster, the primary of
    /// the shared hash tag's slot; otherwise the one node.
    pub(super) async fn at_stream_node<T: FromRedisValue>(
        &self,
        op: &'static str,
        c: &Cmd,
    ) -> Result<T, TierError> {
        if !self.is_cluster() {
            return self.cmd(op, c).await;
        }
        let route = Route::with_key(self.stream_key().as_bytes(), SlotAddr::Master);
        self.routed(op, c, SingleNodeRoutingInfo::SpecificNode(route))
            .await
    }

    /// The live primaries of the cluster now, with their slots.
    async fn primaries(&self) -> Result<Vec<Primary>, TierError> {
        let text: String = self
            .routed(
                "scan",
                ::redis::cmd("CLUSTER").arg("NODES"),
                SingleNodeRoutingInfo::Random,
            )
            .await?;
        Ok(primaries_of(&text))
    }

    /// Keys matching `pattern` on every primary (each holds its own slots), by `SCAN`.
    pub(super) async fn scan_cluster(&self, pattern: &str) -> Result<Vec<String>, TierError> {
        let mut out = Vec::new();
        for ((host, port), _) in self.primaries().await? {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = self
                    .routed(
                        "scan",
                        ::redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000),
                        SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        },
                    )
                    .await?;
                out.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(out)
    }

    /// Clients for pub/sub, best first. In a cluster a classic `PUBLISH` on any node reaches
    /// subscribers on every node, so any node will do; the primary of the `{shared}` slot
    /// comes first, since `PUBLISH` on the `{shared}`-tagged channels goes there and counts
    /// only that node's subscribers (the `delivered` a purge reports).
    pub(super) async fn pubsub_clients(&self) -> Vec<::redis::Client> {
        let Access::Cluster { nodes, data } = &self.access else {
            return self.client().into_iter().collect();
        };
        if self.cluster().is_none() {
            // Data calls would fail anyway: the listener waits for the cluster connection.
            return Vec::new();
        }
        let slot: Result<u16, _> = self
            .routed(
                "subscribe",
                ::redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(self.stream_key()),
                SingleNodeRoutingInfo::Random,
            )
            .await;
        let mut addrs: Vec<(String, u16)> = match (slot, self.primaries().await) {
            (Ok(slot), Ok(p)) => p
                .into_iter()
                .filter(|(_, r)| r.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
                .map(|(addr, _)| addr)
                .collect(),
            _ => Vec::new(),
        };
        addrs.extend(nodes.iter().cloned());
        addrs
            .iter()
            .filter_map(|(h, p)| super::sentinel::node_client(h, *p, data).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::redis::cluster_routing::Slot;

    #[test]
    fn keys_that_live_together_share_a_slot() {
        let cfg = RedisSection {
            cluster_nodes: vec!["127.0.0.1:7000".into()],
            ..RedisSection::default()
        };
        let tier = SharedTier::new(&cfg, Vec::new(), &prometheus::Registry::new()).expect("tier");
        for key in ["http://h/a", "http://h/a}b{c", "http://h/{x}"] {
            let e = tier.entry_key(key);
            assert_eq!(
                Slot::for_key(&e),
                Slot::for_key(tier.lock_key(key)),
                "{key}"
            );
            assert_eq!(tier.key_of(&e), Some(key));
        }
        let shared = Slot::for_key(tier.stream_key());
        for k in [
            tier.seq_key(),
            tier.tag_key("t1"),
            tier.hb_key("a"),
            tier.purge_channel(),
        ] {
            assert_eq!(Slot::for_key(&k), shared, "{k}");
        }
        assert!(tier.stream_key().starts_with("seawall:v2:"));
    }

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b2 127.0.0.1:7001@17001,host-b master - 0 0 2 connected 5461-10922\n\
                    c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected\n\
                    d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n";
        assert_eq!(
            primaries_of(text),
            vec![
                (("127.0.0.1".to_string(), 7000), vec![(0, 5460)]),
                (("127.0.0.1".to_string(), 7001), vec![(5461, 10922)])
            ]
        );
    }
}

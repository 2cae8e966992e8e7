//! Following the primary through Redis Sentinel: asked at start, again after connection
//! errors and whenever a sentinel announces `+switch-master`; the tier then reconnects there.

use std::sync::Arc;
use std::time::Duration;

use ::redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};
use futures_util::StreamExt as _;

use super::SharedTier;
use crate::config::file::RedisSection;
use crate::config::redis::{Endpoint, SentinelSet};

/// Credentials, from the config and the files it names, and the TLS to log in over.
#[derive(Clone, Debug, Default)]
pub(super) struct Login {
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    /// `rediss`: TLS to every node this login reaches.
    pub(super) tls: bool,
    /// PEM certificates to trust instead of the web roots (`tls_ca_file`).
    pub(super) ca: Option<Arc<Vec<u8>>>,
}

impl Login {
    /// The TLS settings alone, without credentials (the cluster's seed list).
    pub(super) fn transport(&self) -> Login {
        Login {
            tls: self.tls,
            ca: self.ca.clone(),
            ..Login::default()
        }
    }

    /// The certificates the cluster client and `rediss` clients trust, when not the web roots.
    pub(super) fn certificates(&self) -> Option<TlsCertificates> {
        self.ca.as_ref().map(|ca| TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.to_vec()),
        })
    }

    /// A client for `info`, trusting [`Self::ca`] when it is TLS.
    pub(super) fn client(&self, info: ConnectionInfo) -> ::redis::RedisResult<Client> {
        match self.certificates() {
            Some(certs) if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) => {
                Client::build_with_tls(info, certs)
            }
            _ => Client::open(info),
        }
    }

    fn apply(&self, mut r: RedisConnectionInfo) -> RedisConnectionInfo {
        if let Some(u) = &self.username {
            r = r.set_username(u);
        }
        if let Some(p) = &self.password {
            r = r.set_password(p);
        }
        r
    }
}

fn read_secret(key: &str, path: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let s = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{key} {path}: {e}"))?;
    Ok(Some(s.trim_end_matches(['\r', '\n']).to_string()))
}

/// How the tier reaches its primary.
#[derive(Clone, Debug)]
pub(super) enum Access {
    /// One fixed address (`login` carries the certificates to trust for `rediss://`).
    Url { info: ConnectionInfo, login: Login },
    /// Whatever the sentinels name.
    Sentinel {
        set: SentinelSet,
        data: Login,
        sentinel: Login,
    },
    /// A Redis Cluster, from its seed nodes.
    Cluster {
        nodes: Vec<(String, u16)>,
        data: Login,
    },
}

impl Access {
    /// From `[cache.redis]` (validated), reading the password files.
    pub(super) fn new(cfg: &RedisSection) -> anyhow::Result<Self> {
        let endpoint = Endpoint::of(cfg).map_err(|(k, e)| anyhow::anyhow!("{k}: {e}"))?;
        let password = read_secret("cache.redis.password_file", cfg.password_file.as_deref())?;
        let ca = match cfg.tls_ca_file.as_deref() {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cache.redis.tls_ca_file {path}: {e}"))?;
                Some(Arc::new(pem))
            }
        };
        let tls = Login {
            tls: cfg.tls,
            ca,
            ..Login::default()
        };
        Ok(match endpoint {
            Endpoint::Url(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| anyhow::anyhow!("cache.redis.url: {e}"))?;
                let login = Login {
                    username: cfg.username.clone(),
                    password,
                    ..tls
                };
                let r = login.apply(info.redis_settings().clone());
                let info = info.set_redis_settings(r);
                // The URL alone says whether it is TLS (`rediss://`).
                let login = Login {
                    tls: matches!(info.addr(), ConnectionAddr::TcpTls { .. }),
                    ..login
                };
                Access::Url { info, login }
            }
            Endpoint::Cluster(seeds) => Access::Cluster {
                data: Login {
                    username: cfg.username.clone().or(seeds.url_username),
                    password: password.or(seeds.url_password),
                    ..tls
                },
                nodes: seeds.nodes,
            },
            Endpoint::Sentinel(set) => Access::Sentinel {
                data: Login {
                    username: cfg.username.clone().or_else(|| set.url_username.clone()),
                    password: password.or_else(|| set.url_password.clone()),
                    ..tls.clone()
                },
                sentinel: Login {
                    username: cfg.sentinel_username.clone(),
                    password: read_secret(
                        "cache.redis.sentinel_password_file",
                        cfg.sentinel_password_file.as_deref(),
                    )?,
                    ..tls
                },
                set,
            },
        })
    }

    /// A client for the data node at `host:port`, logged in (and over TLS) as configured.
    pub(super) fn data_client(&self, host: &str, port: u16) -> ::redis::RedisResult<Client> {
        let login = match self {
            Access::Url { login, .. }
            | Access::Sentinel { data: login, .. }
            | Access::Cluster { data: login, .. } => login,
        };
        login.client(node(host, port, login)?)
    }
}

/// `host:port` with `login`'s credentials, over TLS (verifying the host name) when it says so.
pub(super) fn node(host: &str, port: u16, login: &Login) -> ::redis::RedisResult<ConnectionInfo> {
    let addr = if login.tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    };
    let info = addr.into_connection_info()?;
    let r = login.apply(info.redis_settings().clone());
    Ok(info.set_redis_settings(r))
}

/// A client for `host:port` as `login`.
pub(super) fn node_client(host: &str, port: u16, login: &Login) -> ::redis::RedisResult<Client> {
    login.client(node(host, port, login)?)
}

/// Asks each sentinel in turn for the primary of `set.master`, and checks with the node itself
/// that it is a primary (during a failover a sentinel can still name the old one).
async fn discover(
    set: &SentinelSet,
    sentinel: &Login,
    data: &Login,
    wait: Duration,
) -> Result<(String, u16), String> {
    let mut last = String::from("no sentinel configured");
    for (h, p) in &set.nodes {
        let asked = tokio::time::timeout(wait, async {
            let client = node_client(h, *p, sentinel).map_err(|e| e.to_string())?;
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let addr: Option<(String, u16)> = ::redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&set.master)
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            addr.ok_or_else(|| format!("sentinel knows no master named {:?}", set.master))
        })
        .await;
        let (host, port) = match asked {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                last = format!("sentinel {h}:{p}: {e}");
                continue;
            }
            Err(_) => {
                last = format!("sentinel {h}:{p}: timed out");
                continue;
            }
        };
        let role = tokio::time::timeout(wait, async {
            let client = node_client(&host, port, data).map_err(|e| e.to_string())?;
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let role: Vec<::redis::Value> = ::redis::cmd("ROLE")
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(
                role.first()
                    .and_then(|v| ::redis::from_redis_value_ref::<String>(v).ok())
                    .unwrap_or_default(),
            )
        })
        .await;
        match role {
            Ok(Ok(r)) if r == "master" => return Ok((host, port)),
            Ok(Ok(r)) => last = format!("{host}:{port} (named by {h}:{p}) is a {r}, not a primary"),
            Ok(Err(e)) => last = format!("{host}:{port} (named by {h}:{p}): {e}"),
            Err(_) => last = format!("{host}:{port} (named by {h}:{p}): timed out"),
        }
    }
    Err(last)
}

/// Finds the primary, then again on each `relink` kick (connection errors, `+switch-master`)
/// and now and then, and moves the tier there when it changed.
pub(super) async fn follow(tier: Arc<SharedTier>) {
    let Access::Sentinel {
        set,
        data,
        sentinel,
    } = tier.access.clone()
    else {
        return;
    };
    tokio::spawn(watch_switches(tier.clone(), set.clone(), sentinel.clone()));
    let wait = tier.cfg.connect_timeout;
    loop {
        let pause = match discover(&set, &sentinel, &data, wait).await {
            Ok(addr) => {
                if tier.primary().as_ref() != Some(&addr) {
                    tier.relink(addr);
                }
                tier.cfg.heartbeat_interval * 5
            }
            Err(e) => {
                tracing::warn!(master = %set.master, error = %e, "Shared tier: no primary found through the sentinels yet.");
                Duration::from_millis(250)
            }
        };
        tokio::select! {
            _ = tier.stop.cancelled() => return,
            _ = tier.relink_kick.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        // Errors come in bursts: at most a few sentinel rounds a second.
        tokio::select! {
            _ = tier.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Listens for `+switch-master` on one sentinel at a time (the next one when it goes away).
async fn watch_switches(tier: Arc<SharedTier>, set: SentinelSet, sentinel: Login) {
    let mut i = 0;
    loop {
        let Some((h, p)) = set.nodes.get(i % set.nodes.len().max(1)) else {
            return;
        };
        i += 1;
        let subscribed = tokio::time::timeout(tier.cfg.connect_timeout, async {
            let client = node_client(h, *p, &sentinel)?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe("+switch-master").await?;
            Ok::<_, ::redis::RedisError>(ps)
        })
        .await;
        if let Ok(Ok(ps)) = subscribed {
            let mut stream = ps.into_on_message();
            loop {
                tokio::select! {
                    _ = tier.stop.cancelled() => return,
                    m = stream.next() => match m {
                        Some(m) => {
                            let payload = String::from_utf8_lossy(m.get_payload_bytes()).into_owned();
                            if payload.split(' ').next() == Some(set.master.as_str()) {
                                tracing::warn!(switch = %payload, "Shared tier: the sentinels switched the primary.");
                                tier.relink_kick.notify_one();
                            }
                        }
                        None => break,
                    },
                }
            }
        }
        tokio::select! {
            _ = tier.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_files_and_win_over_the_url() {
        let dir =
            std::env::temp_dir().join(format!("seawall-sentinel-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (data, sent) = (dir.join("data"), dir.join("sentinel"));
        std::fs::write(&data, "data-secret\n").expect("write");
        std::fs::write(&sent, "sentinel-secret\n").expect("write");
        let mut cfg = RedisSection {
            url: "redis://old:pw@h:6379/2".into(),
            username: Some("seawall".into()),
            password_file: Some(data.display().to_string()),
            ..RedisSection::default()
        };
        let Ok(Access::Url { info, .. }) = Access::new(&cfg) else {
            panic!("url access");
        };
        assert_eq!(info.redis_settings().username(), Some("seawall"));
        assert_eq!(info.redis_settings().password(), Some("data-secret"));
        assert_eq!(info.redis_settings().db(), 2);

        cfg.url = "redis+sentinel://u:p@s1:26379,s2:26379/main".into();
        cfg.username = None;
        cfg.sentinel_username = Some("watcher".into());
        cfg.sentinel_password_file = Some(sent.display().to_string());
        let Ok(Access::Sentinel {
            set,
            data,
            sentinel,
        }) = Access::new(&cfg)
        else {
            panic!("sentinel access");
        };
        assert_eq!(set.master, "main");
        assert_eq!(data.username.as_deref(), Some("u"));
        assert_eq!(data.password.as_deref(), Some("data-secret"));
        assert_eq!(sentinel.username.as_deref(), Some("watcher"));
        assert_eq!(sentinel.password.as_deref(), Some("sentinel-secret"));

        cfg.password_file = Some(dir.join("missing").display().to_string());
        let e = Access::new(&cfg).expect_err("missing file");
        assert!(e.to_string().contains("cache.redis.password_file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_reaches_sentinels_primaries_and_cluster_nodes_trusting_the_ca_file() {
        let dir = std::env::temp_dir().join(format!("seawall-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.pem");
        let cert =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
        std::fs::write(&ca, cert.cert.pem()).expect("write");
        let cfg = RedisSection {
            sentinels: vec!["s1:26379".into()],
            master_name: Some("main".into()),
            tls: true,
            tls_ca_file: Some(ca.display().to_string()),
            ..RedisSection::default()
        };
        let Ok(access @ Access::Sentinel { .. }) = Access::new(&cfg) else {
            panic!("sentinel access");
        };
        let Access::Sentinel { data, sentinel, .. } = &access else {
            unreachable!()
        };
        for login in [data, sentinel] {
            assert!(login.tls);
            let info = node("10.0.0.7", 6380, login).expect("info");
            assert!(
                matches!(info.addr(), ConnectionAddr::TcpTls { host, port: 6380, insecure: false, .. } if host == "10.0.0.7"),
                "{:?}",
                info.addr()
            );
            assert!(login.certificates().is_some());
        }
        let client = access.data_client("10.0.0.7", 6380).expect("client");
        assert!(matches!(
            client.get_connection_info().addr(),
            ConnectionAddr::TcpTls { .. }
        ));

        let cluster = RedisSection {
            cluster_nodes: vec!["n1:7000".into()],
            tls: true,
            ..RedisSection::default()
        };
        let Ok(Access::Cluster { data, .. }) = Access::new(&cluster) else {
            panic!("cluster access");
        };
        assert!(data.tls && data.ca.is_none());
        let seed = node("n1", 7000, &data.transport()).expect("seed");
        assert!(matches!(seed.addr(), ConnectionAddr::TcpTls { .. }));
        assert_eq!(seed.redis_settings().password(), None);

        // Without `tls`, plain TCP; a `url` says it itself.
        let plain = RedisSection {
            cluster_nodes: vec!["n1:7000".into()],
            ..RedisSection::default()
        };
        let Ok(Access::Cluster { data, .. }) = Access::new(&plain) else {
            panic!("cluster access");
        };
        let info = node("n1", 7000, &data).expect("info");
        assert!(matches!(info.addr(), ConnectionAddr::Tcp(..)));
        let url = RedisSection {
            url: "rediss://h:6380/0".into(),
            tls_ca_file: Some(ca.display().to_string()),
            ..RedisSection::default()
        };
        let Ok(Access::Url { login, .. }) = Access::new(&url) else {
            panic!("url access");
        };
        assert!(login.tls && login.ca.is_some());

        let missing = RedisSection {
            tls_ca_file: Some(dir.join("missing.pem").display().to_string()),
            ..cfg
        };
        let e = Access::new(&missing).expect_err("missing CA file");
        assert!(e.to_string().contains("cache.redis.tls_ca_file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Following the primary through Redis Sentinel: asked at start, again after connection
//! errors and whenever a sentinel announces `+switch-master`; the tier then reconnects there.

use std::sync::Arc;
use std::time::Duration;

use ::redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use futures_util::StreamExt as _;

use super::SharedTier;
use crate::config::file::RedisSection;
use crate::config::redis::{Endpoint, SentinelSet};

/// Credentials, from the config and the files it names.
#[derive(Clone, Debug, Default)]
pub(super) struct Login {
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

impl Login {
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
    /// One fixed address.
    Url(ConnectionInfo),
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
        Ok(match endpoint {
            Endpoint::Url(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| anyhow::anyhow!("cache.redis.url: {e}"))?;
                let login = Login {
                    username: cfg.username.clone(),
                    password,
                };
                let r = login.apply(info.redis_settings().clone());
                Access::Url(info.set_redis_settings(r))
            }
            Endpoint::Cluster(seeds) => Access::Cluster {
                data: Login {
                    username: cfg.username.clone().or(seeds.url_username),
                    password: password.or(seeds.url_password),
                },
                nodes: seeds.nodes,
            },
            Endpoint::Sentinel(set) => Access::Sentinel {
                data: Login {
                    username: cfg.username.clone().or_else(|| set.url_username.clone()),
                    password: password.or_else(|| set.url_password.clone()),
                },
                sentinel: Login {
                    username: cfg.sentinel_username.clone(),
                    password: read_secret(
                        "cache.redis.sentinel_password_file",
                        cfg.sentinel_password_file.as_deref(),
                    )?,
                },
                set,
            },
        })
    }

    /// The data node at `host:port`, logged in as configured.
    pub(super) fn data_node(&self, host: &str, port: u16) -> ::redis::RedisResult<ConnectionInfo> {
        let login = match self {
            Access::Url(_) => Login::default(),
            Access::Sentinel { data, .. } | Access::Cluster { data, .. } => data.clone(),
        };
        node(host, port, &login)
    }
}

pub(super) fn node(host: &str, port: u16, login: &Login) -> ::redis::RedisResult<ConnectionInfo> {
    let info = ConnectionAddr::Tcp(host.to_string(), port).into_connection_info()?;
    let r = login.apply(info.redis_settings().clone());
    Ok(info.set_redis_settings(r))
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
            let client = node(h, *p, sentinel)
                .and_then(Client::open)
                .map_err(|e| e.to_string())?;
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
            let client = node(&host, port, data)
                .and_then(Client::open)
                .map_err(|e| e.to_string())?;
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
            let client = node(h, *p, &sentinel).and_then(Client::open)?;
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
        let Ok(Access::Url(info)) = Access::new(&cfg) else {
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
}

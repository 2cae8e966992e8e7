//! Where `[cache.redis]` finds its data nodes: one `url`, Redis Sentinel (`sentinels` +
//! `master_name`, or a `redis+sentinel://` URL) or Redis Cluster (`cluster_nodes`, or a
//! `redis+cluster://` URL), and whether over TLS. Parsed here so validation and the tier agree.

use super::file::RedisSection;

/// How the shared tier reaches its primary.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Endpoint {
    /// A fixed `redis://` or `rediss://` URL.
    Url(String),
    /// Asked of the sentinels, again after each failover.
    Sentinel(SentinelSet),
    /// A Redis Cluster, found from these seed nodes.
    Cluster(ClusterSeeds),
}

/// The seed nodes of a Redis Cluster.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClusterSeeds {
    /// `host`, `port` of each seed node.
    pub(crate) nodes: Vec<(String, u16)>,
    /// Credentials a `redis+cluster://user:pass@…` URL carries.
    pub(crate) url_username: Option<String>,
    pub(crate) url_password: Option<String>,
}

/// `[user:pass@]` of a URL's authority: (username, password, the hosts after it).
fn split_creds(authority: &str) -> (Option<String>, Option<String>, &str) {
    let (creds, hosts) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    match creds {
        None => (None, None, hosts),
        Some(c) => {
            let (u, p) = c.split_once(':').map_or((c, None), |(u, p)| (u, Some(p)));
            (
                (!u.is_empty()).then(|| u.to_string()),
                p.filter(|p| !p.is_empty()).map(str::to_string),
                hosts,
            )
        }
    }
}

/// `redis+cluster://[user:pass@]h1:6379,h2:6379[/]`.
fn parse_cluster_url(url: &str) -> Result<ClusterSeeds, String> {
    let rest = url
        .strip_prefix("redis+cluster://")
        .ok_or("not a redis+cluster:// URL")?;
    let authority = rest.trim_end_matches('/');
    if authority.contains(['/', '?', '#']) {
        return Err("redis+cluster:// URLs name nodes only (no database: Cluster has one)".into());
    }
    let (url_username, url_password, hosts) = split_creds(authority);
    let nodes = hosts
        .split(',')
        .map(|n| parse_node(n).ok_or_else(|| format!("cluster node {n:?} is not host:port")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClusterSeeds {
        nodes,
        url_username,
        url_password,
    })
}

/// The sentinels of one monitored primary.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SentinelSet {
    /// `host`, `port` of each sentinel.
    pub(crate) nodes: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub(crate) master: String,
    /// Data-node credentials a `redis+sentinel://user:pass@…` URL carries.
    pub(crate) url_username: Option<String>,
    pub(crate) url_password: Option<String>,
}

/// `host:port` (IPv6 in brackets); the port is required.
pub(crate) fn parse_node(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
}

/// `redis+sentinel://[user:pass@]h1:26379,h2:26379/<master>`.
fn parse_sentinel_url(url: &str) -> Result<SentinelSet, String> {
    let rest = url
        .strip_prefix("redis+sentinel://")
        .ok_or("not a redis+sentinel:// URL")?;
    let (authority, master) = rest
        .split_once('/')
        .ok_or("redis+sentinel:// URLs end in /<master name>")?;
    let master = master.trim_end_matches('/');
    if master.is_empty() || master.contains(['/', '?', '#']) {
        return Err("redis+sentinel:// URLs end in /<master name>".into());
    }
    let (url_username, url_password, hosts) = split_creds(authority);
    let nodes = hosts
        .split(',')
        .map(|n| parse_node(n).ok_or_else(|| format!("sentinel {n:?} is not host:port")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SentinelSet {
        nodes,
        master: master.to_string(),
        url_username,
        url_password,
    })
}

impl Endpoint {
    /// From `[cache.redis]`, with its TLS keys checked; the error names the key at fault.
    pub(crate) fn of(r: &RedisSection) -> Result<Self, (&'static str, String)> {
        let e = Self::of_nodes(r)?;
        let url_tls = matches!(&e, Endpoint::Url(u) if u.starts_with("rediss://"));
        if r.tls && matches!(e, Endpoint::Url(_)) && !url_tls {
            return Err((
                "cache.redis.tls",
                "with a url, write rediss:// for TLS (tls is for sentinels and cluster_nodes)"
                    .into(),
            ));
        }
        if r.tls_ca_file.is_some() && !(r.tls || url_tls) {
            return Err((
                "cache.redis.tls_ca_file",
                "needs tls = true (or a rediss:// url)".into(),
            ));
        }
        if r.tls_ca_file.as_deref().is_some_and(str::is_empty) {
            return Err((
                "cache.redis.tls_ca_file",
                "must be a file path (or left out)".into(),
            ));
        }
        Ok(e)
    }

    fn of_nodes(r: &RedisSection) -> Result<Self, (&'static str, String)> {
        if !r.cluster_nodes.is_empty() {
            if !r.url.is_empty() || !r.sentinels.is_empty() {
                return Err((
                    "cache.redis.cluster_nodes",
                    "set exactly one of url, sentinels and cluster_nodes".into(),
                ));
            }
            if r.master_name.is_some() {
                return Err((
                    "cache.redis.master_name",
                    "only with sentinels or a redis+sentinel:// URL".into(),
                ));
            }
            let nodes = r
                .cluster_nodes
                .iter()
                .map(|n| {
                    parse_node(n).ok_or_else(|| {
                        (
                            "cache.redis.cluster_nodes",
                            format!("{n:?} is not host:port"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Endpoint::Cluster(ClusterSeeds {
                nodes,
                url_username: None,
                url_password: None,
            }));
        }
        if r.url.starts_with("redis+cluster://") {
            if !r.sentinels.is_empty() || r.master_name.is_some() {
                return Err((
                    "cache.redis.sentinels",
                    "set exactly one of url, sentinels and cluster_nodes".into(),
                ));
            }
            return parse_cluster_url(&r.url)
                .map(Endpoint::Cluster)
                .map_err(|e| ("cache.redis.url", e));
        }
        if !r.url.is_empty() && !r.sentinels.is_empty() {
            return Err((
                "cache.redis.sentinels",
                "set either url or sentinels (with master_name), not both".into(),
            ));
        }
        if r.url.starts_with("redis+sentinel://") {
            if r.master_name.is_some() {
                return Err((
                    "cache.redis.master_name",
                    "a redis+sentinel:// URL names the master itself".into(),
                ));
            }
            return parse_sentinel_url(&r.url)
                .map(Endpoint::Sentinel)
                .map_err(|e| ("cache.redis.url", e));
        }
        if !r.sentinels.is_empty() {
            let master = match r.master_name.as_deref() {
                Some(m) if !m.trim().is_empty() => m.to_string(),
                _ => {
                    return Err((
                        "cache.redis.master_name",
                        "required with sentinels: the name the sentinels monitor".into(),
                    ));
                }
            };
            let nodes = r
                .sentinels
                .iter()
                .map(|n| {
                    parse_node(n)
                        .ok_or_else(|| ("cache.redis.sentinels", format!("{n:?} is not host:port")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Endpoint::Sentinel(SentinelSet {
                nodes,
                master,
                url_username: None,
                url_password: None,
            }));
        }
        if r.master_name.is_some() {
            return Err((
                "cache.redis.master_name",
                "only with sentinels or a redis+sentinel:// URL".into(),
            ));
        }
        if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://"))
            || url_host(&r.url).is_none()
        {
            return Err((
                "cache.redis.url",
                "must be a redis://host:port, rediss://host:port, redis+sentinel://h1:port,h2:port/<master> or redis+cluster://h1:port,h2:port URL".into(),
            ));
        }
        Ok(Endpoint::Url(r.url.clone()))
    }
}

/// The host of a `redis://` URL, if it names one.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(f: impl FnOnce(&mut RedisSection)) -> RedisSection {
        let mut r = RedisSection::default();
        f(&mut r);
        r
    }

    #[test]
    fn exactly_one_way_to_the_primary() {
        let r = section(|r| r.url = "redis://h:6379/0".into());
        assert_eq!(
            Endpoint::of(&r),
            Ok(Endpoint::Url("redis://h:6379/0".into()))
        );
        let r = section(|r| {
            r.sentinels = vec!["s1:26379".into(), "[::1]:26380".into()];
            r.master_name = Some("main".into());
        });
        let Ok(Endpoint::Sentinel(s)) = Endpoint::of(&r) else {
            panic!("sentinels: {:?}", Endpoint::of(&r));
        };
        assert_eq!(
            s.nodes,
            vec![("s1".to_string(), 26379), ("::1".to_string(), 26380)]
        );
        assert_eq!(s.master, "main");
        let both = section(|r| {
            r.url = "redis://h:6379".into();
            r.sentinels = vec!["s1:26379".into()];
        });
        assert_eq!(
            Endpoint::of(&both).map_err(|e| e.0),
            Err("cache.redis.sentinels")
        );
        let no_master = section(|r| r.sentinels = vec!["s1:26379".into()]);
        assert_eq!(
            Endpoint::of(&no_master).map_err(|e| e.0),
            Err("cache.redis.master_name")
        );
        let no_port = section(|r| {
            r.sentinels = vec!["s1".into()];
            r.master_name = Some("m".into());
        });
        assert_eq!(
            Endpoint::of(&no_port).map_err(|e| e.0),
            Err("cache.redis.sentinels")
        );
    }

    #[test]
    fn sentinel_urls_carry_nodes_master_and_data_credentials() {
        let r = section(|r| r.url = "redis+sentinel://u:p@h1:26379,h2:26380/mymaster".into());
        let Ok(Endpoint::Sentinel(s)) = Endpoint::of(&r) else {
            panic!("{:?}", Endpoint::of(&r));
        };
        assert_eq!(
            s.nodes,
            vec![("h1".to_string(), 26379), ("h2".to_string(), 26380)]
        );
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.url_username.as_deref(), Some("u"));
        assert_eq!(s.url_password.as_deref(), Some("p"));
        for bad in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:26379/",
            "redis+sentinel://h1/m",
        ] {
            let r = section(|r| r.url = bad.into());
            assert_eq!(
                Endpoint::of(&r).map_err(|e| e.0),
                Err("cache.redis.url"),
                "{bad}"
            );
        }
    }

    #[test]
    fn tls_is_for_sentinels_and_cluster_nodes_and_a_ca_needs_tls() {
        let r = section(|r| {
            r.cluster_nodes = vec!["n1:7000".into()];
            r.tls = true;
            r.tls_ca_file = Some("/etc/ca.pem".into());
        });
        assert!(matches!(Endpoint::of(&r), Ok(Endpoint::Cluster(_))));
        let r = section(|r| {
            r.url = "redis+sentinel://s1:26379/main".into();
            r.tls = true;
        });
        assert!(matches!(Endpoint::of(&r), Ok(Endpoint::Sentinel(_))));
        let r = section(|r| {
            r.url = "rediss://h:6380".into();
            r.tls_ca_file = Some("/etc/ca.pem".into());
        });
        assert!(matches!(Endpoint::of(&r), Ok(Endpoint::Url(_))));
        let r = section(|r| {
            r.url = "redis://h:6379".into();
            r.tls = true;
        });
        assert_eq!(Endpoint::of(&r).map_err(|e| e.0), Err("cache.redis.tls"));
        let r = section(|r| {
            r.cluster_nodes = vec!["n1:7000".into()];
            r.tls_ca_file = Some("/etc/ca.pem".into());
        });
        assert_eq!(
            Endpoint::of(&r).map_err(|e| e.0),
            Err("cache.redis.tls_ca_file")
        );
    }

    #[test]
    fn cluster_nodes_or_a_cluster_url() {
        let r = section(|r| r.cluster_nodes = vec!["n1:7000".into(), "n2:7001".into()]);
        let Ok(Endpoint::Cluster(c)) = Endpoint::of(&r) else {
            panic!("{:?}", Endpoint::of(&r));
        };
        assert_eq!(
            c.nodes,
            vec![("n1".to_string(), 7000), ("n2".to_string(), 7001)]
        );
        let r = section(|r| r.url = "redis+cluster://u:p@h1:6379,h2:6380".into());
        let Ok(Endpoint::Cluster(c)) = Endpoint::of(&r) else {
            panic!("{:?}", Endpoint::of(&r));
        };
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.url_username.as_deref(), Some("u"));
        assert_eq!(c.url_password.as_deref(), Some("p"));
        let both = section(|r| {
            r.url = "redis://h:6379".into();
            r.cluster_nodes = vec!["n1:7000".into()];
        });
        assert_eq!(
            Endpoint::of(&both).map_err(|e| e.0),
            Err("cache.redis.cluster_nodes")
        );
        let bad = section(|r| r.cluster_nodes = vec!["n1".into()]);
        assert_eq!(
            Endpoint::of(&bad).map_err(|e| e.0),
            Err("cache.redis.cluster_nodes")
        );
        for bad in ["redis+cluster://h1:6379/0", "redis+cluster://h1"] {
            let r = section(|r| r.url = bad.into());
            assert_eq!(
                Endpoint::of(&r).map_err(|e| e.0),
                Err("cache.redis.url"),
                "{bad}"
            );
        }
    }
}

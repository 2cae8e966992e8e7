//! Config parsing, validation, env overrides and error locations.

use super::*;

const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9091"

[[upstreams]]
name = "app"
endpoints = ["http://127.0.0.1:3000"]

[[routes]]
name = "default"
upstream = "app"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn base_config_parses_with_defaults() {
    let c = Config::parse(BASE, "t.toml", env(&[])).expect("valid");
    assert_eq!(c.listen.map(|a| a.port()).unwrap_or(0), 8080);
    assert_eq!(c.raw.cache.max_size, MemSize::Bytes(256 * 1024 * 1024));
    assert_eq!(c.raw.cache.max_object_size, 8 * 1024 * 1024);
    assert_eq!(c.raw.server.drain_delay, std::time::Duration::from_secs(5));
    assert_eq!(c.route_name(0), "default");
    assert!(c.warnings.is_empty());
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let src = BASE.replace("listen = \"127.0.0.1:8080\"", "lisen = \"127.0.0.1:8080\"");
    let e = Config::parse(&src, "bad.toml", env(&[])).expect_err("unknown key");
    assert_eq!(e.file, "bad.toml");
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key, "server.lisen");
    assert!(e.message.contains("unknown field"), "{}", e.message);
    assert!(
        e.to_string().starts_with("bad.toml:3: key `server.lisen`"),
        "{e}"
    );
}

#[test]
fn bad_duration_names_the_key() {
    let src = format!("{BASE}\n[coalesce]\nhit_for_pass_ttl = \"soon\"\n");
    let e = Config::parse(&src, "d.toml", env(&[])).expect_err("bad duration");
    assert_eq!(e.key, "coalesce.hit_for_pass_ttl");
    assert_eq!(e.line, Some(15));
    assert!(e.message.contains("invalid duration"), "{}", e.message);
}

#[test]
fn nested_array_table_keys_are_located() {
    let src = BASE.replace("upstream = \"app\"", "upstream = \"nope\"");
    let e = Config::parse(&src, "r.toml", env(&[])).expect_err("unknown upstream");
    assert_eq!(e.key, "routes[0].upstream");
    assert_eq!(e.line, Some(12));
    let src = format!("{BASE}\n[upstreams.breaker]\nwindow = \"x\"\n");
    // A sub-table after [[routes]] belongs to TOML's last [[upstreams]] only if declared there;
    // here it is declared after routes, so place it right after the upstream instead.
    let src2 = BASE.replace(
        "endpoints = [\"http://127.0.0.1:3000\"]",
        "endpoints = [\"http://127.0.0.1:3000\"]\n[upstreams.breaker]\nwindow = \"x\"",
    );
    let e = Config::parse(&src2, "b.toml", env(&[])).expect_err("bad window");
    assert_eq!(e.key, "upstreams[0].breaker.window");
    assert_eq!(e.line, Some(10));
    assert!(Config::parse(&src, "b.toml", env(&[])).is_err());
}

#[test]
fn env_overrides_known_keys_and_reports_unknown() {
    let c = Config::parse(
        BASE,
        "t.toml",
        env(&[
            ("SEAWALL_SERVER_LISTEN", "127.0.0.1:18080"),
            ("SEAWALL_CACHE_ENABLED", "false"),
            ("SEAWALL_CACHE_MAX_SIZE", "16MiB"),
            ("SEAWALL_SERVER_WORKER_THREADS", "3"),
            ("SEAWALL_CACHE_ENABLD", "false"),
            ("SEAWALL_SERVICE_HOST", "10.0.0.1"),
            ("SEAWALL_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
            ("SEAWALL_COALESCE_WAIT_TIMEOUT", "3s"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.listen.map(|a| a.port()).unwrap_or(0), 18080);
    assert!(!c.raw.cache.enabled);
    assert_eq!(c.raw.cache.max_size, MemSize::Bytes(16 * 1024 * 1024));
    assert_eq!(c.raw.server.worker_threads, 3);
    assert_eq!(
        c.raw.coalesce.wait_timeout,
        Some(std::time::Duration::from_secs(3))
    );
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("SEAWALL_CACHE_ENABLD"));
}

#[test]
fn env_override_with_bad_value_is_an_error() {
    let e = Config::parse(BASE, "t.toml", env(&[("SEAWALL_CACHE_ENABLED", "maybe")]))
        .expect_err("bad bool");
    assert_eq!(e.file, "<env>");
    assert!(e.key.contains("SEAWALL_CACHE_ENABLED"));
    let e = Config::parse(BASE, "t.toml", env(&[("SEAWALL_CACHE_MAX_SIZE", "lots")]))
        .expect_err("bad size");
    assert_eq!(e.key, "cache.max_size");
}

#[test]
fn sizes_accept_units_and_integers() {
    let src = format!("{BASE}\n[cache]\nmax_size = \"64MiB\"\nmax_object_size = 1024\n");
    let c = Config::parse(&src, "t.toml", env(&[])).expect("valid");
    assert_eq!(c.raw.cache.max_size, MemSize::Bytes(64 * 1024 * 1024));
    assert_eq!(c.raw.cache.max_object_size, 1024);
}

#[test]
fn max_size_and_the_watermark_take_shares_of_the_memory_limit() {
    let c = Config::parse(BASE, "t.toml", env(&[])).expect("valid");
    assert_eq!(c.raw.cache.memory_high_watermark, MemSize::Percent(85.0));
    let src = format!("{BASE}\n[cache]\nmax_size = \"60%\"\nmemory_high_watermark = \"400MiB\"\n");
    let c = Config::parse(&src, "t.toml", env(&[])).expect("valid");
    assert_eq!(c.raw.cache.max_size, MemSize::Percent(60.0));
    assert_eq!(c.raw.cache.max_size.resolve(Some(1000)), Some(600));
    assert_eq!(c.raw.cache.max_size.resolve(None), None);
    assert_eq!(
        c.raw.cache.memory_high_watermark,
        MemSize::Bytes(400 * 1024 * 1024)
    );
    let c =
        Config::parse(BASE, "t.toml", env(&[("SEAWALL_CACHE_MAX_SIZE", "12.5%")])).expect("valid");
    assert_eq!(c.raw.cache.max_size, MemSize::Percent(12.5));
    for bad in ["0%", "150%", "lots%", "-5%", "%"] {
        let src = format!("{BASE}\n[cache]\nmax_size = {bad:?}\n");
        let e = Config::parse(&src, "t.toml", env(&[])).expect_err(bad);
        assert_eq!(e.key, "cache.max_size", "{bad}: {e}");
        assert!(e.message.contains("memory limit"), "{bad}: {e}");
        let src = format!("{BASE}\n[cache]\nmemory_high_watermark = {bad:?}\n");
        let e = Config::parse(&src, "t.toml", env(&[])).expect_err(bad);
        assert_eq!(e.key, "cache.memory_high_watermark", "{bad}: {e}");
    }
    let e = Config::parse(
        BASE,
        "t.toml",
        env(&[("SEAWALL_CACHE_MEMORY_HIGH_WATERMARK", "200%")]),
    )
    .expect_err("bad share");
    assert_eq!(e.key, "cache.memory_high_watermark");
}

#[test]
fn endpoint_must_be_a_base_url() {
    let src = BASE.replace("http://127.0.0.1:3000", "ftp://x/y");
    let e = Config::parse(&src, "t.toml", env(&[])).expect_err("bad endpoint");
    assert_eq!(e.key, "upstreams[0].endpoints[0]");
    assert_eq!(e.line, Some(8));
}

#[test]
fn repo_proxy_toml_is_valid() {
    let src = include_str!("../../proxy.toml");
    let c = Config::parse(src, "proxy.toml", env(&[])).expect("proxy.toml is valid");
    assert!(!c.raw.routes.is_empty());
}

#[test]
fn redis_section_parses_and_env_overrides_its_keys() {
    let src =
        format!("{BASE}\n[cache.redis]\nurl = \"redis://10.0.0.1:6379/0\"\ntimeout = \"50ms\"\n");
    let c = Config::parse(&src, "r.toml", env(&[])).expect("valid");
    let r = c.raw.cache.redis.as_ref().expect("redis section");
    assert_eq!(r.url, "redis://10.0.0.1:6379/0");
    assert_eq!(r.timeout, std::time::Duration::from_millis(50));
    assert_eq!(r.namespace, "seawall");
    assert_eq!(r.lock_wait, std::time::Duration::from_secs(5));
    let c = Config::parse(
        &src,
        "r.toml",
        env(&[
            (
                "SEAWALL_CACHE_REDIS_URL",
                "rediss://:pw@redis.internal:6380",
            ),
            ("SEAWALL_CACHE_REDIS_WRITE_QUEUE", "7"),
            ("SEAWALL_CACHE_REDIS_REPLICA_ID", "pod-1"),
        ]),
    )
    .expect("valid with env");
    let r = c.raw.cache.redis.as_ref().expect("redis section");
    assert_eq!(r.url, "rediss://:pw@redis.internal:6380");
    assert_eq!(r.write_queue, 7);
    assert_eq!(r.replica_id.as_deref(), Some("pod-1"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Without the section, the URL variable alone turns the tier on.
    let c = Config::parse(
        BASE,
        "r.toml",
        env(&[("SEAWALL_CACHE_REDIS_URL", "redis://127.0.0.1:6379")]),
    )
    .expect("valid");
    assert!(c.raw.cache.redis.is_some());
    assert!(
        Config::parse(BASE, "r.toml", env(&[]))
            .expect("valid")
            .raw
            .cache
            .redis
            .is_none()
    );
    // Settings without a URL (a replica id set on every pod, Redis or not) leave the tier off.
    let c = Config::parse(
        BASE,
        "r.toml",
        env(&[
            ("SEAWALL_CACHE_REDIS_REPLICA_ID", "pod-1"),
            ("SEAWALL_CACHE_REDIS_URL", ""),
        ]),
    )
    .expect("valid");
    assert!(c.raw.cache.redis.is_none());
    assert_eq!(
        c.warnings,
        vec!["cache.redis has no url: the shared tier is off".to_string()]
    );
}

#[test]
fn bad_redis_settings_name_file_line_and_key() {
    let src = format!("{BASE}\n[cache.redis]\nurl = \"http://10.0.0.1:6379\"\n");
    let e = Config::parse(&src, "r.toml", env(&[])).expect_err("not a redis URL");
    assert_eq!(e.file, "r.toml");
    assert_eq!(e.key, "cache.redis.url");
    assert_eq!(e.line, Some(15));
    let src = format!("{BASE}\n[cache.redis]\nurl = \"redis://h:6379\"\ntimeout = \"0s\"\n");
    let e = Config::parse(&src, "r.toml", env(&[])).expect_err("zero timeout");
    assert_eq!(e.key, "cache.redis.timeout");
    assert_eq!(e.line, Some(16));
    let src = format!("{BASE}\n[cache.redis]\nurl = \"redis://h:6379\"\nlock_tll = \"1s\"\n");
    let e = Config::parse(&src, "r.toml", env(&[])).expect_err("typo");
    assert_eq!(e.key, "cache.redis.lock_tll");
    assert!(e.message.contains("unknown field"), "{}", e.message);
    let src = format!("{BASE}\n[cache.redis]\nurl = \"redis://h:6379\"\njournal_max = 0\n");
    let e = Config::parse(&src, "r.toml", env(&[])).expect_err("no journal");
    assert_eq!(e.key, "cache.redis.journal_max");
    assert_eq!(e.line, Some(16));
}

#[test]
fn the_purge_journal_defaults_to_memory_and_takes_a_file_from_the_environment() {
    let src = format!("{BASE}\n[cache.redis]\nurl = \"redis://h:6379\"\n");
    let c = Config::parse(&src, "r.toml", env(&[])).expect("valid");
    let r = c.raw.cache.redis.as_ref().expect("redis section");
    assert_eq!((r.journal_max, r.journal_file.as_deref()), (1000, None));
    let c = Config::parse(
        &src,
        "r.toml",
        env(&[
            (
                "SEAWALL_CACHE_REDIS_JOURNAL_FILE",
                "/var/lib/seawall/j.jsonl",
            ),
            ("SEAWALL_CACHE_REDIS_JOURNAL_MAX", "5"),
        ]),
    )
    .expect("valid with env");
    let r = c.raw.cache.redis.as_ref().expect("redis section");
    assert_eq!(r.journal_max, 5);
    assert_eq!(r.journal_file.as_deref(), Some("/var/lib/seawall/j.jsonl"));
}

#[test]
fn cache_host_needs_a_host_and_must_be_one() {
    let src = format!("{BASE}cache_host = \"shop.internal\"\n");
    let e = Config::parse(&src, "ch.toml", env(&[])).expect_err("cache_host without host");
    assert_eq!(e.key, "routes[0].cache_host");
    assert_eq!(e.line, Some(13));
    assert!(e.message.contains("needs `host`"), "{}", e.message);
    let src = format!("{BASE}host = \"shop.example\"\ncache_host = \"shop.internal/a\"\n");
    let e = Config::parse(&src, "ch.toml", env(&[])).expect_err("cache_host with a path");
    assert_eq!(e.key, "routes[0].cache_host");
    let src = format!("{BASE}host = \"shop.example\"\ncache_host = \"shop.internal\"\n");
    Config::parse(&src, "ch.toml", env(&[])).expect("valid");
}

#[test]
fn unkeyed_request_headers_are_names_and_can_come_from_env() {
    let src = format!("{BASE}\n[cache]\nunkeyed_request_headers = [\"x-ok\", \"bad name\"]\n");
    let e = Config::parse(&src, "u.toml", env(&[])).expect_err("bad header name");
    assert_eq!(e.key, "cache.unkeyed_request_headers[1]");
    assert_eq!(e.line, Some(15));
    let c = Config::parse(
        BASE,
        "u.toml",
        env(&[("SEAWALL_CACHE_UNKEYED_REQUEST_HEADERS", "x-a, X-B")]),
    )
    .expect("valid");
    assert_eq!(c.raw.cache.unkeyed_request_headers, ["x-a", "X-B"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn upstream_variable_fills_in_the_only_upstream_or_makes_one() {
    let c = Config::parse(
        BASE,
        "t.toml",
        env(&[("SEAWALL_UPSTREAM", "http://a:1, http://b:2")]),
    )
    .unwrap();
    assert_eq!(c.raw.upstreams.len(), 1);
    assert_eq!(c.raw.upstreams[0].name, "app");
    assert_eq!(c.raw.upstreams[0].endpoints, ["http://a:1", "http://b:2"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // No file content at all: upstream `default` and a catch-all route to it.
    let c = Config::from_env(env(&[("SEAWALL_UPSTREAM", "http://app:3000")])).unwrap();
    assert_eq!(c.raw.upstreams[0].name, "default");
    assert_eq!(c.raw.upstreams[0].endpoints, ["http://app:3000"]);
    assert_eq!(c.raw.routes.len(), 1);
    assert_eq!(c.raw.routes[0].upstream, "default");
    assert!(c.raw.routes[0].path_prefix.is_none() && c.raw.routes[0].host.is_none());

    // A file with routes but no upstream keeps its routes.
    let src = "[[routes]]\nupstream = \"default\"\npath_prefix = \"/api\"\n";
    let c = Config::parse(
        src,
        "r.toml",
        env(&[("SEAWALL_UPSTREAM", "http://app:3000")]),
    )
    .unwrap();
    assert_eq!(c.raw.routes.len(), 1);
    assert_eq!(c.raw.routes[0].path_prefix.as_deref(), Some("/api"));

    // A bad value names the variable, not the file.
    let e = Config::parse(BASE, "t.toml", env(&[("SEAWALL_UPSTREAM", "app:3000/x")]))
        .expect_err("not a URL");
    assert_eq!((e.file.as_str(), e.line), ("<env>", None));
    assert!(e.key.contains("SEAWALL_UPSTREAM"), "{}", e.key);
}

#[test]
fn max_reader_lag_is_read_validated_and_overridable() {
    let c = Config::parse(BASE, "t.toml", env(&[])).expect("valid");
    assert_eq!(c.raw.coalesce.max_reader_lag, 8 * 1024 * 1024);
    let src = format!("{BASE}\n[coalesce]\nmax_reader_lag = \"512KiB\"\n");
    let e = Config::parse(&src, "l.toml", env(&[])).expect_err("too small");
    assert_eq!(e.key, "coalesce.max_reader_lag");
    assert!(e.message.contains("at least 1MiB"), "{}", e.message);
    let c = Config::parse(
        BASE,
        "t.toml",
        env(&[("SEAWALL_COALESCE_MAX_READER_LAG", "16MiB")]),
    )
    .expect("valid");
    assert_eq!(c.raw.coalesce.max_reader_lag, 16 * 1024 * 1024);
    let src = format!("{BASE}invalidate_on_unsafe = false\n");
    let c = Config::parse(&src, "t.toml", env(&[])).expect("valid");
    assert!(!c.raw.routes[0].invalidate_on_unsafe);
}

#[test]
fn stale_if_unreachable_defaults_overrides_and_routes() {
    let c = Config::parse(BASE, "t.toml", env(&[])).expect("valid");
    assert_eq!(
        c.raw.cache.stale_if_unreachable,
        std::time::Duration::from_secs(60)
    );
    let c = Config::parse(
        BASE,
        "t.toml",
        env(&[("SEAWALL_CACHE_STALE_IF_UNREACHABLE", "5m")]),
    )
    .expect("valid");
    assert_eq!(
        c.raw.cache.stale_if_unreachable,
        std::time::Duration::from_secs(300)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let e = Config::parse(
        &format!("{BASE}stale_if_unreachable = \"soon\"\n"),
        "t.toml",
        env(&[]),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("t.toml:") && e.contains("stale_if_unreachable"),
        "{e}"
    );
    let e = Config::parse(
        &format!("{BASE}ttl_statuses = [200, 304]\n"),
        "t.toml",
        env(&[]),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("routes[0].ttl_statuses[1]"), "{e}");
}

#[test]
fn readme_breaker_defaults_match_the_code() {
    // The breaker's defaults are written once, in code; the README's reference table must say
    // the same values.
    let readme = include_str!("../../README.md");
    let mut doc = String::new();
    for line in readme.lines() {
        let Some(rest) = line.strip_prefix("| `upstreams[].breaker.") else {
            continue;
        };
        let mut cols = rest.split('|');
        let key = cols.next().unwrap_or_default().trim().trim_end_matches('`');
        let value = cols.next().unwrap_or_default().trim().trim_matches('`');
        doc.push_str(&format!("{key} = {value}\n"));
    }
    assert_eq!(doc.lines().count(), 10, "README breaker rows:\n{doc}");
    let documented: file::BreakerSection =
        toml::from_str(&doc).expect("README breaker defaults parse");
    assert_eq!(
        serde_json::to_value(&documented).expect("serializes"),
        serde_json::to_value(file::BreakerSection::default()).expect("serializes"),
        "README breaker defaults differ from BreakerSection::default()"
    );
}

#[test]
fn tls_listener_keys_are_validated() {
    let with_tls = |server: &str, tls: &str| {
        let src = BASE.replace(
            "listen = \"127.0.0.1:8080\"\n",
            &format!("listen = \"127.0.0.1:8080\"\n{server}\n"),
        );
        format!("{src}\n[tls]\n{tls}\n")
    };
    let cert = "[[tls.certificates]]\ncert_file = \"a.pem\"\nkey_file = \"a-key.pem\"\n";

    let c = Config::parse(
        &with_tls("listen_tls = \"127.0.0.1:8443\"", cert),
        "t.toml",
        env(&[]),
    )
    .expect("valid");
    assert_eq!(c.listen_tls.map(|a| a.port()), Some(8443));
    assert_eq!(
        c.raw.tls.handshake_timeout,
        std::time::Duration::from_secs(10)
    );

    // The cleartext listener off, the TLS one alone.
    let src = with_tls("listen_tls = \"127.0.0.1:8443\"", cert)
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"\"");
    let c = Config::parse(&src, "t.toml", env(&[])).expect("TLS alone");
    assert_eq!(c.listen, None);

    // Neither listener.
    let src = BASE.replace("listen = \"127.0.0.1:8080\"", "listen = \"\"");
    let e = Config::parse(&src, "t.toml", env(&[])).expect_err("no listener");
    assert_eq!(e.key, "server.listen");
    assert!(e.message.contains("listen_tls"), "{}", e.message);

    for (server, tls, key) in [
        ("listen_tls = \"127.0.0.1:8443\"", "", "server.listen_tls"),
        ("listen_tls = \"nowhere\"", cert, "server.listen_tls"),
        ("listen_tls = \"127.0.0.1:8080\"", cert, "server.listen_tls"),
        (
            "",
            &format!("min_version = \"1.1\"\n{cert}"),
            "tls.min_version",
        ),
        (
            "",
            &format!("unknown_sni = \"maybe\"\n{cert}"),
            "tls.unknown_sni",
        ),
        (
            "",
            &format!("handshake_timeout = \"0s\"\n{cert}"),
            "tls.handshake_timeout",
        ),
        (
            "",
            &format!("{cert}default = true\n{cert}default = true\n"),
            "tls.certificates",
        ),
        (
            "",
            &format!("{cert}hosts = [\"a.test\", \"x.*.test\"]\n"),
            "tls.certificates[0].hosts[1]",
        ),
    ] {
        let e = Config::parse(&with_tls(server, tls), "t.toml", env(&[]))
            .expect_err(&format!("{server} / {tls}"));
        assert_eq!(e.key, key, "{e}");
    }

    // Certificates without a TLS listener serve nothing: a warning.
    let c = Config::parse(&with_tls("", cert), "t.toml", env(&[])).expect("valid");
    assert!(
        c.warnings.iter().any(|w| w.contains("listen_tls")),
        "{:?}",
        c.warnings
    );

    // The TLS keys are environment settings too.
    let c = Config::parse(
        &with_tls("", cert),
        "t.toml",
        env(&[
            ("SEAWALL_SERVER_LISTEN_TLS", "127.0.0.1:9443"),
            ("SEAWALL_TLS_MIN_VERSION", "1.3"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.listen_tls.map(|a| a.port()), Some(9443));
    assert_eq!(c.raw.tls.min_version, "1.3");
}

#[test]
fn redis_cluster_nodes_parse_and_errors_name_the_key() {
    let src =
        format!("{BASE}\n[cache.redis]\ncluster_nodes = [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\n");
    let c = Config::parse(&src, "r.toml", env(&[])).expect("valid");
    let r = c.raw.cache.redis.expect("shared tier on");
    assert_eq!(r.cluster_nodes.len(), 2);
    let src = format!(
        "{BASE}\n[cache.redis]\nurl = \"redis://h:6379\"\ncluster_nodes = [\"10.0.0.1:7000\"]\n"
    );
    let e = Config::parse(&src, "r.toml", env(&[])).expect_err("two endpoints");
    assert_eq!(e.key, "cache.redis.cluster_nodes");
    let src = format!("{BASE}\n[cache.redis]\ncluster_nodes = [\"10.0.0.1\"]\n");
    let e = Config::parse(&src, "r.toml", env(&[])).expect_err("no port");
    assert_eq!(e.key, "cache.redis.cluster_nodes");
    assert!(e.message.contains("host:port"), "{}", e.message);
}

#[test]
fn sentinels_and_cluster_nodes_come_from_comma_separated_variables() {
    let c = Config::parse(
        BASE,
        "r.toml",
        env(&[
            (
                "SEAWALL_CACHE_REDIS_SENTINELS",
                "s1:26379, s2:26379,[::1]:26380",
            ),
            ("SEAWALL_CACHE_REDIS_MASTER_NAME", "main"),
        ]),
    )
    .expect("valid");
    let r = c
        .raw
        .cache
        .redis
        .as_ref()
        .expect("sentinels alone turn the tier on");
    assert_eq!(r.sentinels, vec!["s1:26379", "s2:26379", "[::1]:26380"]);
    assert_eq!(r.master_name.as_deref(), Some("main"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // The variable replaces the file's list.
    let src = format!("{BASE}\n[cache.redis]\ncluster_nodes = [\"old:7000\"]\n");
    let c = Config::parse(
        &src,
        "r.toml",
        env(&[("SEAWALL_CACHE_REDIS_CLUSTER_NODES", "n1:7000,n2:7001,")]),
    )
    .expect("valid");
    let r = c.raw.cache.redis.as_ref().expect("redis section");
    assert_eq!(r.cluster_nodes, vec!["n1:7000", "n2:7001"]);
    assert!(!r.tls);

    // TLS from the environment too (a boolean, and the CA file).
    let c = Config::parse(
        &src,
        "r.toml",
        env(&[
            ("SEAWALL_CACHE_REDIS_TLS", "true"),
            ("SEAWALL_CACHE_REDIS_TLS_CA_FILE", "/etc/seawall/ca.pem"),
        ]),
    )
    .expect("valid");
    let r = c.raw.cache.redis.as_ref().expect("redis section");
    assert!(r.tls);
    assert_eq!(r.tls_ca_file.as_deref(), Some("/etc/seawall/ca.pem"));
    let e = Config::parse(
        &src,
        "r.toml",
        env(&[("SEAWALL_CACHE_REDIS_TLS", "sometimes")]),
    )
    .expect_err("not a boolean");
    assert_eq!(e.key, "cache.redis.tls (SEAWALL_CACHE_REDIS_TLS)");

    let e = Config::parse(
        BASE,
        "r.toml",
        env(&[("SEAWALL_CACHE_REDIS_CLUSTER_NODES", "n1:7000,n2")]),
    )
    .expect_err("no port");
    assert_eq!(e.file, "<env>");
    assert_eq!(
        e.key,
        "cache.redis.cluster_nodes[1] (SEAWALL_CACHE_REDIS_CLUSTER_NODES)"
    );
    assert!(
        e.message.contains("\"n2\" is not host:port"),
        "{}",
        e.message
    );
    let e = Config::parse(
        BASE,
        "r.toml",
        env(&[
            ("SEAWALL_CACHE_REDIS_SENTINELS", "s1:port"),
            ("SEAWALL_CACHE_REDIS_MASTER_NAME", "main"),
        ]),
    )
    .expect_err("bad port");
    assert_eq!(
        e.key,
        "cache.redis.sentinels[0] (SEAWALL_CACHE_REDIS_SENTINELS)"
    );
    // Sentinels without a master name: the validation names the key.
    let e = Config::parse(
        BASE,
        "r.toml",
        env(&[("SEAWALL_CACHE_REDIS_SENTINELS", "s1:26379")]),
    )
    .expect_err("no master name");
    assert_eq!(e.key, "cache.redis.master_name");
}

//! Validated runtime configuration: `proxy.toml` plus `SEAWALL_<SECTION>_<KEY>` overrides.
//! Every error names the file, the line and the key.

mod env;
pub mod file;
pub(crate) mod redis;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::Uri;
use ipnet::IpNet;

pub use env::UPSTREAM_VAR;
pub use file::{FileConfig, MemSize};

/// A configuration problem, located as precisely as the source allows.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: key `{key}`: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or `<env>` / `<builtin>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `server.listen` or `routes[1].upstream`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The validated configuration the proxy runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The parsed file (after env overrides); sections are read from here.
    pub raw: FileConfig,
    /// Where it came from, for reloads.
    pub source: Option<PathBuf>,
    /// Cleartext data listener (`None`: `server.listen = ""`, off).
    pub listen: Option<SocketAddr>,
    /// TLS data listener (`server.listen_tls`; `None`: off).
    pub listen_tls: Option<SocketAddr>,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Peers allowed to send `PURGE` (`[admin] purge_allow`).
    pub purge_allow: Vec<IpNet>,
    /// Parsed endpoints, one list per upstream (same order as `raw.upstreams`).
    pub endpoints: Vec<Vec<Uri>>,
    /// Unknown `SEAWALL_*` variables and other non-fatal findings.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads, overrides from the process environment, and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: None,
            key: "-".into(),
            message: format!("cannot read: {e}"),
        })?;
        let mut cfg = Self::parse(&src, &name, std::env::vars())?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates `src` (named `name` in errors) with the given environment.
    pub fn parse(
        src: &str,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let err_at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, key) = span
                .map(|s| locate_span(src, s.start))
                .unwrap_or((None, "-".into()));
            ConfigError {
                file: name.to_string(),
                line,
                key,
                message,
            }
        };
        let mut doc: toml::Table = toml::from_str(src)
            .map_err(|e: toml::de::Error| err_at(e.span(), e.message().into()))?;

        // Environment overrides, from the known keys only.
        let mut warnings = env::apply(&mut doc, env)?;

        // Deserialize from the text when nothing was overridden, so errors carry spans.
        let raw: FileConfig = if doc == toml::from_str::<toml::Table>(src).unwrap_or_default() {
            toml::from_str(src)
                .map_err(|e: toml::de::Error| err_at(e.span(), e.message().into()))?
        } else {
            let text = toml::to_string(&doc).map_err(|e| err_at(None, e.to_string()))?;
            toml::from_str(&text).map_err(|e: toml::de::Error| {
                // Spans point into the re-rendered text; find the key there, the line in `src`.
                let (_, key) = e
                    .span()
                    .map(|s| locate_span(&text, s.start))
                    .unwrap_or((None, "-".into()));
                ConfigError {
                    file: name.to_string(),
                    line: find_key_line(src, &key),
                    key,
                    message: format!("{} (after environment overrides)", e.message()),
                }
            })?
        };
        let mut raw = raw;
        if raw.cache.redis.as_ref().is_some_and(|r| {
            r.url.is_empty() && r.sentinels.is_empty() && r.cluster_nodes.is_empty()
        }) {
            // Other `[cache.redis]` keys (say, a replica id set for every pod) without a URL.
            raw.cache.redis = None;
            warnings.push("cache.redis has no url: the shared tier is off".into());
        }
        let mut cfg = validate(raw, src, name)?;
        cfg.warnings.extend(warnings);
        Ok(cfg)
    }

    /// No config file: upstream `default` from `SEAWALL_UPSTREAM` and a catch-all route,
    /// with every other setting from its default or its `SEAWALL_*` variable.
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        Self::parse("", "<env>", env)
    }

    /// The built-in configuration used when no file is given: one route to `upstream`.
    pub fn builtin(listen: &str, admin_listen: &str, upstream: &str) -> Result<Self, ConfigError> {
        let src = format!(
            "[server]\nlisten = {listen:?}\nadmin_listen = {admin_listen:?}\n\n\
             [[upstreams]]\nname = \"app\"\nendpoints = [{upstream:?}]\n\n\
             [[routes]]\nupstream = \"app\"\n"
        );
        Self::parse(&src, "<builtin>", std::iter::empty())
    }

    /// The route's display name.
    pub fn route_name(&self, idx: usize) -> &str {
        let r = &self.raw.routes[idx];
        r.name.as_deref().unwrap_or(&r.upstream)
    }
}

fn validate(raw: FileConfig, src: &str, name: &str) -> Result<Config, ConfigError> {
    let fail = |key: String, message: String| ConfigError {
        file: name.to_string(),
        line: find_key_line(src, &key),
        key,
        message,
    };
    let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
        v.parse().map_err(|_| {
            fail(
                key.into(),
                format!("{v:?} is not an address such as \"127.0.0.1:8080\""),
            )
        })
    };
    let listen = match raw.server.listen.as_str() {
        "" => None,
        v => Some(addr("server.listen", v)?),
    };
    let listen_tls = match raw.server.listen_tls.as_deref() {
        None => None,
        Some(v) => Some(addr("server.listen_tls", v)?),
    };
    if listen.is_none() && listen_tls.is_none() {
        return Err(fail(
            "server.listen".into(),
            "is \"\" and server.listen_tls is not set: at least one data listener is needed".into(),
        ));
    }
    let admin_listen = addr("server.admin_listen", &raw.server.admin_listen)?;
    let same = |a: Option<SocketAddr>, b: SocketAddr| a == Some(b) && b.port() != 0;
    if same(listen, admin_listen) {
        return Err(fail(
            "server.admin_listen".into(),
            "must differ from server.listen".into(),
        ));
    }
    if let Some(t) = listen_tls
        && (same(listen, t) || same(Some(admin_listen), t))
    {
        return Err(fail(
            "server.listen_tls".into(),
            "must differ from server.listen and server.admin_listen".into(),
        ));
    }
    let mut warnings = Vec::new();
    if raw.admin.tls && raw.tls.certificates.is_empty() {
        return Err(fail(
            "admin.tls".into(),
            "needs a [[tls.certificates]] entry (the admin listener serves the default one)".into(),
        ));
    }
    // Certificates for the admin listener alone are no stray section.
    validate_tls(
        &raw.tls,
        listen_tls.is_some() || raw.admin.tls,
        &mut warnings,
    )
    .map_err(|(k, m)| fail(k, m))?;
    if raw.server.https_redirect && listen_tls.is_none() {
        return Err(fail(
            "server.https_redirect".into(),
            "needs server.listen_tls (the redirect goes to the TLS listener's port)".into(),
        ));
    }
    if let Some(p) = raw
        .server
        .https_redirect_exempt
        .iter()
        .find(|p| !p.starts_with('/'))
    {
        return Err(fail(
            "server.https_redirect_exempt".into(),
            format!("{p:?}: each entry is a path prefix starting with /"),
        ));
    }
    if !matches!(raw.log.format.as_str(), "text" | "json") {
        return Err(fail(
            "log.format".into(),
            "must be \"text\" or \"json\"".into(),
        ));
    }
    if !matches!(
        raw.log.access_log_format.as_str(),
        "text" | "json" | "combined"
    ) {
        return Err(fail(
            "log.access_log_format".into(),
            "must be \"text\", \"json\" or \"combined\"".into(),
        ));
    }
    if raw.log.redact_query_params.iter().any(|p| p.is_empty()) {
        return Err(fail(
            "log.redact_query_params".into(),
            "names must not be empty".into(),
        ));
    }
    if let Some(r) = &raw.cache.redis {
        if let Err((key, message)) = redis::Endpoint::of(r) {
            return Err(fail(key.into(), message));
        }
        // Braces would move the Redis Cluster hash tag (the first `{…}` of a key) off the key.
        if r.namespace.is_empty()
            || r.namespace
                .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            return Err(fail(
                "cache.redis.namespace".into(),
                "must be a non-empty name without spaces or braces".into(),
            ));
        }
        for (key, d) in [
            ("cache.redis.timeout", r.timeout),
            ("cache.redis.connect_timeout", r.connect_timeout),
            ("cache.redis.lock_ttl", r.lock_ttl),
            ("cache.redis.heartbeat_interval", r.heartbeat_interval),
            ("cache.redis.breaker_open", r.breaker_open),
        ] {
            if d.is_zero() {
                return Err(fail(key.into(), "must be greater than 0".into()));
            }
        }
        if r.write_queue == 0
            || r.purge_stream_max_len == 0
            || r.breaker_failures == 0
            || r.journal_max == 0
        {
            let key = if r.write_queue == 0 {
                "cache.redis.write_queue"
            } else if r.purge_stream_max_len == 0 {
                "cache.redis.purge_stream_max_len"
            } else if r.breaker_failures == 0 {
                "cache.redis.breaker_failures"
            } else {
                "cache.redis.journal_max"
            };
            return Err(fail(key.into(), "must be at least 1".into()));
        }
        if r.journal_file.as_deref().is_some_and(str::is_empty) {
            return Err(fail(
                "cache.redis.journal_file".into(),
                "must be a file path (or left out)".into(),
            ));
        }
    }
    if raw.server.via_name.is_empty() || http::HeaderValue::from_str(&raw.server.via_name).is_err()
    {
        return Err(fail(
            "server.via_name".into(),
            "must be a non-empty token".into(),
        ));
    }
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.server.trusted_proxies.iter().enumerate() {
        let net = p
            .parse::<IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                fail(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{p:?} is not an IP address or CIDR"),
                )
            })?;
        trusted_proxies.push(net);
    }
    let mut purge_allow = Vec::new();
    for (i, p) in raw.admin.purge_allow.iter().enumerate() {
        let net = p
            .parse::<IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                fail(
                    format!("admin.purge_allow[{i}]"),
                    format!("{p:?} is not an IP address or CIDR"),
                )
            })?;
        purge_allow.push(net);
    }
    // A share of the memory limit is checked at start, once the limit is read.
    if let file::MemSize::Bytes(max) = raw.cache.max_size
        && raw.cache.max_object_size > max
    {
        return Err(fail(
            "cache.max_object_size".into(),
            "must not exceed cache.max_size".into(),
        ));
    }
    if raw.cache.max_variants == 0 {
        return Err(fail(
            "cache.max_variants".into(),
            "must be at least 1".into(),
        ));
    }
    for (i, f) in raw.cache.targeted_fields.iter().enumerate() {
        if http::HeaderName::from_bytes(f.as_bytes()).is_err() {
            return Err(fail(
                format!("cache.targeted_fields[{i}]"),
                format!("{f:?} is not a header name"),
            ));
        }
    }
    for (i, f) in raw.cache.unkeyed_request_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(f.as_bytes()).is_err() {
            return Err(fail(
                format!("cache.unkeyed_request_headers[{i}]"),
                format!("{f:?} is not a header name"),
            ));
        }
    }
    if let Err((key, message)) = raw.cache.compression.check() {
        return Err(fail(format!("cache.compression.{key}"), message));
    }
    if !(0.0..=1.0).contains(&raw.telemetry.sampling_ratio) {
        return Err(fail(
            "telemetry.sampling_ratio".into(),
            "must be between 0 and 1".into(),
        ));
    }
    if raw.coalesce.max_waiters == 0 {
        return Err(fail(
            "coalesce.max_waiters".into(),
            "must be at least 1".into(),
        ));
    }
    // Below one pump window a reader could be cut for the ordinary jitter of a fast download.
    if raw.coalesce.max_reader_lag < 1024 * 1024 {
        return Err(fail(
            "coalesce.max_reader_lag".into(),
            "must be at least 1MiB".into(),
        ));
    }

    let mut names = HashSet::new();
    let mut endpoints = Vec::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        if u.name.is_empty() || !names.insert(u.name.as_str()) {
            return Err(fail(
                format!("upstreams[{i}].name"),
                format!("{:?} is empty or used twice", u.name),
            ));
        }
        if u.endpoints.is_empty() {
            return Err(fail(
                format!("upstreams[{i}].endpoints"),
                "needs at least one endpoint".into(),
            ));
        }
        let mut eps = Vec::new();
        for (j, e) in u.endpoints.iter().enumerate() {
            let uri = env::check_endpoint(e)
                .map_err(|m| fail(format!("upstreams[{i}].endpoints[{j}]"), m))?;
            eps.push(uri);
        }
        if u.client_cert_file.is_some() != u.client_key_file.is_some() {
            return Err(fail(
                format!("upstreams[{i}].client_cert_file"),
                "client_cert_file and client_key_file go together".into(),
            ));
        }
        endpoints.push(eps);
        if u.max_concurrent_requests == 0 {
            return Err(fail(
                format!("upstreams[{i}].max_concurrent_requests"),
                "must be at least 1".into(),
            ));
        }
        let b = &u.breaker;
        if !(0.0..=1.0).contains(&b.failure_rate) || b.failure_rate == 0.0 {
            return Err(fail(
                format!("upstreams[{i}].breaker.failure_rate"),
                "must be in (0, 1]".into(),
            ));
        }
        if !(b.max_client_share > 0.0 && b.max_client_share <= 1.0) {
            return Err(fail(
                format!("upstreams[{i}].breaker.max_client_share"),
                "must be in (0, 1]".into(),
            ));
        }
        if b.half_open_probes == 0 || b.consecutive_failures == 0 {
            return Err(fail(
                format!("upstreams[{i}].breaker"),
                "half_open_probes and consecutive_failures must be at least 1".into(),
            ));
        }
        if !(0.0..=10.0).contains(&u.retry.budget_ratio) {
            return Err(fail(
                format!("upstreams[{i}].retry.budget_ratio"),
                "must be between 0 and 10".into(),
            ));
        }
        if let Some(p) = &u.health_check.path
            && !p.starts_with('/')
        {
            return Err(fail(
                format!("upstreams[{i}].health_check.path"),
                "must start with /".into(),
            ));
        }
    }
    if let Some(w) = &raw.warmup {
        if w.from.is_none() && w.urls.is_empty() {
            return Err(fail(
                "warmup".into(),
                "needs `from` (a peer's admin URL) or `urls`".into(),
            ));
        }
        if let Some(f) = &w.from
            && f.parse::<Uri>().map_or(true, |u| u.authority().is_none())
        {
            return Err(fail(
                "warmup.from".into(),
                format!("{f:?} is not a URL such as http://peer:9091"),
            ));
        }
        if w.concurrency == 0 {
            return Err(fail(
                "warmup.concurrency".into(),
                "must be at least 1".into(),
            ));
        }
    }
    if raw.upstreams.is_empty() {
        // Nothing to point at in the file: no line.
        return Err(ConfigError {
            file: name.to_string(),
            line: None,
            key: "upstreams".into(),
            message: format!(
                "no upstream: add [[upstreams]] and [[routes]], or set {UPSTREAM_VAR}=http://app:3000"
            ),
        });
    }
    if raw.routes.is_empty() {
        return Err(fail(
            "routes".into(),
            "at least one [[routes]] entry is needed".into(),
        ));
    }
    for (i, r) in raw.routes.iter().enumerate() {
        if !names.contains(r.upstream.as_str()) {
            return Err(fail(
                format!("routes[{i}].upstream"),
                format!("no [[upstreams]] entry is named {:?}", r.upstream),
            ));
        }
        if let Some(p) = &r.path_prefix
            && !p.starts_with('/')
        {
            return Err(fail(
                format!("routes[{i}].path_prefix"),
                "must start with /".into(),
            ));
        }
        if let Some(ch) = &r.cache_host {
            if r.host.is_none() {
                return Err(fail(
                    format!("routes[{i}].cache_host"),
                    "needs `host` on the same route: without it every request's Host would \
                     share one key"
                        .into(),
                ));
            }
            if !crate::http_util::valid_authority(ch.as_bytes()) {
                return Err(fail(
                    format!("routes[{i}].cache_host"),
                    format!("{ch:?} is not a host name (uri-host [\":\" port])"),
                ));
            }
        }
        for (j, st) in r.ttl_statuses.iter().enumerate() {
            if !(200..=599).contains(st) || *st == 206 || *st == 304 {
                return Err(fail(
                    format!("routes[{i}].ttl_statuses[{j}]"),
                    format!(
                        "{st} is not a final status a cache can store (200-599, not 206 or 304)"
                    ),
                ));
            }
        }
        if let Some(v) = &r.vary_language
            && VaryLanguage::parse(v).is_none()
        {
            return Err(fail(
                format!("routes[{i}].vary_language"),
                format!("{v:?} is neither \"accept-language\" nor \"content-language\""),
            ));
        }
        if let Some(vl) = &r.vary_allowlist {
            for (j, h) in vl.iter().enumerate() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(fail(
                        format!("routes[{i}].vary_allowlist[{j}]"),
                        format!("{h:?} is not a header name"),
                    ));
                }
            }
        }
    }
    Ok(Config {
        raw,
        source: None,
        listen,
        listen_tls,
        admin_listen,
        trusted_proxies,
        purge_allow,
        endpoints,
        warnings,
    })
}

/// `[tls]` as far as it can be judged without reading files (those are read by
/// `app::preflight`): versions, the SNI policy, the certificate list and its host patterns.
fn validate_tls(
    tls: &file::TlsSection,
    listening: bool,
    warnings: &mut Vec<String>,
) -> Result<(), (String, String)> {
    let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
    if !matches!(tls.min_version.as_str(), "1.2" | "1.3") {
        return bad("tls.min_version", "must be \"1.2\" or \"1.3\"");
    }
    if !matches!(tls.unknown_sni.as_str(), "default" | "refuse") {
        return bad("tls.unknown_sni", "must be \"default\" or \"refuse\"");
    }
    if tls.handshake_timeout.is_zero() {
        return bad("tls.handshake_timeout", "must be greater than 0");
    }
    match (tls.client_auth.as_deref(), &tls.client_ca_file) {
        (None, _) => {}
        (Some("optional" | "required"), Some(_)) => {}
        (Some("optional" | "required"), None) => {
            return bad("tls.client_auth", "needs tls.client_ca_file");
        }
        (Some(_), _) => {
            return bad("tls.client_auth", "must be \"optional\" or \"required\"");
        }
    }
    if let Some(h) = &tls.client_subject_header
        && http::HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        return bad("tls.client_subject_header", "must be a header name");
    }
    if let Some(h) = &tls.hsts
        && (h.trim().is_empty() || http::HeaderValue::from_str(h).is_err())
    {
        return bad(
            "tls.hsts",
            "must be a header value such as \"max-age=31536000\"",
        );
    }
    if listening && tls.certificates.is_empty() {
        return bad(
            "server.listen_tls",
            "needs at least one [[tls.certificates]] entry (cert_file, key_file)",
        );
    }
    if !listening && !tls.certificates.is_empty() {
        warnings.push(
            "tls.certificates are configured but server.listen_tls is not set: no TLS listener"
                .into(),
        );
    }
    if tls.certificates.iter().filter(|c| c.default).count() > 1 {
        return bad(
            "tls.certificates",
            "at most one entry may say default = true",
        );
    }
    for (i, c) in tls.certificates.iter().enumerate() {
        if c.cert_file.is_empty() || c.key_file.is_empty() {
            return Err((
                format!("tls.certificates[{i}]"),
                "needs cert_file and key_file".into(),
            ));
        }
        for (j, h) in c.hosts.iter().flatten().enumerate() {
            if crate::http_util::conn::HostPattern::parse(h).is_none() {
                return Err((
                    format!("tls.certificates[{i}].hosts[{j}]"),
                    format!("{h:?} is neither a host name nor *.domain (one label)"),
                ));
            }
        }
        if c.hosts.as_ref().is_some_and(Vec::is_empty) {
            return Err((
                format!("tls.certificates[{i}].hosts"),
                "must not be empty (leave it out to use the certificate's names)".into(),
            ));
        }
    }
    Ok(())
}

/// Maps a byte offset to (line, dotted key) by reading the text around it.
fn locate_span(src: &str, offset: usize) -> (Option<usize>, String) {
    let offset = offset.min(src.len());
    let line_no = src[..offset].matches('\n').count() + 1;
    let line = src.lines().nth(line_no - 1).unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let key = key.trim_matches(|c| c == '"' || c == '\'');
    // The table the line sits in, with its index for arrays of tables.
    let mut table = String::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in src.lines().take(line_no) {
        let t = l.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
            let name = name.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{}]", *n);
            *n += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let name = name.trim();
            // A sub-table of the last array element, e.g. [upstreams.breaker].
            table = match name.split_once('.') {
                Some((parent, child)) if counts.contains_key(parent) => {
                    format!("{parent}[{}].{child}", counts[parent] - 1)
                }
                _ => name.to_string(),
            };
        }
    }
    let key = if key.starts_with('[') || key.is_empty() {
        table
    } else if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    };
    (Some(line_no), key)
}

/// Finds the line of a dotted key such as `routes[1].upstream` (best effort).
fn find_key_line(src: &str, key: &str) -> Option<usize> {
    let (table, leaf) = match key.rsplit_once('.') {
        Some((t, l)) => (t, l),
        None => ("", key),
    };
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    let mut current = String::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut table_line = None;
    for (i, l) in src.lines().enumerate() {
        let t = l.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
            let name = name.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            current = format!("{name}[{}]", *n);
            *n += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let name = name.trim();
            current = match name.split_once('.') {
                Some((parent, child)) if counts.contains_key(parent) => {
                    format!("{parent}[{}].{child}", counts[parent] - 1)
                }
                _ => name.to_string(),
            };
        } else if current == table {
            let k = t.split('=').next().unwrap_or("").trim();
            if k == leaf && t.contains('=') {
                return Some(i + 1);
            }
        }
        if current == key || current == table {
            table_line.get_or_insert(i + 1);
        }
    }
    table_line
}

#[cfg(test)]
mod tests;

/// How `Vary: Accept-Language` selects a stored variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VaryLanguage {
    /// By the request's `Accept-Language`, case and whitespace normalised and ranges ordered
    /// by q-value.
    #[default]
    AcceptLanguage,
    /// By the stored `Content-Language`: a variant serves every request whose most preferred
    /// language range is that language.
    ContentLanguage,
}

impl VaryLanguage {
    /// From the config value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accept-language" => Some(Self::AcceptLanguage),
            "content-language" => Some(Self::ContentLanguage),
            _ => None,
        }
    }
}

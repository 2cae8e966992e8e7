//! `SEAWALL_<SECTION>_<KEY>` overrides: the known keys, their types, the variables we own or
//! ignore, and `SEAWALL_UPSTREAM`. A bad value is an error naming the variable and the key.

use std::collections::BTreeMap;

use http::Uri;

use super::ConfigError;
use super::file::{self, FileConfig};

/// Variables Kubernetes injects for a Service named `seawall`, and other names we own.
fn is_ignored_env(name: &str) -> bool {
    name == "SEAWALL_SERVICE_HOST"
        || name == "SEAWALL_PORT"
        || name.starts_with("SEAWALL_SERVICE_PORT")
        || name.starts_with("SEAWALL_PORT_")
        || name == "SEAWALL_ADMIN_TOKEN"
        || name == "SEAWALL_ADMIN_READ_TOKEN"
        || name == "SEAWALL_SLOT"
        || name == "SEAWALL_CONFIG"
        || name == "SEAWALL_ADMIN_READ_TOKEN"
}

/// The variable that names the origin when the file has at most one upstream.
pub const UPSTREAM_VAR: &str = "SEAWALL_UPSTREAM";

/// Checks one upstream endpoint; the message says what is wrong with it.
pub(super) fn check_endpoint(e: &str) -> Result<Uri, String> {
    let uri: Uri = e.parse().map_err(|_| format!("{e:?} is not a URL"))?;
    let ok_scheme = matches!(uri.scheme_str(), Some("http") | Some("https"));
    let ok_path = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if !ok_scheme || uri.authority().is_none() || !ok_path {
        return Err(format!(
            "{e:?} must be http://host:port or https://host:port with no path"
        ));
    }
    Ok(uri)
}

/// `SEAWALL_UPSTREAM=http://app:3000[,http://app2:3000]`: the endpoints of the file's only
/// upstream; with none, upstream `default` and (without routes) a catch-all route to it.
/// Errors name the variable, never a line of the file.
fn apply_upstream_env(doc: &mut toml::Table, value: &str) -> Result<(), ConfigError> {
    let bad = |key: &str, message: String| ConfigError {
        file: "<env>".into(),
        line: None,
        key: format!("{key} ({UPSTREAM_VAR})"),
        message,
    };
    let endpoints: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(bad(
            "upstreams.endpoints",
            "expected one or more URLs such as http://app:3000, separated by commas".into(),
        ));
    }
    for (j, e) in endpoints.iter().enumerate() {
        check_endpoint(e).map_err(|m| bad(&format!("upstreams.endpoints[{j}]"), m))?;
    }
    let list = toml::Value::Array(
        endpoints
            .iter()
            .map(|e| toml::Value::String((*e).to_string()))
            .collect(),
    );
    let ups = doc
        .entry("upstreams")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(ups) = ups else {
        return Err(bad(
            "upstreams",
            "must be a list of [[upstreams]] tables".into(),
        ));
    };
    match ups.as_mut_slice() {
        [] => {
            let mut t = toml::Table::new();
            t.insert("name".into(), toml::Value::String("default".into()));
            t.insert("endpoints".into(), list);
            ups.push(toml::Value::Table(t));
            let routes = doc
                .entry("routes")
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            if let toml::Value::Array(routes) = routes
                && routes.is_empty()
            {
                let mut r = toml::Table::new();
                r.insert("upstream".into(), toml::Value::String("default".into()));
                routes.push(toml::Value::Table(r));
            }
        }
        [toml::Value::Table(t)] => {
            t.insert("endpoints".into(), list);
        }
        more => {
            return Err(bad(
                "upstreams",
                format!(
                    "replaces the endpoints of the config's only upstream, but the config has {} upstreams; set their endpoints in the file instead",
                    more.len()
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    /// Comma-separated strings.
    List,
}

/// The scalar keys of the singleton sections, derived from the file structs' defaults, with
/// the few optional keys (absent from a serialized default) named explicitly.
fn env_keys() -> BTreeMap<String, (String, String, Kind)> {
    let mut out = BTreeMap::new();
    let defaults = toml::Value::try_from(FileConfig::default()).unwrap_or(toml::Value::Integer(0));
    if let toml::Value::Table(t) = defaults {
        for (section, v) in t {
            let toml::Value::Table(keys) = v else {
                continue;
            };
            for (key, v) in keys {
                let kind = match v {
                    toml::Value::String(_) => Kind::Str,
                    toml::Value::Integer(_) => Kind::Int,
                    toml::Value::Float(_) => Kind::Float,
                    toml::Value::Boolean(_) => Kind::Bool,
                    _ => continue,
                };
                let env = format!("SEAWALL_{}_{}", section, key).to_uppercase();
                out.insert(env, (section.clone(), key, kind));
            }
        }
    }
    for (section, key) in [
        ("server", "listen_tls"),
        ("coalesce", "wait_timeout"),
        ("admin", "token_file"),
        ("admin", "read_token_file"),
        ("admin", "purge_token_file"),
        ("telemetry", "otlp_endpoint"),
    ] {
        let env = format!("SEAWALL_{section}_{key}").to_uppercase();
        out.insert(env, (section.into(), key.into(), Kind::Str));
    }
    // Lists of names, comma-separated in the variable.
    out.insert(
        "SEAWALL_CACHE_UNKEYED_REQUEST_HEADERS".into(),
        ("cache".into(), "unkeyed_request_headers".into(), Kind::List),
    );
    // `[cache.redis]` is a table inside a section: its keys are named with a dot.
    let redis = toml::Value::try_from(file::RedisSection::default()).ok();
    if let Some(toml::Value::Table(t)) = redis {
        for (key, v) in t {
            let kind = match v {
                toml::Value::Integer(_) => Kind::Int,
                toml::Value::Boolean(_) => Kind::Bool,
                toml::Value::Float(_) => Kind::Float,
                toml::Value::Array(_) => Kind::List,
                _ => Kind::Str,
            };
            let env = format!("SEAWALL_CACHE_REDIS_{key}").to_uppercase();
            out.insert(env, ("cache".into(), format!("redis.{key}"), kind));
        }
    }
    for key in [
        "url",
        "replica_id",
        "journal_file",
        "master_name",
        "username",
        "password_file",
        "sentinel_username",
        "sentinel_password_file",
        "tls_ca_file",
    ] {
        let env = format!("SEAWALL_CACHE_REDIS_{key}").to_uppercase();
        out.insert(env, ("cache".into(), format!("redis.{key}"), Kind::Str));
    }
    // `host:port` lists (absent from the serialized default, which skips empty lists).
    for key in NODE_LISTS {
        let env = format!("SEAWALL_CACHE_REDIS_{key}").to_uppercase();
        out.insert(env, ("cache".into(), format!("redis.{key}"), Kind::List));
    }
    out
}

/// The `[cache.redis]` lists of `host:port` nodes, checked entry by entry when set from the
/// environment so the error names the variable (the file's own lists are checked later).
const NODE_LISTS: [&str; 2] = ["sentinels", "cluster_nodes"];

/// Applies the `SEAWALL_*` variables of `env` to the parsed file `doc`; returns the warnings
/// (unknown variables).
pub(super) fn apply(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let keys = env_keys();
    let mut warnings = Vec::new();
    let mut upstream_env = None;
    for (var, value) in env {
        if !var.starts_with("SEAWALL_") || is_ignored_env(&var) {
            continue;
        }
        if var == UPSTREAM_VAR {
            upstream_env = Some(value);
            continue;
        }
        let Some((section, key, kind)) = keys.get(&var) else {
            warnings.push(format!(
                "unknown environment variable {var} (not a Seawall setting; typo?)"
            ));
            continue;
        };
        let bad = |what: &str| ConfigError {
            file: "<env>".into(),
            line: None,
            key: format!("{section}.{key} ({var})"),
            message: format!("expected {what}, got {value:?}"),
        };
        let v = match kind {
            Kind::Str => toml::Value::String(value.clone()),
            Kind::Int => toml::Value::Integer(value.trim().parse().map_err(|_| bad("an integer"))?),
            Kind::Float => toml::Value::Float(value.trim().parse().map_err(|_| bad("a number"))?),
            Kind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.to_string()))
                    .collect(),
            ),
            Kind::Bool => toml::Value::Boolean(match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err(bad("true or false")),
            }),
        };
        if let (toml::Value::Array(items), Some(list)) = (&v, key.strip_prefix("redis."))
            && NODE_LISTS.contains(&list)
        {
            for (j, item) in items.iter().enumerate() {
                let node = item.as_str().unwrap_or_default();
                if super::redis::parse_node(node).is_none() {
                    return Err(ConfigError {
                        file: "<env>".into(),
                        line: None,
                        key: format!("{section}.{key}[{j}] ({var})"),
                        message: format!(
                            "{node:?} is not host:port; expected host:port entries separated by commas, got {value:?}"
                        ),
                    });
                }
            }
        }
        let sec = doc
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = sec {
            match key.split_once('.') {
                Some((table, k)) => {
                    let sub = t
                        .entry(table.to_string())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(st) = sub {
                        st.insert(k.to_string(), v);
                    }
                }
                None => {
                    t.insert(key.clone(), v);
                }
            }
        }
    }

    if let Some(v) = &upstream_env {
        apply_upstream_env(doc, v)?;
    }
    Ok(warnings)
}

//! The `proxy.toml` file as serde structs: every key, its default and its unit.
//! Unknown keys are errors; `config.rs` validates these into the runtime `Config`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod compression;
mod upstream;
pub use compression::CompressionSection;
pub use upstream::{
    BreakerSection, HealthCheckSection, OutlierSection, RetrySection, UpstreamSection,
    breaker_defaults,
};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listeners, limits and drain.
    #[serde(default)]
    pub server: ServerSection,
    /// Log output.
    #[serde(default)]
    pub log: LogSection,
    /// The HTTP cache.
    #[serde(default)]
    pub cache: CacheSection,
    /// Request coalescing.
    #[serde(default)]
    pub coalesce: CoalesceSection,
    /// Admin listener settings.
    #[serde(default)]
    pub admin: AdminSection,
    /// TLS termination on `server.listen_tls`: certificates by SNI, versions, handshake.
    #[serde(default)]
    pub tls: TlsSection,
    /// Traces (OpenTelemetry over OTLP, e.g. to Jaeger).
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// Warm-up at startup (not ready until done or timed out).
    #[serde(default)]
    pub warmup: Option<WarmupSection>,
    /// Backends.
    #[serde(default)]
    pub upstreams: Vec<UpstreamSection>,
    /// Host / path prefix → upstream.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Data listener address (cleartext HTTP/1.1 and h2c); `""` turns it off.
    pub listen: String,
    /// TLS data listener address (HTTP/2 or HTTP/1.1 by ALPN, certificates from `[tls]`);
    /// absent, no TLS listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_tls: Option<String>,
    /// Admin listener address (health, metrics, admin API).
    pub admin_listen: String,
    /// Tokio worker threads; 0 means the number of CPUs Seawall may run on.
    pub worker_threads: usize,
    /// Open client connections at most; further connections wait in the kernel backlog.
    pub max_connections: usize,
    /// Idle time after which a kept-alive client connection is closed.
    #[serde(with = "dur")]
    pub keepalive_timeout: Duration,
    /// Time a client has to send a complete request head (slowloris guard).
    #[serde(with = "dur")]
    pub header_read_timeout: Duration,
    /// Largest request head; larger ones get 431.
    #[serde(with = "size")]
    pub max_header_size: u64,
    /// Most request header fields; more get 431.
    pub max_headers: usize,
    /// Largest request body; larger ones get 413.
    #[serde(with = "size")]
    pub max_body_size: u64,
    /// HTTP/2 concurrent streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the client before they were accepted (rapid-reset guard).
    pub http2_max_pending_accept_reset_streams: usize,
    /// After SIGTERM: how long the listener keeps accepting while `/readyz` is 503.
    #[serde(with = "dur")]
    pub drain_delay: Duration,
    /// After the drain delay: how long in-flight requests may take to finish.
    #[serde(with = "dur")]
    pub grace_period: Duration,
    /// Name in the `Via` header; a request already carrying it gets 508.
    pub via_name: String,
    /// Peers (CIDRs) whose `X-Forwarded-For` is appended to rather than replaced.
    pub trusted_proxies: Vec<String>,
    /// Forward the client's `Host` (true) or the endpoint's authority (false).
    pub preserve_host: bool,
    /// Answer cleartext-listener requests with `308` to the same URL over `https://` (the TLS
    /// listener's port unless it is 443).
    pub https_redirect: bool,
    /// Path prefixes `https_redirect` passes through as usual (ACME HTTP-01 challenges).
    pub https_redirect_exempt: Vec<String>,
    /// The port `https_redirect` names when clients reach the TLS listener on another one
    /// (a Service's 443 in front of 8443); default: the TLS listener's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_redirect_port: Option<u16>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            listen_tls: None,
            admin_listen: "127.0.0.1:9091".into(),
            worker_threads: 0,
            max_connections: 10_000,
            keepalive_timeout: Duration::from_secs(75),
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
            max_headers: 100,
            max_body_size: 16 * 1024 * 1024,
            http2_max_concurrent_streams: 256,
            http2_max_pending_accept_reset_streams: 20,
            drain_delay: Duration::from_secs(5),
            grace_period: Duration::from_secs(30),
            via_name: "seawall".into(),
            trusted_proxies: Vec::new(),
            preserve_host: true,
            https_redirect: false,
            https_redirect_exempt: vec!["/.well-known/acme-challenge/".into()],
            https_redirect_port: None,
        }
    }
}

/// `[tls]`: what the TLS listener (`server.listen_tls`) offers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Oldest protocol version offered: `"1.2"` or `"1.3"` (nothing older is ever offered).
    pub min_version: String,
    /// A client that has not completed its handshake this long after connecting is closed.
    #[serde(with = "dur")]
    pub handshake_timeout: Duration,
    /// How often the certificate and key files are checked for a change (modification time
    /// and content hash); a changed file is reloaded. `"0s"`: only SIGHUP and
    /// `POST /admin/reload` reload them.
    #[serde(with = "dur")]
    pub watch_interval: Duration,
    /// A client without SNI, or naming no configured host: `"default"` (the default
    /// certificate) or `"refuse"` (the handshake fails).
    pub unknown_sni: String,
    /// `Strict-Transport-Security` value added to every response on a TLS connection (never
    /// on cleartext), e.g. `"max-age=31536000"`; absent, none is added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
    /// PEM CA bundle client certificates are verified against (with `client_auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// Client certificates: `"optional"` (verified when sent) or `"required"` (the handshake
    /// fails without one); absent, none are asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<String>,
    /// Request header that carries a verified client's subject DN (RFC 4514) to the origin;
    /// always removed from what clients send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_subject_header: Option<String>,
    /// `[[tls.certificates]]`: chosen by the client's SNI.
    pub certificates: Vec<TlsCertificateSection>,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            min_version: "1.2".into(),
            handshake_timeout: Duration::from_secs(10),
            watch_interval: Duration::from_secs(10),
            unknown_sni: "default".into(),
            hsts: None,
            client_ca_file: None,
            client_auth: None,
            client_subject_header: None,
            certificates: Vec::new(),
        }
    }
}

/// `[[tls.certificates]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificateSection {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: String,
    /// Host names served with it: exact names and `*.example.com` (one label); default: the
    /// DNS names of the certificate's subjectAltName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// The certificate for clients without SNI or with an unknown name (default: the first).
    #[serde(default)]
    pub default: bool,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// One line per request (off by default, like Varnish and Envoy).
    pub access_log: bool,
    /// Access log lines: `text` (key=value), `json` (one object a line) or `combined` (nginx's
    /// combined format, for the parsers nginx users already have).
    pub access_log_format: String,
    /// Query parameters whose values the access log replaces with `REDACTED`.
    pub redact_query_params: Vec<String>,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            access_log: false,
            access_log_format: "text".into(),
            redact_query_params: Vec::new(),
        }
    }
}

/// `[cache]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Global kill switch: false makes Seawall a plain proxy.
    pub enabled: bool,
    /// Cache name in `Cache-Status`.
    pub name: String,
    /// Memory budget for stored responses (key + headers + body + bookkeeping): a size, or a
    /// share of the memory limit (`"60%"` of the cgroup's `memory.max`, else of physical memory).
    pub max_size: MemSize,
    /// Resident memory above which the memory governor evicts harder and drops detached fills:
    /// a share of the memory limit (`"85%"`) or a size.
    pub memory_high_watermark: MemSize,
    /// Larger responses stream through and are never stored.
    #[serde(with = "size")]
    pub max_object_size: u64,
    /// Stored variants per URL (Vary) at most.
    pub max_variants: usize,
    /// Targeted Cache-Control fields (RFC 9213), first present wins over `Cache-Control`.
    pub targeted_fields: Vec<String>,
    /// Remove `Surrogate-Key` / `Cache-Tag` before responses go downstream.
    pub strip_tag_headers: bool,
    /// Add `X-Cache: HIT|MISS|STALE|REVALIDATED|BYPASS` to responses.
    pub x_cache_header: bool,
    /// Request fields removed from fetches whose response is shared, in addition to the
    /// built-in list (`cache::BUILTIN_UNKEYED_REQUEST_HEADERS`, which cannot be shrunk): fields
    /// your origin honours without naming them in `Vary`.
    pub unkeyed_request_headers: Vec<String>,
    /// Serve a stored response this long past its freshness when the origin cannot be reached
    /// (refused, reset before a response head, breaker open); entries are kept that much longer.
    #[serde(with = "dur")]
    pub stale_if_unreachable: Duration,
    /// `[cache.redis]`: the shared tier across replicas; absent, a self-contained cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSection>,
    /// `[cache.compression]`: one compressed copy per stored object.
    pub compression: CompressionSection,
}

/// `[cache.redis]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS): standalone or a managed
    /// highly-available endpoint; `redis+sentinel://[user:pass@]h1:26379,h2:26379/<master>`; or
    /// `redis+cluster://[user:pass@]h1:6379,h2:6379` (Redis Cluster). Exactly one of `url`,
    /// `sentinels` and `cluster_nodes`.
    pub url: String,
    /// Redis Sentinel `host:port`s to ask for the primary (instead of `url`); with `master_name`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// Redis Cluster seed nodes (`host:port`, instead of `url`): the rest is discovered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_nodes: Vec<String>,
    /// ACL user on the data nodes (overrides the URL's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the data nodes' password (overrides the URL's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// ACL user on the sentinels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_username: Option<String>,
    /// File holding the sentinels' password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_password_file: Option<String>,
    /// TLS to the sentinels, the primaries they name and every Cluster node (a `url` says
    /// `rediss://` instead).
    pub tls: bool,
    /// PEM file of the certificates to trust for Redis TLS; unset: the public web roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    /// Key prefix; the entry format version is appended (`seawall:v2:`), so two Seawall
    /// versions never read each other's entries.
    pub namespace: String,
    /// Every Redis call is cut at this.
    #[serde(with = "dur")]
    pub timeout: Duration,
    /// Connecting (and reconnecting) is cut at this.
    #[serde(with = "dur")]
    pub connect_timeout: Duration,
    /// Larger responses stay in memory only.
    #[serde(with = "size")]
    pub l2_max_object_size: u64,
    /// Writes waiting for Redis at most; past it writes are dropped and counted.
    pub write_queue: usize,
    /// The fleet-wide fill lock expires after this (a holder that died frees it).
    #[serde(with = "dur")]
    pub lock_ttl: Duration,
    /// How long a replica waits for another replica's fill before fetching itself.
    #[serde(with = "dur")]
    pub lock_wait: Duration,
    /// Heartbeat period; a replica is live while its heartbeat is younger than 3 periods.
    #[serde(with = "dur")]
    pub heartbeat_interval: Duration,
    /// Purges kept in the stream for replicas that reconnect.
    pub purge_stream_max_len: u64,
    /// Consecutive failed calls that open the tier's breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe call.
    #[serde(with = "dur")]
    pub breaker_open: Duration,
    /// This replica's name in heartbeats; default: host name, process id and a random suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    /// Purges accepted while Redis is unreachable, kept for publishing once it is back; past
    /// it the oldest are dropped and a gap marker makes every replica mark its cache stale.
    pub journal_max: usize,
    /// File the purge journal is appended (and fsynced) to and reloaded from at start, so
    /// journalled purges survive a restart; unset: memory only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_file: Option<String>,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            sentinels: Vec::new(),
            master_name: None,
            cluster_nodes: Vec::new(),
            username: None,
            password_file: None,
            sentinel_username: None,
            sentinel_password_file: None,
            namespace: "seawall".into(),
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            l2_max_object_size: 1024 * 1024,
            write_queue: 1024,
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(2),
            purge_stream_max_len: 10_000,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(5),
            replica_id: None,
            journal_max: 1000,
            journal_file: None,
            tls: false,
            tls_ca_file: None,
        }
    }
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            enabled: true,
            name: "seawall".into(),
            max_size: MemSize::Bytes(256 * 1024 * 1024),
            memory_high_watermark: MemSize::Percent(85.0),
            max_object_size: 8 * 1024 * 1024,
            max_variants: 16,
            targeted_fields: vec!["seawall-cache-control".into(), "cdn-cache-control".into()],
            strip_tag_headers: true,
            x_cache_header: true,
            unkeyed_request_headers: Vec::new(),
            stale_if_unreachable: Duration::from_secs(60),
            redis: None,
            compression: CompressionSection::default(),
        }
    }
}

/// `[coalesce]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoalesceSection {
    /// One upstream fetch per cache key.
    pub enabled: bool,
    /// Followers per key at most; beyond: stale if allowed, else 503.
    pub max_waiters: usize,
    /// How long a follower waits for the leader's response head; default: the upstream's total timeout.
    #[serde(with = "opt_dur")]
    pub wait_timeout: Option<Duration>,
    /// How long a key whose response could not be shared goes straight upstream.
    #[serde(with = "dur")]
    pub hit_for_pass_ttl: Duration,
    /// Bytes held in all fill buffers together; past it, chunks every client has are released.
    #[serde(with = "size")]
    pub max_inflight_bytes: u64,
    /// A reader of a shared body that is not being stored, further than this behind the
    /// fastest reader, is disconnected (`seawall_coalesce_rejected_total{reason="slow_reader"}`).
    #[serde(with = "size")]
    pub max_reader_lag: u64,
}

impl Default for CoalesceSection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_waiters: 10_000,
            wait_timeout: None,
            hit_for_pass_ttl: Duration::from_secs(120),
            max_inflight_bytes: 64 * 1024 * 1024,
            max_reader_lag: 8 * 1024 * 1024,
        }
    }
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// File holding the admin bearer token (`SEAWALL_ADMIN_TOKEN` wins); without either, a
    /// token is generated at start into `$XDG_RUNTIME_DIR/seawall/admin-token`.
    pub token_file: Option<String>,
    /// File holding a read-only admin token (`SEAWALL_ADMIN_READ_TOKEN` wins): `GET` under
    /// `/admin/` except the export.
    pub read_token_file: Option<String>,
    /// Peers (CIDRs, the TCP peer, never `X-Forwarded-For`) allowed to send `PURGE` to the
    /// proxy listener.
    pub purge_allow: Vec<String>,
    /// File holding the token that allows `PURGE` on the proxy listener from any peer.
    pub purge_token_file: Option<String>,
    /// The recent window `/admin/status` summarises.
    #[serde(with = "dur")]
    pub status_window: Duration,
    /// Alert when the recent hit ratio is below this.
    pub alert_hit_ratio_below: f64,
    /// Alert when the recent 5xx rate is above this.
    pub alert_error_rate_above: f64,
    /// Ratio alerts need at least this many recent requests.
    pub alert_min_requests: u64,
    /// Serve the admin listener over TLS with the default `[[tls.certificates]]` entry.
    pub tls: bool,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            token_file: None,
            read_token_file: None,
            purge_allow: Vec::new(),
            purge_token_file: None,
            status_window: Duration::from_secs(300),
            alert_hit_ratio_below: 0.3,
            alert_error_rate_above: 0.05,
            alert_min_requests: 20,
            tls: false,
        }
    }
}

/// `[telemetry]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Record request metrics (`/metrics` keeps serving gauges and process metrics when off).
    pub metrics: bool,
    /// Export traces (also on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
    pub enabled: bool,
    /// OTLP/gRPC endpoint; unset: `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, else `http://localhost:4317`.
    pub otlp_endpoint: Option<String>,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Share of new traces sampled (parent-based: a sampled client trace is kept).
    pub sampling_ratio: f64,
    /// At the edge: sample by our ratio whatever the client's `traceparent` says.
    pub ignore_client_sampling: bool,
    /// Spans waiting for export at most; beyond, spans are dropped (and counted), never waited for.
    pub max_queue_size: usize,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            metrics: true,
            enabled: false,
            otlp_endpoint: None,
            service_name: "seawall".into(),
            sampling_ratio: 0.1,
            ignore_client_sampling: false,
            max_queue_size: 2048,
        }
    }
}

/// `[warmup]`: import a peer's hottest entries (no origin traffic) or fetch URLs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupSection {
    /// The peer's admin base URL, e.g. `http://seawall-admin-blue:9091`.
    #[serde(default)]
    pub from: Option<String>,
    /// How many of the peer's hottest entries to import.
    #[serde(default = "d_top")]
    pub top: usize,
    /// URLs (paths or absolute) to fetch through the cache instead.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Give up and report ready after this long.
    #[serde(default = "d_warm_timeout", with = "dur")]
    pub timeout: Duration,
    /// Parallel fetches for `urls`.
    #[serde(default = "d_conc")]
    pub concurrency: usize,
}

fn d_top() -> usize {
    1000
}
fn d_warm_timeout() -> Duration {
    Duration::from_secs(60)
}
fn d_conc() -> usize {
    8
}

/// `[[routes]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Name in metrics and logs (default: the upstream's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Upstream name.
    pub upstream: String,
    /// Match this Host only (exact, case-insensitive, port ignored); unset matches any.
    #[serde(default)]
    pub host: Option<String>,
    /// Match paths starting with this prefix (longest wins).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Cache responses on this route.
    #[serde(default = "yes")]
    pub cache: bool,
    /// Canonical host for cache keys (aliases share entries and purges).
    #[serde(default)]
    pub cache_host: Option<String>,
    /// Freshness for responses that carry none (default: obey the origin).
    #[serde(default, with = "opt_dur")]
    pub default_ttl: Option<Duration>,
    /// Cap on any freshness lifetime.
    #[serde(default, with = "opt_dur")]
    pub max_ttl: Option<Duration>,
    /// Replace the origin's freshness lifetime (opt-in).
    #[serde(default, with = "opt_dur")]
    pub ttl_override: Option<Duration>,
    /// Serve stale this long when the upstream fails, even without `stale-if-error`.
    #[serde(default, with = "opt_dur")]
    pub stale_if_error: Option<Duration>,
    /// Overrides `[cache] stale_if_unreachable` for this route.
    #[serde(default, with = "opt_dur")]
    pub stale_if_unreachable: Option<Duration>,
    /// Statuses besides the heuristically cacheable ones that `default_ttl`/`ttl_override`
    /// apply to.
    #[serde(default)]
    pub ttl_statuses: Vec<u16>,
    /// How `Vary: Accept-Language` selects a variant: `"accept-language"` (the normalised
    /// request field) or `"content-language"` (the stored `Content-Language`).
    #[serde(default)]
    pub vary_language: Option<String>,
    /// Store responses carrying `Set-Cookie` (the cookie is stored too).
    #[serde(default)]
    pub cache_set_cookie: bool,
    /// Reduce `Accept-Encoding` to the encodings Seawall knows before keying variants.
    #[serde(default = "yes")]
    pub normalize_accept_encoding: bool,
    /// If set, only these Vary headers are honoured; responses varying on others are not stored.
    #[serde(default)]
    pub vary_allowlist: Option<Vec<String>>,
    /// Query parameters left out of the cache key.
    #[serde(default)]
    pub ignore_query_params: Vec<String>,
    /// A non-error response to a method not known to be safe (POST, PUT, DELETE, PATCH and
    /// extension methods) invalidates the target URI and same-origin `Location` /
    /// `Content-Location` (RFC 9111 §4.4).
    #[serde(default = "yes")]
    pub invalidate_on_unsafe: bool,
    /// The scheme is part of the key: responses to `https` (TLS listener) and `http`
    /// requests are stored apart. Default: one entry serves both.
    #[serde(default)]
    pub key_scheme: bool,
}

fn yes() -> bool {
    true
}

/// Human-readable durations (`"300ms"`, `"5s"`, `"2m"`).
pub mod dur {
    use super::*;

    /// Deserialize from a string such as `"300ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }

    /// Serialize as a human-readable string.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

/// Optional human-readable durations.
pub mod opt_dur {
    use super::*;

    /// Deserialize from a string such as `"300ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::dur::deserialize(d).map(Some)
    }

    /// Serialize as a human-readable string (absent when unset).
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::dur::serialize(v, s),
            None => s.serialize_none(),
        }
    }
}

/// A size in bytes, or a share of the memory limit (`"60%"`), resolved once the limit is read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemSize {
    /// A fixed size.
    Bytes(u64),
    /// A share of the memory limit, in percent (more than 0, at most 100).
    Percent(f64),
}

impl MemSize {
    /// Parses `"60%"`, `"256MiB"` or `"1024"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let Some(p) = t.strip_suffix('%') else {
            return size::parse(t).map(Self::Bytes);
        };
        match p.trim().parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 100.0 => Ok(Self::Percent(v)),
            _ => Err(format!(
                "invalid share {s:?}: expected more than 0% and at most 100% of the memory limit"
            )),
        }
    }

    /// Bytes, given the memory limit (`None` when a share has no limit to be a share of).
    pub fn resolve(self, limit: Option<u64>) -> Option<u64> {
        match self {
            Self::Bytes(n) => Some(n),
            Self::Percent(p) => limit.map(|l| (l as f64 * p / 100.0) as u64),
        }
    }
}

impl std::fmt::Display for MemSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(n) => write!(f, "{}", bytesize::ByteSize(*n).display().iec_short()),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MemSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MemSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self::Bytes(n)),
            Raw::S(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Human-readable sizes (`"256MiB"`, `"64KiB"`, or a plain byte count).
pub mod size {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }

    /// Deserialize from `"256MiB"` or an integer byte count.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n),
            Raw::S(s) => parse(&s).map_err(serde::de::Error::custom),
        }
    }

    /// Serialize as a byte count.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&bytesize::ByteSize(*v).display().iec_short().to_string())
    }

    /// Parses `"256MiB"`, `"1.5 GB"` or `"1024"`.
    pub fn parse(s: &str) -> Result<u64, String> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| format!("invalid size {s:?}: {e}"))
    }
}

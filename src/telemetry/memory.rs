//! Container memory limit (cgroup v2, then v1) and the startup warning when the cache plus
//! Seawall's own overhead would not fit.

/// Resident memory Seawall needs besides the cache (runtime, buffers, metrics).
pub const OVERHEAD_BYTES: u64 = 30 * 1024 * 1024;

/// The cgroup memory limit, if one is set.
pub fn cgroup_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let raw = v2.or_else(v1)?;
    let raw = raw.trim();
    if raw == "max" {
        return None;
    }
    // cgroup v1 reports "no limit" as a huge number.
    raw.parse::<u64>().ok().filter(|n| *n < (1u64 << 60))
}

/// Logs a warning when `max_size` + overhead exceeds the container's limit.
pub fn warn_if_over_limit(max_size: u64) {
    if let Some(limit) = cgroup_limit()
        && max_size + OVERHEAD_BYTES > limit
    {
        tracing::warn!(
            cache_max_size = max_size,
            overhead = OVERHEAD_BYTES,
            memory_limit = limit,
            "cache.max_size plus overhead exceeds the container memory limit; lower cache.max_size or raise the limit."
        );
    }
}

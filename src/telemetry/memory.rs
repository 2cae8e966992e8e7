//! The memory limit (cgroup v2, then v1, else physical memory) and resident memory, read from
//! `/sys` and `/proc` through pure parsers; the startup warning when the cache would not fit.

/// Resident memory Seawall needs besides the cache (runtime, buffers, metrics).
pub const OVERHEAD_BYTES: u64 = 30 * 1024 * 1024;

/// cgroup v1 reports "no limit" as a huge number (`PAGE_COUNTER_MAX` rounded to pages).
const NO_LIMIT: u64 = 1 << 60;

/// Where the memory limit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSource {
    /// `/sys/fs/cgroup/memory.max`.
    CgroupV2,
    /// `/sys/fs/cgroup/memory/memory.limit_in_bytes`.
    CgroupV1,
    /// `MemTotal` of `/proc/meminfo` (no container limit).
    Physical,
}

impl LimitSource {
    /// For logs and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CgroupV2 => "cgroup_v2",
            Self::CgroupV1 => "cgroup_v1",
            Self::Physical => "physical",
        }
    }
}

/// The memory this process may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Bytes.
    pub bytes: u64,
    /// Where it was read.
    pub source: LimitSource,
}

/// A cgroup limit file's contents: `Ok(None)` for no limit (`max`, or v1's huge number).
pub fn parse_cgroup_limit(raw: &str) -> Result<Option<u64>, String> {
    let raw = raw.trim();
    if raw == "max" {
        return Ok(None);
    }
    let n = raw
        .parse::<u64>()
        .map_err(|_| format!("{raw:?} is neither \"max\" nor a byte count"))?;
    Ok((n < NO_LIMIT).then_some(n))
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    kib_field(meminfo, "MemTotal:")
}

/// `VmRSS` from `/proc/self/status`, in bytes.
pub fn parse_resident(status: &str) -> Option<u64> {
    kib_field(status, "VmRSS:")
}

/// A `Name:   1234 kB` line.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let mut parts = line[name.len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// The limit from the files' contents: the cgroup v2 limit, else the v1 one, capped by (or,
/// without either, equal to) physical memory. Unreadable or malformed files count as absent.
pub fn limit_from(v2: Option<&str>, v1: Option<&str>, meminfo: Option<&str>) -> Option<Limit> {
    let physical = meminfo.and_then(parse_mem_total);
    let cgroup = |raw: Option<&str>, source| {
        raw.and_then(|r| parse_cgroup_limit(r).ok().flatten())
            .map(|bytes| Limit { bytes, source })
    };
    let limit = cgroup(v2, LimitSource::CgroupV2).or_else(|| cgroup(v1, LimitSource::CgroupV1));
    match (limit, physical) {
        (Some(l), Some(p)) if p < l.bytes => Some(Limit {
            bytes: p,
            source: LimitSource::Physical,
        }),
        (Some(l), _) => Some(l),
        (None, Some(p)) => Some(Limit {
            bytes: p,
            source: LimitSource::Physical,
        }),
        (None, None) => None,
    }
}

/// The memory limit of this process, read now.
pub fn limit() -> Option<Limit> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    limit_from(
        read("/sys/fs/cgroup/memory.max").as_deref(),
        read("/sys/fs/cgroup/memory/memory.limit_in_bytes").as_deref(),
        read("/proc/meminfo").as_deref(),
    )
}

/// Resident memory of this process, read now.
pub fn resident() -> Option<u64> {
    parse_resident(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The cgroup memory limit, if one is set.
pub fn cgroup_limit() -> Option<u64> {
    limit()
        .filter(|l| l.source != LimitSource::Physical)
        .map(|l| l.bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       16318480 kB\nMemFree:         1234567 kB\n";

    #[test]
    fn cgroup_files_parse() {
        assert_eq!(parse_cgroup_limit("max\n"), Ok(None));
        assert_eq!(parse_cgroup_limit("536870912\n"), Ok(Some(512 << 20)));
        // cgroup v1 without a limit.
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), Ok(None));
        assert!(parse_cgroup_limit("lots").is_err());
        assert!(parse_cgroup_limit("").is_err());
        assert!(parse_cgroup_limit("-5").is_err());
    }

    #[test]
    fn the_limit_prefers_v2_then_v1_then_physical_memory() {
        let v2 = limit_from(Some("268435456"), Some("1073741824"), Some(MEMINFO));
        assert_eq!(
            v2,
            Some(Limit {
                bytes: 256 << 20,
                source: LimitSource::CgroupV2
            })
        );
        let v1 = limit_from(None, Some("1073741824\n"), Some(MEMINFO));
        assert_eq!(
            v1.map(|l| (l.bytes, l.source)),
            Some((1 << 30, LimitSource::CgroupV1))
        );
        // `max` in v2 (no limit) falls through to physical memory, as does v1's huge value.
        let none = limit_from(Some("max"), None, Some(MEMINFO));
        assert_eq!(
            none.map(|l| (l.bytes, l.source)),
            Some((16318480 * 1024, LimitSource::Physical))
        );
        let huge = limit_from(None, Some("9223372036854771712"), Some(MEMINFO));
        assert_eq!(huge.map(|l| l.source), Some(LimitSource::Physical));
        // A container limit above the machine's memory is the machine's memory.
        let above = limit_from(Some("68719476736"), None, Some(MEMINFO));
        assert_eq!(above.map(|l| l.bytes), Some(16318480 * 1024));
        // Garbage counts as absent.
        let bad = limit_from(Some("garbage"), None, Some(MEMINFO));
        assert_eq!(bad.map(|l| l.source), Some(LimitSource::Physical));
        assert_eq!(limit_from(None, None, None), None);
        assert_eq!(limit_from(None, None, Some("nothing here")), None);
    }

    #[test]
    fn resident_memory_parses_from_status() {
        let status = "Name:\tseawall\nVmPeak:\t  99999 kB\nVmRSS:\t   15360 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_resident(status), Some(15 << 20));
        assert_eq!(parse_resident("VmRSS:\tmany kB\n"), None);
        assert_eq!(parse_resident("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_resident(""), None);
    }
}

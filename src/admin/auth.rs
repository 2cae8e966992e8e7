//! Admin credentials: the full token, the read-only token and the `PURGE` token, compared as
//! SHA-256 digests (constant time, so neither content nor length leaks), and the token Seawall
//! generates into a private file when none is configured.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::Config;
use crate::state::load_secret;

pub(crate) use crate::http_util::Secret;

/// What a caller may do on the admin listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Everything.
    Full,
    /// `GET` under `/admin/` except the export.
    Read,
}

/// The admin listener's tokens.
#[derive(Clone, Debug)]
pub(crate) struct Tokens {
    full: Secret,
    read: Option<Secret>,
}

impl Tokens {
    /// The full token and an optional read-only one.
    pub(crate) fn new(full: &str, read: Option<&str>) -> Self {
        Self {
            full: Secret::new(full),
            read: read.map(Secret::new),
        }
    }

    /// The role `given` grants; both digests are always computed and compared.
    pub(crate) fn role(&self, given: &str) -> Option<Role> {
        let full = self.full.matches(given);
        let read = self.read.as_ref().is_some_and(|r| r.matches(given));
        if full {
            Some(Role::Full)
        } else if read {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// The configured full token (`SEAWALL_ADMIN_TOKEN`, else `[admin] token_file`).
pub(crate) fn configured_token(config: &Config) -> anyhow::Result<Option<String>> {
    load_secret(
        Some("SEAWALL_ADMIN_TOKEN"),
        config.raw.admin.token_file.as_deref(),
        "admin.token_file",
    )
}

/// The read-only token (`SEAWALL_ADMIN_READ_TOKEN`, else `[admin] read_token_file`).
pub(crate) fn configured_read_token(config: &Config) -> anyhow::Result<Option<String>> {
    load_secret(
        Some("SEAWALL_ADMIN_READ_TOKEN"),
        config.raw.admin.read_token_file.as_deref(),
        "admin.read_token_file",
    )
}

/// Refuses an admin listener reachable from other hosts without a configured token: a
/// generated token would be known only to this host. Same words for `run` and `check`.
pub(crate) fn check_exposure(config: &Config, token_configured: bool) -> anyhow::Result<()> {
    if !token_configured && !config.admin_listen.ip().is_loopback() {
        anyhow::bail!(
            "server.admin_listen {} is not a loopback address and no admin token is set (SEAWALL_ADMIN_TOKEN or admin.token_file)",
            config.admin_listen
        );
    }
    Ok(())
}

/// The current user's id, for the per-user temporary directory.
fn uid() -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        // /proc/self belongs to the process's user; elsewhere a file we create does.
        if let Ok(m) = std::fs::metadata("/proc/self") {
            return m.uid().to_string();
        }
        let probe = std::env::temp_dir().join(format!("seawall-uid-{}", std::process::id()));
        if std::fs::write(&probe, b"").is_ok() {
            let uid = std::fs::metadata(&probe).map(|m| m.uid().to_string());
            let _ = std::fs::remove_file(&probe);
            if let Ok(u) = uid {
                return u;
            }
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

/// Where the generated token lives: `$XDG_RUNTIME_DIR/seawall/admin-token`, else
/// `seawall-<uid>/admin-token` in the system's temporary directory.
pub(crate) fn token_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("seawall").join("admin-token"),
        None => std::env::temp_dir()
            .join(format!("seawall-{}", uid()))
            .join("admin-token"),
    }
}

/// A random token: 32 bytes from the system's generator, URL-safe base64.
pub(crate) fn generate() -> anyhow::Result<String> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random generator failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Creates `dir` with mode 0700, or accepts an existing one only when it is a real directory
/// of ours that nobody else may enter (a shared temporary directory could hold a trap).
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
        let m = std::fs::symlink_metadata(dir)?;
        let ours = std::fs::metadata("/proc/self").map_or(true, |me| me.uid() == m.uid());
        anyhow::ensure!(
            m.is_dir() && ours,
            "{} is not a directory of this user",
            dir.display()
        );
        if m.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Writes `token` to `path` with mode 0600 (replacing an older file).
pub(crate) fn write_token(path: &Path, token: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", path.display()))?;
    private_dir(dir)?;
    let tmp = dir.join(format!(".admin-token.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The full token: the configured one, else a generated one, logged once at WARN and written
/// to [`token_path`] for `seawall warm` and the demo.
pub(crate) fn full_token(config: &Config, configured: Option<String>) -> anyhow::Result<String> {
    check_exposure(config, configured.is_some())?;
    if let Some(t) = configured {
        return Ok(t);
    }
    let token = generate()?;
    let path = token_path();
    match write_token(&path, &token) {
        Ok(()) => tracing::warn!(
            token = %token,
            file = %path.display(),
            "No admin token configured: generated one for this run (send it as Authorization: Bearer; set SEAWALL_ADMIN_TOKEN or admin.token_file to choose your own)."
        ),
        Err(e) => tracing::warn!(
            token = %token,
            error = %e,
            "No admin token configured: generated one for this run, but could not write it to a file (send it as Authorization: Bearer)."
        ),
    }
    Ok(token)
}

/// The token a local client (`seawall warm`, the demo's hints) should send: the variable,
/// else the generated file.
pub(crate) fn local_token() -> Option<String> {
    load_secret(Some("SEAWALL_ADMIN_TOKEN"), None, "")
        .ok()
        .flatten()
        .or_else(|| {
            std::fs::read_to_string(token_path())
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        })
}

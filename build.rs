//! Build script: records the commit the binary is built from (`seawall --version`,
//! `seawall_build_info{commit}`): git when available, else `SEAWALL_COMMIT` (the image's build
//! argument), else `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SEAWALL_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let from_git = git(&["rev-parse", "--short=12", "HEAD"]);
    if from_git.is_some() {
        // Rebuild when HEAD moves: HEAD itself, the branch it names, and the packed refs.
        let dirs = [
            git(&["rev-parse", "--git-dir"]),
            git(&["rev-parse", "--git-common-dir"]),
        ];
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        for dir in dirs.iter().flatten() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            let mut watch = vec![dir.join("HEAD"), dir.join("packed-refs")];
            if let Some(b) = &branch {
                watch.push(dir.join(b));
            }
            for p in watch.into_iter().filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    let commit = from_git
        .or_else(|| {
            std::env::var("SEAWALL_COMMIT")
                .ok()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SEAWALL_BUILD_COMMIT={commit}");
}

//! The Debian archive this machine's apt is configured with, for tests
//! that compose real systems from it: its address (read from apt's
//! sources, never written into the tests) and the minbase package set.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The archive apt uses: the first `URIs:` of its deb822 sources.
pub fn archive_uri() -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
        .collect();
    files.sort();
    files.iter().find_map(|f| {
        std::fs::read_to_string(f).ok()?.lines().find_map(|l| {
            l.strip_prefix("URIs:")
                .and_then(|u| u.split_whitespace().next())
                .map(str::to_owned)
        })
    })
}

/// Packages of Priority: required in apt's lists, and apt: what
/// debootstrap's `--variant=minbase` picks. Empty without package lists.
pub fn minbase() -> Vec<String> {
    let Ok(out) = Command::new("apt-cache").arg("dumpavail").output() else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut set = std::collections::BTreeSet::from(["apt".to_owned()]);
    for para in text.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if field("Priority:").as_deref() == Some("required") {
            if let Some(p) = field("Package:") {
                set.insert(p);
            }
        }
    }
    set.into_iter().collect()
}

/// Locks the minbase set plus `extra` from the archive apt uses into
/// `lock` (`treectl lock add --apt "ARCHIVE bookworm main" --arch amd64
/// --with-deps ...`, repository `repo`). `Err` says why the test cannot
/// run here (no archive, no package lists, the archive unreachable); any
/// other failure panics.
pub fn lock_minbase(repo: &Path, lock: &Path, extra: &[&str]) -> Result<(), String> {
    let uri = archive_uri().ok_or("URIs: in /etc/apt/sources.list.d/*.sources")?;
    let required = minbase();
    if required.len() < 10 {
        return Err("apt's package lists (run apt-get update)".into());
    }
    let source = format!("{uri} bookworm main");
    let lock_s = lock.to_str().expect("a UTF-8 path");
    let mut args = vec![
        "lock",
        "add",
        "--lockfile",
        lock_s,
        "--apt",
        &source,
        "--arch",
        "amd64",
        "--with-deps",
    ];
    args.extend(required.iter().map(String::as_str));
    args.extend(extra);
    let out = crate::treectl_in(repo, &args).run();
    if !out.status.success() {
        let err = out.stderr;
        if err.contains("fetching") {
            return Err(format!("the archive reachable ({})", err.trim()));
        }
        panic!("lock add failed: {err}");
    }
    Ok(())
}

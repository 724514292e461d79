//! The Debian archive this machine's apt is configured with, for tests
//! that compose real systems from it: its address (read from apt's
//! sources, never written into the tests) and the minbase package set.

use std::path::PathBuf;
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

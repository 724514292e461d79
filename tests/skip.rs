//! Tests that need something a machine may lack (a tool, root, the
//! benchmark corpus) ask for it here, and skip only through here.
//!
//! When the thing is missing, [`require_that`] and the functions built on
//! it print one line to stderr and return false (the test then returns):
//!
//! ```text
//! skipped: nginx_serves_the_same_bytes_as_treectl_serve: needs nginx (Debian package nginx) to serve the repository as a static mirror
//! ```
//!
//! Where a skip would hide a gap, they panic with that line instead: when
//! `CI=true` or `TREECTL_NO_SKIP=1` is in the environment (CI sets the
//! first, `ci/check.sh` exports the second under CI). `.ci/run` installs
//! every tool of [`TOOL_PACKAGES`] (a unit test below checks its list) and
//! builds the corpus.
//!
//! ```no_run
//! # fn test() {
//! if !treectl_e2e::require("git", "to make the repository to import") {
//!     return;
//! }
//! let Some(corpus) = treectl_e2e::require_corpus("to commit a real system") else {
//!     return;
//! };
//! # }
//! ```

use std::path::PathBuf;

/// Every tool a test may [`require`], with the Debian package that has it.
pub const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("apt-get", "apt"),
    ("ar", "binutils"),
    ("blkid", "util-linux"),
    ("bootctl", "systemd-boot"),
    ("busybox", "busybox-static"),
    ("bwrap", "bubblewrap"),
    ("cpio", "cpio"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-scanpackages", "dpkg-dev"),
    ("findmnt", "util-linux"),
    ("git", "git"),
    ("gpg", "gnupg"),
    ("gzip", "gzip"),
    ("losetup", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("mmdebstrap", "mmdebstrap"),
    ("mount", "mount"),
    ("nginx", "nginx"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("script", "bsdutils"),
    ("shellcheck", "shellcheck"),
    ("strip", "binutils"),
    ("systemd-analyze", "systemd"),
    ("tar", "tar"),
    ("unshare", "util-linux"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
];

/// Directories searched for tools besides `PATH` (nginx and other daemons
/// live in sbin, which a non-root `PATH` may lack).
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// True when `available`; otherwise skips (prints `skipped: TEST: needs
/// NEEDS WHY` and returns false) or, where skipping is refused, panics
/// with that line. `why` says what the test does with it ("to serve the
/// repository as a static mirror").
pub fn require_that(available: bool, needs: &str, why: &str) -> bool {
    if available {
        return true;
    }
    let current = std::thread::current();
    // libtest runs each test on a thread named after it.
    let test = current.name().filter(|n| *n != "main").unwrap_or("a test");
    let line = skip_line(test, needs, why);
    let ci = std::env::var("CI").ok();
    let no_skip = std::env::var("TREECTL_NO_SKIP").ok();
    if let Some(setting) = refusal(ci.as_deref(), no_skip.as_deref()) {
        panic!(
            "{line}\n(skipping is refused under {setting}: .ci/run installs every tool and builds the corpus)"
        );
    }
    eprintln!("{line}");
    false
}

/// [`require_that`] the tool `tool` (one of [`TOOL_PACKAGES`]) is
/// installed.
pub fn require(tool: &str, why: &str) -> bool {
    let package = TOOL_PACKAGES
        .iter()
        .find(|(t, _)| *t == tool)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| {
            panic!("{tool} is not in TOOL_PACKAGES: add it with its Debian package, and to .ci/run")
        });
    require_that(
        find_tool(tool).is_some(),
        &format!("{tool} (Debian package {package})"),
        why,
    )
}

/// [`require`] for each of `tools`, stopping at the first one missing.
pub fn require_tools(tools: &[&str], why: &str) -> bool {
    tools.iter().all(|tool| require(tool, why))
}

/// [`require_that`] the tests run as root.
pub fn require_root(why: &str) -> bool {
    require_that(crate::is_root(), "root", why)
}

/// The benchmark corpus ([`crate::corpus_dir`]), or `None` after
/// [`require_that`] has said why the test skips.
pub fn require_corpus(why: &str) -> Option<PathBuf> {
    let dir = crate::corpus_dir();
    require_that(
        dir.is_some(),
        &format!(
            "the benchmark corpus at {} (../shared/corpus/build.sh builds it; TREECTL_CORPUS points elsewhere)",
            crate::corpus_path().display()
        ),
        why,
    );
    dir
}

/// Where `name` is installed: on `PATH`, or in an sbin directory.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn skip_line(test: &str, needs: &str, why: &str) -> String {
    format!("skipped: {test}: needs {needs} {why}")
}

/// Which setting refuses skips, if one does.
fn refusal(ci: Option<&str>, no_skip: Option<&str>) -> Option<&'static str> {
    if ci.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        Some("CI=true")
    } else if no_skip == Some("1") {
        Some("TREECTL_NO_SKIP=1")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_refused_under_ci_or_no_skip() {
        for (ci, no_skip, refused) in [
            (None, None, None),
            (Some("true"), None, Some("CI=true")),
            (Some("TRUE"), None, Some("CI=true")),
            (Some("false"), None, None),
            (Some(""), None, None),
            (None, Some("1"), Some("TREECTL_NO_SKIP=1")),
            (None, Some("0"), None),
            (Some("true"), Some("1"), Some("CI=true")),
        ] {
            assert_eq!(
                refusal(ci, no_skip),
                refused,
                "CI={ci:?} NO_SKIP={no_skip:?}"
            );
        }
    }

    #[test]
    fn skip_line_names_the_test_the_need_and_the_reason() {
        assert_eq!(
            skip_line(
                "pulls_from_nginx",
                "nginx (Debian package nginx)",
                "to serve the repository as a static mirror"
            ),
            "skipped: pulls_from_nginx: needs nginx (Debian package nginx) to serve the repository as a static mirror"
        );
    }

    #[test]
    fn present_things_are_required_without_a_word() {
        assert!(require_that(true, "nothing", "to pass"));
        assert!(find_tool("sh").is_some());
        assert!(find_tool("no-such-tool-anywhere").is_none());
    }

    /// `.ci/run` installs the Debian package of every tool a test may
    /// require (its `for tool in TOOL:PACKAGE ...` list).
    #[test]
    fn ci_installs_every_tool_a_test_requires() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/run");
        let script = std::fs::read_to_string(path).expect("read .ci/run");
        let start = script
            .find("for tool in ")
            .expect(".ci/run has a tool list")
            + 12;
        let end = start
            + script[start..]
                .find("; do")
                .expect("the list ends with '; do'");
        let listed: Vec<&str> = script[start..end]
            .split_whitespace()
            .filter(|w| *w != "\\")
            .collect();
        for (tool, package) in TOOL_PACKAGES {
            let entry = format!("{tool}:{package}");
            assert!(
                listed.contains(&entry.as_str()),
                ".ci/run does not install {entry}: {listed:?}"
            );
        }
    }
}

//! systemd's own reading of a directory of boot entries: `bootctl list`
//! (Debian package systemd-boot) run without firmware, for tests that
//! check treectl's entries and its boot order against it.
//!
//! bootctl insists that the ESP and `$BOOT` paths are mount points and
//! otherwise reads EFI variables; the invocation that works on a plain
//! directory `DIR` holding `loader/entries/` (a symlink `loader ->
//! loader.N`, as treectl's `/boot` has, is followed) is
//!
//! ```text
//! unshare --map-root-user --mount sh -c 'mount --bind "$1" "$1" &&
//!     SYSTEMD_RELAX_ESP_CHECKS=1 SYSTEMD_RELAX_XBOOTLDR_CHECKS=1 \
//!     bootctl --esp-path="$1" --boot-path="$1" --no-variables list --json=short' sh DIR
//! ```
//!
//! (a private mount namespace where `DIR` is bind-mounted on itself;
//! `--map-root-user` lets it work without root where user namespaces are
//! allowed). `--json=short` prints the entries in bootctl's order; the
//! default (bootctl 252's JSON has no `isDefault`) is the entry marked
//! `(default)` in the text listing.

use std::path::Path;
use std::process::Command;

use crate::skip::{find_tool, require, require_that};

/// One entry as bootctl lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The file name on disk (counter included).
    pub file_name: String,
    /// bootctl's id: the file name without the counter.
    pub id: String,
    pub tries_left: Option<u64>,
    pub tries_done: Option<u64>,
}

/// What `bootctl list` says about a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// In bootctl's order.
    pub entries: Vec<Listed>,
    /// The file name of the entry marked `(default)`.
    pub default: Option<String>,
}

const SCRIPT: &str = r#"mount --bind "$1" "$1" || exit 90
export SYSTEMD_RELAX_ESP_CHECKS=1 SYSTEMD_RELAX_XBOOTLDR_CHECKS=1 SYSTEMD_COLORS=0 SYSTEMD_PAGER=
bootctl --esp-path="$1" --boot-path="$1" --no-variables list --json=short || exit 91
echo '-- text'
exec bootctl --esp-path="$1" --boot-path="$1" --no-variables list"#;

/// [`require`]s bootctl and unshare, and [`require_that`] a private
/// mount namespace can be made (`unshare --map-root-user --mount`).
pub fn require_bootctl(why: &str) -> bool {
    if !require("bootctl", why) || !require("unshare", why) {
        return false;
    }
    let works = Command::new(find_tool("unshare").expect("required above"))
        .args(["--map-root-user", "--mount", "true"])
        .status()
        .is_ok_and(|s| s.success());
    require_that(
        works,
        "a private mount namespace (unshare --map-root-user --mount; user namespaces)",
        why,
    )
}

/// Runs `bootctl list` over `dir` (which holds `loader/entries/`).
/// Panics with bootctl's output when it fails.
pub fn list(dir: &Path) -> Listing {
    let dir =
        std::fs::canonicalize(dir).unwrap_or_else(|e| panic!("resolving {}: {e}", dir.display()));
    let out = Command::new(find_tool("unshare").expect("unshare is installed"))
        .args(["--map-root-user", "--mount", "sh", "-c", SCRIPT, "sh"])
        .arg(&dir)
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bootctl list over {} failed ({}): {}{}",
        dir.display(),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let (json, text) = stdout
        .split_once("-- text\n")
        .expect("both listings printed");
    Listing {
        entries: parse_json(json),
        default: parse_default(text),
    }
}

/// One JSON object a line (`--json=short` of systemd 252), or one array.
fn parse_json(json: &str) -> Vec<Listed> {
    let values: Vec<serde_json::Value> = match serde_json::from_str(json.trim()) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => json
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect(),
    };
    values
        .iter()
        .map(|v| {
            let path = v["path"].as_str().expect("an entry has a path");
            Listed {
                file_name: path.rsplit('/').next().unwrap_or(path).to_owned(),
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                tries_left: v["triesLeft"].as_u64(),
                tries_done: v["triesDone"].as_u64(),
            }
        })
        .collect()
}

/// The `source:` file name of the text block whose title says
/// `(default)`.
fn parse_default(text: &str) -> Option<String> {
    let mut in_default = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            in_default = false;
        } else if let Some(title) = line.strip_prefix("title:") {
            in_default = title.contains("(default)");
        } else if let Some(source) = line.strip_prefix("source:") {
            if in_default {
                let source = source.trim();
                return Some(source.rsplit('/').next().unwrap_or(source).to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_listings() {
        let json = r#"{"id":"a.conf","path":"/e/loader/entries/a+3.conf","triesLeft":3}
{"id":"b.conf","path":"/e/loader/entries/b+0-3.conf","triesLeft":0,"triesDone":3}
"#;
        let text = "         type: Boot Loader Specification Type #1 (.conf)
        title: A (default) (not reported/new)
           id: a.conf
       source: /e//loader/entries/a+3.conf

         type: Boot Loader Specification Type #1 (.conf)
        title: B (not reported/new)
       source: /e//loader/entries/b+0-3.conf
";
        let e = parse_json(json);
        assert_eq!(e[0].file_name, "a+3.conf");
        assert_eq!((e[1].tries_left, e[1].tries_done), (Some(0), Some(3)));
        assert_eq!(parse_default(text).as_deref(), Some("a+3.conf"));
        assert_eq!(parse_json("[]\n"), vec![]);
    }
}

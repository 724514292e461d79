//! Helpers shared by the end-to-end tests (`tests/tests/`) and the CLI
//! journeys (`client/cli/tests/`):
//!
//! - [`cli`]: where the `treectl` binary is, and [`Treectl`], the one way
//!   to run it and check how it ended ([`treectl`], [`treectl_in`]);
//! - [`skip`]: [`require`], [`require_corpus`] and friends, the only way a
//!   test skips, which says why and is refused under CI;
//! - [`http`]: the one raw HTTP/1.1 client;
//! - [`server`]: `treectl serve` as a process, tokens, synthetic trees and
//!   the set-up the server tests share; [`nginx`]: nginx as a static
//!   mirror; [`apt`]: a real apt repository on loopback; [`bootctl`]:
//!   systemd's `bootctl list` over a directory of boot entries; [`debian`]:
//!   the Debian archive apt uses here; [`vm`]: booting a sysroot under qemu;
//! - here: comparing directory trees entry by entry, the benchmark corpus,
//!   a scratch filesystem.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub mod apt;
pub mod bootctl;
pub mod cli;
pub mod debian;
pub mod http;
pub mod nginx;
pub mod server;
pub mod skip;
pub mod vm;

pub use cli::{treectl, treectl_bin, treectl_in, Outcome, Treectl};
pub use skip::{require, require_corpus, require_root, require_that, require_tools};

/// What is compared for each path: type, permission bits, owner, symlink
/// target and content digest. Timestamps are not compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `d` directory, `f` regular file, `l` symlink, `?` anything else.
    pub kind: char,
    /// Permission bits (with setuid, setgid, sticky); 0 for symlinks.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub target: Option<PathBuf>,
    /// SHA-256 of a regular file's content.
    pub digest: Option<[u8; 32]>,
}

/// Every entry below `root` (the root itself at the empty path).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    collect(root, Path::new(""), &mut out)
        .unwrap_or_else(|e| panic!("walking {}: {e}", root.display()));
    out
}

fn collect(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) -> std::io::Result<()> {
    let path = root.join(rel);
    let m = fs::symlink_metadata(&path)?;
    let ft = m.file_type();
    let (kind, target, digest) = if ft.is_dir() {
        ('d', None, None)
    } else if ft.is_symlink() {
        ('l', Some(fs::read_link(&path)?), None)
    } else if ft.is_file() {
        use sha2::Digest;
        (
            'f',
            None,
            Some(sha2::Sha256::digest(fs::read(&path)?).into()),
        )
    } else {
        ('?', None, None)
    };
    out.insert(
        rel.to_owned(),
        Node {
            kind,
            mode: if kind == 'l' { 0 } else { m.mode() & 0o7777 },
            uid: m.uid(),
            gid: m.gid(),
            target,
            digest,
        },
    );
    if kind == 'd' {
        for e in fs::read_dir(&path)? {
            collect(root, &rel.join(e?.file_name()), out)?;
        }
    }
    Ok(())
}

/// One line per difference between two snapshots (empty when equal).
pub fn differences(a: &BTreeMap<PathBuf, Node>, b: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (p, x) in a {
        match b.get(p) {
            None => diffs.push(format!("only in the first tree: /{}", p.display())),
            Some(y) if x != y => diffs.push(format!("/{} differs: {x:?} vs {y:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("only in the second tree: /{}", p.display()));
    }
    diffs
}

/// Compares two trees; returns one line per difference (empty when equal).
/// `compare_owner` is false when the tests cannot set ownership (not root).
pub fn compare_trees(a: &Path, b: &Path, compare_owner: bool) -> Vec<String> {
    let ea = snapshot(a);
    let mut eb = snapshot(b);
    if !compare_owner {
        for (p, y) in eb.iter_mut() {
            if let Some(x) = ea.get(p) {
                y.uid = x.uid;
                y.gid = x.gid;
            }
        }
    }
    differences(&ea, &eb)
}

/// True when running as root (ownership can be set and compared).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Where the benchmark corpus is (`TREECTL_CORPUS`, default
/// `/var/tmp/treectl-corpus`), if it has been built. A test that cannot
/// run without it asks [`require_corpus`].
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = corpus_path();
    dir.join("corpus-v1.done").exists().then_some(dir)
}

/// Where the benchmark corpus is or would be.
pub(crate) fn corpus_path() -> PathBuf {
    std::env::var_os("TREECTL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treectl-corpus"))
}

/// A scratch directory for tests that write many files: a fresh journaled
/// filesystem from `shared/corpus/benchfs.sh` when running as root (the
/// root filesystem here slows down after mass deletions), otherwise a
/// temporary directory. Unmounted and removed on drop.
pub struct Scratch {
    dir: tempfile::TempDir,
    mounted: Option<PathBuf>,
}

impl Scratch {
    pub fn new(size: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("treectl-scratch")
            .tempdir_in("/var/tmp")
            .expect("scratch dir");
        let script = benchfs_script();
        let mut mounted = None;
        if let (true, Some(script)) = (is_root(), script) {
            let mnt = dir.path().join("fs");
            let ok = std::process::Command::new("bash")
                .arg(&script)
                .args(["mount"])
                .arg(&mnt)
                .arg(size)
                .stdout(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                mounted = Some(mnt);
            } else {
                eprintln!("benchfs.sh mount failed; using {}", dir.path().display());
            }
        }
        Scratch { dir, mounted }
    }

    pub fn path(&self) -> &Path {
        self.mounted.as_deref().unwrap_or(self.dir.path())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let (Some(mnt), Some(script)) = (&self.mounted, benchfs_script()) {
            let _ = std::process::Command::new("bash")
                .arg(script)
                .arg("umount")
                .arg(mnt)
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

/// `shared/corpus/benchfs.sh`, beside the checkout.
fn benchfs_script() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?;
    let p = root.join("shared/corpus/benchfs.sh");
    p.exists().then_some(p)
}

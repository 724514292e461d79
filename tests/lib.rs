//! Helpers shared by the end-to-end tests: locating the `treectl` binary
//! and comparing directory trees entry by entry.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub mod apt;
pub mod nginx;
pub mod server;

/// The `treectl` binary of the current build profile, built (once per test
/// process) by `cargo build -p treectl -p treectl-server` so it is never
/// stale (`treectl serve` runs `treectl-server` from beside it).
pub fn treectl_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/treectl
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable in target/<profile>/deps");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "-p", "treectl", "-p", "treectl-server"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p treectl -p treectl-server failed"
        );
        profile_dir.join("treectl")
    })
    .clone()
}

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
/// `/var/tmp/treectl-corpus`), if it has been built.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TREECTL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treectl-corpus"));
    dir.join("corpus-v1.done").exists().then_some(dir)
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

/// Runs the binary and requires success; returns stdout.
pub fn treectl_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(treectl_bin())
        .args(args)
        .output()
        .expect("run treectl");
    assert!(
        out.status.success(),
        "treectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

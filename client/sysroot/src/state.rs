//! The deployment list and the boot generations that carry it.
//!
//! `boot/loader` is a symlink to `loader.0` or `loader.1`; the live one
//! holds the Boot Loader Specification entries and `treectl.json`, the
//! ordered deployment list (index 0 is the default, 1 the rollback). A
//! change writes the other generation completely, then renames a new
//! symlink over `boot/loader`: the one atomic step of every command.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use treectl_store::failpoint;

use crate::{fsync_dir, io_err, remove_tree, Result, Sysroot, SysrootError, KARG};

/// The version of `treectl.json`.
pub const STATE_VERSION: u32 = 1;
/// Boot attempts a new entry gets (`+3` in its file name).
pub const BOOT_TRIES: u32 = 3;

/// Where `upgrade` looks for the next release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// A configured remote (`NAME:REF`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// A local repository path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<PathBuf>,
    #[serde(rename = "ref")]
    pub refname: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.remote, &self.repo) {
            (Some(r), _) => write!(f, "{r}:{}", self.refname),
            (None, Some(p)) => write!(f, "{}:{}", p.display(), self.refname),
            (None, None) => write!(f, "{}", self.refname),
        }
    }
}

/// Where a release stands: by its serial when both sides have one (a
/// remote's index serial), else by the commit's timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOrder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    pub timestamp: i64,
}

impl ReleaseOrder {
    pub fn compare(&self, other: &ReleaseOrder) -> Ordering {
        match (self.serial, other.serial) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.timestamp.cmp(&other.timestamp),
        }
    }
}

/// A kernel and initramfs copied into `/boot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    pub kver: String,
    /// Relative to `/boot`: `/treectl/<stateroot>-<hash>/vmlinuz`.
    pub linux: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
}

/// One deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub stateroot: String,
    /// Commit id, hex.
    pub commit: String,
    pub serial: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub order: ReleaseOrder,
    #[serde(default)]
    pub pinned: bool,
    /// `/etc` paths changed both locally and upstream when this deployment
    /// was created (the local version was kept).
    #[serde(default)]
    pub etc_conflicts: Vec<String>,
    /// Component versions from the commit's `component.<name>` metadata.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
}

impl Deployment {
    /// `<commit>.<serial>`: the directory name.
    pub fn id(&self) -> String {
        format!("{}.{}", self.commit, self.serial)
    }

    /// The `treectl=` value: the path relative to the sysroot.
    pub fn rel_path(&self) -> String {
        format!("/treectl/deploy/{}/{}", self.stateroot, self.id())
    }

    pub fn path(&self, sysroot: &Sysroot) -> PathBuf {
        sysroot.stateroot_dir(&self.stateroot).join(self.id())
    }

    /// The local repository ref that keeps this deployment's commit.
    pub fn ref_name(&self) -> String {
        format!("deploy/{}/{}", self.stateroot, self.id())
    }

    /// `STATEROOT VERSION (COMMIT.SERIAL)`, as messages name a deployment.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({}.{})",
            self.stateroot,
            self.version.as_deref().unwrap_or("-"),
            &self.commit[..12.min(self.commit.len())],
            self.serial
        )
    }
}

/// The content of `treectl.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Index 0: the default; index 1: the rollback deployment.
    pub deployments: Vec<Deployment>,
    /// `upgrade` ignores releases ordered at or before this (set by
    /// `rollback`, cleared by `deploy` and `--allow-downgrade`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_floor: Option<ReleaseOrder>,
}

const LOADER: &str = "loader";
const STATE_FILE: &str = "treectl.json";

/// The live generation number (0 or 1), if the sysroot is installed.
pub fn live_generation(sysroot: &Sysroot) -> Result<Option<u8>> {
    let link = sysroot.boot_dir().join(LOADER);
    let target = match fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", &link)(e)),
    };
    match target.to_str() {
        Some("loader.0") => Ok(Some(0)),
        Some("loader.1") => Ok(Some(1)),
        _ => Err(SysrootError::BadState {
            path: link,
            reason: format!("points at {}, not loader.0 or loader.1", target.display()),
        }),
    }
}

/// Reads the live deployment list.
pub fn read_state(sysroot: &Sysroot) -> Result<State> {
    let generation = live_generation(sysroot)?
        .ok_or_else(|| SysrootError::NotInstalled(sysroot.root().to_owned()))?;
    let path = sysroot
        .boot_dir()
        .join(format!("loader.{generation}"))
        .join(STATE_FILE);
    let text = fs::read(&path).map_err(io_err("reading", &path))?;
    let state: State = serde_json::from_slice(&text).map_err(|e| SysrootError::BadState {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if state.version != STATE_VERSION {
        return Err(SysrootError::BadState {
            path,
            reason: format!(
                "format version {} (this treectl reads {STATE_VERSION})",
                state.version
            ),
        });
    }
    Ok(state)
}

/// Boot-counting suffixes (`+2-1`, or empty once marked good) of the live
/// entries, by the `treectl=` value they boot.
fn live_counters(sysroot: &Sysroot) -> Result<HashMap<String, String>> {
    let dir = sysroot.boot_dir().join(LOADER).join("entries");
    let mut out = HashMap::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("reading", &dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io_err("reading", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".conf") else {
            continue;
        };
        let text = fs::read_to_string(e.path()).map_err(io_err("reading", &e.path()))?;
        if let Some(target) = entry_target(&text) {
            let counter = stem.rfind('+').map_or("", |i| &stem[i..]);
            out.insert(target, counter.to_owned());
        }
    }
    Ok(out)
}

/// The `treectl=` value of a boot entry's `options` line.
pub fn entry_target(entry: &str) -> Option<String> {
    entry
        .lines()
        .filter_map(|l| l.strip_prefix("options "))
        .find_map(super::parse_cmdline)
}

/// One entry's file name and content.
pub fn entry_for(d: &Deployment, pos: usize, count: usize, counter: &str) -> (String, String) {
    let name = format!(
        "treectl-{}-{pos}-{}.{}{counter}.conf",
        d.stateroot,
        &d.commit[..12.min(d.commit.len())],
        d.serial
    );
    let mut text = format!(
        "title treectl {} {} ({})\nversion {}\nsort-key treectl-{}\n",
        d.stateroot,
        d.version.as_deref().unwrap_or("-"),
        &d.commit[..12.min(d.commit.len())],
        count - pos,
        d.stateroot,
    );
    if let Some(k) = &d.kernel {
        text.push_str(&format!("linux {}\n", k.linux));
        if let Some(i) = &k.initrd {
            text.push_str(&format!("initrd {i}\n"));
        }
    }
    text.push_str(&format!("options {KARG}={}\n", d.rel_path()));
    (name, text)
}

fn write_file_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(io_err("creating", path))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", path))
}

/// Writes `state` as a new boot generation and swaps it in. Failpoints
/// `<fp>-before-swap` and `<fp>-after-swap` bracket the one `rename`.
pub fn write_generation(sysroot: &Sysroot, state: &State, fp: &str) -> Result<()> {
    let boot = sysroot.boot_dir();
    fs::create_dir_all(&boot).map_err(io_err("creating", &boot))?;
    let live = live_generation(sysroot)?;
    let counters = if live.is_some() {
        live_counters(sysroot)?
    } else {
        HashMap::new()
    };
    let next = match live {
        Some(0) => 1,
        _ => 0,
    };
    let dir = boot.join(format!("loader.{next}"));
    remove_tree(&dir)?;
    let entries = dir.join("entries");
    fs::create_dir_all(&entries).map_err(io_err("creating", &entries))?;
    let count = state.deployments.len();
    for (pos, d) in state.deployments.iter().enumerate() {
        let counter = counters
            .get(&d.rel_path())
            .cloned()
            .unwrap_or_else(|| format!("+{BOOT_TRIES}"));
        let (name, text) = entry_for(d, pos, count, &counter);
        write_file_synced(&entries.join(name), text.as_bytes())?;
    }
    let mut json = serde_json::to_vec_pretty(state).expect("state serializes");
    json.push(b'\n');
    write_file_synced(&dir.join(STATE_FILE), &json)?;
    fsync_dir(&entries)?;
    fsync_dir(&dir)?;
    let tmp = boot.join("loader.tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("loader.{next}"), &tmp).map_err(io_err("creating", &tmp))?;
    failpoint::hit(&format!("{fp}-before-swap"));
    let link = boot.join(LOADER);
    fs::rename(&tmp, &link).map_err(io_err("swapping in", &link))?;
    fsync_dir(&boot)?;
    failpoint::hit(&format!("{fp}-after-swap"));
    if let Some(old) = live {
        remove_tree(&boot.join(format!("loader.{old}")))?;
    }
    Ok(())
}

/// Marks the booted deployment's entry good: drops its boot counter.
/// Returns false when nothing is booted or the entry has no counter.
pub fn mark_boot_ok(sysroot: &Sysroot) -> Result<bool> {
    let Some(booted) = sysroot.booted_arg() else {
        return Ok(false);
    };
    let dir = sysroot.boot_dir().join(LOADER).join("entries");
    for e in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
        let e = e.map_err(io_err("reading", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(e.path()).map_err(io_err("reading", &e.path()))?;
        if entry_target(&text).as_deref() != Some(booted) {
            continue;
        }
        let Some(stem) = name.strip_suffix(".conf") else {
            continue;
        };
        let Some(plus) = stem.rfind('+') else {
            return Ok(false);
        };
        let good = dir.join(format!("{}.conf", &stem[..plus]));
        fs::rename(e.path(), &good).map_err(io_err("renaming", &e.path()))?;
        fsync_dir(&dir)?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(commit: &str, serial: u32) -> Deployment {
        Deployment {
            stateroot: "os".into(),
            commit: commit.into(),
            serial,
            origin: None,
            version: Some("1.0".into()),
            order: ReleaseOrder {
                serial: None,
                timestamp: 0,
            },
            pinned: false,
            etc_conflicts: vec![],
            components: BTreeMap::new(),
            kernel: None,
        }
    }

    #[test]
    fn entries_put_the_default_first_both_ways() {
        let ds = [dep("aaaaaaaaaaaaaaaa", 0), dep("bbbbbbbbbbbbbbbb", 1)];
        let e0 = entry_for(&ds[0], 0, 2, "+3");
        let e1 = entry_for(&ds[1], 1, 2, "");
        assert!(e0.0 < e1.0, "file names: {} {}", e0.0, e1.0);
        assert!(e0.1.contains("version 2\n") && e1.1.contains("version 1\n"));
        assert!(e0.0.ends_with("+3.conf"));
        assert_eq!(
            entry_target(&e0.1).as_deref(),
            Some("/treectl/deploy/os/aaaaaaaaaaaaaaaa.0")
        );
    }

    #[test]
    fn release_order() {
        let a = ReleaseOrder {
            serial: Some(5),
            timestamp: 100,
        };
        let b = ReleaseOrder {
            serial: Some(6),
            timestamp: 50,
        };
        assert_eq!(a.compare(&b), Ordering::Less);
        let c = ReleaseOrder {
            serial: None,
            timestamp: 50,
        };
        assert_eq!(a.compare(&c), Ordering::Greater);
    }
}

//! The deployment list and the boot generations that carry it.
//!
//! `boot/loader` is a symlink to `loader.0` or `loader.1`; the live one
//! holds the Boot Loader Specification entries and `treectl.json`, the
//! ordered deployment list (index 0 is the default, 1 the rollback). A
//! change writes the other generation completely, then renames a new
//! symlink over `boot/loader`: the one atomic step of every command.
//!
//! Version changes of `treectl.json`: 1 → 2 added each deployment's
//! `kargs` (kernel arguments). Version 1 is read as 2 with no kernel
//! arguments (its entries had none) and written back as 2, so a treectl
//! that reads only 1 refuses it instead of dropping the arguments.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use treectl_store::failpoint;

use crate::boot::{with_counter, BootEntry, BootMenu, Counter};
use crate::{fsync_dir, io_err, remove_tree, Result, Sysroot, SysrootError, KARG};

/// The version of `treectl.json` this treectl writes.
pub const STATE_VERSION: u32 = 2;
/// The oldest version of `treectl.json` this treectl reads.
pub const MIN_STATE_VERSION: u32 = 1;
/// Boot attempts a new entry gets (`+3-0` in its file name).
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
    /// Kernel arguments of this deployment's boot entry besides `treectl=`
    /// (which treectl adds): `root=` and whatever `install --karg` or
    /// `treectl kargs` set. A new deployment starts with those of the
    /// deployment the next boot would start (see `docs/deployments.md`).
    #[serde(default)]
    pub kargs: Vec<String>,
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

    /// The kernel command line of this deployment's entry: `root=`
    /// arguments first, then `treectl=`, then the other kernel arguments.
    pub fn cmdline(&self) -> String {
        let is_root = |a: &&String| crate::kargs::key_of(a) == "root";
        let mut args: Vec<String> = self.kargs.iter().filter(is_root).cloned().collect();
        args.push(format!("{KARG}={}", self.rel_path()));
        args.extend(self.kargs.iter().filter(|a| !is_root(a)).cloned());
        args.join(" ")
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
    let mut state: State = serde_json::from_slice(&text).map_err(|e| SysrootError::BadState {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if !(MIN_STATE_VERSION..=STATE_VERSION).contains(&state.version) {
        return Err(SysrootError::BadState {
            path,
            reason: format!(
                "format version {} (this treectl reads {MIN_STATE_VERSION} to {STATE_VERSION})",
                state.version
            ),
        });
    }
    // Read as the current version; every write stores it as such.
    state.version = STATE_VERSION;
    Ok(state)
}

/// The live generation's boot entries in the boot loader's order.
pub fn live_menu(sysroot: &Sysroot) -> Result<BootMenu> {
    BootMenu::read_dir(&sysroot.boot_dir().join(LOADER).join("entries"))
}

/// The index of the deployment whose live entry the boot loader starts
/// ([`BootMenu::default_entry`]): 0 unless the default's entry went bad (no
/// tries left). `None` when the first entry boots no listed deployment.
pub fn loader_default(sysroot: &Sysroot, state: &State) -> Result<Option<usize>> {
    let menu = live_menu(sysroot)?;
    let Some(target) = menu.default_entry().and_then(BootEntry::treectl_target) else {
        return Ok(None);
    };
    Ok(state
        .deployments
        .iter()
        .position(|d| d.rel_path() == target))
}

/// The machine fell back: it booted another deployment because the
/// default's boot entry went bad (no tries left). Until a newer release
/// is published, `upgrade` treats the failed release as one the machine
/// rolled back from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fallback {
    /// The `treectl=` value of the default deployment that failed.
    pub failed: String,
    /// Failed attempts its entry records (`DONE` of `+0-DONE`).
    pub attempts: u32,
    /// The `treectl=` value of the deployment booted instead.
    pub booted: String,
}

/// Whether the machine fell back ([`Fallback`]): something other than the
/// default is booted while the default's live entry in `menu` is bad.
pub fn fallback_of(state: &State, menu: &BootMenu, booted: Option<&str>) -> Option<Fallback> {
    let booted = booted?;
    let default = state.deployments.first()?;
    let failed = default.rel_path();
    if failed == booted || !state.deployments.iter().any(|d| d.rel_path() == booted) {
        return None;
    }
    let counter = menu.find_target(&failed)?.counter?;
    counter.is_bad().then(|| Fallback {
        failed,
        attempts: counter.done.unwrap_or(0),
        booted: booted.to_owned(),
    })
}

/// [`fallback_of`] the live entries and the booted deployment.
pub fn read_fallback(sysroot: &Sysroot, state: &State) -> Result<Option<Fallback>> {
    Ok(fallback_of(
        state,
        &live_menu(sysroot)?,
        sysroot.booted_arg(),
    ))
}

impl State {
    /// The list as `upgrade` judges releases after `fallback`: as if
    /// `rollback` had been run to the booted deployment, that is, the
    /// booted deployment first and the failed release as the rollback
    /// floor (unless the floor is newer already).
    pub fn after_fallback(&self, fallback: &Fallback) -> State {
        let mut view = self.clone();
        if let Some(pos) = view
            .deployments
            .iter()
            .position(|d| d.rel_path() == fallback.booted)
        {
            let booted = view.deployments.remove(pos);
            view.deployments.insert(0, booted);
        }
        let failed = self
            .deployments
            .iter()
            .find(|d| d.rel_path() == fallback.failed)
            .map(|d| d.order);
        if let Some(failed) = failed {
            let newer = match &view.rollback_floor {
                Some(floor) => failed.compare(floor) == Ordering::Greater,
                None => true,
            };
            if newer {
                view.rollback_floor = Some(failed);
            }
        }
        view
    }
}

/// Boot counters of the live entries (`None`: good, no counting), by the
/// `treectl=` value they boot.
fn live_counters(sysroot: &Sysroot) -> Result<HashMap<String, Option<Counter>>> {
    Ok(live_menu(sysroot)?
        .entries
        .into_iter()
        .filter_map(|e| Some((e.treectl_target()?, e.counter)))
        .collect())
}

/// The entry of the deployment at `pos` in a list of `count`: file name
/// and content. `version` is `count - pos` and the file name carries it
/// too, so a boot loader that orders by version and one that orders by
/// file name (both newest first) agree: the default comes first.
pub fn entry_for(
    d: &Deployment,
    pos: usize,
    count: usize,
    counter: Option<Counter>,
) -> (String, String) {
    let version = count - pos;
    let short = &d.commit[..12.min(d.commit.len())];
    let name = with_counter(
        &format!(
            "treectl-{}-{version}-{short}.{}{}",
            d.stateroot,
            d.serial,
            crate::boot::ENTRY_SUFFIX
        ),
        counter,
    );
    let mut text = format!(
        "title treectl {} {} ({short})\nversion {version}\nsort-key treectl-{}\n",
        d.stateroot,
        d.version.as_deref().unwrap_or("-"),
        d.stateroot,
    );
    if let Some(k) = &d.kernel {
        text.push_str(&format!("linux {}\n", k.linux));
        if let Some(i) = &k.initrd {
            text.push_str(&format!("initrd {i}\n"));
        }
    }
    text.push_str(&format!("options {}\n", d.cmdline()));
    (name, text)
}

/// The entries of a generation for `state`: each existing deployment
/// keeps its live counter, a new one gets `+BOOT_TRIES`. A deployment a
/// command makes the default (`default_before` was another one) whose
/// entry went bad gets fresh tries: someone asked to boot it again.
/// Checked with [`BootMenu`]: the boot loader must start the first
/// deployment whose entry is not bad.
fn entries_for(
    state: &State,
    counters: &HashMap<String, Option<Counter>>,
    default_before: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let count = state.deployments.len();
    let mut files = vec![];
    let mut expected = None;
    for (pos, d) in state.deployments.iter().enumerate() {
        let rel = d.rel_path();
        let mut counter = match counters.get(&rel) {
            Some(live) => *live,
            None => Some(Counter::fresh(BOOT_TRIES)),
        };
        let bad = counter.is_some_and(|c| c.is_bad());
        if pos == 0 && bad && default_before != Some(rel.as_str()) {
            counter = Some(Counter::fresh(BOOT_TRIES));
        }
        if expected.is_none() && !counter.is_some_and(|c| c.is_bad()) {
            expected = Some(rel);
        }
        files.push(entry_for(d, pos, count, counter));
    }
    let expected = expected.or_else(|| state.deployments.first().map(Deployment::rel_path));
    let menu = BootMenu::from_entries(
        files
            .iter()
            .map(|(name, text)| BootEntry::parse(name, text))
            .collect(),
    );
    let loader = menu.default_entry().and_then(BootEntry::treectl_target);
    if loader != expected {
        return Err(SysrootError::BootOrder {
            expected: expected.unwrap_or_else(|| "nothing".into()),
            loader: loader.unwrap_or_else(|| "nothing".into()),
        });
    }
    Ok(files)
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
    let (counters, default_before) = match live {
        Some(_) => (
            live_counters(sysroot)?,
            read_state(sysroot)?
                .deployments
                .first()
                .map(Deployment::rel_path),
        ),
        None => (HashMap::new(), None),
    };
    // Everything is decided (and checked) before anything is written.
    let files = entries_for(state, &counters, default_before.as_deref())?;
    let next = match live {
        Some(0) => 1,
        _ => 0,
    };
    let dir = boot.join(format!("loader.{next}"));
    remove_tree(&dir)?;
    let entries = dir.join("entries");
    fs::create_dir_all(&entries).map_err(io_err("creating", &entries))?;
    for (name, text) in files {
        write_file_synced(&entries.join(name), text.as_bytes())?;
    }
    let state = State {
        version: STATE_VERSION,
        ..state.clone()
    };
    let mut json = serde_json::to_vec_pretty(&state).expect("state serializes");
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
    if sysroot.is_running_system() {
        // Past the commit point: a failure here only means a boot loader
        // that ignores the journal may start the old default after a
        // power cut, so it is reported, not returned.
        if let Err(e) = crate::freeze::freeze_thaw(&boot) {
            eprintln!(
                "warning: could not write {}'s journal home (freeze/thaw): {e}",
                boot.display()
            );
        }
    }
    failpoint::hit(&format!("{fp}-after-swap"));
    if let Some(old) = live {
        remove_tree(&boot.join(format!("loader.{old}")))?;
    }
    Ok(())
}

/// Marks the booted deployment's entry good: drops its boot counter
/// (`+LEFT` or `+LEFT-DONE`, bad ones included: the deployment did boot).
/// Returns false when nothing is booted, no live entry boots it, or the
/// entry has no counter.
pub fn mark_boot_ok(sysroot: &Sysroot) -> Result<bool> {
    let Some(booted) = sysroot.booted_arg() else {
        return Ok(false);
    };
    let dir = sysroot.boot_dir().join(LOADER).join("entries");
    let menu = BootMenu::read_dir(&dir)?;
    let Some(e) = menu.find_target(booted) else {
        return Ok(false);
    };
    if e.counter.is_none() {
        return Ok(false);
    }
    let from = dir.join(&e.file_name);
    fs::rename(&from, dir.join(e.good_name())).map_err(io_err("renaming", &from))?;
    fsync_dir(&dir)?;
    Ok(true)
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
            kargs: vec![],
        }
    }

    fn ids(files: &[(String, String)], strip: &[&str]) -> Vec<String> {
        let entries = files
            .iter()
            .map(|(n, t)| {
                let kept: String = t
                    .lines()
                    .filter(|l| !strip.iter().any(|k| l.starts_with(k)))
                    .map(|l| format!("{l}\n"))
                    .collect();
                BootEntry::parse(n, &kept)
            })
            .collect();
        BootMenu::from_entries(entries)
            .entries
            .into_iter()
            .map(|e| e.treectl_target().unwrap())
            .collect()
    }

    #[test]
    fn entries_put_the_default_first_both_ways() {
        let state = State {
            version: STATE_VERSION,
            deployments: (0..11)
                .map(|i| dep(&format!("{i:x}aaaaaaaaaaaaaaa"), 0))
                .collect(),
            rollback_floor: None,
        };
        let files = entries_for(&state, &HashMap::new(), None).unwrap();
        let want: Vec<String> = state.deployments.iter().map(Deployment::rel_path).collect();
        assert_eq!(ids(&files, &[]), want, "by sort-key and version");
        assert_eq!(
            ids(&files, &["version", "sort-key"]),
            want,
            "by file name alone"
        );
        assert!(files[0].0.starts_with("treectl-os-11-0aaaaaaaaaaa.0+3"));
        assert!(files[10].0.starts_with("treectl-os-1-aaaaaaaaaaaa.0+3"));
        assert!(files[0].1.contains("version 11\n") && files[10].1.contains("version 1\n"));
    }

    #[test]
    fn counters_are_kept_and_a_bad_entry_made_default_gets_fresh_tries() {
        let ds = vec![dep("aaaaaaaaaaaaaaaa", 0), dep("bbbbbbbbbbbbbbbb", 0)];
        let state = State {
            version: STATE_VERSION,
            deployments: ds.clone(),
            rollback_floor: None,
        };
        let bad = Some(Counter {
            left: 0,
            done: Some(3),
        });
        let counters: HashMap<_, _> = [(ds[0].rel_path(), bad), (ds[1].rel_path(), None)].into();
        // Unchanged default (a pin, a cleanup): the bad mark stays, and the
        // boot loader starts the next deployment.
        let same = entries_for(&state, &counters, Some(&ds[0].rel_path())).unwrap();
        assert!(same[0].0.ends_with("+0-3.conf") && same[1].0.ends_with(".0.conf"));
        assert_eq!(ids(&same, &[])[0], ds[1].rel_path());
        // Made the default by a command: three new tries.
        let made = entries_for(&state, &counters, Some(&ds[1].rel_path())).unwrap();
        assert!(made[0].0.ends_with("+3-0.conf"), "{made:?}");
        // Counters in both forms survive a rewrite.
        let tries = Some(Counter {
            left: 2,
            done: Some(1),
        });
        let counters: HashMap<_, _> = [(ds[0].rel_path(), tries)].into();
        let kept = entries_for(&state, &counters, Some(&ds[0].rel_path())).unwrap();
        assert!(kept[0].0.ends_with("+2-1.conf") && kept[1].0.ends_with("+3-0.conf"));
    }

    #[test]
    fn options_carry_root_the_deployment_and_its_arguments() {
        let mut d = dep("aaaaaaaaaaaaaaaa", 0);
        let (_, text) = entry_for(&d, 0, 1, None);
        assert!(text.ends_with("\noptions treectl=/treectl/deploy/os/aaaaaaaaaaaaaaaa.0\n"));
        d.kargs = vec![
            "quiet".into(),
            "root=UUID=1234".into(),
            "console=ttyS0".into(),
        ];
        let (_, text) = entry_for(&d, 0, 1, None);
        assert!(
            text.ends_with(
                "\noptions root=UUID=1234 treectl=/treectl/deploy/os/aaaaaaaaaaaaaaaa.0 quiet console=ttyS0\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_bad_default_and_another_booted_deployment_is_a_fallback() {
        let ds = vec![dep("bbbbbbbbbbbbbbbb", 0), dep("aaaaaaaaaaaaaaaa", 0)];
        let mut state = State {
            version: STATE_VERSION,
            deployments: ds.clone(),
            rollback_floor: None,
        };
        state.deployments[0].order.timestamp = 200;
        state.deployments[1].order.timestamp = 100;
        let (v2, v1) = (ds[0].rel_path(), ds[1].rel_path());
        let menu = |counter: Option<Counter>| {
            let files = entries_for(
                &state,
                &[(v2.clone(), counter), (v1.clone(), None)].into(),
                Some(&v2),
            )
            .unwrap();
            BootMenu::from_entries(files.iter().map(|(n, t)| BootEntry::parse(n, t)).collect())
        };
        let bad = Some(Counter {
            left: 0,
            done: Some(3),
        });
        let tries = Some(Counter {
            left: 1,
            done: Some(2),
        });
        let cases: &[(Option<Counter>, Option<&str>, bool)] = &[
            (bad, Some(&v1), true),
            // The default booted (by hand) despite its bad entry.
            (bad, Some(&v2), false),
            // Tries left: a manual choice, not a fallback.
            (tries, Some(&v1), false),
            (None, Some(&v1), false),
            // Nothing booted (an image being built), or something unknown.
            (bad, None, false),
            (bad, Some("/treectl/deploy/os/cccc.0"), false),
        ];
        for (counter, booted, fell_back) in cases {
            let got = fallback_of(&state, &menu(*counter), *booted);
            assert_eq!(got.is_some(), *fell_back, "{counter:?} {booted:?}");
        }
        let fb = fallback_of(&state, &menu(bad), Some(&v1)).unwrap();
        assert_eq!(
            fb,
            Fallback {
                failed: v2.clone(),
                attempts: 3,
                booted: v1.clone()
            }
        );

        // upgrade judges as after a rollback: the booted one first, the
        // failed release the floor.
        let view = state.after_fallback(&fb);
        assert_eq!(view.deployments[0].rel_path(), v1);
        assert_eq!(view.deployments[1].rel_path(), v2);
        assert_eq!(view.rollback_floor, Some(state.deployments[0].order));
        // A newer floor (a rollback from a later release) stays.
        let newer = ReleaseOrder {
            serial: None,
            timestamp: 300,
        };
        state.rollback_floor = Some(newer);
        assert_eq!(state.after_fallback(&fb).rollback_floor, Some(newer));
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

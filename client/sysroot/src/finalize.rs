//! The staged deployment: how it is recorded, read, dropped, and swapped
//! in by `finalize-staged` at shutdown.

use std::fs;
use std::path::Path;

use serde::Serialize;
use treectl_store::{failpoint, ObjectId, Repo};

use crate::deploy::{commit_id, defaults_of, merge_deployment};
use crate::etc_merge::{merge_etc, MergeReport};
use crate::state::{read_state, write_generation, Deployment, State};
use crate::{fsync_dir, io_err, remove_tree, Result, Sysroot, SysrootError};

/// `staged.json`: the staged deployment and whether finalizing it clears
/// the rollback floor.
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct StagedFile {
    /// [`STAGED_VERSION`]; a file without one is version 1.
    #[serde(default = "staged_v1")]
    pub(crate) version: u32,
    pub(crate) deployment: Deployment,
    #[serde(default)]
    pub(crate) clear_floor: bool,
}

/// The format of `staged.json`: `version`, `deployment` (as in the
/// deployment list), `clear_floor`.
pub(crate) const STAGED_VERSION: u32 = 1;

fn staged_v1() -> u32 {
    1
}

pub(crate) fn read_staged_file(sysroot: &Sysroot) -> Result<Option<StagedFile>> {
    let path = sysroot.staged_path();
    match fs::read(&path) {
        Ok(b) => {
            let staged: StagedFile =
                serde_json::from_slice(&b).map_err(|e| SysrootError::BadState {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if staged.version != STAGED_VERSION {
                return Err(SysrootError::BadState {
                    path,
                    reason: format!(
                        "format version {} (this treectl reads {STAGED_VERSION}): written by another treectl",
                        staged.version
                    ),
                });
            }
            Ok(Some(staged))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &path)(e)),
    }
}

/// The staged deployment, if one waits for `finalize-staged`. A file left
/// by a finalize stopped between the swap and its removal names a
/// deployment already in the list: that is not staged any more.
pub fn read_staged(sysroot: &Sysroot) -> Result<Option<Deployment>> {
    let Some(staged) = read_staged_file(sysroot)? else {
        return Ok(None);
    };
    let state = read_state(sysroot)?;
    Ok((!swapped_in(&state, &staged.deployment)).then_some(staged.deployment))
}

fn swapped_in(state: &State, d: &Deployment) -> bool {
    state.deployments.iter().any(|x| x.id() == d.id())
}

/// `finalize-failure.json`: why the last `finalize-staged` failed. Written
/// when it fails, removed when a later one succeeds or a new deployment
/// is made; `treectl status` and `finalize-staged --check` show it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FinalizeFailure {
    /// The format of this file (1).
    pub version: u32,
    /// The deployment that was staged (`<commit>.<serial>`).
    pub deployment: String,
    /// Its commit.
    pub commit: String,
    /// When finalize failed (Unix seconds).
    pub time: i64,
    /// The error, as `finalize-staged` printed it.
    pub error: String,
}

const FAILURE_FILE: &str = "finalize-failure.json";

/// The recorded failure of the last `finalize-staged`, if any.
pub fn read_finalize_failure(sysroot: &Sysroot) -> Result<Option<FinalizeFailure>> {
    let path = sysroot.treectl_dir().join(FAILURE_FILE);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| SysrootError::BadState {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &path)(e)),
    }
}

pub(crate) fn clear_finalize_failure(sysroot: &Sysroot) -> Result<()> {
    let path = sysroot.treectl_dir().join(FAILURE_FILE);
    match fs::remove_file(&path) {
        Ok(()) => fsync_dir(&sysroot.treectl_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", &path)(e)),
    }
}

/// [`finalize_staged`], recording a failure: the staged deployment is
/// dropped (the machine keeps its default and boots it), and why is kept
/// in `finalize-failure.json` for `status` and the next boot.
pub fn finalize_staged_or_record(sysroot: &Sysroot) -> Result<Option<Deployment>> {
    let err = match finalize_staged(sysroot) {
        Ok(d) => {
            if d.is_some() {
                clear_finalize_failure(sysroot)?;
            }
            return Ok(d);
        }
        Err(e) => e,
    };
    let _lock = sysroot.lock()?;
    if let (Some(staged), Ok(state)) = (read_staged_file(sysroot)?, read_state(sysroot)) {
        if !swapped_in(&state, &staged.deployment) {
            let record = FinalizeFailure {
                version: 1,
                deployment: staged.deployment.id(),
                commit: staged.deployment.commit.clone(),
                time: treectl_store::time::now(),
                error: err.to_string(),
            };
            let mut json = serde_json::to_vec_pretty(&record).expect("failure serializes");
            json.push(b'\n');
            treectl_store::store::write_atomic(
                &sysroot.treectl_dir().join(FAILURE_FILE),
                &json,
                true,
            )?;
            remove_staged(sysroot)?;
        }
    }
    Err(err)
}

pub(crate) fn remove_staged(sysroot: &Sysroot) -> Result<()> {
    let path = sysroot.staged_path();
    match fs::remove_file(&path) {
        Ok(()) => fsync_dir(&sysroot.treectl_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", &path)(e)),
    }
}

/// Makes the staged deployment the default: merges `/etc` again from the
/// machine's current `/etc`, then swaps in the generation. Returns it, or
/// `None` when nothing was staged.
pub fn finalize_staged(sysroot: &Sysroot) -> Result<Option<Deployment>> {
    let _lock = sysroot.lock()?;
    let Some(staged) = read_staged_file(sysroot)? else {
        return Ok(None);
    };
    let mut d = staged.deployment;
    let mut state = read_state(sysroot)?;
    if swapped_in(&state, &d) {
        // Swapped in before a crash: only the file is left to remove.
        remove_staged(sysroot)?;
        return Ok(Some(d));
    }
    let commit = commit_id(sysroot, &d)?;
    // Rejected since it was staged (an upgrade --check or pull brought the
    // revert): it is not swapped in, and the stage is dropped. Finalize
    // never needs the origin itself: a local origin that cannot be read
    // at shutdown (removable media, an unmounted path) leaves the check
    // made at stage time standing.
    if let Some(o) = &d.origin {
        match crate::source::check_not_rejected(sysroot, o, &commit) {
            Err(e @ SysrootError::Rejected { .. }) => {
                remove_staged(sysroot)?;
                return Err(e);
            }
            Err(e) => {
                eprintln!("warning: not checking {o} for a revert of the staged release: {e}")
            }
            Ok(()) => {}
        }
    }
    let dep = d.path(sysroot);
    let repo = sysroot.open_repo()?;
    // Leftovers of an interrupted finalize.
    remove_tree(&dep.join("etc.final"))?;
    let report = write_etc_exchange(sysroot, &repo, &state, &commit, &dep)?;
    d.etc_conflicts = report.conflicts;
    rustix::fs::syncfs(fs::File::open(&dep).map_err(io_err("opening", &dep))?)
        .map_err(|e| io_err("syncing", &dep)(e.into()))?;
    if staged.clear_floor {
        state.rollback_floor = None;
    }
    state.deployments.insert(0, d.clone());
    write_generation(sysroot, &state, "finalize")?;
    remove_staged(sysroot)?;
    Ok(Some(d))
}

/// The `/etc` merge of finalize: into `etc.final`, then exchanged with the
/// deployment's `etc` in one `renameat2(RENAME_EXCHANGE)`.
fn write_etc_exchange(
    sysroot: &Sysroot,
    repo: &Repo,
    state: &State,
    commit: &ObjectId,
    dep: &Path,
) -> Result<MergeReport> {
    let Some(m) = merge_deployment(sysroot, state) else {
        return Ok(MergeReport::default());
    };
    let new_defaults = defaults_of(sysroot, repo, commit, "new-etc")?;
    let old_commit = commit_id(sysroot, m)?;
    let old_defaults = defaults_of(sysroot, repo, &old_commit, "old-etc")?;
    let out = dep.join("etc.final");
    let report = merge_etc(
        &old_defaults,
        &m.path(sysroot).join("etc"),
        &new_defaults,
        &out,
    )
    .map_err(io_err("merging /etc into", &out))?;
    remove_tree(&sysroot.tmp_dir())?;
    failpoint::hit("finalize-etc");
    let etc = dep.join("etc");
    match (out.exists(), etc.exists()) {
        (true, true) => {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &out,
                rustix::fs::CWD,
                &etc,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .map_err(|e| io_err("exchanging /etc of", dep)(e.into()))?;
            failpoint::hit("finalize-exchanged");
            remove_tree(&out)?;
        }
        (true, false) => fs::rename(&out, &etc).map_err(io_err("renaming", &out))?,
        (false, true) => remove_tree(&etc)?,
        (false, false) => {}
    }
    Ok(report)
}

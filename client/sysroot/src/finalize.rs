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
    pub(crate) deployment: Deployment,
    #[serde(default)]
    pub(crate) clear_floor: bool,
}

pub(crate) fn read_staged_file(sysroot: &Sysroot) -> Result<Option<StagedFile>> {
    let path = sysroot.staged_path();
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

/// The staged deployment, if one waits for `finalize-staged`.
pub fn read_staged(sysroot: &Sysroot) -> Result<Option<Deployment>> {
    Ok(read_staged_file(sysroot)?.map(|s| s.deployment))
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
    if state.deployments.first().map(Deployment::id) == Some(d.id()) {
        // Swapped in before a crash: only the file is left to remove.
        remove_staged(sysroot)?;
        return Ok(Some(d));
    }
    let commit = commit_id(sysroot, &d)?;
    // Rejected since it was staged (an upgrade --check or pull brought the
    // revert): it is not swapped in, and the stage is dropped.
    if let Some(o) = &d.origin {
        if let Err(e) = crate::source::check_not_rejected(sysroot, o, &commit) {
            if matches!(e, SysrootError::Rejected { .. }) {
                remove_staged(sysroot)?;
            }
            return Err(e);
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

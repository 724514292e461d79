//! Garbage collection under the lock, and `cleanup`: dropping deployments
//! nothing needs and pruning the local repository.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use serde::Serialize;
use treectl_store::prune::{prune, PruneOptions, PruneReport};
use treectl_store::refs::list_refs;
use treectl_store::store::{RefUpdate, Transaction};

use crate::finalize::read_staged;
use crate::state::{read_state, write_generation, Deployment, State};
use crate::{io_err, remove_tree, Result, Sysroot};

/// Removes what no generation, staged deployment or ref needs: `*.tmp`
/// deployments, deployments nothing names, their refs, stale kernels.
/// Runs under the lock at the start of every writing command.
pub fn collect_garbage(sysroot: &Sysroot, state: &State) -> Result<()> {
    let staged = read_staged(sysroot)?;
    let keep: HashSet<PathBuf> = state
        .deployments
        .iter()
        .chain(staged.iter())
        .map(|d| d.path(sysroot))
        .collect();
    let deploy_root = sysroot.treectl_dir().join("deploy");
    if let Ok(rd) = fs::read_dir(&deploy_root) {
        for sr in rd {
            let sr = sr.map_err(io_err("reading", &deploy_root))?.path();
            for e in fs::read_dir(&sr).map_err(io_err("reading", &sr))? {
                let p = e.map_err(io_err("reading", &sr))?.path();
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.as_deref() == Some("var") || keep.contains(&p) {
                    continue;
                }
                remove_tree(&p)?;
            }
        }
    }
    remove_tree(&sysroot.tmp_dir())?;
    let repo = sysroot.open_repo()?;
    let wanted: HashSet<String> = state
        .deployments
        .iter()
        .chain(staged.iter())
        .map(Deployment::ref_name)
        .collect();
    let stale: Vec<RefUpdate> = list_refs(&repo)?
        .into_iter()
        .filter(|(name, _)| name.as_str().starts_with("deploy/") && !wanted.contains(name.as_str()))
        .map(|(name, _)| RefUpdate { name, target: None })
        .collect();
    if !stale.is_empty() {
        Transaction::begin(&repo)?.commit(&stale)?;
    }
    let kernels: HashSet<String> = state
        .deployments
        .iter()
        .chain(staged.iter())
        .filter_map(|d| d.kernel.as_ref())
        .filter_map(|k| k.linux.split('/').nth(2).map(str::to_owned))
        .collect();
    let kdir = sysroot.boot_dir().join("treectl");
    if let Ok(rd) = fs::read_dir(&kdir) {
        for e in rd {
            let p = e.map_err(io_err("reading", &kdir))?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !kernels.contains(&name) {
                remove_tree(&p)?;
            }
        }
    }
    Ok(())
}

/// What `cleanup` removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CleanupReport {
    pub removed: Vec<String>,
    pub prune: PruneReport,
}

/// Drops deployments that are not booted, default, rollback, pinned or
/// staged, then prunes the local repository.
pub fn cleanup(sysroot: &Sysroot) -> Result<CleanupReport> {
    let _lock = sysroot.lock()?;
    let mut state = read_state(sysroot)?;
    let booted = sysroot.booted_arg().map(str::to_owned);
    let before: Vec<Deployment> = state.deployments.clone();
    let mut removed = vec![];
    let mut index = 0;
    state.deployments.retain(|d| {
        let keep = index < 2 || d.pinned || booted.as_deref() == Some(d.rel_path().as_str());
        index += 1;
        if !keep {
            removed.push(d.id());
        }
        keep
    });
    if state.deployments.len() != before.len() {
        write_generation(sysroot, &state, "cleanup")?;
    }
    collect_garbage(sysroot, &state)?;
    let repo = sysroot.open_repo()?;
    let prune = prune(&repo, &PruneOptions::default())?;
    Ok(CleanupReport { removed, prune })
}

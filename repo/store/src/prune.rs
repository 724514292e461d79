//! Deleting what no ref needs any more.

use std::collections::HashSet;
use std::fs;
use std::time::Duration;

use serde::Serialize;

use crate::closure::Closure;
use crate::commit::default_timestamp;
use crate::delta::DELTAS_DIR;
use crate::error::{Error, Result};
use crate::fsck::{list_objects, partial_dir};
use crate::hash::ObjectId;
use crate::object::ObjectKind;
use crate::refs;
use crate::store::{transaction::remove_stale_staging, LockKind, Repo, RepoLock, TMP_DIR};

#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Drop history commits older than this (each ref's head is always kept).
    pub keep_younger_than: Option<Duration>,
    /// Keep at most this many ancestors of each ref's head (0: the head only).
    pub depth: Option<u64>,
    /// Report what would be deleted without deleting it.
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub objects_total: usize,
    pub objects_deleted: usize,
    pub commits_deleted: usize,
    pub bytes_freed: u64,
    pub stale_staging_removed: usize,
    /// Static deltas to a commit no kept ref reaches (`deltas/`).
    pub deltas_deleted: usize,
}

/// Deletes every object not reachable from a kept commit. Takes the
/// repository lock exclusively, so it waits for running transactions and
/// none starts until it is done.
pub fn prune(repo: &Repo, opts: &PruneOptions) -> Result<PruneReport> {
    let _lock = RepoLock::acquire(repo.path(), LockKind::Exclusive)?;
    let mut report = PruneReport::default();
    if !opts.dry_run {
        report.stale_staging_removed = remove_stale_staging(&repo.path().join(TMP_DIR), true)?;
    }
    let reachable = reachable(repo, opts)?;
    let mut stray = Vec::new();
    let all = list_objects(repo, &mut stray)?;
    report.objects_total = all.len();
    let mut doomed: Vec<(ObjectId, ObjectKind)> =
        all.into_iter().filter(|o| !reachable.contains(o)).collect();
    // Commits first, then trees, then what trees name: a prune stopped
    // half-way never leaves an object that names a deleted one.
    doomed.sort_by_key(|(_, kind)| match kind {
        ObjectKind::Commit => 0,
        ObjectKind::Tree => 1,
        ObjectKind::DirMeta | ObjectKind::File => 2,
    });
    for (id, kind) in &doomed {
        let path = repo.object_path(id, *kind);
        let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        if !opts.dry_run {
            fs::remove_file(&path).map_err(Error::io("removing", &path))?;
            crate::failpoint::hit("prune-delete");
            if *kind == ObjectKind::Commit {
                let marker = partial_dir(repo).join(id.to_hex());
                if marker.exists() {
                    fs::remove_file(&marker).map_err(Error::io("removing", &marker))?;
                }
            }
        }
        report.bytes_freed += size;
        report.objects_deleted += 1;
        report.commits_deleted += usize::from(*kind == ObjectKind::Commit);
    }
    prune_deltas(repo, &reachable, opts.dry_run, &mut report)?;
    Ok(report)
}

/// Removes the static deltas whose TO commit is not kept: nothing serves
/// that commit any more. A delta from a pruned commit stays while its TO
/// is kept (clients may still have FROM). Files that are not finished
/// deltas (a generation's `.NAME.tmp-PID`) are left alone.
fn prune_deltas(
    repo: &Repo,
    reachable: &HashSet<(ObjectId, ObjectKind)>,
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<()> {
    let dir = repo.path().join(DELTAS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", &dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("reading", &dir))?;
        let name = entry.file_name();
        let Some(to) = name.to_str().and_then(delta_target) else {
            continue;
        };
        if reachable.contains(&(to, ObjectKind::Commit)) {
            continue;
        }
        let path = entry.path();
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if !dry_run {
            fs::remove_file(&path).map_err(Error::io("removing", &path))?;
        }
        report.deltas_deleted += 1;
        report.bytes_freed += size;
    }
    Ok(())
}

/// The TO commit a delta's file name (`FROM-TO.delta` or `TO.delta`)
/// names; `None` for any other name.
fn delta_target(name: &str) -> Option<ObjectId> {
    let stem = name.strip_suffix(".delta")?;
    let (from, to) = match stem.split_once('-') {
        Some((from, to)) => (Some(from), to),
        None => (None, stem),
    };
    if from.is_some_and(|f| ObjectId::from_hex(f).is_none()) {
        return None;
    }
    ObjectId::from_hex(to)
}

/// Every object a kept commit needs. Missing objects (partial commits,
/// truncated history) are skipped, not errors.
pub fn reachable(repo: &Repo, opts: &PruneOptions) -> Result<HashSet<(ObjectId, ObjectKind)>> {
    let cutoff = opts
        .keep_younger_than
        .map(|d| default_timestamp().saturating_sub(d.as_secs() as i64));
    let mut keep: HashSet<(ObjectId, ObjectKind)> = HashSet::new();
    let mut walk = Closure::new();
    // Local refs and refs pulled from remotes alike.
    for (_, head) in refs::list_ref_targets(repo)? {
        let mut id = head;
        let mut ancestors = 0u64;
        loop {
            if !keep.insert((id, ObjectKind::Commit)) {
                break; // history shared with a ref already walked
            }
            let commit = match repo.read_commit(&id) {
                Ok(c) => c,
                Err(Error::NotFound { .. }) => {
                    keep.remove(&(id, ObjectKind::Commit));
                    break;
                }
                Err(e) => return Err(e),
            };
            walk.add_root(commit.root_tree, commit.root_meta, id);
            let Some(parent) = commit.parent else { break };
            ancestors += 1;
            if opts.depth.is_some_and(|d| ancestors > d) {
                break;
            }
            if let Some(cutoff) = cutoff {
                match repo.read_commit(&parent) {
                    Ok(p) if p.timestamp < cutoff => break,
                    Ok(_) => {}
                    Err(Error::NotFound { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
            id = parent;
        }
    }
    walk.load_with(|tree| match repo.read_tree(tree) {
        Ok(t) => Ok(Some(t)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    })?;
    keep.extend(walk.objects().iter().copied());
    Ok(keep)
}

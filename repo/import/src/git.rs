//! Git commits, read through gix: the commit's tree as git records it.
//!
//! Git keeps only three kinds of files: regular (stored 0644), executable
//! (stored 0755) and symlinks; owners are root and directories are 0755.
//! Submodules (gitlinks) have no content in the repository and are refused.

use std::path::Path;

use gix::objs::tree::EntryKind;

use super::builder::default_dir_meta;
use super::{ImportError, ImportReport, ImportStats, Result};
use treectl_store::commit::{finish_commit, CommitOptions, MemDir, MemEntry};
use treectl_store::object::FileHeader;
use treectl_store::refs::RefName;
use treectl_store::store::{Repo, Transaction};

/// Metadata key holding the imported git commit id.
pub const META_GIT_COMMIT: &str = "git.commit";

/// Options of a git import beyond the commit's own.
#[derive(Clone, Debug, Default)]
pub struct GitCommitOptions {
    /// Subject; empty for the git commit's summary line.
    pub subject: String,
    pub body: String,
    /// Commit time; `None` for the git commit's committer time.
    pub timestamp: Option<i64>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

fn git_err(repo: &Path, reason: impl std::fmt::Display) -> ImportError {
    ImportError::Git {
        repo: repo.to_owned(),
        reason: reason.to_string(),
    }
}

/// Resolves `rev` (a full commit id, a branch, a tag or `HEAD`) to a commit.
fn resolve<'r>(git: &'r gix::Repository, path: &Path, rev: &str) -> Result<gix::Commit<'r>> {
    let object = if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        let id = gix::ObjectId::from_hex(rev.as_bytes()).map_err(|e| git_err(path, e))?;
        git.find_object(id)
            .map_err(|e| git_err(path, format!("{rev}: {e}")))?
    } else {
        let mut r = git.find_reference(rev).map_err(|_| {
            git_err(
                path,
                format!("no branch, tag or ref named {rev:?} (pass a ref name or a full 40-digit commit id)"),
            )
        })?;
        let id = r
            .peel_to_id_in_place()
            .map_err(|e| git_err(path, format!("{rev}: {e}")))?;
        git.find_object(id)
            .map_err(|e| git_err(path, format!("{rev}: {e}")))?
    };
    object
        .peel_to_commit()
        .map_err(|e| git_err(path, format!("{rev} does not name a commit: {e}")))
}

struct Walk<'a, 't> {
    git: &'a gix::Repository,
    path: &'a Path,
    txn: &'a Transaction<'t>,
    stats: ImportStats,
    submodules: Vec<String>,
}

impl Walk<'_, '_> {
    fn tree(&mut self, id: gix::ObjectId, prefix: &str) -> Result<MemDir> {
        let tree = self
            .git
            .find_tree(id)
            .map_err(|e| git_err(self.path, format!("tree {id}: {e}")))?;
        let mut dir = MemDir::new(default_dir_meta());
        self.stats.directories += 1;
        for entry in tree.iter() {
            let entry = entry.map_err(|e| git_err(self.path, format!("tree {id}: {e}")))?;
            let name = entry.filename().to_vec();
            let shown = format!("{prefix}{}", String::from_utf8_lossy(&name));
            if !super::builder::valid_name(&name) {
                return Err(git_err(self.path, format!("invalid file name {shown:?}")));
            }
            let oid = entry.oid().to_owned();
            let node = match entry.mode().kind() {
                EntryKind::Tree => MemEntry::Dir(self.tree(oid, &format!("{shown}/"))?),
                EntryKind::Commit => {
                    self.submodules.push(shown);
                    continue;
                }
                kind @ (EntryKind::Blob | EntryKind::BlobExecutable | EntryKind::Link) => {
                    let blob = self
                        .git
                        .find_object(oid)
                        .map_err(|e| git_err(self.path, format!("{shown}: {e}")))?;
                    let data = &blob.data;
                    let (header, content, symlink): (FileHeader, &[u8], bool) = match kind {
                        EntryKind::Link => {
                            if data.is_empty() || data.contains(&0) {
                                return Err(git_err(
                                    self.path,
                                    format!("symlink {shown:?} has an invalid target"),
                                ));
                            }
                            self.stats.symlinks += 1;
                            (
                                FileHeader::symlink(data.to_vec(), 0, 0, Vec::new()),
                                &[],
                                true,
                            )
                        }
                        _ => {
                            let perm = if kind == EntryKind::BlobExecutable {
                                0o755
                            } else {
                                0o644
                            };
                            self.stats.files += 1;
                            self.stats.bytes += data.len() as u64;
                            (
                                FileHeader::regular(perm, 0, 0, Vec::new(), data.len() as u64),
                                data.as_slice(),
                                false,
                            )
                        }
                    };
                    let id = self.txn.write_file(&header, content)?;
                    MemEntry::File { id, symlink }
                }
            };
            dir.entries.insert(name, node);
        }
        Ok(dir)
    }
}

/// Imports the tree of git commit `rev` of the repository at `path` and
/// moves `ref_name` to it (the ref's current commit becomes the parent).
/// Metadata records the git commit id as `git.commit`.
pub fn import_git(
    repo: &Repo,
    path: &Path,
    rev: &str,
    ref_name: &RefName,
    opts: &GitCommitOptions,
) -> Result<ImportReport> {
    let git = gix::open(path).map_err(|e| git_err(path, e))?;
    let commit = resolve(&git, path, rev)?;
    let commit_id = commit.id;
    let tree_id = commit
        .tree_id()
        .map_err(|e| git_err(path, format!("{rev}: {e}")))?
        .detach();
    let summary = commit
        .message()
        .map(|m| m.summary().to_string())
        .unwrap_or_default();
    let time = commit
        .time()
        .map_err(|e| git_err(path, format!("{rev}: {e}")))?
        .seconds;
    let txn = Transaction::begin(repo)?;
    let mut walk = Walk {
        git: &git,
        path,
        txn: &txn,
        stats: ImportStats::default(),
        submodules: Vec::new(),
    };
    let mem = walk.tree(tree_id, "")?;
    if !walk.submodules.is_empty() {
        return Err(ImportError::Submodule {
            repo: path.to_owned(),
            commit: commit_id.to_string(),
            paths: walk.submodules,
        });
    }
    let stats = walk.stats;
    let root = mem.write(&txn)?;
    let mut metadata = opts.metadata.clone();
    metadata.insert(META_GIT_COMMIT.into(), commit_id.to_string());
    let commit_opts = CommitOptions {
        subject: if opts.subject.is_empty() {
            summary
        } else {
            opts.subject.clone()
        },
        body: opts.body.clone(),
        timestamp: opts.timestamp.unwrap_or(time),
        metadata,
    };
    let id = finish_commit(txn, ref_name, root, &commit_opts)?;
    Ok(ImportReport::new(id, ref_name, stats))
}

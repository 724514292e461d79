//! Differences between two trees, path by path. Identical subtrees (same
//! tree and metadata ids) are skipped without being read.

use serde::Serialize;

use crate::error::Result;
use crate::hash::ObjectId;
use crate::object::{EntryKind, Tree};
use crate::store::Repo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Added,
    Removed,
    /// Content, mode, owner, attributes or type changed.
    Modified,
}

impl Change {
    /// One-letter code as `git diff --name-status` prints it.
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Removed => 'D',
            Change::Modified => 'M',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    pub change: Change,
    /// Absolute path inside the tree, `/`-separated.
    pub path: String,
}

/// Lists every path that differs between two root trees, sorted by path.
/// A directory that appears or disappears is listed with everything in it.
pub fn diff_trees(
    repo: &Repo,
    from: (ObjectId, ObjectId),
    to: (ObjectId, ObjectId),
) -> Result<Vec<DiffEntry>> {
    let mut out = Vec::new();
    if from.1 != to.1 {
        out.push(DiffEntry {
            change: Change::Modified,
            path: "/".into(),
        });
    }
    diff_dir(repo, "", Some(from.0), Some(to.0), &mut out)?;
    Ok(out)
}

fn diff_dir(
    repo: &Repo,
    prefix: &str,
    from: Option<ObjectId>,
    to: Option<ObjectId>,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let a = match from {
        Some(id) => repo.read_tree(&id)?,
        None => Tree::default(),
    };
    let b = match to {
        Some(id) => repo.read_tree(&id)?,
        None => Tree::default(),
    };
    let (mut i, mut j) = (0, 0);
    while i < a.entries.len() || j < b.entries.len() {
        let ea = a.entries.get(i);
        let eb = b.entries.get(j);
        let order = match (ea, eb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        let (left, right) = match order {
            std::cmp::Ordering::Less => {
                i += 1;
                (ea, None)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (None, eb)
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                (ea, eb)
            }
        };
        let name = left.or(right).expect("one side present").name.as_slice();
        let path = format!("{prefix}/{}", String::from_utf8_lossy(name));
        let subtree = |k: Option<&EntryKind>| match k {
            Some(EntryKind::Dir { tree, .. }) => Some(*tree),
            _ => None,
        };
        let lk = left.map(|e| &e.kind);
        let rk = right.map(|e| &e.kind);
        match (lk, rk) {
            (Some(x), Some(y)) if x == y => {}
            (Some(EntryKind::Dir { meta: m1, .. }), Some(EntryKind::Dir { meta: m2, .. })) => {
                if m1 != m2 {
                    out.push(DiffEntry {
                        change: Change::Modified,
                        path: path.clone(),
                    });
                }
                diff_dir(repo, &path, subtree(lk), subtree(rk), out)?;
            }
            (Some(x), Some(y)) => {
                // A type change is a modification of the path; what was below
                // a directory that became a file is removed, and vice versa.
                out.push(DiffEntry {
                    change: Change::Modified,
                    path: path.clone(),
                });
                if matches!(x, EntryKind::Dir { .. }) || matches!(y, EntryKind::Dir { .. }) {
                    diff_dir(repo, &path, subtree(lk), subtree(rk), out)?;
                }
            }
            (Some(_), None) => {
                out.push(DiffEntry {
                    change: Change::Removed,
                    path: path.clone(),
                });
                diff_dir(repo, &path, subtree(lk), None, out)?;
            }
            (None, Some(_)) => {
                out.push(DiffEntry {
                    change: Change::Added,
                    path: path.clone(),
                });
                diff_dir(repo, &path, None, subtree(rk), out)?;
            }
            (None, None) => {}
        }
    }
    Ok(())
}

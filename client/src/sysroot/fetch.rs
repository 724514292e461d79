//! Copying a commit and everything it names from one repository into
//! another (a local-repository origin into the sysroot's repository). Every
//! object is re-hashed as it is written, so a damaged source is refused.

use rayon::prelude::*;
use treectl_repo::object::{EntryKind, ObjectKind};
use treectl_repo::refs::RefName;
use treectl_repo::store::{RefUpdate, Transaction};
use treectl_repo::{Error, ObjectId, Repo};

use super::Result;

/// What a fetch wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FetchStats {
    pub objects_written: usize,
}

/// Copies `commit` with its tree closure from `src` to `dst` (objects
/// already in `dst` are skipped, a stored tree's closure included, by the
/// store's invariant), then sets `refs` to it.
pub fn fetch_commit(
    src: &Repo,
    dst: &Repo,
    commit: &ObjectId,
    refs: &[RefName],
) -> Result<FetchStats> {
    let txn = Transaction::begin(dst)?;
    if !dst.has_object(commit, ObjectKind::Commit) {
        let c = src.read_commit(commit)?;
        copy_dir(src, &txn, &c.root_tree, &c.root_meta)?;
        check(commit, ObjectKind::Commit, txn.write_commit(&c)?)?;
    }
    let stats = FetchStats {
        objects_written: txn.objects_written(),
    };
    let updates: Vec<RefUpdate> = refs
        .iter()
        .map(|name| RefUpdate {
            name: name.clone(),
            target: Some(*commit),
        })
        .collect();
    txn.commit(&updates)?;
    Ok(stats)
}

fn check(expected: &ObjectId, kind: ObjectKind, actual: ObjectId) -> Result<()> {
    if *expected != actual {
        return Err(Error::Corrupt {
            kind,
            id: *expected,
            reason: format!("its content hashes to {}", actual.to_hex()),
        }
        .into());
    }
    Ok(())
}

fn copy_dir(
    src: &Repo,
    txn: &Transaction<'_>,
    tree_id: &ObjectId,
    meta_id: &ObjectId,
) -> Result<()> {
    let dst = txn.repo();
    if !dst.has_object(meta_id, ObjectKind::DirMeta) {
        let meta = src.read_dirmeta(meta_id)?;
        check(meta_id, ObjectKind::DirMeta, txn.write_dirmeta(&meta)?)?;
    }
    if dst.has_object(tree_id, ObjectKind::Tree) {
        return Ok(());
    }
    let tree = src.read_tree(tree_id)?;
    tree.entries
        .par_iter()
        .try_for_each(|entry| match entry.kind {
            EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                if dst.has_object(&file, ObjectKind::File) {
                    return Ok(());
                }
                let (header, content) = src.read_file(&file)?;
                check(&file, ObjectKind::File, txn.write_file(&header, &content)?)
            }
            EntryKind::Dir { tree, meta } => copy_dir(src, txn, &tree, &meta),
        })?;
    check(tree_id, ObjectKind::Tree, txn.write_tree(&tree)?)
}

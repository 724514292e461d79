//! Copying a commit and everything it names from one repository into
//! another (a local-repository origin into the sysroot's repository). Every
//! object is re-hashed as it is written, so a damaged source is refused.

use rayon::prelude::*;
use treectl_store::closure::Closure;
use treectl_store::object::ObjectKind;
use treectl_store::refs::RefName;
use treectl_store::store::{RefUpdate, Transaction};
use treectl_store::{Error, ObjectId, Repo};

use crate::Result;

/// What a fetch wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FetchStats {
    pub objects_written: usize,
}

/// Copies `commit` with its tree closure from `src` to `dst` (objects
/// already in `dst` are skipped, a stored tree's closure included, by the
/// store's invariant), then sets `refs` to it. Files are copied on all
/// cores, then dirmetas and trees children first, so the store never names
/// an object it lacks.
pub fn fetch_commit(
    src: &Repo,
    dst: &Repo,
    commit: &ObjectId,
    refs: &[RefName],
) -> Result<FetchStats> {
    let txn = Transaction::begin(dst)?;
    if !dst.has_object(commit, ObjectKind::Commit) {
        let c = src.read_commit(commit)?;
        let mut walk = Closure::new();
        walk.add_root(c.root_tree, c.root_meta, *commit);
        walk.load_with(|id| {
            if dst.has_object(id, ObjectKind::Tree) {
                Ok(None) // complete in dst already
            } else {
                src.read_tree(id).map(Some)
            }
        })?;
        let todo: Vec<_> = walk
            .children_first()
            .into_iter()
            .filter(|(id, kind)| !dst.has_object(id, *kind))
            .collect();
        todo.par_iter()
            .filter(|(_, kind)| *kind == ObjectKind::File)
            .try_for_each(|(id, _)| {
                let (header, content) = src.read_file(id)?;
                check(id, ObjectKind::File, txn.write_file(&header, &content)?)
            })?;
        for (id, kind) in &todo {
            match kind {
                ObjectKind::DirMeta => {
                    check(id, *kind, txn.write_dirmeta(&src.read_dirmeta(id)?)?)?;
                }
                ObjectKind::Tree => check(id, *kind, txn.write_tree(&src.read_tree(id)?)?)?,
                ObjectKind::File | ObjectKind::Commit => {}
            }
        }
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

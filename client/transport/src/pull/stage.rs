//! Step 5: the staged metadata enters the store. Trees, dirmetas and the
//! commit wait, verified, in a resumable staging directory
//! (`tmp/pull-NAME/`, [`Staging`]) while the walk and the file fetch run;
//! once every file is stored they are written children first (the walk's
//! [`Closure::children_first`] order, the commit last), so the store never
//! names a missing object.
//!
//! [`Closure::children_first`]: treectl_store::closure::Closure::children_first

use std::fs;
use std::io;
use std::path::PathBuf;

use treectl_store::store::{verify_wire_form, Transaction, TMP_DIR};
use treectl_store::{ObjectKind, Repo};
use treectl_wire::ObjectRef;

use super::walk::Walked;
use crate::error::TransportError;

/// The resumable staging of one remote's pull: verified trees, dirmetas
/// and the commit, kept until the whole closure is present.
pub(super) struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub fn open(repo: &Repo, remote: &str) -> Result<Staging, TransportError> {
        let dir = repo.path().join(TMP_DIR).join(format!("pull-{remote}"));
        fs::create_dir_all(&dir).map_err(TransportError::io("creating", &dir))?;
        Ok(Staging { dir })
    }

    /// The staging directory (`tmp/pull-NAME/`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn path(&self, obj: &ObjectRef) -> PathBuf {
        self.dir
            .join(format!("{}.{}", obj.id.to_hex(), obj.kind.name()))
    }

    /// A verified object from an earlier, interrupted pull.
    pub fn load(&self, obj: &ObjectRef) -> Option<Vec<u8>> {
        let data = fs::read(self.path(obj)).ok()?;
        verify_wire_form(&obj.id, obj.kind, &data).ok()?;
        Some(data)
    }

    pub fn save(&self, obj: &ObjectRef, data: &[u8]) -> Result<(), TransportError> {
        let path = self.path(obj);
        let tmp = self.dir.join(format!(".{}.tmp", obj.id.to_hex()));
        fs::write(&tmp, data)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(TransportError::io("writing", path))
    }

    /// Removes the staging directory: the pull is complete.
    pub fn remove(self) -> Result<(), TransportError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TransportError::io("removing", &self.dir)(e)),
        }
    }
}

/// Writes the walk's new trees, dirmetas and commit, children first,
/// into a transaction for the caller to commit; `None` when there is
/// nothing to commit. A transaction is also made when there are none but
/// files were fetched, or `flush` (files were delivered otherwise): its
/// commit flushes those files' renames.
pub(super) fn write<'r>(
    repo: &'r Repo,
    walked: &Walked,
    flush: bool,
) -> Result<Option<Transaction<'r>>, TransportError> {
    if walked.need.is_empty() && walked.files.is_empty() && !flush {
        return Ok(None);
    }
    let txn = Transaction::begin(repo)?;
    let metas = walked
        .closure
        .children_first()
        .into_iter()
        .filter(|(_, kind)| *kind != ObjectKind::File)
        .map(|(id, kind)| ObjectRef { id, kind })
        .chain(std::iter::once(walked.commit))
        .filter(|obj| walked.need.contains(obj));
    for obj in metas {
        let data = walked.metas.get(&obj).ok_or(TransportError::NotFetched {
            kind: obj.kind,
            id: obj.id,
        })?;
        txn.write_wire_form(&obj.id, obj.kind, data)?;
    }
    Ok(Some(txn))
}

//! Where a pull's objects come from: an [`ObjectSource`] hands the wire
//! form of each asked-for object to a [`Sink`], which verifies and keeps
//! it. [`HttpSource`] fetches from a remote's URL and mirrors;
//! [`LocalSource`] reads another repository on this machine; [`packs`]
//! plans the Range requests of a static mirror's packs.

mod http;
pub mod packs;

pub use http::{HttpSource, HttpSourceOptions};

use treectl_store::Repo;
use treectl_wire::ObjectRef;

use crate::error::TransportError;
use crate::parallel::in_parallel;

/// Takes one object's wire form: verifies it against its id and keeps it.
/// Called from several threads at once.
pub type Sink<'s> = dyn Fn(ObjectRef, Vec<u8>) -> Result<(), TransportError> + Sync + 's;

/// A place objects can be copied from.
pub trait ObjectSource: Sync {
    /// Hands every object of `objs` to `sink`, in any order; stops at the
    /// first failure (a source's own, or the sink's).
    fn fetch(&self, objs: &[ObjectRef], sink: &Sink) -> Result<(), TransportError>;
}

/// Another repository on this machine, read in its wire form.
pub struct LocalSource<'r> {
    pub repo: &'r Repo,
    /// Objects read at once.
    pub jobs: usize,
}

impl ObjectSource for LocalSource<'_> {
    fn fetch(&self, objs: &[ObjectRef], sink: &Sink) -> Result<(), TransportError> {
        in_parallel(self.jobs, objs, 64, |chunk, stop| {
            for obj in chunk {
                if stop.is_set() {
                    return Err(TransportError::Stopped);
                }
                sink(*obj, self.repo.read_wire_form(&obj.id, obj.kind)?)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use treectl_store::object::{FileHeader, ObjectKind, Tree};
    use treectl_store::store::{verify_wire_form, Transaction};
    use treectl_store::RepoMode;

    #[test]
    fn a_local_repository_is_a_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&dir.path().join("r"), RepoMode::Archive).expect("init");
        let txn = Transaction::begin(&repo).expect("txn");
        let file = txn
            .write_file(&FileHeader::regular(0o644, 0, 0, Vec::new(), 3), b"abc")
            .expect("file");
        let tree = txn.write_tree(&Tree::default()).expect("tree");
        txn.commit(&[]).expect("commit");
        let want = [
            ObjectRef {
                id: file,
                kind: ObjectKind::File,
            },
            ObjectRef {
                id: tree,
                kind: ObjectKind::Tree,
            },
        ];
        let got = Mutex::new(Vec::new());
        let sink = |obj: ObjectRef, data: Vec<u8>| {
            verify_wire_form(&obj.id, obj.kind, &data)?;
            got.lock().expect("lock").push(obj);
            Ok(())
        };
        LocalSource {
            repo: &repo,
            jobs: 2,
        }
        .fetch(&want, &sink)
        .expect("fetch");
        assert_eq!(got.lock().expect("lock").len(), 2);
        let absent = [ObjectRef {
            id: treectl_store::ObjectId::of(b"absent"),
            kind: ObjectKind::Tree,
        }];
        let err = LocalSource {
            repo: &repo,
            jobs: 1,
        }
        .fetch(&absent, &sink)
        .expect_err("absent");
        assert_eq!(err.class(), crate::error::ErrorClass::NotFound);
    }
}

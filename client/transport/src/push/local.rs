//! A repository on this machine as a publish target: objects are copied
//! in one transaction, and publishes and reverts run the release crate's
//! [`Publisher`] in place (signing with the given key).

use treectl_release::publish::{self, HistoryEntry, Publisher};
use treectl_release::sign::{PublicKey, SecretKey};
use treectl_release::summary::DEFAULT_VALIDITY_SECS;
use treectl_store::object::Commit;
use treectl_store::refs::RefName;
use treectl_store::store::Transaction;
use treectl_store::{ObjectId, Repo};
use treectl_wire::{ObjectRef, PublishResponse, RotateResponse};

use super::{PublishOptions, PublishTarget, RolloutAction, Uploaded};
use crate::error::TransportError;

/// A local repository, the keys that sign what is published there, and
/// who the history says did it.
pub struct LocalTarget {
    repo: Repo,
    keys: Vec<SecretKey>,
    who: String,
}

impl LocalTarget {
    pub fn new(repo: Repo, keys: Vec<SecretKey>, who: String) -> LocalTarget {
        LocalTarget { repo, keys, who }
    }

    fn publisher(&self) -> Publisher<'_> {
        Publisher {
            repo: &self.repo,
            keys: &self.keys,
            validity_secs: DEFAULT_VALIDITY_SECS,
        }
    }
}

impl PublishTarget for LocalTarget {
    fn missing(&self, objects: &[ObjectRef]) -> Result<Vec<ObjectRef>, TransportError> {
        Ok(objects
            .iter()
            .filter(|o| !self.repo.has_object(&o.id, o.kind))
            .copied()
            .collect())
    }

    fn upload(&self, src: &Repo, objects: &[ObjectRef]) -> Result<Uploaded, TransportError> {
        let txn = Transaction::begin(&self.repo)?;
        let mut up = Uploaded::default();
        for o in objects {
            let data = src.read_wire_form(&o.id, o.kind)?;
            up.bytes += data.len() as u64;
            if txn.write_wire_form(&o.id, o.kind, &data)? {
                up.stored += 1;
            }
        }
        txn.commit(&[])?;
        Ok(up)
    }

    fn publish(
        &self,
        name: &RefName,
        commit: &ObjectId,
        opts: &PublishOptions,
    ) -> Result<PublishResponse, TransportError> {
        let out = self.publisher().publish(name, commit, &self.who, opts)?;
        Ok(PublishResponse::from(&out.entry))
    }

    fn check_publish(
        &self,
        name: &RefName,
        commit: &ObjectId,
        opts: &PublishOptions,
    ) -> Result<(), TransportError> {
        Ok(self.publisher().check_publishable(name, commit, opts)?)
    }

    fn rollout(
        &self,
        name: &RefName,
        action: RolloutAction,
    ) -> Result<PublishResponse, TransportError> {
        let out = self.publisher().rollout(name, action, &self.who)?;
        Ok(PublishResponse::from(&out.entry))
    }

    fn promote(
        &self,
        from: &RefName,
        to: &RefName,
        force: bool,
    ) -> Result<PublishResponse, TransportError> {
        let out = self.publisher().promote(from, to, &self.who, force)?;
        Ok(PublishResponse::from(&out.entry))
    }

    fn read_commit(&self, id: &ObjectId) -> Result<Commit, TransportError> {
        Ok(self.repo.read_commit(id)?)
    }

    fn hold(&self, name: &RefName, reason: &str) -> Result<HistoryEntry, TransportError> {
        Ok(self.publisher().hold(name, reason, &self.who)?)
    }

    fn rotate_keys(
        &self,
        keys: &[PublicKey],
        threshold: u32,
    ) -> Result<RotateResponse, TransportError> {
        let out = self.publisher().rotate(keys, threshold)?;
        Ok(RotateResponse {
            version: out.keys.version,
            threshold: out.keys.threshold,
            keys: out.keys.keys,
            key_ids: out.key_ids,
            serial: out.index_serial,
        })
    }

    fn read_public_file(&self, name: &str) -> Result<Option<Vec<u8>>, TransportError> {
        let path = self.repo.path().join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(treectl_store::Error::io("reading", &path)(e).into()),
        }
    }

    fn release(&self, name: &RefName) -> Result<HistoryEntry, TransportError> {
        Ok(self.publisher().release(name, &self.who)?)
    }

    fn revert(
        &self,
        name: &RefName,
        to: Option<&str>,
        reason: &str,
    ) -> Result<PublishResponse, TransportError> {
        let out = self.publisher().revert(name, to, reason, &self.who)?;
        Ok(PublishResponse::from(&out.entry))
    }

    fn history(&self, name: &RefName) -> Result<Vec<HistoryEntry>, TransportError> {
        Ok(publish::read_history(&self.repo)?
            .into_iter()
            .filter(|e| e.ref_name == name.as_str())
            .collect())
    }
}

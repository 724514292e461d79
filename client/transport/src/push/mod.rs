//! Pushing, publishing and reverting: where a release goes. A
//! [`PublishTarget`] is a treectl server ([`HttpTarget`], its `/v1/` API)
//! or a repository on this machine ([`LocalTarget`], published in place by
//! [`treectl_release::publish::Publisher`]); [`open_target`] picks one
//! from what the user typed. A push is [`PushPlan::new`] (the commit's
//! closure, which must be complete locally) then [`PushPlan::send`] (ask
//! which objects the target lacks, upload them children first, publish).

mod http;
mod local;

pub use http::HttpTarget;
pub use local::LocalTarget;

use std::path::{Path, PathBuf};

use treectl_release::publish::{self, HistoryEntry};
pub use treectl_release::publish::{PublishOptions, RolloutAction};
use treectl_release::sign::{PublicKey, SecretKey};
use treectl_store::object::Commit;
use treectl_store::refs::{self, RefName};
use treectl_store::{ObjectId, Repo};
use treectl_wire::{ObjectRef, PublishResponse, RotateResponse};

use crate::error::TransportError;
use crate::http::{is_url, HttpRemote};
use crate::token::read_token;

/// Where pushes, publishes and reverts go.
pub trait PublishTarget {
    /// The objects of `objects` the target lacks.
    fn missing(&self, objects: &[ObjectRef]) -> Result<Vec<ObjectRef>, TransportError>;
    /// Sends `objects` (in order: children first) from `src`.
    fn upload(&self, src: &Repo, objects: &[ObjectRef]) -> Result<Uploaded, TransportError>;
    /// Publishes `commit` (already there) as `name` ([`PublishOptions`]:
    /// force past a rejection, a phased rollout, a barrier release).
    fn publish(
        &self,
        name: &RefName,
        commit: &ObjectId,
        opts: &PublishOptions,
    ) -> Result<PublishResponse, TransportError>;
    /// Fails as [`PublishTarget::publish`] would for a hold or a
    /// rejection, before anything is uploaded.
    fn check_publish(
        &self,
        name: &RefName,
        commit: &ObjectId,
        opts: &PublishOptions,
    ) -> Result<(), TransportError>;
    /// Changes the phased rollout of `name`'s head.
    fn rollout(
        &self,
        name: &RefName,
        action: RolloutAction,
    ) -> Result<PublishResponse, TransportError>;
    /// Reverts `name` to `to` (default: the head published before).
    fn revert(
        &self,
        name: &RefName,
        to: Option<&str>,
        reason: &str,
    ) -> Result<PublishResponse, TransportError>;
    /// `name`'s publishes and reverts, oldest first.
    fn history(&self, name: &RefName) -> Result<Vec<HistoryEntry>, TransportError>;
    /// Publishes on `to` exactly the commit `from` has now.
    fn promote(
        &self,
        from: &RefName,
        to: &RefName,
        force: bool,
    ) -> Result<PublishResponse, TransportError>;
    /// A commit object of the target, checked against its id (no file
    /// content is read).
    fn read_commit(&self, id: &ObjectId) -> Result<Commit, TransportError>;
    /// Pauses every publish of `name` until [`PublishTarget::release`].
    fn hold(&self, name: &RefName, reason: &str) -> Result<HistoryEntry, TransportError>;
    /// Lifts the hold on `name`.
    fn release(&self, name: &RefName) -> Result<HistoryEntry, TransportError>;
    /// Rotates the index's signing keys to a key set of `keys` with
    /// `threshold`, signed by the target's keys of the current and the
    /// new set.
    fn rotate_keys(
        &self,
        keys: &[PublicKey],
        threshold: u32,
    ) -> Result<RotateResponse, TransportError>;
    /// A public file of the repository (`summary.json`, `keys.json`), or
    /// `None` when it has none.
    fn read_public_file(&self, name: &str) -> Result<Option<Vec<u8>>, TransportError>;
}

/// What an upload did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uploaded {
    /// Objects the target stored (it may have had some already).
    pub stored: usize,
    /// Bytes sent (or copied).
    pub bytes: u64,
}

/// Opens `target`: a server by `http(s)://` URL (with the token from
/// `token_file` or `$TREECTL_TOKEN`), else a repository path (whose index
/// and commits `sign_key` signs).
pub fn open_target(
    target: &str,
    token_file: Option<&Path>,
    sign_keys: &[PathBuf],
) -> Result<Box<dyn PublishTarget>, TransportError> {
    if is_url(target) {
        if !sign_keys.is_empty() {
            return Err(TransportError::Usage(
                "--sign-key is for local repository targets; a server signs with its own key (treectl serve --sign-key)".into(),
            ));
        }
        let remote = HttpRemote::new(target, read_token(token_file)?)?;
        return Ok(Box::new(HttpTarget::new(remote)));
    }
    let repo = Repo::open(Path::new(target)).map_err(|e| {
        TransportError::from(e).context(format!("opening the target repository {target}"))
    })?;
    let keys = sign_keys
        .iter()
        .map(|p| SecretKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let who = std::env::var("USER").unwrap_or_else(|_| "local".into());
    Ok(Box::new(LocalTarget::new(repo, keys, who)))
}

/// A commit to push: its id and its closure in upload order.
#[derive(Clone, Debug)]
pub struct PushPlan {
    pub name: RefName,
    pub commit: ObjectId,
    /// Every object the commit needs, children first, the commit last.
    pub objects: Vec<ObjectRef>,
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushOutcome {
    pub published: PublishResponse,
    /// Objects in the commit's closure.
    pub objects: usize,
    /// Objects the target lacked and was sent.
    pub uploaded: usize,
    pub stored: usize,
    pub bytes: u64,
}

impl PushPlan {
    /// The closure of `name`'s commit in `src`, which must be complete.
    pub fn new(src: &Repo, name: &RefName) -> Result<PushPlan, TransportError> {
        let commit = refs::read_ref(src, name)?;
        let closure = publish::commit_closure(src, &commit)?;
        if let Some(&(first, first_kind)) = closure.missing.first() {
            return Err(TransportError::Incomplete {
                commit,
                ref_name: name.to_string(),
                repo: src.path().to_owned(),
                first,
                first_kind,
                more: closure.missing.len() - 1,
            });
        }
        let objects = closure
            .objects
            .iter()
            .map(|&(id, kind)| ObjectRef { id, kind })
            .collect();
        Ok(PushPlan {
            name: name.clone(),
            commit,
            objects,
        })
    }

    /// Uploads what `target` lacks, then publishes the commit.
    pub fn send(
        &self,
        src: &Repo,
        target: &dyn PublishTarget,
        opts: &PublishOptions,
    ) -> Result<PushOutcome, TransportError> {
        // A held ref or a rejected commit: refused before any upload.
        target.check_publish(&self.name, &self.commit, opts)?;
        let missing = target.missing(&self.objects)?;
        let up = target.upload(src, &missing)?;
        let published = target.publish(&self.name, &self.commit, opts)?;
        Ok(PushOutcome {
            published,
            objects: self.objects.len(),
            uploaded: missing.len(),
            stored: up.stored,
            bytes: up.bytes,
        })
    }
}

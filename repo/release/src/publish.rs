//! Publishing refs: the signed ref index, commits' detached signatures, the
//! append-only history, and reverts (which are new releases).
//!
//! A publish, under the repository's publish lock (`state/publish.lock`):
//!
//! 1. checks that every object the commit needs is present (its closure);
//! 2. signs the commit for the ref (`signatures/<id>.json`);
//! 3. writes the intent to `state/publish-pending.json`, and the packs
//!    of the commit's objects no listed pack holds (`packs/`, for static
//!    mirrors);
//! 4. makes static deltas to the commit from the ref's last releases
//!    ([`make_deltas`]) and writes the new `summary.json`, which lists
//!    them and the packs, atomically (**the commit point**);
//! 5. rewrites `state/history.jsonl` atomically with the new entry;
//! 6. moves `refs/heads/REF`;
//! 7. removes the intent.
//!
//! [`recover`] (run before every publish and when a server starts) finishes
//! an interrupted publish whose index was written, or forgets one whose
//! index was not, so after a crash the index, the history and the ref are
//! all before or all after the operation.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::keyset::{self, KeySet, KeySetError};
use crate::packs::{self, PackError};
use crate::sign::{self, PublicKey, SecretKey, SignError};
use crate::summary::{
    self, Barrier, DeltaEntry, IndexError, RefEntry, RefIndex, Rejection, Rollout, SignedIndex,
};
use treectl_store::delta::{self, DeltaOptions};
use treectl_store::error::Error;
use treectl_store::hash::ObjectId;
use treectl_store::object::{Commit, ObjectKind};
use treectl_store::refs::{self, RefName};
use treectl_store::store::{
    lock_file, write_atomic, LockKind, RefUpdate, Repo, RepoLock, Transaction, STATE_DIR,
};
use treectl_store::{closure, failpoint};

/// The history log, relative to the repository.
pub const HISTORY_FILE: &str = "state/history.jsonl";
/// An interrupted publish's intent, relative to the repository.
pub const PENDING_FILE: &str = "state/publish-pending.json";
/// The lock that serialises publishes and reverts across processes.
pub const PUBLISH_LOCK_FILE: &str = "state/publish.lock";
/// Metadata keys a revert commit sets about itself; every other key is
/// copied from the commit it reverts to.
pub const REVERT_KEYS: &[&str] = &["reverts-to", "supersedes", "revert-reason", "revert-by"];

/// How many of a ref's last releases a publish makes static deltas from,
/// unless the repository's config says otherwise (`[deltas]`
/// `from-releases = N`; 0 makes none).
pub const DEFAULT_DELTA_RELEASES: usize = 3;

/// The number of releases to make deltas from, from the config.
pub fn delta_releases(repo: &Repo) -> usize {
    repo.config()
        .rest
        .get("deltas")
        .and_then(|d| d.get("from-releases"))
        .and_then(|n| n.as_integer())
        .map_or(DEFAULT_DELTA_RELEASES, |n| n.max(0) as usize)
}

/// Makes (or finds, deltas being immutable) the static deltas to
/// `commit` from the last `n` other commits `ref_name` published, in
/// parallel. A release whose objects are gone (pruned) gets none.
pub fn make_deltas(
    repo: &Repo,
    history: &[HistoryEntry],
    ref_name: &RefName,
    commit: &ObjectId,
    n: usize,
) -> Result<Vec<DeltaEntry>, Error> {
    use rayon::prelude::*;
    let mut from: Vec<ObjectId> = Vec::new();
    for h in history.iter().rev() {
        if from.len() == n {
            break;
        }
        if h.ref_name == ref_name.as_str() && h.commit != *commit && !from.contains(&h.commit) {
            from.push(h.commit);
        }
    }
    let made: Vec<Result<Option<DeltaEntry>, Error>> = from
        .par_iter()
        .map(
            |f| match delta::generate(repo, Some(f), commit, &DeltaOptions::default()) {
                Ok(info) => Ok(Some(DeltaEntry {
                    from: *f,
                    to: *commit,
                    size: info.size,
                    sha256: info.sha256,
                })),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
        )
        .collect();
    made.into_iter().filter_map(Result::transpose).collect()
}

/// What can go wrong publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("commit {commit} is incomplete: {missing} object(s) missing, for example {first_kind} {first}; push it first")]
    Incomplete {
        commit: ObjectId,
        missing: usize,
        first: ObjectId,
        first_kind: ObjectKind,
    },
    #[error("ref {name} has never been published here")]
    NotPublished { name: String },
    #[error("ref {name} has no earlier published head to revert to; name one with --to REV")]
    NothingToRevertTo { name: String },
    #[error("ref {name} already points at {commit}; nothing to revert")]
    AlreadyAt { name: String, commit: ObjectId },
    #[error("reading the history log {}: line {line}: {reason}", path.display())]
    History {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{commit} was reverted away from on {name} (serial {serial}): {reason}; publish it anyway with --force")]
    Rejected {
        name: String,
        commit: ObjectId,
        reason: String,
        serial: u64,
    },
    #[error("{name} is on hold since serial {serial} ({who}): {reason}; `treectl release URL {name}` lifts it")]
    Held {
        name: String,
        reason: String,
        who: String,
        serial: u64,
    },
    #[error("{name} is already on hold ({who}): {reason}")]
    AlreadyHeld {
        name: String,
        reason: String,
        who: String,
    },
    #[error("promoting {from} to {to} would move {to} backwards: {to} is at {head}, which already had or descends from {commit}")]
    Backwards {
        from: String,
        to: String,
        commit: ObjectId,
        head: ObjectId,
    },
    #[error("a rollout percentage is 0 to 100, not {percent}")]
    BadPercent { percent: u8 },
    #[error("{name}'s head is not being rolled out (publish it with --rollout PERCENT, or set one with `treectl rollout URL {name} PERCENT`)")]
    NoRollout { name: String },
    #[error("{name} is not on hold")]
    NotHeld { name: String },
    #[error("a hold needs a reason (--reason TEXT)")]
    NoReason,
    #[error("the signing keys given ({held}) are not a threshold ({threshold}) of the repository's key set version {version} ({set}); sign with the keys of the current set")]
    NotInKeySet {
        held: String,
        threshold: u32,
        version: u64,
        set: String,
    },
    #[error("the current index is not signed by {key_id}, the first signing key given: a rotation starts from the key clients trust now")]
    NotCurrentKey { key_id: String },
    #[error("a key rotation needs a signing key (--sign-key) of the current key set")]
    NoSigningKey,
    #[error(transparent)]
    KeySet(#[from] KeySetError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("writing the packs of {commit}: {err}")]
    Packs {
        commit: ObjectId,
        #[source]
        err: PackError,
    },
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Repo(#[from] Error),
}

pub use treectl_wire::{EventKind, HistoryEntry};

/// What a publish or revert did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutcome {
    pub entry: HistoryEntry,
    pub index_serial: u64,
}

/// What a key rotation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateOutcome {
    /// The new key set.
    pub keys: KeySet,
    /// Their key ids, in order.
    pub key_ids: Vec<String>,
    pub index_serial: u64,
}

/// Settings of the publisher: the signing keys and the index's validity.
pub struct Publisher<'a> {
    pub repo: &'a Repo,
    /// The secret keys this publisher holds. Before any key rotation the
    /// first signs; after one, every held key of the current key set signs
    /// (at least the set's threshold of them, else writes are refused).
    pub keys: &'a [SecretKey],
    /// Seconds from writing until the index expires.
    pub validity_secs: i64,
}

/// How to publish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Publish even a commit the ref rejected (lifting the rejection).
    pub force: bool,
    /// Roll the release out to this share of machines (0 to 100) first.
    pub rollout: Option<u8>,
    /// Every machine must deploy this release before any later one.
    pub barrier: bool,
}

/// What `treectl rollout` does to a ref's phased rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutAction {
    /// Set the wave to this share of machines (0 to 100).
    Percent(u8),
    /// No machine starts taking the release.
    Pause,
    Resume,
    /// Every machine takes it: the rollout ends.
    Complete,
}

impl std::str::FromStr for RolloutAction {
    type Err = String;

    /// `PERCENT` (0 to 100, an optional `%`), `pause`, `resume` or
    /// `complete`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pause" => Ok(RolloutAction::Pause),
            "resume" => Ok(RolloutAction::Resume),
            "complete" => Ok(RolloutAction::Complete),
            _ => match s.strip_suffix('%').unwrap_or(s).parse::<u8>() {
                Ok(p) if p <= 100 => Ok(RolloutAction::Percent(p)),
                _ => Err(format!(
                    "{s:?} is not a rollout action: PERCENT (0 to 100), pause, resume or complete"
                )),
            },
        }
    }
}

impl std::fmt::Display for RolloutAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolloutAction::Percent(p) => write!(f, "{p}%"),
            RolloutAction::Pause => f.write_str("pause"),
            RolloutAction::Resume => f.write_str("resume"),
            RolloutAction::Complete => f.write_str("complete"),
        }
    }
}

/// What a publish records about itself besides the commit.
struct Event<'a> {
    kind: EventKind,
    reason: Option<&'a str>,
    reverts_to: Option<ObjectId>,
    from_ref: Option<&'a str>,
    rollout: Option<u8>,
    barrier: bool,
}

impl Event<'_> {
    fn of(kind: EventKind) -> Self {
        Event {
            kind,
            reason: None,
            reverts_to: None,
            from_ref: None,
            rollout: None,
            barrier: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Pending {
    entry: HistoryEntry,
    /// Entries of the same event on other refs (a promote's on its source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    also: Vec<HistoryEntry>,
}

/// Seconds since the epoch.
pub use treectl_store::time::now;

/// The exclusive publish lock, released on drop.
struct PublishLock {
    _lock: RepoLock,
}

impl PublishLock {
    fn acquire(repo: &Repo) -> Result<PublishLock, Error> {
        let state = repo.path().join(STATE_DIR);
        fs::create_dir_all(&state).map_err(Error::io("creating", &state))?;
        let lock = lock_file(&repo.path().join(PUBLISH_LOCK_FILE), LockKind::Exclusive)?;
        Ok(PublishLock { _lock: lock })
    }
}

/// Every object a commit needs (the commit, its root dirmeta, and every
/// tree, dirmeta and file under its root tree), children before the
/// objects that name them and the commit last: the order to upload them in.
/// Objects that are missing locally are returned in `missing`.
pub fn commit_closure(repo: &Repo, commit_id: &ObjectId) -> Result<Closure, Error> {
    let mut closure = Closure::default();
    if !repo.has_object(commit_id, ObjectKind::Commit) {
        closure.missing.push((*commit_id, ObjectKind::Commit));
        return Ok(closure);
    }
    let commit = repo.read_commit(commit_id)?;
    let mut walk = closure::Closure::new();
    walk.add_root(commit.root_tree, commit.root_meta, *commit_id);
    walk.load_with(|id| {
        if repo.has_object(id, ObjectKind::Tree) {
            repo.read_tree(id).map(Some)
        } else {
            Ok(None)
        }
    })?;
    for obj in walk.children_first() {
        if repo.has_object(&obj.0, obj.1) {
            closure.objects.push(obj);
        } else {
            closure.missing.push(obj);
        }
    }
    closure.objects.push((*commit_id, ObjectKind::Commit));
    Ok(closure)
}

/// The objects of a commit, in upload order, and those missing.
#[derive(Debug, Default)]
pub struct Closure {
    pub objects: Vec<(ObjectId, ObjectKind)>,
    pub missing: Vec<(ObjectId, ObjectKind)>,
}

/// Reads the history log (empty when nothing was published).
pub fn read_history(repo: &Repo) -> Result<Vec<HistoryEntry>, PublishError> {
    let path = repo.path().join(HISTORY_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &path)(e).into()),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| PublishError::History {
                path: path.clone(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

fn write_history(repo: &Repo, entries: &[HistoryEntry]) -> Result<(), Error> {
    let mut text = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut text, e).expect("history entry serializes");
        text.push(b'\n');
    }
    write_atomic(&repo.path().join(HISTORY_FILE), &text, repo.fsync())
}

/// The published index (unverified: it is our own), or an empty one.
pub fn current_index(repo: &Repo) -> Result<RefIndex, IndexError> {
    match summary::read_index(repo)? {
        Some(signed) => signed.index_unverified(),
        None => Ok(RefIndex::empty()),
    }
}

/// Finishes or forgets a publish that a crash interrupted.
pub fn recover(repo: &Repo) -> Result<(), PublishError> {
    let _lock = PublishLock::acquire(repo)?;
    recover_locked(repo)
}

fn recover_locked(repo: &Repo) -> Result<(), PublishError> {
    let path = repo.path().join(PENDING_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", &path)(e).into()),
    };
    // A torn intent cannot happen (it is written atomically), but an
    // unreadable one must not block publishing forever: the index decides.
    if let Ok(pending) = serde_json::from_slice::<Pending>(&bytes) {
        let index = current_index(repo)?;
        let entry = pending.entry;
        let landed = index
            .refs
            .get(&entry.ref_name)
            .is_some_and(|r| r.serial == entry.serial && r.commit == entry.commit);
        if landed {
            let mut history = read_history(repo)?;
            let mut changed = false;
            for e in std::iter::once(&entry).chain(&pending.also) {
                if !history
                    .iter()
                    .any(|h| h.serial == e.serial && h.ref_name == e.ref_name)
                {
                    history.push(e.clone());
                    changed = true;
                }
            }
            if changed {
                write_history(repo, &history)?;
            }
            let name = RefName::new(&entry.ref_name)?;
            if refs::try_read_ref(repo, &name)? != Some(entry.commit) {
                let txn = Transaction::begin(repo)?;
                txn.commit(&[RefUpdate {
                    name,
                    target: Some(entry.commit),
                }])?;
            }
        }
    }
    fs::remove_file(&path).map_err(Error::io("removing", &path))?;
    Ok(())
}

/// The hold in force on `ref_name`: its last hold or release event, when
/// that is a hold.
pub fn active_hold<'h>(history: &'h [HistoryEntry], ref_name: &str) -> Option<&'h HistoryEntry> {
    history
        .iter()
        .rev()
        .filter(|h| h.ref_name == ref_name)
        .find(|h| matches!(h.kind, EventKind::Hold | EventKind::Release))
        .filter(|h| h.kind == EventKind::Hold)
}

fn check_percent(p: u8) -> Result<(), PublishError> {
    if p > 100 {
        return Err(PublishError::BadPercent { percent: p });
    }
    Ok(())
}

fn check_not_held(history: &[HistoryEntry], ref_name: &RefName) -> Result<(), PublishError> {
    match active_hold(history, ref_name.as_str()) {
        Some(h) => Err(PublishError::Held {
            name: ref_name.to_string(),
            reason: h.reason.clone().unwrap_or_default(),
            who: h.who.clone(),
            serial: h.serial,
        }),
        None => Ok(()),
    }
}

impl Publisher<'_> {
    /// Publishes `commit` as `ref_name`. Refused while the ref is on hold,
    /// and for a commit the ref rejected (reverted away from) unless
    /// `force`, which lifts the rejection.
    pub fn publish(
        &self,
        ref_name: &RefName,
        commit: &ObjectId,
        who: &str,
        opts: &PublishOptions,
    ) -> Result<PublishOutcome, PublishError> {
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        check_not_held(&read_history(self.repo)?, ref_name)?;
        self.check_not_rejected(ref_name, commit, opts.force)?;
        self.publish_locked(
            ref_name,
            commit,
            who,
            Event {
                rollout: opts.rollout,
                barrier: opts.barrier,
                ..Event::of(EventKind::Publish)
            },
        )
    }

    /// Whether [`Publisher::publish`] would accept `commit` on `ref_name`
    /// as far as holds and rejections go (not whether its objects are
    /// there): what a push asks before uploading anything.
    pub fn check_publishable(
        &self,
        ref_name: &RefName,
        commit: &ObjectId,
        opts: &PublishOptions,
    ) -> Result<(), PublishError> {
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        check_not_held(&read_history(self.repo)?, ref_name)?;
        self.check_not_rejected(ref_name, commit, opts.force)?;
        if let Some(p) = opts.rollout {
            check_percent(p)?;
        }
        self.signers()?;
        Ok(())
    }

    /// Changes the phased rollout of `ref_name`'s head: a new index (with
    /// a higher serial) and a history event; the head does not change.
    pub fn rollout(
        &self,
        ref_name: &RefName,
        action: RolloutAction,
        who: &str,
    ) -> Result<PublishOutcome, PublishError> {
        if let RolloutAction::Percent(p) = action {
            check_percent(p)?;
        }
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        let signers = self.signers()?;
        let mut index = current_index(self.repo)?;
        let mut history = read_history(self.repo)?;
        let entry =
            index
                .refs
                .get_mut(ref_name.as_str())
                .ok_or_else(|| PublishError::NotPublished {
                    name: ref_name.to_string(),
                })?;
        let not_rolling = || PublishError::NoRollout {
            name: ref_name.to_string(),
        };
        entry.rollout = match (action, entry.rollout) {
            (RolloutAction::Percent(percent), r) => Some(Rollout {
                percent,
                paused: r.is_some_and(|r| r.paused),
            }),
            (RolloutAction::Pause, Some(r)) => Some(Rollout { paused: true, ..r }),
            (RolloutAction::Resume, Some(r)) => Some(Rollout { paused: false, ..r }),
            (RolloutAction::Complete, Some(_)) => None,
            (_, None) => return Err(not_rolling()),
        };
        let head = entry.commit;
        let version = entry.version.clone();
        let last_serial = history.last().map_or(0, |h| h.serial);
        let serial = index.serial.max(last_serial) + 1;
        let time = now();
        let event = HistoryEntry {
            serial,
            time,
            ref_name: ref_name.to_string(),
            commit: head,
            kind: EventKind::Rollout,
            previous: None,
            reverts_to: None,
            reason: Some(action.to_string()),
            who: who.to_owned(),
            version,
            from_ref: None,
            to_ref: None,
        };
        index.serial = serial;
        index.generated = time;
        index.expires = time + self.validity_secs;
        // The index is the commit point; a crash before the history is
        // rewritten loses only the event line.
        self.write_signed(&mut index, &signers)?;
        history.push(event.clone());
        write_history(self.repo, &history)?;
        Ok(PublishOutcome {
            entry: event,
            index_serial: serial,
        })
    }

    fn check_not_rejected(
        &self,
        ref_name: &RefName,
        commit: &ObjectId,
        force: bool,
    ) -> Result<(), PublishError> {
        if force {
            return Ok(());
        }
        let index = current_index(self.repo)?;
        match index
            .refs
            .get(ref_name.as_str())
            .and_then(|e| e.rejection(commit))
        {
            Some(r) => Err(PublishError::Rejected {
                name: ref_name.to_string(),
                commit: *commit,
                reason: r.reason.clone(),
                serial: r.serial,
            }),
            None => Ok(()),
        }
    }

    /// Publishes on `to` exactly the commit `from` has now, with a history
    /// entry on both. Refused when `to` would go backwards: when `to`
    /// already published that commit before, or its head descends from it;
    /// and, like a publish, while `to` is on hold or for a commit `to`
    /// rejected (unless `force`).
    pub fn promote(
        &self,
        from: &RefName,
        to: &RefName,
        who: &str,
        force: bool,
    ) -> Result<PublishOutcome, PublishError> {
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        let history = read_history(self.repo)?;
        check_not_held(&history, to)?;
        let index = current_index(self.repo)?;
        let commit = index
            .refs
            .get(from.as_str())
            .ok_or_else(|| PublishError::NotPublished {
                name: from.to_string(),
            })?
            .commit;
        if let Some(head) = index.refs.get(to.as_str()) {
            if head.commit == commit {
                return Err(PublishError::AlreadyAt {
                    name: to.to_string(),
                    commit,
                });
            }
            let earlier = history
                .iter()
                .any(|h| h.ref_name == to.as_str() && h.commit == commit);
            if earlier || self.is_ancestor(&commit, &head.commit)? {
                return Err(PublishError::Backwards {
                    from: from.to_string(),
                    to: to.to_string(),
                    commit,
                    head: head.commit,
                });
            }
        }
        self.check_not_rejected(to, &commit, force)?;
        self.publish_locked(
            to,
            &commit,
            who,
            Event {
                from_ref: Some(from.as_str()),
                ..Event::of(EventKind::Promote)
            },
        )
    }

    /// Whether `ancestor` is among `commit`'s parents, as far as the
    /// repository holds them.
    fn is_ancestor(&self, ancestor: &ObjectId, commit: &ObjectId) -> Result<bool, PublishError> {
        let mut next = Some(*commit);
        let mut steps = 0usize;
        while let Some(id) = next {
            if steps > 100_000 || !self.repo.has_object(&id, ObjectKind::Commit) {
                return Ok(false);
            }
            steps += 1;
            next = self.repo.read_commit(&id)?.parent;
            if next == Some(*ancestor) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Pauses every publish of `ref_name` (reverts still go through) until
    /// [`Publisher::release`]. The ref must have been published; the hold
    /// is an event in the history (its `commit` is the head then), so it
    /// changes neither the index nor the ref.
    pub fn hold(
        &self,
        ref_name: &RefName,
        reason: &str,
        who: &str,
    ) -> Result<HistoryEntry, PublishError> {
        if reason.trim().is_empty() {
            return Err(PublishError::NoReason);
        }
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        let history = read_history(self.repo)?;
        if let Some(h) = active_hold(&history, ref_name.as_str()) {
            return Err(PublishError::AlreadyHeld {
                name: ref_name.to_string(),
                reason: h.reason.clone().unwrap_or_default(),
                who: h.who.clone(),
            });
        }
        self.record_event(history, ref_name, EventKind::Hold, Some(reason), who)
    }

    /// Lifts the hold on `ref_name`.
    pub fn release(&self, ref_name: &RefName, who: &str) -> Result<HistoryEntry, PublishError> {
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        let history = read_history(self.repo)?;
        if active_hold(&history, ref_name.as_str()).is_none() {
            return Err(PublishError::NotHeld {
                name: ref_name.to_string(),
            });
        }
        self.record_event(history, ref_name, EventKind::Release, None, who)
    }

    /// Appends an event that changes neither the index nor the ref.
    fn record_event(
        &self,
        mut history: Vec<HistoryEntry>,
        ref_name: &RefName,
        kind: EventKind,
        reason: Option<&str>,
        who: &str,
    ) -> Result<HistoryEntry, PublishError> {
        let index = current_index(self.repo)?;
        let head = index
            .refs
            .get(ref_name.as_str())
            .ok_or_else(|| PublishError::NotPublished {
                name: ref_name.to_string(),
            })?;
        let last_serial = history.last().map_or(0, |h| h.serial);
        let entry = HistoryEntry {
            serial: index.serial.max(last_serial) + 1,
            time: now(),
            ref_name: ref_name.to_string(),
            commit: head.commit,
            kind,
            previous: None,
            reverts_to: None,
            reason: reason.map(str::to_owned),
            who: who.to_owned(),
            version: head.version.clone(),
            from_ref: None,
            to_ref: None,
        };
        history.push(entry.clone());
        write_history(self.repo, &history)?;
        Ok(entry)
    }

    /// Reverts `ref_name`: a new commit whose tree is `to`'s (default: the
    /// head published before the current one), whose parent is the current
    /// head, published with a higher serial.
    pub fn revert(
        &self,
        ref_name: &RefName,
        to: Option<&str>,
        reason: &str,
        who: &str,
    ) -> Result<PublishOutcome, PublishError> {
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        let index = current_index(self.repo)?;
        let current = index
            .refs
            .get(ref_name.as_str())
            .ok_or_else(|| PublishError::NotPublished {
                name: ref_name.to_string(),
            })?
            .commit;
        let target = match to {
            Some(rev) => refs::rev_parse(self.repo, rev)?,
            None => {
                let history = read_history(self.repo)?;
                let mine: Vec<&HistoryEntry> = history
                    .iter()
                    .filter(|h| h.ref_name == ref_name.as_str())
                    .collect();
                match mine.len().checked_sub(2).map(|i| mine[i]) {
                    Some(h) => h.commit,
                    None => {
                        return Err(PublishError::NothingToRevertTo {
                            name: ref_name.to_string(),
                        })
                    }
                }
            }
        };
        if target == current {
            return Err(PublishError::AlreadyAt {
                name: ref_name.to_string(),
                commit: current,
            });
        }
        let target_commit = self.repo.read_commit(&target)?;
        // The revert ships the target's tree, so it carries everything the
        // target recorded about that tree (components, lockfile digest,
        // version); only the revert keys below are its own.
        let mut metadata = target_commit.metadata.clone();
        for key in REVERT_KEYS {
            metadata.remove(*key);
        }
        metadata.insert("reverts-to".to_owned(), target.to_hex());
        metadata.insert("supersedes".to_owned(), current.to_hex());
        metadata.insert("revert-reason".to_owned(), reason.to_owned());
        metadata.insert("revert-by".to_owned(), who.to_owned());
        let revert = Commit {
            parent: Some(current),
            root_tree: target_commit.root_tree,
            root_meta: target_commit.root_meta,
            timestamp: now(),
            subject: format!("Revert {ref_name} to {}", target.short()),
            body: reason.to_owned(),
            metadata,
        };
        // The commit object is durable before anything names it.
        let txn = Transaction::begin(self.repo)?;
        let id = txn.write_commit(&revert)?;
        txn.commit(&[])?;
        self.publish_locked(
            ref_name,
            &id,
            who,
            Event {
                reason: Some(reason),
                reverts_to: Some(target),
                ..Event::of(EventKind::Revert)
            },
        )
    }

    fn publish_locked(
        &self,
        ref_name: &RefName,
        commit_id: &ObjectId,
        who: &str,
        event: Event<'_>,
    ) -> Result<PublishOutcome, PublishError> {
        let Event {
            kind,
            reason,
            reverts_to,
            from_ref,
            rollout,
            barrier,
        } = event;
        if let Some(p) = rollout {
            check_percent(p)?;
        }
        let repo = self.repo;
        // Held until the ref moves: prune cannot delete what we check.
        let txn = Transaction::begin(repo)?;
        let closure = commit_closure(repo, commit_id)?;
        if let Some(&(first, first_kind)) = closure.missing.first() {
            return Err(PublishError::Incomplete {
                commit: *commit_id,
                missing: closure.missing.len(),
                first,
                first_kind,
            });
        }
        let commit = repo.read_commit(commit_id)?;
        let signers = self.signers()?;
        let mut index = current_index(repo)?;
        let mut history = read_history(repo)?;
        let last_serial = history.last().map_or(0, |h| h.serial);
        let serial = index.serial.max(last_serial) + 1;
        let time = now();
        let old_entry = index.refs.get(ref_name.as_str());
        let previous = old_entry.map(|r| r.commit);
        // Rejections carry over; a revert rejects the head it replaces and
        // a (forced) publish of a rejected commit lifts its rejection.
        let mut rejected = old_entry.map(|r| r.rejected.clone()).unwrap_or_default();
        rejected.retain(|r| r.commit != *commit_id);
        if let (EventKind::Revert, Some(prev)) = (kind, previous) {
            rejected.retain(|r| r.commit != prev);
            rejected.push(Rejection {
                commit: prev,
                reason: reason.unwrap_or_default().to_owned(),
                serial,
            });
        }
        let entry = HistoryEntry {
            serial,
            time,
            ref_name: ref_name.to_string(),
            commit: *commit_id,
            kind,
            previous,
            reverts_to,
            reason: reason.map(str::to_owned),
            who: who.to_owned(),
            version: commit.version().map(str::to_owned),
            from_ref: from_ref.map(str::to_owned),
            to_ref: None,
        };
        for key in &signers.1 {
            sign::add_commit_signature(repo, commit_id, ref_name, key)?;
        }
        let also: Vec<HistoryEntry> = match (kind, from_ref) {
            (EventKind::Promote, Some(from)) => vec![HistoryEntry {
                ref_name: from.to_owned(),
                previous: None,
                from_ref: None,
                to_ref: Some(ref_name.to_string()),
                ..entry.clone()
            }],
            _ => Vec::new(),
        };
        let pending = serde_json::to_vec(&Pending {
            entry: entry.clone(),
            also: also.clone(),
        })
        .expect("pending serializes");
        write_atomic(&repo.path().join(PENDING_FILE), &pending, repo.fsync())?;
        failpoint::hit("publish-before-index");
        let mut barriers = index
            .refs
            .get(ref_name.as_str())
            .map(|r| r.barriers.clone())
            .unwrap_or_default();
        if barrier {
            barriers.push(Barrier {
                commit: *commit_id,
                serial,
            });
        }
        // Before the commit point: the index names only packs on disk.
        index.packs = packs::pack_release(repo, commit_id, &index.packs, packs::PACK_TARGET_BYTES)
            .map_err(|err| PublishError::Packs {
                commit: *commit_id,
                err,
            })?;
        let deltas = make_deltas(repo, &history, ref_name, commit_id, delta_releases(repo))?;
        index.serial = serial;
        index.generated = time;
        index.expires = time + self.validity_secs;
        index.refs.insert(
            ref_name.to_string(),
            RefEntry {
                commit: *commit_id,
                serial,
                timestamp: commit.timestamp,
                version: commit.version().map(str::to_owned),
                published: time,
                rejected,
                rollout: rollout.map(|percent| Rollout {
                    percent,
                    paused: false,
                }),
                barriers,
            },
        );
        // Deltas to a head: those to a commit no ref names any more go.
        let heads: std::collections::HashSet<ObjectId> =
            index.refs.values().map(|r| r.commit).collect();
        index.deltas.retain(|d| {
            heads.contains(&d.to) && !deltas.iter().any(|n| n.from == d.from && n.to == d.to)
        });
        index.deltas.extend(deltas);
        self.write_signed(&mut index, &signers)?;
        failpoint::hit("publish-after-index");
        // Leftovers of an interrupted publish; nothing listed goes.
        packs::remove_unlisted(repo, &index.packs)?;
        history.push(entry.clone());
        history.extend(also);
        write_history(repo, &history)?;
        failpoint::hit("publish-after-history");
        txn.commit(&[RefUpdate {
            name: ref_name.clone(),
            target: Some(*commit_id),
        }])?;
        let pending_path = repo.path().join(PENDING_FILE);
        fs::remove_file(&pending_path).map_err(Error::io("removing", &pending_path))?;
        Ok(PublishOutcome {
            entry,
            index_serial: serial,
        })
    }

    /// Re-signs the index with a new serial and expiry when it expires in
    /// less than `min_remaining_secs` (so a live server's index never goes
    /// stale while a frozen mirror's does). Returns whether it did.
    pub fn refresh(&self, min_remaining_secs: i64) -> Result<bool, PublishError> {
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        let Some(signed) = summary::read_index(self.repo)? else {
            return Ok(false);
        };
        let signers = self.signers()?;
        let mut index = signed.index_unverified()?;
        let time = now();
        if index.expires - time >= min_remaining_secs {
            return Ok(false);
        }
        let last_serial = read_history(self.repo)?.last().map_or(0, |h| h.serial);
        index.serial = index.serial.max(last_serial) + 1;
        index.generated = time;
        index.expires = time + self.validity_secs;
        self.write_signed(&mut index, &signers)?;
        Ok(true)
    }

    /// The current key set (none before the first rotation) and the held
    /// keys that sign with it; refuses when they are below its threshold.
    fn signers(&self) -> Result<(Option<KeySet>, Vec<&SecretKey>), PublishError> {
        let Some(set) = keyset::read_chain(self.repo)?
            .map(|c| c.current())
            .transpose()?
            .flatten()
        else {
            return Ok((None, self.keys.first().into_iter().collect()));
        };
        let held = set.held(self.keys);
        if held.len() < set.threshold as usize {
            return Err(PublishError::NotInKeySet {
                held: if self.keys.is_empty() {
                    "none".to_owned()
                } else {
                    self.keys
                        .iter()
                        .map(|k| k.public().key_id())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                threshold: set.threshold,
                version: set.version,
                set: set.key_ids().join(", "),
            });
        }
        Ok((Some(set), held))
    }

    /// Names the key set in `index`, sets its format, signs and writes it.
    fn write_signed(
        &self,
        index: &mut RefIndex,
        (set, signers): &(Option<KeySet>, Vec<&SecretKey>),
    ) -> Result<(), PublishError> {
        index.keys = set.clone();
        index.format = index.required_format();
        summary::write_index(self.repo, &SignedIndex::sign_with(index, signers))?;
        Ok(())
    }

    /// The repository's key sets, oldest first (empty before the first
    /// rotation).
    pub fn key_sets(repo: &Repo) -> Result<Vec<KeySet>, PublishError> {
        Ok(match keyset::read_chain(repo)? {
            Some(chain) => chain.sets_unverified()?,
            None => Vec::new(),
        })
    }

    /// Rotates the signing keys: appends a key set of `new` keys with
    /// `threshold` to `keys.json`, signed by a threshold of the current set
    /// and of the new one (the held keys), re-signs every published head
    /// and barrier release with the new keys, and writes an index that
    /// names the new set, signed by it. Before the first rotation the
    /// current set is the first held key, which must have signed the
    /// current index. Nothing changes when a check fails.
    pub fn rotate(&self, new: &[PublicKey], threshold: u32) -> Result<RotateOutcome, PublishError> {
        let _lock = PublishLock::acquire(self.repo)?;
        recover_locked(self.repo)?;
        let first = self.keys.first().ok_or(PublishError::NoSigningKey)?;
        let chain = keyset::read_chain(self.repo)?;
        if chain.is_none() {
            if let Some(signed) = summary::read_index(self.repo)? {
                if signed.verify(&first.public()).is_err() {
                    return Err(PublishError::NotCurrentKey {
                        key_id: first.public().key_id(),
                    });
                }
            }
        } else {
            // Refuses unless the held keys can sign with the current set.
            self.signers()?;
        }
        let chain = keyset::rotate(chain, Some(first), self.keys, new, threshold)?;
        let set = chain.current()?.expect("a rotation adds a set");
        let signers = (Some(set.clone()), set.held(self.keys));
        let mut index = current_index(self.repo)?;
        // Commits stay verifiable by clients that trust only the new set.
        for (name, entry) in &index.refs {
            let name = RefName::new(name)?;
            let commits =
                std::iter::once(entry.commit).chain(entry.barriers.iter().map(|b| b.commit));
            for commit in commits {
                for key in &signers.1 {
                    sign::add_commit_signature(self.repo, &commit, &name, key)?;
                }
            }
        }
        // The chain first: an index naming a set the chain lacks would be
        // refused by every client.
        keyset::write_chain(self.repo, &chain)?;
        let last_serial = read_history(self.repo)?.last().map_or(0, |h| h.serial);
        let time = now();
        index.serial = index.serial.max(last_serial) + 1;
        index.generated = time;
        index.expires = time + self.validity_secs;
        self.write_signed(&mut index, &signers)?;
        Ok(RotateOutcome {
            key_ids: set.key_ids(),
            keys: set,
            index_serial: index.serial,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use treectl_store::commit::{commit_dir, CommitOptions};
    use treectl_store::RepoMode;

    fn commit_tree(repo: &Repo, dir: &std::path::Path, content: &str, version: &str) -> ObjectId {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join("os-release"), content).expect("write");
        let opts = CommitOptions {
            subject: version.into(),
            timestamp: 1_700_000_000,
            metadata: [
                ("version".to_owned(), version.to_owned()),
                (
                    "compose.components".to_owned(),
                    format!(r#"[{{"name":"os","version":"{version}"}}]"#),
                ),
                (
                    "compose.lockfile-sha256".to_owned(),
                    format!("{version:0>64}"),
                ),
            ]
            .into(),
            ..Default::default()
        };
        commit_dir(repo, dir, &RefName::new("build").expect("valid"), &opts)
            .expect("commit")
            .0
    }

    #[test]
    fn a_rotation_hands_signing_to_the_new_keys() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&tmp.path().join("repo"), RepoMode::Archive).expect("init");
        let (a, b) = (SecretKey::from_seed([3; 32]), SecretKey::from_seed([4; 32]));
        let stable = RefName::new("os/stable").expect("valid");
        let v1 = commit_tree(&repo, &tmp.path().join("v1"), "v1", "1");
        let v2 = commit_tree(&repo, &tmp.path().join("v2"), "v2", "2");
        let with = |keys| Publisher {
            repo: &repo,
            keys,
            validity_secs: 100,
        };
        with(std::slice::from_ref(&a))
            .publish(&stable, &v1, "alice", &PublishOptions::default())
            .expect("v1");
        // Without the new key's secret the rotation is refused and nothing
        // is written.
        assert!(matches!(
            with(std::slice::from_ref(&a)).rotate(&[b.public()], 1),
            Err(PublishError::KeySet(KeySetError::BelowThreshold {
                version: 2,
                ..
            }))
        ));
        assert!(keyset::read_chain(&repo).expect("read").is_none());
        // B first is not the key that signed the index.
        let both = [SecretKey::from_seed([4; 32]), SecretKey::from_seed([3; 32])];
        assert!(matches!(
            with(&both).rotate(&[b.public()], 1),
            Err(PublishError::NotCurrentKey { .. })
        ));
        let both = [SecretKey::from_seed([3; 32]), SecretKey::from_seed([4; 32])];
        let out = with(&both).rotate(&[b.public()], 1).expect("rotate");
        assert_eq!(out.keys.version, 2);
        assert_eq!(out.index_serial, 2);
        let signed = summary::read_index(&repo).expect("read").expect("index");
        let index = signed.verify_set(&out.keys).expect("signed by the new set");
        assert_eq!(index.format, summary::INDEX_FORMAT_KEYS);
        assert_eq!(index.keys.as_ref(), Some(&out.keys));
        assert!(signed.verify(&a.public()).is_err(), "A no longer signs");
        // The published head is signed by B for its ref.
        sign::read_commit_signatures(&repo, &v1)
            .expect("read")
            .expect("signatures")
            .verify(&stable, &b.public())
            .expect("re-signed by B");
        // A alone may no longer publish; the index stays as it was.
        let before = fs::read(repo.path().join(summary::INDEX_FILE)).expect("index");
        assert!(matches!(
            with(std::slice::from_ref(&a)).publish(
                &stable,
                &v2,
                "alice",
                &PublishOptions::default()
            ),
            Err(PublishError::NotInKeySet { version: 2, .. })
        ));
        assert_eq!(
            fs::read(repo.path().join(summary::INDEX_FILE)).expect("index"),
            before
        );
        let out = with(std::slice::from_ref(&b))
            .publish(&stable, &v2, "alice", &PublishOptions::default())
            .expect("B publishes");
        assert_eq!(out.index_serial, 3);
        assert_eq!(Publisher::key_sets(&repo).expect("sets").len(), 2);
    }

    #[test]
    fn publish_revert_history_and_signatures() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&tmp.path().join("repo"), RepoMode::Archive).expect("init");
        let key = SecretKey::from_seed([3; 32]);
        let p = Publisher {
            repo: &repo,
            keys: std::slice::from_ref(&key),
            validity_secs: 100,
        };
        let stable = RefName::new("os/stable").expect("valid");
        let v1 = commit_tree(&repo, &tmp.path().join("v1"), "v1", "1");
        let v2 = commit_tree(&repo, &tmp.path().join("v2"), "v2", "2");
        assert_eq!(
            p.publish(&stable, &v1, "alice", &PublishOptions::default())
                .expect("v1")
                .index_serial,
            1
        );
        assert_eq!(
            p.publish(&stable, &v2, "alice", &PublishOptions::default())
                .expect("v2")
                .index_serial,
            2
        );
        let out = p
            .revert(&stable, None, "v2 breaks boot", "bob")
            .expect("revert");
        assert_eq!(out.index_serial, 3);
        assert_eq!(out.entry.reverts_to, Some(v1));
        let head = refs::read_ref(&repo, &stable).expect("ref");
        assert_eq!(head, out.entry.commit);
        let reverted = repo.read_commit(&head).expect("commit");
        assert_eq!(
            reverted.root_tree,
            repo.read_commit(&v1).expect("v1").root_tree
        );
        assert_eq!(reverted.parent, Some(v2));
        assert_eq!(reverted.metadata["supersedes"], v2.to_hex());
        // Regression: a revert dropped every metadata key but `version`, so
        // the reverted release showed no components.
        let v1_commit = repo.read_commit(&v1).expect("v1");
        for (key, value) in &v1_commit.metadata {
            assert_eq!(reverted.metadata.get(key), Some(value), "{key} kept");
        }
        assert_eq!(reverted.metadata["reverts-to"], v1.to_hex());
        assert_eq!(reverted.metadata["revert-reason"], "v2 breaks boot");
        assert_eq!(reverted.metadata["revert-by"], "bob");
        assert_eq!(
            reverted.metadata.len(),
            v1_commit.metadata.len() + REVERT_KEYS.len()
        );
        let history = read_history(&repo).expect("history");
        let kinds: Vec<_> = history.iter().map(|h| (h.serial, h.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, EventKind::Publish),
                (2, EventKind::Publish),
                (3, EventKind::Revert)
            ]
        );
        let signed = summary::read_index(&repo).expect("read").expect("present");
        let index = signed.verify(&key.public()).expect("index verifies");
        assert_eq!(index.refs["os/stable"].commit, head);
        for id in [v1, v2, head] {
            sign::read_commit_signatures(&repo, &id)
                .expect("read")
                .expect("signed")
                .verify(&stable, &key.public())
                .expect("commit signature verifies");
        }
        // Reverting to the current head is refused and changes nothing.
        assert!(matches!(
            p.revert(&stable, Some(&head.to_hex()), "again", "bob"),
            Err(PublishError::AlreadyAt { .. })
        ));
        assert_eq!(read_history(&repo).expect("history").len(), 3);
    }

    #[test]
    fn publishes_list_deltas_from_the_last_releases_to_the_head() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&tmp.path().join("repo"), RepoMode::Archive).expect("init");
        let p = Publisher {
            repo: &repo,
            keys: &[],
            validity_secs: 100,
        };
        let stable = RefName::new("os/stable").expect("valid");
        let v: Vec<ObjectId> = (1..=3)
            .map(|i| {
                let c = commit_tree(
                    &repo,
                    &tmp.path().join(format!("v{i}")),
                    &format!("v{i}"),
                    &i.to_string(),
                );
                p.publish(&stable, &c, "ci", &PublishOptions::default())
                    .expect("publish");
                c
            })
            .collect();
        let index = current_index(&repo).expect("index");
        assert_eq!(
            index.format,
            summary::INDEX_FORMAT_V1,
            "deltas need no newer format"
        );
        let mut pairs: Vec<(ObjectId, ObjectId)> =
            index.deltas.iter().map(|d| (d.from, d.to)).collect();
        pairs.sort();
        let mut want = vec![(v[0], v[2]), (v[1], v[2])];
        want.sort();
        // v1 -> v2 left the index with v2 (no ref names it), not the disk.
        assert_eq!(pairs, want);
        assert!(repo
            .path()
            .join(delta::relative_path(Some(&v[0]), &v[1]))
            .exists());
        for d in &index.deltas {
            let path = repo.path().join(delta::relative_path(Some(&d.from), &d.to));
            let info = delta::describe(&repo, &path).expect("describe");
            assert_eq!(
                (info.size, info.sha256.as_str()),
                (d.size, d.sha256.as_str())
            );
        }
        assert_eq!(delta_releases(&repo), DEFAULT_DELTA_RELEASES);
    }

    const FORCE: PublishOptions = PublishOptions {
        force: true,
        rollout: None,
        barrier: false,
    };

    #[test]
    fn a_revert_rejects_the_head_and_a_hold_pauses_publishing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("repo");
        let repo = Repo::init(&path, RepoMode::Archive).expect("init");
        let p = Publisher {
            repo: &repo,
            keys: &[],
            validity_secs: 100,
        };
        let stable = RefName::new("os/stable").expect("valid");
        let v1 = commit_tree(&repo, &tmp.path().join("v1"), "v1", "1");
        let v2 = commit_tree(&repo, &tmp.path().join("v2"), "v2", "2");
        p.publish(&stable, &v1, "ci", &PublishOptions::default())
            .expect("v1");
        p.publish(&stable, &v2, "ci", &PublishOptions::default())
            .expect("v2");
        let revert = p
            .revert(&stable, None, "v2 eats disks", "rel")
            .expect("revert");
        let index = current_index(&repo).expect("index");
        let entry = &index.refs["os/stable"];
        assert_eq!(
            entry.rejected,
            [Rejection {
                commit: v2,
                reason: "v2 eats disks".into(),
                serial: revert.index_serial
            }]
        );
        // Readers of format 1 can ignore `rejected`: the format stays 1.
        assert_eq!(index.format, 1);

        // Publishing v2 again is refused with the reason; nothing changes.
        let err = p
            .publish(&stable, &v2, "ci", &PublishOptions::default())
            .expect_err("rejected");
        assert!(err.to_string().contains("v2 eats disks"), "{err}");
        assert_eq!(current_index(&repo).expect("index"), index);
        assert_eq!(read_history(&repo).expect("history").len(), 3);
        // Another ref may publish it.
        let testing = RefName::new("os/testing").expect("valid");
        p.publish(&testing, &v2, "ci", &PublishOptions::default())
            .expect("other ref");

        // A hold refuses publishes, not reverts; release lifts it.
        assert!(matches!(
            p.hold(&stable, " ", "rel"),
            Err(PublishError::NoReason)
        ));
        let hold = p
            .hold(&stable, "freeze for the launch", "rel")
            .expect("hold");
        assert_eq!(hold.kind, EventKind::Hold);
        assert!(matches!(
            p.hold(&stable, "again", "rel"),
            Err(PublishError::AlreadyHeld { .. })
        ));
        let before = current_index(&repo).expect("index");
        let err = p
            .publish(&stable, &v1, "ci", &PublishOptions::default())
            .expect_err("held");
        assert!(err.to_string().contains("freeze for the launch"), "{err}");
        let err = p
            .publish(&stable, &v2, "ci", &FORCE)
            .expect_err("held, forced");
        assert!(matches!(err, PublishError::Held { .. }), "{err}");
        assert_eq!(current_index(&repo).expect("index"), before);
        p.release(&stable, "rel").expect("release");
        assert!(matches!(
            p.release(&stable, "rel"),
            Err(PublishError::NotHeld { .. })
        ));

        // --force publishes a rejected commit and lifts its rejection.
        let forced = p.publish(&stable, &v2, "ci", &FORCE).expect("forced");
        let index = current_index(&repo).expect("index");
        assert_eq!(index.refs["os/stable"].commit, v2);
        assert!(index.refs["os/stable"].rejected.is_empty());
        let kinds: Vec<_> = read_history(&repo)
            .expect("history")
            .iter()
            .filter(|h| h.ref_name == "os/stable")
            .map(|h| h.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::Publish,
                EventKind::Publish,
                EventKind::Revert,
                EventKind::Hold,
                EventKind::Release,
                EventKind::Publish
            ]
        );
        assert!(forced.index_serial > hold.serial);
    }

    /// Row 17 of docs/security.md: `refresh` re-signs only when less than
    /// the threshold is left, and then writes a new serial and a later
    /// expiry over the same refs, signed by the key.
    #[test]
    fn refresh_re_signs_only_when_less_than_the_threshold_is_left() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&tmp.path().join("repo"), RepoMode::Archive).expect("init");
        let key = SecretKey::from_seed([3; 32]);
        let with = |validity_secs| Publisher {
            repo: &repo,
            keys: std::slice::from_ref(&key),
            validity_secs,
        };
        // Nothing published yet: nothing to re-sign.
        assert!(!with(100).refresh(1000).expect("refresh"));
        let stable = RefName::new("os/stable").expect("valid");
        let v1 = commit_tree(&repo, &tmp.path().join("v1"), "v1", "1");
        with(100)
            .publish(&stable, &v1, "alice", &PublishOptions::default())
            .expect("publish");
        let path = repo.path().join(summary::INDEX_FILE);
        let before = fs::read(&path).expect("index");
        let old = SignedIndex::parse(&before)
            .expect("parse")
            .verify(&key.public())
            .expect("verifies");
        // About 100 s are left: a threshold of 50 is not reached, and the
        // file is not touched.
        assert!(!with(100).refresh(50).expect("refresh"));
        assert_eq!(fs::read(&path).expect("index"), before);
        // A threshold above what is left re-signs.
        assert!(with(1000).refresh(101).expect("refresh"));
        let new = summary::read_index(&repo)
            .expect("read")
            .expect("index")
            .verify(&key.public())
            .expect("the re-signed index verifies");
        assert_eq!(new.serial, old.serial + 1);
        assert!(new.expires > old.expires, "{new:?} after {old:?}");
        assert_eq!(new.refs, old.refs, "the same refs");
        // Freshly re-signed: nothing to do until the threshold again.
        let after = fs::read(&path).expect("index");
        assert!(!with(1000).refresh(101).expect("refresh"));
        assert_eq!(fs::read(&path).expect("index"), after);
    }

    #[test]
    fn incomplete_commit_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&tmp.path().join("repo"), RepoMode::Archive).expect("init");
        let v1 = commit_tree(&repo, &tmp.path().join("v1"), "v1", "1");
        let commit = repo.read_commit(&v1).expect("commit");
        fs::remove_file(repo.object_path(&commit.root_tree, ObjectKind::Tree)).expect("rm");
        let p = Publisher {
            repo: &repo,
            keys: &[],
            validity_secs: 100,
        };
        let stable = RefName::new("os/stable").expect("valid");
        assert!(matches!(
            p.publish(&stable, &v1, "alice", &PublishOptions::default()),
            Err(PublishError::Incomplete { .. })
        ));
        assert!(summary::read_index(&repo).expect("read").is_none());
        assert!(read_history(&repo).expect("history").is_empty());
    }

    #[test]
    fn publishing_writes_packs_of_the_new_objects() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&tmp.path().join("repo"), RepoMode::Archive).expect("init");
        let p = Publisher {
            repo: &repo,
            keys: &[],
            validity_secs: 100,
        };
        let stable = RefName::new("os/stable").expect("valid");
        let v1 = commit_tree(&repo, &tmp.path().join("v1"), "v1", "1");
        let v2 = commit_tree(&repo, &tmp.path().join("v2"), "v2", "2");
        // An interrupted publish's pack, which no index names, and one it
        // was writing.
        fs::create_dir_all(repo.path().join(packs::PACKS_DIR)).expect("mkdir");
        let orphan = repo.path().join("packs/0000.pack");
        fs::write(&orphan, b"left over").expect("write");
        let half = repo.path().join("tmp/pack-1-0");
        fs::write(&half, b"half written").expect("write");
        let read = |pack: &packs::PackRef| {
            let idx = fs::read(repo.path().join(pack.index_path())).expect("idx");
            assert_eq!(ObjectId::of(&idx), pack.index_sha256);
            assert_eq!(idx.len() as u64, pack.index_size);
            let index = packs::PackIndex::decode(&idx).expect("decodes");
            let data = fs::read(repo.path().join(pack.pack_path())).expect("pack");
            assert_eq!(
                (ObjectId::of(&data), data.len() as u64),
                (pack.name, pack.size)
            );
            // Each range is the object's stored bytes, exactly.
            for e in &index.entries {
                let range = &data[e.offset as usize..(e.offset + e.length) as usize];
                assert_eq!(range, repo.read_wire_form(&e.id, e.kind).expect("object"));
            }
            index.entries
        };
        p.publish(&stable, &v1, "alice", &PublishOptions::default())
            .expect("v1");
        let index = current_index(&repo).expect("index");
        assert_eq!(
            index.format,
            summary::INDEX_FORMAT_V1,
            "packs are ignorable"
        );
        assert_eq!(index.packs.len(), 1);
        let first = read(&index.packs[0]);
        // The pull's order: the commit, then metadata, then files.
        let order = packs::pull_order(&repo, &v1).expect("order");
        assert_eq!(first[0].id, v1);
        assert_eq!(
            first.iter().map(|e| (e.id, e.kind)).collect::<Vec<_>>(),
            order
        );
        assert_eq!(
            commit_closure(&repo, &v1).expect("closure").objects.len(),
            order.len()
        );
        assert!(!orphan.exists(), "an unlisted pack file is removed");
        assert!(!half.exists(), "a half-written pack is removed");
        p.publish(&stable, &v2, "alice", &PublishOptions::default())
            .expect("v2");
        let index = current_index(&repo).expect("index");
        assert_eq!(index.packs.len(), 2);
        assert_eq!(read(&index.packs[0]), first, "the first pack is kept as is");
        let second = read(&index.packs[1]);
        let old: std::collections::HashSet<_> = first.iter().map(|e| (e.id, e.kind)).collect();
        assert!(
            second.iter().all(|e| !old.contains(&(e.id, e.kind))),
            "only new objects"
        );
        let want: Vec<_> = packs::pull_order(&repo, &v2)
            .expect("order")
            .into_iter()
            .filter(|o| !old.contains(o))
            .collect();
        assert_eq!(
            second.iter().map(|e| (e.id, e.kind)).collect::<Vec<_>>(),
            want
        );
        // A damaged pack index is dropped from the list and its objects
        // packed again; a small target splits a release into several packs.
        fs::write(repo.path().join(index.packs[1].index_path()), b"junk").expect("damage");
        let again = packs::pack_release(&repo, &v2, &index.packs, 1).expect("repack");
        assert_eq!(again[0], index.packs[0]);
        assert_eq!(
            again.len(),
            1 + want.len(),
            "one object per pack at a 1-byte target"
        );
        let repacked: Vec<_> = again[1..]
            .iter()
            .flat_map(read)
            .map(|e| (e.id, e.kind))
            .collect();
        assert_eq!(repacked, want);
    }
}

//! The repository lock: writers share it, prune and repair take it alone, so
//! prune never deletes an object that a running transaction relies on.

use std::fs::File;
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Held by every transaction; many at once.
    Shared,
    /// Held by prune and fsck --repair; excludes all transactions.
    Exclusive,
}

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

impl RepoLock {
    /// Blocks until the lock is available.
    pub fn acquire(repo_path: &Path, kind: LockKind) -> Result<RepoLock> {
        lock_file(&repo_path.join(super::LOCK_FILE), kind)
    }
}

/// Opens (creating if needed) the lock file at `path` and blocks until it
/// holds a `kind` flock on it; released when the result is dropped.
pub fn lock_file(path: &Path, kind: LockKind) -> Result<RepoLock> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Error::io("opening", path))?;
    let op = match kind {
        LockKind::Shared => FlockOperation::LockShared,
        LockKind::Exclusive => FlockOperation::LockExclusive,
    };
    rustix::fs::flock(&file, op).map_err(|e| Error::io("locking", path)(e.into()))?;
    Ok(RepoLock { _file: file })
}

/// Tries to take an exclusive lock on `file` without waiting; true if taken.
pub(crate) fn try_lock_exclusive(file: &File) -> bool {
    rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive).is_ok()
}

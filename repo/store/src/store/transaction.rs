//! Writing objects and moving refs, all or nothing.
//!
//! Objects are written into a private staging directory under `tmp/`. On
//! [`Transaction::commit`] the staged data is flushed (`syncfs`), the objects
//! are renamed into `objects/` in the order they were written (children
//! before the trees and commits that name them, so no object in the store
//! ever names one that is missing), the renames are flushed, and only then
//! are the refs replaced, each by an atomic rename. A process killed at any
//! point leaves complete objects or none, and refs that name complete commits.
//! The staging directory of a dead process is removed by the next
//! transaction or by prune.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{Gid, Mode, Uid};

use super::lock::{try_lock_exclusive, LockKind, RepoLock};
use super::{extension, read_verified, Repo, MAX_HEADER_LEN, TMP_DIR};
use crate::config::RepoMode;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::fsutil::{self, FIXED_MTIME, META_XATTR};
use crate::hash::ObjectId;
use crate::object::{Commit, DirMeta, FileHeader, FileKind, ObjectKind, Tree};
use crate::refs::{self, RefName};

const STAGING_PREFIX: &str = "staging-";
const STAGING_LOCK: &str = ".lock";
/// zstd level for archive file objects: fast, and most of the gain.
const ZSTD_LEVEL: i32 = 3;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// See [`Transaction::claim_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claim {
    Stored,
    Pending,
    New,
}

/// A ref change made when a transaction commits.
#[derive(Clone, Debug)]
pub struct RefUpdate {
    pub name: RefName,
    /// The new target, or `None` to delete the ref.
    pub target: Option<ObjectId>,
}

/// A set of object writes that land together, followed by ref updates
/// (each ref is replaced atomically on its own).
pub struct Transaction<'r> {
    repo: &'r Repo,
    _lock: RepoLock,
    staging: PathBuf,
    _staging_lock: File,
    /// Objects written to staging, in write order.
    staged: Mutex<Vec<(ObjectId, ObjectKind)>>,
    /// Objects this transaction has written or is writing.
    pending: Mutex<HashSet<(ObjectId, ObjectKind)>>,
    /// The owner a file created in the staging directory gets, so a chown
    /// that would change nothing is skipped.
    new_owner: (u32, u32),
    finished: bool,
}

/// The process umask, read once from `/proc/self/status` (reading it with
/// `umask(2)` would change it for a moment under other threads); `None`
/// when unknown.
fn process_umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Whether a file created with `mode` already has exactly that mode, so
/// no `fchmod` is needed: no special bits (those need the chmod after a
/// chown), writable by its owner (setting a `user.` xattr checks the
/// mode), and nothing the umask removes.
fn created_with_mode(mode: u32) -> bool {
    mode & 0o7000 == 0 && mode & 0o200 != 0 && process_umask().is_some_and(|u| mode & u == 0)
}

impl<'r> Transaction<'r> {
    /// Takes the shared repository lock, removes staging directories left by
    /// dead processes, and creates this transaction's own.
    pub fn begin(repo: &'r Repo) -> Result<Transaction<'r>> {
        let lock = RepoLock::acquire(repo.path(), LockKind::Shared)?;
        let tmp = repo.path().join(TMP_DIR);
        remove_stale_staging(&tmp, false)?;
        // Made under a private name, locked, then renamed: a directory named
        // staging-* always has its lock file, so cleaners never race a creator.
        let stamp = crate::time::now_nanos();
        let unique = format!("{}-{stamp}", std::process::id());
        let making = tmp.join(format!("making-{unique}"));
        fs::create_dir(&making).map_err(Error::io("creating", &making))?;
        let lock_path = making.join(STAGING_LOCK);
        let staging_lock = File::create(&lock_path).map_err(Error::io("creating", &lock_path))?;
        if !try_lock_exclusive(&staging_lock) {
            return Err(Error::io("locking", &lock_path)(io::Error::other(
                "staging lock already held",
            )));
        }
        let staging = tmp.join(format!("{STAGING_PREFIX}{unique}"));
        fs::rename(&making, &staging).map_err(Error::io("creating", &staging))?;
        let new_owner = {
            use std::os::unix::fs::MetadataExt;
            let dir = fs::metadata(&staging).map_err(Error::io("reading", &staging))?;
            let gid = if dir.mode() & 0o2000 != 0 {
                dir.gid()
            } else {
                rustix::process::getegid().as_raw()
            };
            (rustix::process::geteuid().as_raw(), gid)
        };
        Ok(Transaction {
            repo,
            _lock: lock,
            staging,
            _staging_lock: staging_lock,
            staged: Mutex::new(Vec::new()),
            pending: Mutex::new(HashSet::new()),
            new_owner,
            finished: false,
        })
    }

    pub fn repo(&self) -> &'r Repo {
        self.repo
    }

    /// Returns true if the object needs writing: not in the store and not
    /// already written by this transaction. Marks it as being written.
    pub(super) fn claim(&self, id: ObjectId, kind: ObjectKind) -> bool {
        self.claim_status(id, kind) == Claim::New
    }

    /// Whether the object is stored, being written by this transaction,
    /// or newly claimed (then marked as being written).
    pub(super) fn claim_status(&self, id: ObjectId, kind: ObjectKind) -> Claim {
        if self.repo.has_object(&id, kind) {
            return Claim::Stored;
        }
        if self
            .pending
            .lock()
            .expect("pending set poisoned")
            .insert((id, kind))
        {
            Claim::New
        } else {
            Claim::Pending
        }
    }

    fn staged_path(&self, id: &ObjectId, kind: ObjectKind) -> PathBuf {
        self.staging.join(format!(
            "{}.{}",
            id.to_hex(),
            extension(kind, self.repo.mode())
        ))
    }

    /// Releases a claim on an object that was not staged after all.
    pub(super) fn unclaim(&self, id: ObjectId, kind: ObjectKind) {
        self.pending
            .lock()
            .expect("pending set poisoned")
            .remove(&(id, kind));
    }

    /// Creates a staged file with `mode`; returns whether it still needs an
    /// `fchmod` to get exactly that mode.
    fn create_staged(&self, path: &Path, mode: u32) -> Result<(File, bool)> {
        let exact = created_with_mode(mode);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exact { mode } else { 0o600 })
            .open(path)
            .map_err(Error::io("creating", path))?;
        Ok((file, !exact))
    }

    /// Stores a file object (idempotent) and returns its id. `content` must be
    /// `header.size` bytes (empty for symlinks).
    pub fn write_file(&self, header: &FileHeader, content: &[u8]) -> Result<ObjectId> {
        debug_assert_eq!(header.size, content.len() as u64);
        let id = header.id_with_content(content);
        self.write_file_with_id(id, header, content)?;
        Ok(id)
    }

    /// Stores a file object whose id the caller has already computed.
    pub(crate) fn write_file_with_id(
        &self,
        id: ObjectId,
        header: &FileHeader,
        content: &[u8],
    ) -> Result<()> {
        if !self.claim(id, ObjectKind::File) {
            return Ok(());
        }
        self.write_claimed_file(id, header, content)
    }

    /// Stores a file object this transaction has claimed.
    pub(super) fn write_claimed_file(
        &self,
        id: ObjectId,
        header: &FileHeader,
        content: &[u8],
    ) -> Result<()> {
        let path = self.staged_path(&id, ObjectKind::File);
        let encoded = header.encode();
        if encoded.len() > MAX_HEADER_LEN {
            return Err(Error::Unsupported {
                path,
                reason: format!("file header of {} bytes exceeds {MAX_HEADER_LEN} (too many or too large xattrs)", encoded.len()),
            });
        }
        if let Some((name, _)) = header
            .xattrs
            .iter()
            .find(|(n, _)| n.starts_with(fsutil::PRIVATE_XATTR_PREFIX))
        {
            return Err(Error::Unsupported {
                path,
                reason: format!(
                    "xattr {} is reserved for the store",
                    String::from_utf8_lossy(name)
                ),
            });
        }
        let perm = match self.repo.mode() {
            RepoMode::BareUser if header.kind() == FileKind::Symlink => 0o644,
            // Real owner, attributes and mode, so a hardlink checkout is
            // exact.
            RepoMode::BareUser if self.repo.privileged() => header.perm(),
            // Without root the store keeps no setuid bits and stays
            // readable by its owner.
            RepoMode::BareUser => (header.perm() & 0o775) | 0o400,
            RepoMode::Archive => 0o644,
        };
        let (mut file, needs_chmod) = self.create_staged(&path, perm)?;
        let mut write = || -> io::Result<()> {
            match self.repo.mode() {
                RepoMode::BareUser => {
                    file.write_all(content)?;
                    rustix::fs::fsetxattr(
                        &file,
                        META_XATTR,
                        &encoded,
                        rustix::fs::XattrFlags::empty(),
                    )?;
                    if header.kind() != FileKind::Symlink && self.repo.privileged() {
                        // chown first: it clears setuid bits and
                        // capabilities. A file created with its owner
                        // already right needs none.
                        if (header.uid, header.gid) != self.new_owner {
                            rustix::fs::fchown(
                                &file,
                                Some(Uid::from_raw(header.uid)),
                                Some(Gid::from_raw(header.gid)),
                            )?;
                        }
                        fsutil::fset_xattrs(&file, &header.xattrs)?;
                    }
                    if needs_chmod {
                        rustix::fs::fchmod(&file, Mode::from_raw_mode(perm))?;
                    }
                    rustix::fs::futimens(&file, &FIXED_MTIME)?;
                }
                RepoMode::Archive => {
                    let mut out = Vec::with_capacity(4 + encoded.len() + content.len() / 2);
                    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
                    out.extend_from_slice(&encoded);
                    if !content.is_empty() {
                        let compressed = compress(content)?;
                        out.extend_from_slice(&compressed);
                    }
                    file.write_all(&out)?;
                    if needs_chmod {
                        rustix::fs::fchmod(&file, Mode::from_raw_mode(perm))?;
                    }
                }
            }
            Ok(())
        };
        write().map_err(Error::io("writing", &path))?;
        self.staged
            .lock()
            .expect("staged list poisoned")
            .push((id, ObjectKind::File));
        failpoint::hit("stage-object");
        Ok(())
    }

    fn write_meta(&self, kind: ObjectKind, data: Vec<u8>) -> Result<ObjectId> {
        let id = ObjectId::of(&data);
        self.stage_bytes(id, kind, &data)?;
        Ok(id)
    }

    /// Stages `data` as the stored form of `(id, kind)` exactly as given;
    /// the caller has verified it. Returns false when the object was
    /// already stored or staged.
    pub(crate) fn stage_bytes(&self, id: ObjectId, kind: ObjectKind, data: &[u8]) -> Result<bool> {
        if !self.claim(id, kind) {
            return Ok(false);
        }
        self.stage_claimed_bytes(id, kind, data)?;
        Ok(true)
    }

    /// Stages the bytes of an object this transaction has claimed.
    pub(super) fn stage_claimed_bytes(
        &self,
        id: ObjectId,
        kind: ObjectKind,
        data: &[u8],
    ) -> Result<()> {
        let path = self.staged_path(&id, kind);
        let (mut file, needs_chmod) = self.create_staged(&path, 0o644)?;
        file.write_all(data)
            .and_then(|()| {
                if needs_chmod {
                    rustix::fs::fchmod(&file, Mode::from_raw_mode(0o644))?;
                }
                Ok(())
            })
            .map_err(Error::io("writing", &path))?;
        self.staged
            .lock()
            .expect("staged list poisoned")
            .push((id, kind));
        failpoint::hit("stage-object");
        Ok(())
    }

    pub fn write_tree(&self, tree: &Tree) -> Result<ObjectId> {
        self.write_meta(ObjectKind::Tree, tree.encode())
    }

    pub fn write_dirmeta(&self, meta: &DirMeta) -> Result<ObjectId> {
        self.write_meta(ObjectKind::DirMeta, meta.encode())
    }

    pub fn write_commit(&self, commit: &Commit) -> Result<ObjectId> {
        self.write_meta(ObjectKind::Commit, commit.encode())
    }

    /// Reads a tree from the store, or from this transaction's staging when
    /// the transaction wrote it (hash-checked either way), so builders can
    /// revisit what they wrote before it is committed.
    pub fn read_tree(&self, id: &ObjectId) -> Result<Tree> {
        let data = self.read_meta(id, ObjectKind::Tree)?;
        Tree::decode(&data).map_err(|err| Error::Decode {
            kind: ObjectKind::Tree,
            id: *id,
            err,
        })
    }

    /// Like [`Transaction::read_tree`], for directory metadata.
    pub fn read_dirmeta(&self, id: &ObjectId) -> Result<DirMeta> {
        let data = self.read_meta(id, ObjectKind::DirMeta)?;
        DirMeta::decode(&data).map_err(|err| Error::Decode {
            kind: ObjectKind::DirMeta,
            id: *id,
            err,
        })
    }

    fn read_meta(&self, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
        match self.repo.read_meta_bytes(id, kind) {
            Err(Error::NotFound { .. }) => read_verified(&self.staged_path(id, kind), id, kind),
            other => other,
        }
    }

    /// Number of objects this transaction has written so far.
    pub fn objects_written(&self) -> usize {
        self.staged.lock().expect("staged list poisoned").len()
    }

    /// The objects this transaction has written so far, in write order.
    pub fn staged_objects(&self) -> Vec<(ObjectId, ObjectKind)> {
        self.staged.lock().expect("staged list poisoned").clone()
    }

    /// Writes what is staged so far to disk without making any of it
    /// visible, so that the commit's own flush has less left to wait for.
    /// Only an early start: durability still comes from the commit.
    pub fn flush_staged(&self) -> Result<()> {
        if !self.repo.fsync() {
            return Ok(());
        }
        let dir = File::open(&self.staging).map_err(Error::io("opening", &self.staging))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::io("syncing", &self.staging)(e.into()))
    }

    /// Makes every staged object durable and visible, then applies the ref
    /// updates.
    pub fn commit(self, refs: &[RefUpdate]) -> Result<()> {
        self.commit_inner(refs, true)
    }

    /// Like [`Transaction::commit`] with no ref updates, but the renames
    /// into `objects/` are not flushed: each object is complete on disk
    /// before it becomes visible, yet a crash may forget some renames
    /// (the objects are then simply missing). The next `commit` of any
    /// transaction in the repository flushes them before its own renames,
    /// so objects stored later that name these never outlive them. For a
    /// series of transactions (a pull's file batches) that ends in a
    /// `commit`.
    pub fn commit_unflushed(self) -> Result<()> {
        self.commit_inner(&[], false)
    }

    fn commit_inner(mut self, refs: &[RefUpdate], flush_renames: bool) -> Result<()> {
        let fsync = self.repo.fsync();
        let staging_dir = File::open(&self.staging).map_err(Error::io("opening", &self.staging))?;
        if fsync {
            rustix::fs::syncfs(&staging_dir)
                .map_err(|e| Error::io("syncing", &self.staging)(e.into()))?;
        }
        let staged = std::mem::take(&mut *self.staged.lock().expect("staged list poisoned"));
        for (id, kind) in &staged {
            let from = self.staged_path(id, *kind);
            let to = self.repo.object_path(id, *kind);
            match rustix::fs::renameat_with(
                rustix::fs::CWD,
                &from,
                rustix::fs::CWD,
                &to,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {}
                // Another transaction stored the same object first; keep its
                // inode (checkouts may already hardlink it).
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(Error::io("storing", &to)(e.into())),
            }
            failpoint::hit("store-object");
        }
        if fsync && flush_renames && !staged.is_empty() {
            rustix::fs::syncfs(&staging_dir)
                .map_err(|e| Error::io("syncing", &self.staging)(e.into()))?;
        }
        failpoint::hit("before-refs");
        refs::apply_updates(self.repo, &self.staging, refs, fsync)?;
        failpoint::hit("after-refs");
        self.finished = true;
        remove_tree(&self.staging)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // An abandoned transaction leaves nothing behind; if this fails the
            // next transaction removes the directory as stale.
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

pub(crate) fn compress(content: &[u8]) -> io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
        }
        c.as_mut().expect("set above").compress(content)
    })
}

/// Whether the process whose id starts `name` (`PID-…`) still runs. When
/// in doubt (an unparsable name, no permission to ask), it is alive.
fn process_alive(name: &str) -> bool {
    let pid = name
        .split('-')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    match pid {
        Some(pid) => !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        ),
        None => true,
    }
}

/// Removes a directory tree that someone else may be removing too.
fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(_) if !path.exists() => Ok(()),
        Err(e) => Err(Error::io("removing", path)(e)),
    }
}

/// Removes staging directories whose owner is gone. With `all`, the caller
/// holds the exclusive repository lock, so every staging directory is stale.
pub(crate) fn remove_stale_staging(tmp: &Path, all: bool) -> Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(tmp) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("reading", tmp)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("reading", tmp))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        // Hold the dead owner's lock while removing, so two cleaners do not
        // both decide the directory is theirs to remove.
        let mut held = None;
        let stale = if name.starts_with(STAGING_PREFIX) {
            all || match File::open(path.join(STAGING_LOCK)) {
                Ok(f) => {
                    let free = try_lock_exclusive(&f);
                    held = Some(f);
                    free
                }
                // Its owner is removing it right now, or died doing so.
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(Error::io("opening", path.join(STAGING_LOCK))(e)),
            }
        } else {
            // A directory still being set up (`making-PID-…`) has no lock
            // yet: it is stale under the exclusive lock, or once the
            // process that made it is gone.
            name.strip_prefix("making-")
                .is_some_and(|rest| all || !process_alive(rest))
        };
        if stale {
            remove_tree(&path)?;
            removed += 1;
        }
        drop(held);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_before_the_commit_makes_nothing_visible() {
        for mode in [RepoMode::BareUser, RepoMode::Archive] {
            let tmp = tempfile::tempdir().unwrap();
            let repo = Repo::init(&tmp.path().join("repo"), mode).unwrap();
            let txn = Transaction::begin(&repo).unwrap();
            let content = b"flushed early\n";
            let header = FileHeader::regular(0o644, 0, 0, Vec::new(), content.len() as u64);
            let id = txn.write_file(&header, content).unwrap();
            txn.flush_staged().unwrap();
            assert!(!repo.has_object(&id, ObjectKind::File), "{mode:?}");
            txn.commit(&[]).unwrap();
            assert!(repo.has_object(&id, ObjectKind::File), "{mode:?}");
            assert_eq!(repo.read_file(&id).unwrap().1, content);
        }
    }
}

//! Committing: building trees in memory, writing them, and recording a
//! commit that a ref then points at. [`commit_dir`] commits a directory on
//! disk, hashing and storing files on all cores.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::config::RepoMode;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hash::ObjectId;
use crate::object::{
    file::{S_IFLNK, S_IFMT, S_IFREG},
    Commit, DirMeta, EntryKind, FileHeader, ObjectKind, Tree, TreeEntry,
};
use crate::refs::{self, RefName};
use crate::store::RefUpdate;
use crate::store::{parse_object_name, Repo, Transaction};

/// A directory tree being assembled in memory before it is written.
#[derive(Clone, Debug)]
pub struct MemDir {
    pub meta: DirMeta,
    pub entries: BTreeMap<Vec<u8>, MemEntry>,
}

/// One entry of a [`MemDir`].
#[derive(Clone, Debug)]
pub enum MemEntry {
    /// A stored file object; `symlink` says which kind.
    File {
        id: ObjectId,
        symlink: bool,
    },
    Dir(MemDir),
    /// An already written subtree, reused as is.
    Tree {
        tree: ObjectId,
        meta: ObjectId,
    },
}

impl MemDir {
    pub fn new(meta: DirMeta) -> MemDir {
        MemDir {
            meta,
            entries: BTreeMap::new(),
        }
    }

    /// Writes this directory and everything below it; returns the tree and
    /// dirmeta ids.
    pub fn write(&self, txn: &Transaction<'_>) -> Result<(ObjectId, ObjectId)> {
        let mut entries = Vec::with_capacity(self.entries.len());
        for (name, entry) in &self.entries {
            let kind = match entry {
                MemEntry::File { id, symlink: false } => EntryKind::Regular { file: *id },
                MemEntry::File { id, symlink: true } => EntryKind::Symlink { file: *id },
                MemEntry::Dir(d) => {
                    let (tree, meta) = d.write(txn)?;
                    EntryKind::Dir { tree, meta }
                }
                MemEntry::Tree { tree, meta } => EntryKind::Dir {
                    tree: *tree,
                    meta: *meta,
                },
            };
            entries.push(TreeEntry {
                name: name.clone(),
                kind,
            });
        }
        // BTreeMap keys are sorted and unique; names were checked on insert.
        let tree = Tree { entries };
        let tree_id = txn.write_tree(&tree)?;
        let meta_id = txn.write_dirmeta(&self.meta)?;
        Ok((tree_id, meta_id))
    }
}

/// What goes into a commit besides its tree.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub subject: String,
    pub body: String,
    /// Seconds since the epoch; see [`default_timestamp`].
    pub timestamp: i64,
    pub metadata: BTreeMap<String, String>,
}

/// The timestamp a commit gets when none is given: `SOURCE_DATE_EPOCH` when
/// set (reproducible builds), otherwise the current time.
pub use crate::time::default_timestamp;

/// Writes a commit for the given root whose parent is the ref's current
/// head, and moves the ref to it, all in `txn`.
pub fn finish_commit(
    txn: Transaction<'_>,
    ref_name: &RefName,
    root: (ObjectId, ObjectId),
    opts: &CommitOptions,
) -> Result<ObjectId> {
    let parent = refs::try_read_ref(txn.repo(), ref_name)?;
    let commit = Commit {
        parent,
        root_tree: root.0,
        root_meta: root.1,
        timestamp: opts.timestamp,
        subject: opts.subject.clone(),
        body: opts.body.clone(),
        metadata: opts.metadata.clone(),
    };
    let id = txn.write_commit(&commit)?;
    txn.commit(&[RefUpdate {
        name: ref_name.clone(),
        target: Some(id),
    }])?;
    Ok(id)
}

/// Statistics of one directory commit.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CommitStats {
    pub files: usize,
    pub directories: usize,
    /// Files recognised as hardlinks into the store, or as unchanged
    /// copies of objects, and not read again.
    pub reused_by_inode: usize,
    pub objects_written: usize,
}

/// Commits the directory `dir` to `ref_name`; returns the commit id.
pub fn commit_dir(
    repo: &Repo,
    dir: &Path,
    ref_name: &RefName,
    opts: &CommitOptions,
) -> Result<(ObjectId, CommitStats)> {
    let meta = fs::symlink_metadata(dir).map_err(Error::io("reading", dir))?;
    if !meta.is_dir() {
        return Err(Error::Unsupported {
            path: dir.to_owned(),
            reason: "not a directory".into(),
        });
    }
    let txn = Transaction::begin(repo)?;
    let (root, stats) = write_dir(&txn, dir)?;
    let mut stats = stats;
    stats.objects_written = txn.objects_written();
    let id = finish_commit(txn, ref_name, root, opts)?;
    stats.objects_written += 1;
    Ok((id, stats))
}

/// A directory as walked: its metadata and entries, files referring to an
/// index in the flat list that is hashed in parallel.
struct WalkDir {
    meta: DirMeta,
    entries: Vec<(Vec<u8>, WalkEntry)>,
}

enum WalkEntry {
    File(usize),
    Dir(WalkDir),
}

struct FileJob {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    dev: u64,
    ino: u64,
    nlink: u64,
    size: u64,
    ctime: (i64, i64),
}

/// Regular files a checkout wrote as copies with their objects' metadata
/// (`CheckoutOptions::record_copies`), by inode, and once
/// [`sealed`](CopiedFiles::seal) the moment after which a change to one of
/// them is seen: every change to a file (content, mode, owner, attributes)
/// sets its status-change time (ctime) to the file system's clock, so a
/// recorded file whose ctime is not past that moment, whose size is the
/// object's, is the object, wherever it was moved. [`write_dir_reusing`]
/// takes those ids instead of reading the files again.
#[derive(Clone, Debug, Default)]
pub struct CopiedFiles {
    files: HashMap<(u64, u64), (ObjectId, u64)>,
    sealed_at: Option<(i64, i64)>,
}

impl CopiedFiles {
    /// Records that the regular file at (`dev`, `ino`) is object `id` of
    /// `size` bytes of content.
    pub fn record(&mut self, dev: u64, ino: u64, id: ObjectId, size: u64) {
        self.files.insert((dev, ino), (id, size));
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Marks now, after the last recorded write, as the moment later
    /// changes are seen from. The file system's clock is read through a
    /// scratch file created in `dir` (on the files' file system, then
    /// removed); this waits until that clock has moved on (a few ms at
    /// most), so a change made after this returns has a later ctime than
    /// any recorded file's.
    pub fn seal(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(format!(".treectl-seal-{}", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io("creating", &path))?;
        let ctime = |f: &File| -> std::io::Result<(i64, i64)> {
            let m = f.metadata()?;
            Ok((m.ctime(), m.ctime_nsec()))
        };
        let result = (|| -> std::io::Result<(i64, i64)> {
            let start = ctime(&file)?;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(1));
                rustix::fs::futimens(
                    &file,
                    &rustix::fs::Timestamps {
                        last_access: rustix::fs::Timespec {
                            tv_sec: 0,
                            tv_nsec: rustix::fs::UTIME_NOW,
                        },
                        last_modification: rustix::fs::Timespec {
                            tv_sec: 0,
                            tv_nsec: rustix::fs::UTIME_NOW,
                        },
                    },
                )?;
                if ctime(&file)? > start {
                    return Ok(start);
                }
            }
        })();
        let _ = fs::remove_file(&path);
        self.sealed_at = Some(result.map_err(Error::io("reading the clock of", dir))?);
        Ok(())
    }

    /// The object a file is, if it is a recorded copy left unchanged.
    fn unchanged(&self, job: &FileJob) -> Option<ObjectId> {
        let sealed_at = self.sealed_at?;
        let (id, size) = self.files.get(&(job.dev, job.ino))?;
        (job.mode & S_IFMT == S_IFREG && job.ctime <= sealed_at && job.size == *size).then_some(*id)
    }
}

/// Walks, hashes and stores `dir` in `txn`; returns (tree, dirmeta) ids.
pub fn write_dir(txn: &Transaction<'_>, dir: &Path) -> Result<((ObjectId, ObjectId), CommitStats)> {
    write_dir_with(txn, dir, None)
}

/// [`write_dir`] of a checkout made with `record_copies`, after changes:
/// the recorded files left unchanged since [`CopiedFiles::seal`] are taken
/// as their objects without being read (counted in `reused_by_inode`).
pub fn write_dir_reusing(
    txn: &Transaction<'_>,
    dir: &Path,
    copies: &CopiedFiles,
) -> Result<((ObjectId, ObjectId), CommitStats)> {
    write_dir_with(txn, dir, Some(copies))
}

fn write_dir_with(
    txn: &Transaction<'_>,
    dir: &Path,
    copies: Option<&CopiedFiles>,
) -> Result<((ObjectId, ObjectId), CommitStats)> {
    let repo = txn.repo();
    let mut jobs = Vec::new();
    let mut stats = CommitStats::default();
    let root_meta = fs::symlink_metadata(dir).map_err(Error::io("reading", dir))?;
    let root = walk(dir, &root_meta, &mut jobs, &mut stats)?;
    stats.files = jobs.len();

    // Hardlinks into this repository's store are recognised by inode, as
    // ostree's devino cache does: checkouts share the object's inode.
    let store_inodes: OnceLock<HashMap<u64, ObjectId>> = OnceLock::new();
    let may_reuse = repo.mode() == RepoMode::BareUser;
    let results: Vec<Result<(ObjectId, bool)>> = jobs
        .par_iter()
        .map_init(Vec::new, |buf, job| {
            if let Some(id) = copies.and_then(|c| c.unchanged(job)) {
                return Ok((id, true));
            }
            if may_reuse && job.dev == repo.dev() && job.nlink > 1 && job.mode & S_IFMT == S_IFREG {
                let map = store_inodes.get_or_init(|| scan_store_inodes(repo));
                if let Some(id) = map.get(&job.ino) {
                    return Ok((*id, true));
                }
            }
            store_file(txn, job, buf).map(|id| (id, false))
        })
        .collect();
    let mut ids = Vec::with_capacity(results.len());
    for r in results {
        let (id, reused) = r?;
        stats.reused_by_inode += usize::from(reused);
        ids.push(id);
    }
    let mem = to_mem(root, &jobs, &ids);
    Ok((mem.write(txn)?, stats))
}

fn to_mem(dir: WalkDir, jobs: &[FileJob], ids: &[ObjectId]) -> MemDir {
    let mut out = MemDir::new(dir.meta);
    for (name, entry) in dir.entries {
        let e = match entry {
            WalkEntry::File(i) => MemEntry::File {
                id: ids[i],
                symlink: jobs[i].mode & S_IFMT == S_IFLNK,
            },
            WalkEntry::Dir(d) => MemEntry::Dir(to_mem(d, jobs, ids)),
        };
        out.entries.insert(name, e);
    }
    out
}

fn walk(
    dir: &Path,
    meta: &fs::Metadata,
    jobs: &mut Vec<FileJob>,
    stats: &mut CommitStats,
) -> Result<WalkDir> {
    stats.directories += 1;
    let xattrs = fsutil::read_xattrs(dir).map_err(Error::io("reading attributes of", dir))?;
    let dir_meta = DirMeta::new(meta.mode(), meta.uid(), meta.gid(), xattrs);
    let mut names: Vec<OsString> = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("reading", dir))? {
        let entry = entry.map_err(Error::io("reading", dir))?;
        names.push(entry.file_name());
    }
    names.sort();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let m = fs::symlink_metadata(&path).map_err(Error::io("reading", &path))?;
        let ft = m.file_type();
        let entry = if ft.is_dir() {
            WalkEntry::Dir(walk(&path, &m, jobs, stats)?)
        } else if ft.is_file() || ft.is_symlink() {
            jobs.push(FileJob {
                path,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                dev: m.dev(),
                ino: m.ino(),
                nlink: m.nlink(),
                size: m.size(),
                ctime: (m.ctime(), m.ctime_nsec()),
            });
            WalkEntry::File(jobs.len() - 1)
        } else {
            return Err(Error::Unsupported {
                path,
                reason: "device nodes, fifos and sockets cannot be committed".into(),
            });
        };
        entries.push((name.into_vec(), entry));
    }
    Ok(WalkDir {
        meta: dir_meta,
        entries,
    })
}

/// Reads, hashes and stores one file or symlink. Content is read into
/// `buf` (reused per thread) so it is read from disk exactly once.
fn store_file(txn: &Transaction<'_>, job: &FileJob, buf: &mut Vec<u8>) -> Result<ObjectId> {
    let path = &job.path;
    let xattrs = fsutil::read_xattrs(path).map_err(Error::io("reading attributes of", path))?;
    if job.mode & S_IFMT == S_IFLNK {
        let target = fs::read_link(path).map_err(Error::io("reading", path))?;
        let header =
            FileHeader::symlink(target.into_os_string().into_vec(), job.uid, job.gid, xattrs);
        return txn.write_file(&header, &[]);
    }
    let mut file = File::open(path).map_err(Error::io("opening", path))?;
    buf.clear();
    file.read_to_end(buf).map_err(Error::io("reading", path))?;
    let header = FileHeader::regular(job.mode, job.uid, job.gid, xattrs, buf.len() as u64);
    txn.write_file(&header, buf)
}

/// Maps inode numbers of the store's file objects to their ids, from
/// directory entries alone (no stat per object). This is only a cache: a
/// directory that cannot be read means its files are read and hashed instead.
fn scan_store_inodes(repo: &Repo) -> HashMap<u64, ObjectId> {
    let mut map = HashMap::new();
    let objects = repo.objects_dir();
    for i in 0..=255u8 {
        let sub = format!("{i:02x}");
        let Ok(entries) = fs::read_dir(objects.join(&sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((id, ObjectKind::File)) = parse_object_name(&sub, name, repo.mode()) {
                map.insert(entry.ino(), id);
            }
        }
    }
    map
}

/// Turns a path inside a tree (`a/b/c`, leading `/` allowed) into names.
pub fn split_tree_path(path: &str) -> Vec<Vec<u8>> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::checkout::{checkout, CheckoutOptions};

    /// A tree checked out as recorded copies, then changed in each way a
    /// maintainer script changes files: the reusing write-back gives the
    /// tree a full read gives, reusing exactly the files nobody touched
    /// when the copies could be recorded (as root).
    #[test]
    fn unchanged_copies_are_reused_and_every_change_is_seen() {
        for mode in [RepoMode::BareUser, RepoMode::Archive] {
            let tmp = tempfile::tempdir().unwrap();
            let repo = Repo::init(&tmp.path().join("repo"), mode).unwrap();
            let src = tmp.path().join("src");
            fs::create_dir_all(src.join("sub")).unwrap();
            let names = [
                "keep",
                "moved",
                "content",
                "mode",
                "attr",
                "rewritten",
                "replaced",
                "grown",
            ];
            for (i, name) in names.iter().enumerate() {
                fs::write(src.join(name), format!("{name} {}", "x".repeat(i * 100))).unwrap();
            }
            fs::write(src.join("sub/keep"), b"kept below").unwrap();
            std::os::unix::fs::symlink("keep", src.join("link")).unwrap();
            let txn = Transaction::begin(&repo).unwrap();
            let (root, _) = write_dir(&txn, &src).unwrap();
            let commit = txn
                .write_commit(&Commit {
                    parent: None,
                    root_tree: root.0,
                    root_meta: root.1,
                    timestamp: 0,
                    subject: String::new(),
                    body: String::new(),
                    metadata: BTreeMap::new(),
                })
                .unwrap();
            txn.commit(&[]).unwrap();

            let co = tmp.path().join("co");
            let opts = CheckoutOptions {
                copy: true,
                mtime: Some(1_000_000),
                record_copies: true,
                ..Default::default()
            };
            let stats = checkout(&repo, &commit, &co, &opts).unwrap();
            assert_eq!(fs::metadata(co.join("keep")).unwrap().mtime(), 1_000_000);
            assert_eq!(fs::metadata(&co).unwrap().mtime(), 1_000_000);
            let mut copies = stats.copies.unwrap_or_default();
            assert_eq!(copies.len(), if fsutil::privileged() { 9 } else { 0 });
            copies.seal(tmp.path()).unwrap();

            let same_size = fs::read(co.join("content")).unwrap().len();
            fs::write(co.join("content"), "y".repeat(same_size)).unwrap();
            fs::set_permissions(co.join("mode"), fs::Permissions::from_mode(0o600)).unwrap();
            rustix::fs::setxattr(
                co.join("attr").as_path(),
                "user.note",
                b"set by a script",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
            let text = fs::read(co.join("rewritten")).unwrap();
            fs::write(co.join("rewritten"), &text).unwrap();
            let text = fs::read(co.join("replaced")).unwrap();
            fs::remove_file(co.join("replaced")).unwrap();
            fs::write(co.join("replaced"), &text).unwrap();
            let mut grown = fs::read(co.join("grown")).unwrap();
            grown.extend_from_slice(b" and more");
            fs::write(co.join("grown"), grown).unwrap();
            let ctime = |p: &Path| {
                let m = fs::symlink_metadata(p).unwrap();
                (m.ctime(), m.ctime_nsec())
            };
            let before = ctime(&co.join("moved"));
            fs::rename(co.join("moved"), co.join("sub/moved-here")).unwrap();
            // Some file systems (ext4) count a rename as a status change of
            // the file moved, others do not: unchanged, it may be reused.
            let moved_unchanged = ctime(&co.join("sub/moved-here")) == before;
            fs::write(co.join("sub/new"), b"new").unwrap();

            let txn = Transaction::begin(&repo).unwrap();
            let (reused, stats) = write_dir_reusing(&txn, &co, &copies).unwrap();
            let (read, read_stats) = write_dir(&txn, &co).unwrap();
            assert_eq!(reused, read, "{mode:?}");
            assert_eq!(read_stats.reused_by_inode, 0);
            // keep, sub/keep, maybe the moved file; not the symlink (never
            // recorded), nor anything written, even with the same bytes.
            let expected = if fsutil::privileged() {
                2 + usize::from(moved_unchanged)
            } else {
                0
            };
            assert_eq!(stats.reused_by_inode, expected, "{mode:?}");
        }
    }

    /// Without a seal nothing is taken as unchanged.
    #[test]
    fn copies_not_sealed_are_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::init(&tmp.path().join("repo"), RepoMode::BareUser).unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("f"), b"changed").unwrap();
        let m = fs::metadata(dir.join("f")).unwrap();
        let mut copies = CopiedFiles::default();
        copies.record(m.dev(), m.ino(), ObjectId([7; 32]), m.size());
        let txn = Transaction::begin(&repo).unwrap();
        let (_, stats) = write_dir_reusing(&txn, &dir, &copies).unwrap();
        assert_eq!(stats.reused_by_inode, 0);
    }
}

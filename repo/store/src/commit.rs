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
    /// Files recognised as hardlinks into the store and not read again.
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
}

/// Walks, hashes and stores `dir` in `txn`; returns (tree, dirmeta) ids.
pub fn write_dir(txn: &Transaction<'_>, dir: &Path) -> Result<((ObjectId, ObjectId), CommitStats)> {
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

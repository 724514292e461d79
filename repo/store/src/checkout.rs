//! Checking a commit out into a directory.
//!
//! From a `bare-user` repository regular files are hardlinked to the store's
//! objects (identical files share one inode), falling back to copies across
//! filesystems; from an `archive` repository, or with `copy`, they are
//! written out. Directories, symlinks, modes and extended attributes are
//! restored; ownership too when running as root. Every file and directory
//! gets the fixed mtime [`fsutil::FIXED_MTIME`], or the one asked for.
//! Subdirectories, and the files of a large directory, are written on
//! every core.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::commit::{split_tree_path, CopiedFiles};
use crate::config::RepoMode;
use crate::error::{Error, Result};
use crate::fsutil::{self, FIXED_MTIME};
use crate::hash::ObjectId;
use crate::object::file::{S_IFDIR, S_IFMT};
use crate::object::{DirMeta, EntryKind, FileHeader, FileKind, ObjectKind};
use crate::store::{extension, Repo};

#[derive(Clone, Debug, Default)]
pub struct CheckoutOptions {
    /// Write copies even where hardlinks are possible.
    pub copy: bool,
    /// Check out only this path of the tree (a directory or a file).
    pub subpath: Option<String>,
    /// Check out over an existing destination, like `ostree checkout
    /// --union`: existing directories are reused (and get the checked-out
    /// metadata), existing files and symlinks are replaced, and an existing
    /// empty directory is replaced by a file. A non-empty directory where
    /// the tree has a file is an error. Nothing is removed on failure.
    pub union: bool,
    /// The access and modification time of everything written, in seconds
    /// since the epoch (default: [`FIXED_MTIME`]'s).
    pub mtime: Option<i64>,
    /// Record every regular file written as a copy, with all its metadata
    /// restored (running as root), in [`CheckoutStats::copies`]: a later
    /// commit of the directory can then take the ids of the files nobody
    /// changed instead of reading them ([`crate::commit::write_dir_reusing`]).
    pub record_copies: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckoutStats {
    pub directories: usize,
    pub hardlinked: usize,
    pub copied: usize,
    pub symlinks: usize,
    /// With [`CheckoutOptions::record_copies`]: the files written as copies.
    #[serde(skip)]
    pub copies: Option<CopiedFiles>,
}

/// Below this many files a directory's files are written one after another.
const PARALLEL_FILES: usize = 64;

/// What a path inside a commit resolves to.
#[derive(Clone, Copy, Debug)]
pub enum Resolved {
    Dir { tree: ObjectId, meta: ObjectId },
    File { id: ObjectId, symlink: bool },
}

/// Finds `path` inside `commit`'s tree.
pub fn resolve_path(repo: &Repo, commit: &ObjectId, path: &str) -> Result<Resolved> {
    let c = repo.read_commit(commit)?;
    let mut cur = Resolved::Dir {
        tree: c.root_tree,
        meta: c.root_meta,
    };
    for name in split_tree_path(path) {
        let Resolved::Dir { tree, .. } = cur else {
            return Err(not_found(commit, path));
        };
        let tree = repo.read_tree(&tree)?;
        let entry = tree.get(&name).ok_or_else(|| not_found(commit, path))?;
        cur = match entry.kind {
            EntryKind::Regular { file } => Resolved::File {
                id: file,
                symlink: false,
            },
            EntryKind::Symlink { file } => Resolved::File {
                id: file,
                symlink: true,
            },
            EntryKind::Dir { tree, meta } => Resolved::Dir { tree, meta },
        };
    }
    Ok(cur)
}

fn not_found(commit: &ObjectId, path: &str) -> Error {
    Error::PathNotFound {
        rev: commit.short(),
        path: path.to_owned(),
    }
}

struct Ctx<'a> {
    repo: &'a Repo,
    /// Open fan-out directories `objects/00` … `objects/ff`, for hardlinking.
    fanout: Vec<OwnedFd>,
    hardlink: AtomicBool,
    privileged: bool,
    union: bool,
    times: Timestamps,
    copies: Option<Mutex<CopiedFiles>>,
    directories: AtomicUsize,
    hardlinked: AtomicUsize,
    copied: AtomicUsize,
    symlinks: AtomicUsize,
}

/// Checks `commit` out into `dest`, which must not exist (its parent must)
/// unless `opts.union` is set. On failure nothing is left at `dest` (with
/// `union`, what was written so far stays).
pub fn checkout(
    repo: &Repo,
    commit: &ObjectId,
    dest: &Path,
    opts: &CheckoutOptions,
) -> Result<CheckoutStats> {
    let existed = dest.symlink_metadata().is_ok();
    if existed && !opts.union {
        return Err(Error::AlreadyExists {
            path: dest.to_owned(),
        });
    }
    let target = resolve_path(repo, commit, opts.subpath.as_deref().unwrap_or("/"))?;
    let hardlink = repo.mode() == RepoMode::BareUser && !opts.copy;
    let mut fanout = Vec::new();
    if hardlink {
        for i in 0..=255u8 {
            let p = repo.objects_dir().join(format!("{i:02x}"));
            let fd = rustix::fs::open(
                &p,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("opening", &p)(e.into()))?;
            fanout.push(fd);
        }
    }
    let privileged = fsutil::privileged();
    let times = match opts.mtime {
        None => FIXED_MTIME,
        Some(tv_sec) => {
            let t = Timespec { tv_sec, tv_nsec: 0 };
            Timestamps {
                last_access: t,
                last_modification: t,
            }
        }
    };
    let ctx = Ctx {
        repo,
        fanout,
        hardlink: AtomicBool::new(hardlink),
        privileged,
        union: opts.union,
        times,
        // Without root the copies' owners are not the objects', so their
        // ids would not be the objects' ids.
        copies: (opts.record_copies && privileged).then(|| Mutex::new(CopiedFiles::default())),
        directories: AtomicUsize::new(0),
        hardlinked: AtomicUsize::new(0),
        copied: AtomicUsize::new(0),
        symlinks: AtomicUsize::new(0),
    };
    let parent_path = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = dest.file_name().ok_or_else(|| Error::Unsupported {
        path: dest.to_owned(),
        reason: "destination has no file name".into(),
    })?;
    let parent = rustix::fs::open(
        &parent_path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("opening destination parent", &parent_path)(e.into()))?;
    let result = match target {
        Resolved::Dir { tree, meta } => ctx.dir(&parent, name, dest, &tree, &meta),
        Resolved::File { id, symlink } => ctx.file(&parent, name, dest, &id, symlink),
    };
    if let Err(e) = result {
        if existed {
            return Err(e);
        }
        // Leave nothing half-written behind.
        if dest.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
            let _ = make_writable(dest);
            let _ = fs::remove_dir_all(dest);
        } else {
            let _ = fs::remove_file(dest);
        }
        return Err(e);
    }
    Ok(CheckoutStats {
        directories: ctx.directories.into_inner(),
        hardlinked: ctx.hardlinked.into_inner(),
        copied: ctx.copied.into_inner(),
        symlinks: ctx.symlinks.into_inner(),
        copies: ctx
            .copies
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())),
    })
}

/// Gives the owner write access to every directory below `path`, so a
/// failed checkout of read-only directories can be removed.
fn make_writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = fs::symlink_metadata(path)?;
    if m.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        for e in fs::read_dir(path)? {
            make_writable(&e?.path())?;
        }
    }
    Ok(())
}

impl Ctx<'_> {
    fn dir(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        path: &Path,
        tree_id: &ObjectId,
        meta_id: &ObjectId,
    ) -> Result<()> {
        let meta = self.repo.read_dirmeta(meta_id)?;
        let tree = self.repo.read_tree(tree_id)?;
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) if self.union => {
                let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io("reading", path)(e.into()))?;
                if st.st_mode & S_IFMT != S_IFDIR {
                    // A file or symlink where the tree has a directory.
                    rustix::fs::unlinkat(parent, name, AtFlags::empty())
                        .and_then(|()| {
                            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                        })
                        .map_err(|e| Error::io("replacing", path)(e.into()))?;
                }
            }
            Err(e) => return Err(Error::io("creating", path)(e.into())),
        }
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| Error::io("opening", path)(e.into()))?;
        self.directories.fetch_add(1, Ordering::Relaxed);
        let mut files = Vec::new();
        let mut subdirs = Vec::new();
        for entry in &tree.entries {
            let name = OsStr::from_bytes(&entry.name);
            match entry.kind {
                EntryKind::Regular { file } => files.push((name, file, false)),
                EntryKind::Symlink { file } => files.push((name, file, true)),
                EntryKind::Dir { tree, meta } => subdirs.push((name, tree, meta)),
            }
        }
        let write = |(name, file, symlink): &(&OsStr, ObjectId, bool)| {
            self.file(&fd, name, &path.join(name), file, *symlink)
        };
        if files.len() < PARALLEL_FILES {
            files.iter().try_for_each(write)?;
        } else {
            files.par_iter().try_for_each(write)?;
        }
        subdirs
            .par_iter()
            .try_for_each(|(name, tree, meta)| self.dir(&fd, name, &path.join(name), tree, meta))?;
        self.apply_dir_meta(&fd, path, &meta)
    }

    fn apply_dir_meta(&self, fd: &OwnedFd, path: &Path, meta: &DirMeta) -> Result<()> {
        let apply = || -> std::io::Result<()> {
            if self.privileged {
                rustix::fs::fchown(
                    fd,
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                )?;
                fsutil::fset_xattrs(fd, &meta.xattrs)?;
            }
            rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.perm()))?;
            rustix::fs::futimens(fd, &self.times)?;
            Ok(())
        };
        apply().map_err(Error::io("setting metadata of", path))
    }

    fn file(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        path: &Path,
        id: &ObjectId,
        symlink: bool,
    ) -> Result<()> {
        if self.union {
            self.clear(dir, name, path)?;
        }
        if symlink {
            let header = self.repo.read_file_header(id)?;
            return self.symlink(dir, name, path, &header);
        }
        if self.hardlink.load(Ordering::Relaxed) {
            let hex = id.to_hex();
            let object = format!(
                "{}.{}",
                &hex[2..],
                extension(ObjectKind::File, self.repo.mode())
            );
            match rustix::fs::linkat(
                &self.fanout[id.0[0] as usize],
                object.as_str(),
                dir,
                name,
                AtFlags::empty(),
            ) {
                Ok(()) => {
                    self.hardlinked.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                // Another filesystem: copy this and everything after it.
                Err(Errno::XDEV) => self.hardlink.store(false, Ordering::Relaxed),
                // The object has as many links as the filesystem allows.
                Err(Errno::MLINK) => {}
                Err(Errno::NOENT) => {
                    return Err(Error::NotFound {
                        kind: ObjectKind::File,
                        id: *id,
                    })
                }
                Err(e) => return Err(Error::io("linking", path)(e.into())),
            }
        }
        self.copy(dir, name, path, id)
    }

    /// Makes room for a file in a union checkout: removes a file or
    /// symlink of that name, or an empty directory.
    fn clear(&self, dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<()> {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) | Err(Errno::PERM) => {
                rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| {
                    Error::Unsupported {
                        path: path.to_owned(),
                        reason: format!("cannot replace this directory with a file: {e}"),
                    }
                })
            }
            Err(e) => Err(Error::io("replacing", path)(e.into())),
        }
    }

    fn copy(&self, dir: &OwnedFd, name: &OsStr, path: &Path, id: &ObjectId) -> Result<()> {
        let (header, content) = self.repo.read_file(id)?;
        if header.kind() == FileKind::Symlink {
            return self.symlink(dir, name, path, &header);
        }
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io("creating", path)(e.into()))?;
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::from(fd);
            file.write_all(&content)?;
            if self.privileged {
                rustix::fs::fchown(
                    &file,
                    Some(Uid::from_raw(header.uid)),
                    Some(Gid::from_raw(header.gid)),
                )?;
                fsutil::fset_xattrs(file.as_fd(), &header.xattrs)?;
            }
            rustix::fs::fchmod(&file, Mode::from_raw_mode(header.perm()))?;
            rustix::fs::futimens(&file, &self.times)?;
            if let Some(copies) = &self.copies {
                let st = rustix::fs::fstat(&file)?;
                let mut copies = copies.lock().unwrap_or_else(|e| e.into_inner());
                copies.record(st.st_dev, st.st_ino, *id, content.len() as u64);
            }
            Ok(())
        };
        write().map_err(Error::io("writing", path))?;
        self.copied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn symlink(&self, dir: &OwnedFd, name: &OsStr, path: &Path, header: &FileHeader) -> Result<()> {
        let target = OsStr::from_bytes(&header.target);
        let make = || -> std::io::Result<()> {
            rustix::fs::symlinkat(target, dir, name)?;
            if self.privileged {
                rustix::fs::chownat(
                    dir,
                    name,
                    Some(Uid::from_raw(header.uid)),
                    Some(Gid::from_raw(header.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                if !header.xattrs.is_empty() {
                    fsutil::lset_xattrs(path, &header.xattrs)?;
                }
            }
            rustix::fs::utimensat(dir, name, &self.times, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(())
        };
        make().map_err(Error::io("creating symlink", path))?;
        self.symlinks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

//! Small filesystem helpers: extended attributes, fixed mtimes, durable
//! renames.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Timespec, Timestamps, XattrFlags};

use crate::object::Xattrs;

/// Extended attributes under this prefix belong to the store (the bare-user
/// header) and are never recorded as part of a file.
pub const PRIVATE_XATTR_PREFIX: &[u8] = b"user.treectl.";
/// The bare-user object header attribute.
pub const META_XATTR: &str = "user.treectl.meta";

/// The mtime every checked-out file and directory gets (the Unix epoch), so
/// checkouts of the same commit are identical; objects carry no timestamps.
pub const FIXED_MTIME: Timestamps = Timestamps {
    last_access: Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    },
    last_modification: Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    },
};

/// Reads a path's extended attributes (not following symlinks), sorted by
/// name, without the store's private ones.
pub fn read_xattrs(path: &Path) -> io::Result<Xattrs> {
    let mut names = vec![0u8; 256];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr_query(path)?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(PRIVATE_XATTR_PREFIX) {
            continue;
        }
        let cname = std::ffi::CString::new(name).expect("split on NUL");
        let size = rustix::fs::lgetxattr_query(path, cname.as_c_str())?;
        let mut value = vec![0u8; size];
        let n = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut value[..])?;
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Reads one extended attribute of an open file.
pub fn fget_xattr(file: &File, name: &str) -> io::Result<Vec<u8>> {
    let size = rustix::fs::fgetxattr_query(file, name)?;
    let mut value = vec![0u8; size];
    let n = rustix::fs::fgetxattr(file, name, &mut value[..])?;
    value.truncate(n);
    Ok(value)
}

/// Sets extended attributes on an open file.
pub fn fset_xattrs(fd: impl AsFd, xattrs: &Xattrs) -> io::Result<()> {
    for (name, value) in xattrs {
        let cname = std::ffi::CString::new(name.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name with NUL"))?;
        rustix::fs::fsetxattr(&fd, cname.as_c_str(), value, XattrFlags::empty())?;
    }
    Ok(())
}

/// Sets extended attributes on a path without following symlinks.
pub fn lset_xattrs(path: &Path, xattrs: &Xattrs) -> io::Result<()> {
    for (name, value) in xattrs {
        let cname = std::ffi::CString::new(name.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name with NUL"))?;
        rustix::fs::lsetxattr(path, cname.as_c_str(), value, XattrFlags::empty())?;
    }
    Ok(())
}

/// Sets the fixed mtime on a path without following symlinks.
pub fn set_fixed_mtime(path: &Path) -> io::Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &FIXED_MTIME,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Removes a directory tree as [`std::fs::remove_dir_all`] does (a
/// symlink is removed, never followed), each directory's entries on every
/// core: a checked-out system holds tens of thousands of files.
pub fn remove_dir_all_parallel(path: &Path) -> io::Result<()> {
    use rayon::prelude::*;
    if !std::fs::symlink_metadata(path)?.is_dir() {
        return std::fs::remove_file(path);
    }
    let entries = std::fs::read_dir(path)?.collect::<io::Result<Vec<_>>>()?;
    entries
        .par_iter()
        .try_for_each(|e| match e.file_type()?.is_dir() {
            true => remove_dir_all_parallel(&e.path()),
            false => std::fs::remove_file(e.path()),
        })?;
    std::fs::remove_dir(path)
}

/// Flushes a directory so that renames into it are durable.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// True when running with root's privileges (ownership can be set).
pub fn privileged() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_removal_removes_the_tree_and_follows_no_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("keep"), b"k").expect("write");
        let tree = dir.path().join("tree");
        for d in ["a/b/c", "a/d", "e"] {
            std::fs::create_dir_all(tree.join(d)).expect("mkdir");
        }
        for (i, f) in ["a/1", "a/b/2", "a/b/c/3", "a/d/4", "e/5", "6"]
            .iter()
            .enumerate()
        {
            std::fs::write(tree.join(f), vec![b'x'; i * 1000]).expect("write");
        }
        std::os::unix::fs::symlink(&outside, tree.join("a/to-outside")).expect("symlink");
        std::os::unix::fs::symlink("missing", tree.join("e/dangling")).expect("symlink");
        remove_dir_all_parallel(&tree).expect("removed");
        assert!(!tree.exists());
        assert_eq!(std::fs::read(outside.join("keep")).expect("kept"), b"k");
        // A missing tree is an error, as for remove_dir_all.
        assert!(remove_dir_all_parallel(&tree).is_err());
    }
}

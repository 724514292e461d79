//! Exporting a commit's tree as one archive: newc cpio (what the Linux
//! kernel unpacks as an initramfs) or GNU tar, optionally compressed.
//!
//! The bytes are a function of the commit alone (export format
//! [`EXPORT_FORMAT_VERSION`], specified in `docs/export.md`): the same
//! commit gives the same archive on any machine and from either repository
//! mode. Entries are sorted by path (byte order, so a directory comes before
//! everything in it); inode numbers count from 1 in that order; every mtime
//! is the commit's timestamp; owners are numeric and modes exactly the
//! tree's; device numbers are 0. Regular files with the same file object
//! (same content and metadata) are one inode with several names: the data
//! goes with the first name, later names are cpio entries of size 0 with
//! the same inode, or tar hardlink entries. Extended attributes are not
//! exported.
//!
//! ```
//! use treectl_store::export::{export, ArchiveFormat, Compression, ExportOptions};
//! use treectl_store::{commit::{commit_dir, CommitOptions}, refs::RefName, Repo, RepoMode};
//!
//! let tmp = tempfile::tempdir()?;
//! let tree = tmp.path().join("tree");
//! std::fs::create_dir_all(tree.join("etc"))?;
//! std::fs::write(tree.join("etc/hostname"), "demo\n")?;
//! let repo = Repo::init(&tmp.path().join("repo"), RepoMode::BareUser)?;
//! let opts = CommitOptions { timestamp: 1_700_000_000, ..Default::default() };
//! let (id, _) = commit_dir(&repo, &tree, &RefName::new("os/demo")?, &opts)?;
//!
//! let mut cpio = Vec::new();
//! let options = ExportOptions { format: ArchiveFormat::Cpio, compression: Compression::None };
//! let stats = export(&repo, &id, &options, &mut cpio)?;
//! assert_eq!((stats.directories, stats.files), (2, 1));
//! assert!(cpio.starts_with(b"070701"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod gnu_tar;
mod newc;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fsutil;
use crate::hash::ObjectId;
use crate::object::{DirMeta, EntryKind, FileHeader, FileKind, ObjectKind};
use crate::store::Repo;

/// The version of the archive layout this module writes (`docs/export.md`).
/// Any change to the bytes produced for a commit, compressed or not,
/// needs a new version.
pub const EXPORT_FORMAT_VERSION: u32 = 1;
/// The zstd level of `--compress zstd` (single-threaded, with a checksum).
pub const ZSTD_LEVEL: i32 = 3;
/// The gzip (deflate) level of `--compress gzip`.
pub const GZIP_LEVEL: u32 = 6;
/// The largest file a newc cpio entry holds: its size field is 32 bits.
pub const NEWC_MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// Which archive format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// newc cpio (magic `070701`), as the kernel reads an initramfs.
    Cpio,
    /// GNU tar.
    Tar,
}

/// How to compress the archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    #[default]
    None,
    /// One zstd frame, level [`ZSTD_LEVEL`], with a content checksum.
    Zstd,
    /// One gzip member, level [`GZIP_LEVEL`], mtime 0, no file name, OS 255.
    Gzip,
}

impl ArchiveFormat {
    pub const ALL: [ArchiveFormat; 2] = [ArchiveFormat::Cpio, ArchiveFormat::Tar];

    pub fn name(self) -> &'static str {
        match self {
            ArchiveFormat::Cpio => "cpio",
            ArchiveFormat::Tar => "tar",
        }
    }
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Zstd, Compression::Gzip];

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }
}

impl fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ArchiveFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_name(
            &ArchiveFormat::ALL,
            ArchiveFormat::name,
            s,
            "archive format",
        )
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_name(&Compression::ALL, Compression::name, s, "compression")
    }
}

fn parse_name<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    s: &str,
    what: &str,
) -> Result<T, String> {
    all.iter().copied().find(|v| name(*v) == s).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(|v| name(*v)).collect();
        format!("unknown {what} {s:?} ({})", names.join(", "))
    })
}

/// What to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    pub format: ArchiveFormat,
    pub compression: Compression,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportStats {
    /// Archive entries, the cpio trailer and tar's helper entries not counted.
    pub entries: u64,
    pub directories: u64,
    /// Regular files: inodes, each with its data once.
    pub files: u64,
    /// Further names of regular files that are already in the archive.
    pub hardlinks: u64,
    pub symlinks: u64,
    /// File data, each inode's once.
    pub content_bytes: u64,
    /// The archive's size as written (after compression).
    pub archive_bytes: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] Error),
    #[error("reading {path}")]
    Read {
        /// The path in the tree, starting with `/`.
        path: String,
        #[source]
        source: Error,
    },
    #[error("{path} is {size} bytes; a newc cpio entry holds at most {NEWC_MAX_FILE_SIZE} bytes, export the tree as tar instead")]
    TooLargeForCpio { path: String, size: u64 },
    #[error("the tree has more entries than newc cpio has inode numbers (2^32 - 1); export it as tar instead")]
    TooManyInodes,
    #[error("writing the archive")]
    Write(#[source] io::Error),
    #[error("{} is a directory; name the archive file to write", path.display())]
    IsADirectory { path: PathBuf },
    #[error("writing {}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes the archive of `commit`'s tree to `out`.
///
/// `out` gets the whole archive or, on an error, some prefix of it; see
/// [`export_to_file`] for a file that appears only when complete.
pub fn export<W: Write>(
    repo: &Repo,
    commit: &ObjectId,
    opts: &ExportOptions,
    out: W,
) -> Result<ExportStats, ExportError> {
    let c = repo.read_commit(commit)?;
    let mtime = archive_mtime(c.timestamp);
    let nodes = collect(repo, &c.root_tree, &c.root_meta)?;
    let mut names: HashMap<ObjectId, u32> = HashMap::new();
    for node in &nodes {
        if let NodeKind::Regular(id) = node.kind {
            let n = names.entry(id).or_default();
            *n = n.saturating_add(1);
        }
    }

    let sink = Sink::new(opts.compression, out).map_err(ExportError::Write)?;
    let mut archive = match opts.format {
        ArchiveFormat::Cpio => Archive::Newc(newc::NewcWriter::new(sink)),
        ArchiveFormat::Tar => Archive::Tar(gnu_tar::TarWriter::new(sink)),
    };

    let mut stats = ExportStats::default();
    // The first name of each hardlinked file: its inode, index and header.
    let mut first: HashMap<ObjectId, (u64, usize, FileHeader)> = HashMap::new();
    let mut last_ino = 0u64;
    let mut next_ino = || {
        last_ino += 1;
        last_ino
    };
    for (index, node) in nodes.iter().enumerate() {
        let read_err = |source| ExportError::Read {
            path: shown(&node.path),
            source,
        };
        let entry = |ino, mode, uid, gid, nlink, body| Entry {
            path: &node.path,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            body,
        };
        // Content read for this node, kept until its entry is written.
        let file: (FileHeader, Vec<u8>);
        let e = match &node.kind {
            NodeKind::Dir { meta, subdirs } => {
                stats.directories += 1;
                let nlink = subdirs.saturating_add(2);
                entry(next_ino(), meta.mode, meta.uid, meta.gid, nlink, Body::Dir)
            }
            NodeKind::Symlink(id) => {
                file = repo.read_file(id).map_err(read_err)?;
                expect_kind(id, &file.0, FileKind::Symlink).map_err(read_err)?;
                stats.symlinks += 1;
                let h = &file.0;
                entry(
                    next_ino(),
                    h.mode,
                    h.uid,
                    h.gid,
                    1,
                    Body::Symlink(&h.target),
                )
            }
            NodeKind::Regular(id) => {
                let nlink = names[id];
                if let Some((ino, at, h)) = first.get(id) {
                    stats.hardlinks += 1;
                    let body = Body::HardLink(&nodes[*at].path);
                    entry(*ino, h.mode, h.uid, h.gid, nlink, body)
                } else {
                    file = repo.read_file(id).map_err(read_err)?;
                    let h = &file.0;
                    expect_kind(id, h, FileKind::Regular).map_err(read_err)?;
                    if opts.format == ArchiveFormat::Cpio && h.size > NEWC_MAX_FILE_SIZE {
                        return Err(ExportError::TooLargeForCpio {
                            path: shown(&node.path),
                            size: h.size,
                        });
                    }
                    let ino = next_ino();
                    if nlink > 1 {
                        first.insert(*id, (ino, index, h.clone()));
                    }
                    stats.files += 1;
                    stats.content_bytes += h.size;
                    entry(ino, h.mode, h.uid, h.gid, nlink, Body::File(&file.1))
                }
            }
        };
        if opts.format == ArchiveFormat::Cpio && e.ino > u64::from(u32::MAX) {
            return Err(ExportError::TooManyInodes);
        }
        archive.entry(&e).map_err(ExportError::Write)?;
        stats.entries += 1;
    }

    let sink = archive.finish().map_err(ExportError::Write)?;
    stats.archive_bytes = sink.finish().map_err(ExportError::Write)?;
    Ok(stats)
}

/// Writes the archive of `commit`'s tree to the file `dest`: into a
/// temporary file beside it, flushed to disk and renamed over `dest` only
/// when complete. On an error nothing is left at `dest` (an existing file
/// there is untouched) and the temporary file is removed.
pub fn export_to_file(
    repo: &Repo,
    commit: &ObjectId,
    opts: &ExportOptions,
    dest: &Path,
) -> Result<ExportStats, ExportError> {
    let output = |source| ExportError::Output {
        path: dest.to_owned(),
        source,
    };
    let name = match dest.file_name() {
        Some(name) if !dest.is_dir() => name.to_string_lossy(),
        _ => {
            return Err(ExportError::IsADirectory {
                path: dest.to_owned(),
            })
        }
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        crate::time::now_nanos()
    ));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(output)?;
    let result = (|| {
        let stats = export(repo, commit, opts, &file)?;
        file.sync_all().map_err(output)?;
        fs::rename(&tmp, dest).map_err(output)?;
        fsutil::fsync_dir(dir).map_err(output)?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The mtime of every entry: the commit's timestamp, clamped to what a
/// 32-bit unsigned field holds (cpio's `c_mtime`; tar uses the same value).
pub fn archive_mtime(timestamp: i64) -> u32 {
    timestamp.clamp(0, i64::from(u32::MAX)) as u32
}

/// The piece size the compressor is fed in (zstd's recommended input
/// size, `ZSTD_CStreamInSize`).
const BLOCK: usize = 128 << 10;

/// One archive entry, as both formats see it.
#[derive(Clone, Copy, Debug)]
struct Entry<'a> {
    /// The path in the tree without its leading `/`; empty for the root.
    path: &'a [u8],
    ino: u64,
    /// Full `st_mode`: type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    body: Body<'a>,
}

#[derive(Clone, Copy, Debug)]
enum Body<'a> {
    Dir,
    /// A regular file's first name, with its content.
    File(&'a [u8]),
    /// A symlink and its target.
    Symlink(&'a [u8]),
    /// A later name of a regular file: the path of its first name.
    HardLink(&'a [u8]),
}

impl<'a> Body<'a> {
    /// What follows the header in cpio: the content or the link target.
    fn data(&self) -> &'a [u8] {
        match *self {
            Body::File(data) | Body::Symlink(data) => data,
            Body::Dir | Body::HardLink(_) => &[],
        }
    }
}

enum Archive<W: Write> {
    Newc(newc::NewcWriter<W>),
    Tar(gnu_tar::TarWriter<W>),
}

impl<W: Write> Archive<W> {
    fn entry(&mut self, e: &Entry<'_>) -> io::Result<()> {
        match self {
            Archive::Newc(w) => w.entry(e),
            Archive::Tar(w) => w.entry(e),
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Archive::Newc(w) => w.finish(),
            Archive::Tar(w) => w.finish(),
        }
    }
}

/// A path and what is there, from the tree walk.
struct Node {
    path: Vec<u8>,
    kind: NodeKind,
}

enum NodeKind {
    Dir { meta: DirMeta, subdirs: u32 },
    Regular(ObjectId),
    Symlink(ObjectId),
}

/// Every path of the tree, sorted by path bytes.
fn collect(repo: &Repo, tree: &ObjectId, meta: &ObjectId) -> Result<Vec<Node>, ExportError> {
    let mut nodes = Vec::new();
    walk(repo, Vec::new(), tree, meta, &mut nodes)?;
    // Paths are unique, and a directory's path is a prefix of (so sorts
    // before) every path below it.
    nodes.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok(nodes)
}

fn walk(
    repo: &Repo,
    path: Vec<u8>,
    tree: &ObjectId,
    meta: &ObjectId,
    out: &mut Vec<Node>,
) -> Result<(), ExportError> {
    let read_err = |source| ExportError::Read {
        path: shown(&path),
        source,
    };
    let meta = repo.read_dirmeta(meta).map_err(read_err)?;
    let tree = repo.read_tree(tree).map_err(read_err)?;
    let subdirs = tree
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Dir { .. }))
        .count();
    let child = |name: &[u8]| {
        if path.is_empty() {
            name.to_vec()
        } else {
            [&path[..], b"/", name].concat()
        }
    };
    let mut dirs = Vec::new();
    for e in &tree.entries {
        let kind = match e.kind {
            EntryKind::Regular { file } => NodeKind::Regular(file),
            EntryKind::Symlink { file } => NodeKind::Symlink(file),
            EntryKind::Dir { tree, meta } => {
                dirs.push((child(&e.name), tree, meta));
                continue;
            }
        };
        out.push(Node {
            path: child(&e.name),
            kind,
        });
    }
    out.push(Node {
        path,
        kind: NodeKind::Dir {
            meta,
            subdirs: u32::try_from(subdirs).unwrap_or(u32::MAX),
        },
    });
    for (path, tree, meta) in dirs {
        walk(repo, path, &tree, &meta, out)?;
    }
    Ok(())
}

/// A tree path as messages show it: `/etc/hostname`, `/` for the root.
fn shown(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// A tree entry's kind must match its file object's.
fn expect_kind(id: &ObjectId, header: &FileHeader, want: FileKind) -> Result<(), Error> {
    if header.kind() == want {
        return Ok(());
    }
    Err(Error::Corrupt {
        kind: ObjectKind::File,
        id: *id,
        reason: format!(
            "the tree lists it as a {}",
            match want {
                FileKind::Regular => "regular file",
                FileKind::Symlink => "symlink",
            }
        ),
    })
}

/// Where the archive writers write: the archive's bytes are cut into
/// pieces of exactly [`BLOCK`] bytes (the last one shorter), compressed,
/// counted and written to the output. Fixed pieces make the compressed
/// bytes a function of the archive's bytes alone: zlib's output depends on
/// how its input is split, so without them it would depend on how the
/// archive writers happen to split their writes.
struct Sink<W: Write> {
    compressor: Compressor<Counting<W>>,
    block: Vec<u8>,
}

impl<W: Write> Sink<W> {
    fn new(compression: Compression, out: W) -> io::Result<Sink<W>> {
        let counting = Counting {
            inner: out,
            bytes: 0,
        };
        Ok(Sink {
            compressor: Compressor::new(compression, counting)?,
            block: Vec::with_capacity(BLOCK),
        })
    }

    /// Writes the last piece, ends the compressed stream and flushes the
    /// output; returns the number of bytes written to it.
    fn finish(mut self) -> io::Result<u64> {
        self.compressor.write_all(&self.block)?;
        let mut counting = self.compressor.finish()?;
        counting.flush()?;
        Ok(counting.bytes)
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.block.len() == BLOCK {
            self.compressor.write_all(&self.block)?;
            self.block.clear();
        }
        let take = (BLOCK - self.block.len()).min(data.len());
        self.block.extend_from_slice(&data[..take]);
        Ok(take)
    }

    /// Does nothing: a partial piece is written only by
    /// [`finish`](Sink::finish), so that pieces stay [`BLOCK`] bytes long.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts the bytes that reach the output.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compression stage, with the fixed settings that make its output a
/// function of its input.
enum Compressor<W: Write> {
    None(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Compressor<W> {
    fn new(compression: Compression, out: W) -> io::Result<Compressor<W>> {
        Ok(match compression {
            Compression::None => Compressor::None(out),
            Compression::Zstd => {
                // The crate is built without `zstdmt`: one thread, always.
                let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                encoder.include_checksum(true)?;
                Compressor::Zstd(encoder)
            }
            Compression::Gzip => Compressor::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(out, flate2::Compression::new(GZIP_LEVEL)),
            ),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Zstd(e) => e.finish(),
            Compressor::Gzip(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Gzip(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::Gzip(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimes_are_clamped_to_32_bits() {
        for (ts, want) in [
            (-5, 0),
            (0, 0),
            (1_704_067_200, 1_704_067_200),
            (i64::from(u32::MAX), u32::MAX),
            (i64::from(u32::MAX) + 1, u32::MAX),
            (i64::MAX, u32::MAX),
        ] {
            assert_eq!(archive_mtime(ts), want, "{ts}");
        }
    }

    /// The compressors' output for a fixed input, pinned: a dependency
    /// update that changes it changes every compressed export, which needs
    /// a new [`EXPORT_FORMAT_VERSION`] (see `docs/export.md`).
    #[test]
    fn compressed_bytes_are_pinned() {
        let input: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i} {}\n", i * i % 977).into_bytes())
            .collect();
        for (compression, want) in [
            (
                Compression::None,
                "f77b62f197b61da6747700fc6bc0148a8689d7fd94e203b4a5a44b7e0f9fdc21",
            ),
            (
                Compression::Zstd,
                "58981f36aa3ce0a3f3707b09b81eac94ba914742ccae1c000ab25026bdb8b375",
            ),
            (
                Compression::Gzip,
                "3089c835c479e276a2a67261a466d34ab2e936ca571e2b07e5a72d20a7775ff8",
            ),
        ] {
            // Written in pieces of different sizes: the output does not
            // depend on how the archive writer splits its writes.
            let mut outputs = Vec::new();
            for piece in [3001, 1 << 20] {
                let mut out = Vec::new();
                let mut sink = Sink::new(compression, &mut out).unwrap();
                for chunk in input.chunks(piece) {
                    sink.write_all(chunk).unwrap();
                }
                let written = sink.finish().unwrap();
                assert_eq!(written, out.len() as u64);
                outputs.push(out);
            }
            assert!(outputs[0] == outputs[1], "{compression}: split-dependent");
            let out = &outputs[0];
            assert_eq!(ObjectId::of(out).to_hex(), want, "{compression}");
            let mut back = Vec::new();
            match compression {
                Compression::None => back.clone_from(out),
                Compression::Zstd => {
                    zstd::stream::copy_decode(&out[..], &mut back).unwrap();
                }
                Compression::Gzip => {
                    let mut d = flate2::read::GzDecoder::new(&out[..]);
                    io::Read::read_to_end(&mut d, &mut back).unwrap();
                    let header = d.header().unwrap();
                    assert_eq!(header.mtime(), 0);
                    assert_eq!(header.filename(), None);
                }
            }
            assert!(back == input, "{compression} decompresses to its input");
        }
    }

    #[test]
    fn names_parse_and_print() {
        for f in [ArchiveFormat::Cpio, ArchiveFormat::Tar] {
            assert_eq!(f.name().parse::<ArchiveFormat>().unwrap(), f);
        }
        for c in [Compression::None, Compression::Zstd, Compression::Gzip] {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        let err = "xz".parse::<Compression>().unwrap_err();
        assert_eq!(err, "unknown compression \"xz\" (none, zstd, gzip)");
    }
}

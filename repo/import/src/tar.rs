//! Tar archives: plain, gzip, xz, zstd or bzip2 (detected by content), with
//! PAX and GNU long names, read in one pass straight into the store.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use tar::EntryType;

use super::builder::{split_entry_name, Found, TreeBuilder};
use super::compress::{decoder, Compression};
use super::limits::{Capped, CountIn, StreamState, Tripped};
use super::{display_name, ImportError, ImportOptions, ImportReport, ImportStats, Result};
use treectl_store::commit::{finish_commit, CommitOptions};
use treectl_store::object::{DirMeta, FileHeader, Xattrs};
use treectl_store::refs::RefName;
use treectl_store::store::{Repo, Transaction};

/// PAX records that carry extended attributes (GNU tar, bsdtar).
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// A tar stream read into the store: its tree (not yet written) and what
/// was seen on the way.
pub struct TarTree {
    pub builder: TreeBuilder,
    pub stats: ImportStats,
    /// The newest entry mtime, for reproducible commit timestamps.
    pub newest_mtime: u64,
    pub compression: Compression,
}

/// What to keep from the tar headers.
#[derive(Clone, Copy, Debug)]
pub struct TarFlavor {
    /// Keep `SCHILY.xattr.*` PAX records as extended attributes.
    /// `dpkg-deb -x` does not, so `.deb` imports turn this off.
    pub xattrs: bool,
}

/// Maps an error of the tar or decompression stream to what caused it.
fn stream_error(
    state: &StreamState,
    archive: &Path,
    at: &Option<String>,
    err: io::Error,
) -> ImportError {
    match state.tripped.get() {
        Some(Tripped::Total) => {
            return ImportError::TotalTooLarge {
                archive: archive.to_owned(),
                limit: 0,
            }
        }
        Some(Tripped::Ratio) => {
            return ImportError::RatioTooHigh {
                archive: archive.to_owned(),
                limit: 0,
            }
        }
        None => {}
    }
    if state.eof.get() || err.kind() == io::ErrorKind::UnexpectedEof {
        ImportError::Truncated {
            archive: archive.to_owned(),
            at: at.clone(),
        }
    } else {
        ImportError::Corrupt {
            archive: archive.to_owned(),
            at: at.clone(),
            detail: err.to_string(),
        }
    }
}

fn with_limit(err: ImportError, opts: &ImportOptions) -> ImportError {
    match err {
        ImportError::TotalTooLarge { archive, .. } => ImportError::TotalTooLarge {
            archive,
            limit: opts.limits.max_total_size,
        },
        ImportError::RatioTooHigh { archive, .. } => ImportError::RatioTooHigh {
            archive,
            limit: opts.limits.max_ratio,
        },
        e => e,
    }
}

/// Reads a (possibly compressed) tar stream, storing every file in `txn`.
pub fn read_tar<R: Read>(
    txn: &Transaction<'_>,
    input: R,
    archive: &Path,
    opts: &ImportOptions,
    flavor: TarFlavor,
) -> Result<TarTree> {
    read_tar_inner(txn, input, archive, opts, flavor).map_err(|e| with_limit(e, opts))
}

fn read_tar_inner<R: Read>(
    txn: &Transaction<'_>,
    input: R,
    archive: &Path,
    opts: &ImportOptions,
    flavor: TarFlavor,
) -> Result<TarTree> {
    let state = Rc::new(StreamState::default());
    let counted = CountIn::new(input, state.clone());
    let (compression, dec) =
        decoder(counted).map_err(|e| stream_error(&state, archive, &None, e))?;
    let capped = Capped::new(dec, state.clone(), opts.limits);
    let mut tar = tar::Archive::new(capped);
    let mut builder = TreeBuilder::new(archive);
    let mut stats = ImportStats::default();
    let mut newest_mtime = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut count = 0u64;
    let mut at: Option<String> = None;
    let entries = tar
        .entries()
        .map_err(|e| stream_error(&state, archive, &at, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| stream_error(&state, archive, &at, e))?;
        count += 1;
        if count > opts.limits.max_entries {
            return Err(ImportError::TooManyEntries {
                archive: archive.to_owned(),
                limit: opts.limits.max_entries,
            });
        }
        let raw_name = entry.path_bytes().into_owned();
        let name = display_name(&raw_name);
        at = Some(name.clone());
        let bad = |field| ImportError::BadHeader {
            archive: archive.to_owned(),
            entry: name.clone(),
            field,
        };
        let header = entry.header();
        let mut etype = header.entry_type();
        if etype == EntryType::XGlobalHeader {
            // Global PAX defaults (typically a comment); GNU tar ignores
            // them when extracting, and so do we.
            continue;
        }
        // Old (v7) archives mark directories by a trailing slash only.
        if etype == EntryType::Regular && raw_name.ends_with(b"/") {
            etype = EntryType::Directory;
        }
        let comps = split_entry_name(archive, &raw_name)?;
        let perm = header.mode().map_err(|_| bad("mode"))? & 0o7777;
        let uid = header
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .ok_or_else(|| bad("uid"))?;
        let gid = header
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .ok_or_else(|| bad("gid"))?;
        if let Ok(m) = header.mtime() {
            newest_mtime = newest_mtime.max(m);
        }
        let xattrs = if flavor.xattrs {
            pax_xattrs(&mut entry).map_err(|_| bad("PAX extended header"))?
        } else {
            Vec::new()
        };
        match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                if size > opts.limits.max_entry_size {
                    return Err(ImportError::EntryTooLarge {
                        archive: archive.to_owned(),
                        entry: name,
                        size,
                        limit: opts.limits.max_entry_size,
                    });
                }
                buf.clear();
                // The size is capped above; the stream may still end early.
                buf.reserve(size as usize);
                entry
                    .read_to_end(&mut buf)
                    .map_err(|e| stream_error(&state, archive, &at, e))?;
                if buf.len() as u64 != size {
                    return Err(ImportError::Truncated {
                        archive: archive.to_owned(),
                        at,
                    });
                }
                let fh = FileHeader::regular(perm, uid, gid, xattrs, size);
                let id = txn.write_file(&fh, &buf)?;
                builder.add_file(&comps, id, false, &name)?;
                stats.files += 1;
                stats.bytes += size;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty() && !t.contains(&0))
                    .ok_or_else(|| bad("symlink target"))?;
                let fh = FileHeader::symlink(target, uid, gid, xattrs);
                let id = txn.write_file(&fh, &[])?;
                builder.add_file(&comps, id, true, &name)?;
                stats.symlinks += 1;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| bad("hardlink target"))?;
                let outside = || ImportError::HardlinkOutside {
                    archive: archive.to_owned(),
                    entry: name.clone(),
                    target: display_name(&target),
                };
                let target_comps = match split_entry_name(archive, &target) {
                    Ok(c) => c,
                    Err(ImportError::AbsoluteName { .. } | ImportError::DotDot { .. }) => {
                        return Err(outside())
                    }
                    Err(e) => return Err(e),
                };
                match builder.lookup(&target_comps) {
                    Some(Found::File { id, symlink }) => {
                        builder.add_file(&comps, id, symlink, &name)?;
                        stats.hardlinks += 1;
                    }
                    Some(Found::Dir) | None => {
                        return Err(ImportError::HardlinkUnseen {
                            archive: archive.to_owned(),
                            entry: name,
                            target: display_name(&target),
                        })
                    }
                }
            }
            EntryType::Directory => {
                builder.add_dir(&comps, DirMeta::new(perm, uid, gid, xattrs), &name)?;
                stats.directories += 1;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match etype {
                    EntryType::Char => "character device",
                    EntryType::Block => "block device",
                    _ => "fifo",
                };
                if !opts.allow_devices {
                    return Err(ImportError::Device {
                        archive: archive.to_owned(),
                        entry: name,
                        kind,
                    });
                }
                stats.skipped.push(format!("{name} ({kind})"));
            }
            other => {
                return Err(ImportError::UnsupportedEntry {
                    archive: archive.to_owned(),
                    entry: name,
                    kind: format!("{:?} ({:?})", other, char::from(other.as_byte())),
                })
            }
        }
    }
    // The tar reader stops at the first zero block. Reaching the end of the
    // data instead means the end-of-archive marker is missing: truncated.
    if state.eof.get() {
        return Err(ImportError::Truncated {
            archive: archive.to_owned(),
            at: None,
        });
    }
    // Read the rest (padding) so checksums at the end of compressed streams
    // are verified.
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| stream_error(&state, archive, &None, e))?;
    stats.warnings = builder.take_warnings();
    Ok(TarTree {
        builder,
        stats,
        newest_mtime,
        compression,
    })
}

/// `SCHILY.xattr.NAME=VALUE` PAX records, sorted by name.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Xattrs> {
    let mut out: Xattrs = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let key = ext
                .key()
                .map_err(|_| io::Error::other("PAX key is not UTF-8"))?;
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if !name.is_empty() {
                    out.push((name.as_bytes().to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

/// Imports the tar archive at `path` and moves `ref_name` to a new commit
/// of its tree (the ref's current commit becomes the parent).
pub fn import_tar(
    repo: &Repo,
    path: &Path,
    ref_name: &RefName,
    commit: &CommitOptions,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    let file = File::open(path).map_err(ImportError::io("opening", path))?;
    let txn = Transaction::begin(repo)?;
    let tree = read_tar(&txn, file, path, opts, TarFlavor { xattrs: true })?;
    let root = tree.builder.into_mem().write(&txn)?;
    let mut commit = commit.clone();
    commit
        .metadata
        .entry("tar.compression".into())
        .or_insert_with(|| tree.compression.name().into());
    let id = finish_commit(txn, ref_name, root, &commit)?;
    Ok(ImportReport::new(id, ref_name, tree.stats))
}

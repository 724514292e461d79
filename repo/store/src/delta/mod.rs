//! Static deltas: every object one commit adds to another, in one file.
//!
//! A delta `FROM → TO` holds the objects of `TO`'s closure that are not in
//! `FROM`'s: many small objects compressed together in one zstd frame per
//! part, and each changed file as a patch against the file at the same
//! path in `FROM`, when that is smaller: zstd with the old content as
//! prefix ("patch-from"), a binary diff for executables ([`bsdiff`]), or
//! for gzip files a patch of their text plus what recompresses it into
//! the same bytes ([`deflate`]). A delta from scratch holds the whole
//! closure. The byte format (version 2) is in
//! `docs/repository-format.md`, "Static deltas".
//!
//! [`generate`] writes a delta in parallel (rayon), a window of parts at a
//! time, so memory stays bounded by the window whatever the commit's size,
//! and checks the file by reading it back before it takes its final name.
//! [`read`] decodes a delta from any reader, rebuilds the objects of a
//! batch of parts in parallel (from the stored base where it is a patch),
//! computes each id and refuses the first that is not what the delta
//! claims: a reader never hands on an object that does not hash to its id.

mod bsdiff;
mod deflate;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hash::{Hasher, ObjectId, ID_LEN};
use crate::object::{Commit, DirMeta, EntryKind, FileHeader, FileKind, ObjectKind, Tree};
use crate::store::{Repo, MAX_HEADER_LEN};

/// The first bytes of every delta file.
pub const MAGIC: &[u8; 8] = b"TCDELTA\n";
/// The delta format version this build writes; it reads this one and
/// every earlier one.
pub const VERSION: u32 = 2;
/// Where a repository keeps its deltas (served as they are).
pub const DELTAS_DIR: &str = "deltas";

/// Part kinds.
const PART_END: u8 = 0;
const PART_OBJECTS: u8 = 1;
const PART_PATCH: u8 = 2;
/// Since version 2.
const PART_BSDIFF: u8 = 3;
const PART_DEFLATE: u8 = 4;

/// A part of plain objects is closed once it holds this many bytes
/// (uncompressed): large enough for zstd to find what small files share,
/// small enough that parts compress in parallel and a window of them
/// stays small in memory.
const PART_TARGET: u64 = 4 << 20;
/// Parts compressed at once: as many as hold this many bytes before
/// compression (at least one), or [`WINDOW_PARTS`]. The memory a
/// generation holds is about this much; a window is a barrier, so the
/// larger it is the better the cores stay busy.
const WINDOW_BYTES: u64 = 64 << 20;
const WINDOW_PARTS: usize = 1024;
/// A base and its new content must fit zstd's window together; larger
/// files travel whole.
const MAX_PATCH_WINDOW_LOG: u32 = 27;
/// Bytes a part header takes: kind, count, raw length, body length.
const PART_HEADER_LEN: usize = 1 + 4 + 8 + 8;
/// ELF files travel as a binary diff up to this size (base and new):
/// above it the suffix sort costs more time than the bytes it saves.
const BSDIFF_MAX: usize = 5 << 20;
/// The largest gzip text a patch goes through (preflate holds it whole).
const DEFLATE_MAX_TEXT: usize = 64 << 20;
/// Parts a reader rebuilds at once (in parallel), and the most bytes
/// they may declare together before the batch is rebuilt.
const READ_BATCH: usize = 1024;
const READ_BATCH_BYTES: u64 = 64 << 20;

/// How to compress a delta.
#[derive(Clone, Copy, Debug)]
pub struct DeltaOptions {
    /// zstd level of the parts of plain objects.
    pub level: i32,
    /// zstd level of the patches (compressed against their base).
    pub patch_level: i32,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        // Patches at 10: on the corpus update 2 % larger than at 12 and
        // some 15 % quicker to generate (indexing each base dominates);
        // below 10 zstd searches the base far less and they grow 17 %.
        DeltaOptions {
            level: 12,
            patch_level: 10,
        }
    }
}

/// What a generated (or read) delta holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeltaInfo {
    pub from: Option<ObjectId>,
    pub to: ObjectId,
    /// The file's size in bytes and its SHA-256 (hex).
    pub size: u64,
    pub sha256: String,
    pub objects: u64,
    /// File objects that travel as a patch against a file of `from`.
    pub patched: u64,
    pub parts: u64,
}

/// The file name of the delta `from → to` (`from` absent: from scratch).
pub fn file_name(from: Option<&ObjectId>, to: &ObjectId) -> String {
    match from {
        Some(f) => format!("{}-{}.delta", f.to_hex(), to.to_hex()),
        None => format!("{}.delta", to.to_hex()),
    }
}

/// The path of the delta `from → to` relative to the repository.
pub fn relative_path(from: Option<&ObjectId>, to: &ObjectId) -> String {
    format!("{DELTAS_DIR}/{}", file_name(from, to))
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Delta {
        reason: reason.into(),
    }
}

/// One object to put in a delta.
#[derive(Clone, Copy, Debug)]
enum Item {
    Meta(ObjectId, ObjectKind),
    /// A file object, and the same path's file in `from` when it is a
    /// regular file with other content (the patch base).
    File {
        id: ObjectId,
        base: Option<ObjectId>,
        size: u64,
    },
}

/// A planned part.
enum Plan {
    Objects(Vec<Item>),
    Patch {
        id: ObjectId,
        base: ObjectId,
        size: u64,
    },
}

impl Plan {
    /// Bytes to compress: what the part costs to make.
    fn cost(&self) -> u64 {
        match self {
            Plan::Objects(items) => items
                .iter()
                .map(|i| match i {
                    Item::File { size, .. } => *size,
                    Item::Meta(..) => 256,
                })
                .sum(),
            Plan::Patch { size, .. } => *size,
        }
    }
}

/// Regular files of a commit by path, and every tree, dirmeta and file id.
#[derive(Default)]
struct Listing {
    files: HashMap<Vec<u8>, ObjectId>,
    ids: HashSet<(ObjectId, ObjectKind)>,
}

fn list_commit(repo: &Repo, commit: &ObjectId) -> Result<Listing> {
    let c = repo.read_commit(commit)?;
    let mut out = Listing::default();
    out.ids.insert((*commit, ObjectKind::Commit));
    out.ids.insert((c.root_meta, ObjectKind::DirMeta));
    let mut stack = vec![(Vec::new(), c.root_tree)];
    while let Some((path, tree_id)) = stack.pop() {
        if !out.ids.insert((tree_id, ObjectKind::Tree)) {
            continue;
        }
        for e in repo.read_tree(&tree_id)?.entries {
            let p = child_path(&path, &e.name);
            match e.kind {
                EntryKind::Regular { file } => {
                    out.ids.insert((file, ObjectKind::File));
                    out.files.insert(p, file);
                }
                EntryKind::Symlink { file } => {
                    out.ids.insert((file, ObjectKind::File));
                }
                EntryKind::Dir { tree, meta } => {
                    out.ids.insert((meta, ObjectKind::DirMeta));
                    stack.push((p, tree));
                }
            }
        }
    }
    Ok(out)
}

/// `path/name`, paths being `/`-joined entry names from the root.
fn child_path(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(path.len() + 1 + name.len());
    p.extend_from_slice(path);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// The objects `to` adds to `from`, each once, with patch bases.
fn new_items(repo: &Repo, from: Option<&ObjectId>, to: &ObjectId) -> Result<Vec<Item>> {
    let old = match from {
        Some(f) => list_commit(repo, f)?,
        None => Listing::default(),
    };
    let c = repo.read_commit(to)?;
    let mut seen: HashSet<(ObjectId, ObjectKind)> = HashSet::new();
    let mut items = Vec::new();
    let mut add_meta = |items: &mut Vec<Item>, id: ObjectId, kind: ObjectKind| {
        if !old.ids.contains(&(id, kind)) && seen.insert((id, kind)) {
            items.push(Item::Meta(id, kind));
            true
        } else {
            false
        }
    };
    add_meta(&mut items, *to, ObjectKind::Commit);
    add_meta(&mut items, c.root_meta, ObjectKind::DirMeta);
    let mut files_seen: HashSet<ObjectId> = HashSet::new();
    let mut stack = vec![(Vec::new(), c.root_tree)];
    while let Some((path, tree_id)) = stack.pop() {
        // A tree `from` has (or one already listed) brings nothing new.
        if !add_meta(&mut items, tree_id, ObjectKind::Tree) {
            continue;
        }
        for e in repo.read_tree(&tree_id)?.entries {
            let p = child_path(&path, &e.name);
            match e.kind {
                EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                    if old.ids.contains(&(file, ObjectKind::File)) || !files_seen.insert(file) {
                        continue;
                    }
                    let header = repo.read_file_header(&file)?;
                    let base = match (e.kind, old.files.get(&p)) {
                        (EntryKind::Regular { .. }, Some(b)) if header.size > 0 => Some(*b),
                        _ => None,
                    };
                    items.push(Item::File {
                        id: file,
                        base,
                        size: header.size,
                    });
                }
                EntryKind::Dir { tree, meta } => {
                    add_meta(&mut items, meta, ObjectKind::DirMeta);
                    stack.push((p, tree));
                }
            }
        }
    }
    Ok(items)
}

/// Groups the items into parts: a patch per file with a base, plain
/// objects together up to [`PART_TARGET`] bytes.
fn plan(items: Vec<Item>) -> Vec<Plan> {
    let mut plans = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0u64;
    for item in items {
        match item {
            Item::File {
                id,
                base: Some(base),
                size,
            } => plans.push(Plan::Patch { id, base, size }),
            other => {
                bytes += match other {
                    Item::File { size, .. } => size,
                    _ => 256,
                };
                current.push(other);
                if bytes >= PART_TARGET {
                    plans.push(Plan::Objects(std::mem::take(&mut current)));
                    bytes = 0;
                }
            }
        }
    }
    if !current.is_empty() {
        plans.push(Plan::Objects(current));
    }
    // The costliest parts first: a window waits for its slowest part, so
    // the large patches run beside each other and the small parts fill
    // the cores after them.
    plans.sort_by_key(|p| std::cmp::Reverse(p.cost()));
    plans
}

/// The canonical encoding of a stored object (a file's header ‖ content).
fn canonical(repo: &Repo, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
    match kind {
        ObjectKind::File => {
            let (header, content) = repo.read_file(id)?;
            let mut out = header.encode();
            out.extend_from_slice(&content);
            Ok(out)
        }
        _ => repo.read_meta_bytes(id, kind),
    }
}

fn part_header(kind: u8, count: u32, raw: u64, body: u64) -> [u8; PART_HEADER_LEN] {
    let mut h = [0u8; PART_HEADER_LEN];
    h[0] = kind;
    h[1..5].copy_from_slice(&count.to_le_bytes());
    h[5..13].copy_from_slice(&raw.to_le_bytes());
    h[13..21].copy_from_slice(&body.to_le_bytes());
    h
}

/// Encodes one part: its header and body.
fn encode_part(repo: &Repo, plan: &Plan, opts: &DeltaOptions) -> Result<(Vec<u8>, u64, bool)> {
    let io_err = |e: io::Error| bad(format!("compressing: {e}"));
    match plan {
        Plan::Objects(items) => {
            let mut raw = Vec::new();
            for item in items {
                let (id, kind) = match *item {
                    Item::Meta(id, kind) => (id, kind),
                    Item::File { id, .. } => (id, ObjectKind::File),
                };
                let data = canonical(repo, &id, kind)?;
                raw.push(kind.tag());
                raw.extend_from_slice(&id.0);
                raw.extend_from_slice(&(data.len() as u64).to_le_bytes());
                raw.extend_from_slice(&data);
            }
            let body = compress(&raw, None, opts.level).map_err(io_err)?;
            let mut out = part_header(
                PART_OBJECTS,
                items.len() as u32,
                raw.len() as u64,
                body.len() as u64,
            )
            .to_vec();
            out.extend_from_slice(&body);
            Ok((out, items.len() as u64, false))
        }
        Plan::Patch { id, base, .. } => {
            let (header, content) = repo.read_file(id)?;
            let (_, base_content) = repo.read_file(base)?;
            // What the object costs without a patch: its archive form (as a
            // pull by objects would fetch it).
            let plain = match repo.mode() {
                crate::RepoMode::Archive => fs::metadata(repo.object_path(id, ObjectKind::File))
                    .map_err(Error::io("reading", repo.object_path(id, ObjectKind::File)))?
                    .len() as usize,
                crate::RepoMode::BareUser => crate::store::encode_file_wire_form(&header, &content)
                    .map_err(io_err)?
                    .len(),
            };
            let candidates = patch_candidates(&content, &base_content, opts).map_err(io_err)?;
            // A patch only where it pays; otherwise the file travels whole
            // in a part of its own.
            let Some((kind, raw, payload)) = candidates
                .into_iter()
                .filter(|(_, _, p)| p.len() < plain)
                .min_by_key(|(_, _, p)| p.len())
            else {
                return encode_part(
                    repo,
                    &Plan::Objects(vec![Item::File {
                        id: *id,
                        base: None,
                        size: header.size,
                    }]),
                    opts,
                );
            };
            let encoded = header.encode();
            let mut body = Vec::with_capacity(2 * ID_LEN + 4 + encoded.len() + payload.len());
            body.extend_from_slice(&id.0);
            body.extend_from_slice(&base.0);
            body.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
            body.extend_from_slice(&encoded);
            body.extend_from_slice(&payload);
            let mut out = part_header(kind, 1, raw, body.len() as u64).to_vec();
            out.extend_from_slice(&body);
            Ok((out, 1, true))
        }
    }
}

/// The ways `content` can travel against `base`: `(part kind, raw, payload)`
/// with the payload as the part's body carries it after the file header.
fn patch_candidates(
    content: &[u8],
    base: &[u8],
    opts: &DeltaOptions,
) -> io::Result<Vec<(u8, u64, Vec<u8>)>> {
    let mut out = Vec::new();
    // Compiled code: a binary diff (addresses move between versions, which
    // costs zstd's patch dearly); zstd's patch for larger ones (the suffix
    // sort would cost more time than the bytes it saves).
    let elf = |d: &[u8]| d.starts_with(b"\x7fELF");
    if elf(content) && elf(base) && content.len() <= BSDIFF_MAX && base.len() <= BSDIFF_MAX {
        let payload = bsdiff::diff(base, content);
        let frame = compress(&payload, None, opts.patch_level)?;
        out.push((PART_BSDIFF, payload.len() as u64, frame));
        return Ok(out);
    }
    if window_log(base.len(), content.len()) <= MAX_PATCH_WINDOW_LOG {
        let patch = compress(content, Some(base), opts.patch_level)?;
        out.push((PART_PATCH, content.len() as u64, patch));
    }
    if let Some(p) = deflate_payload(content, base, opts)? {
        out.push(p);
    }
    Ok(out)
}

/// A gzip file against a gzip base: `base_start: u64 ‖ head_len: u32 ‖
/// head ‖ tail_len: u32 ‖ tail ‖ rec_len: u32 ‖ reconstruction ‖ zstd
/// frame of the text (the base's text as prefix)`; `None` when either is
/// not gzip or preflate cannot describe the stream.
fn deflate_payload(
    content: &[u8],
    base: &[u8],
    opts: &DeltaOptions,
) -> io::Result<Option<(u8, u64, Vec<u8>)>> {
    let (Some(start), Some(base_start)) = (
        deflate::gzip_stream_start(content),
        deflate::gzip_stream_start(base),
    ) else {
        return Ok(None);
    };
    let Some(a) = deflate::analyze(content, start, DEFLATE_MAX_TEXT) else {
        return Ok(None);
    };
    let Ok(base_text) = deflate::inflate(base, base_start, DEFLATE_MAX_TEXT as u64) else {
        return Ok(None);
    };
    if window_log(base_text.len(), a.text.len()) > MAX_PATCH_WINDOW_LOG {
        return Ok(None);
    }
    let frame = compress(&a.text, Some(&base_text), opts.patch_level)?;
    let (head, tail) = (&content[..start], &content[start + a.stream_len..]);
    let mut p =
        Vec::with_capacity(8 + 12 + head.len() + tail.len() + a.reconstruction.len() + frame.len());
    p.extend_from_slice(&(base_start as u64).to_le_bytes());
    for field in [head, tail, &a.reconstruction[..]] {
        p.extend_from_slice(&(field.len() as u32).to_le_bytes());
        p.extend_from_slice(field);
    }
    p.extend_from_slice(&frame);
    Ok(Some((PART_DEFLATE, a.text.len() as u64, p)))
}

/// The zstd window that covers a base and the content after it.
fn window_log(base: usize, content: usize) -> u32 {
    let total = (base + content).max(1 << 10) as u64;
    64 - (total - 1).leading_zeros()
}

fn compress(data: &[u8], prefix: Option<&[u8]>, level: i32) -> io::Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.include_checksum(false)?;
    if let Some(p) = prefix {
        c.set_parameter(CParameter::WindowLog(
            window_log(p.len(), data.len()).max(10),
        ))?;
        c.context_mut()
            .ref_prefix(p)
            .map_err(|code| io::Error::other(zstd::zstd_safe::get_error_name(code)))?;
    }
    c.compress(data)
}

/// Writes the delta `from → to` (from scratch without `from`) into
/// `REPO/deltas/`, or returns the one already there (deltas are
/// immutable: same name, same content). The file is read back and every
/// object checked before it takes its name.
pub fn generate(
    repo: &Repo,
    from: Option<&ObjectId>,
    to: &ObjectId,
    opts: &DeltaOptions,
) -> Result<DeltaInfo> {
    let dir = repo.path().join(DELTAS_DIR);
    fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let path = dir.join(file_name(from, to));
    if path.exists() {
        return describe(repo, &path);
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name(from, to),
        std::process::id()
    ));
    let result = write_delta(repo, from, to, opts, &tmp).and_then(|info| {
        // Read back: every object rebuilds to its id.
        let checked = read(
            repo,
            File::open(&tmp).map_err(Error::io("opening", &tmp))?,
            Some((from, to)),
            &ReadLimits::default(),
            &|_| Ok(()),
        )?;
        if checked.from.as_ref() != from || checked.to != *to || checked.objects != info.objects {
            return Err(bad("the written delta does not read back as written"));
        }
        if repo.fsync() {
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("syncing", &tmp))?;
        }
        fs::rename(&tmp, &path).map_err(Error::io("renaming", &path))?;
        if repo.fsync() {
            crate::fsutil::fsync_dir(&dir).map_err(Error::io("syncing", &dir))?;
        }
        Ok(info)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Size and SHA-256 of an existing delta, and what its header says.
pub fn describe(repo: &Repo, path: &Path) -> Result<DeltaInfo> {
    let mut hasher = Hasher::default();
    let mut size = 0u64;
    let mut f = File::open(path).map_err(Error::io("opening", path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let header = read(
        repo,
        File::open(path).map_err(Error::io("opening", path))?,
        None,
        &ReadLimits::default(),
        &|_| Ok(()),
    )?;
    Ok(DeltaInfo {
        size,
        sha256: hasher.finish().to_hex(),
        ..header
    })
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Hasher,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_delta(
    repo: &Repo,
    from: Option<&ObjectId>,
    to: &ObjectId,
    opts: &DeltaOptions,
    tmp: &PathBuf,
) -> Result<DeltaInfo> {
    let plans = plan(new_items(repo, from, to)?);
    let file = File::create(tmp).map_err(Error::io("creating", tmp))?;
    let mut out = Hashing {
        inner: BufWriter::new(file),
        hasher: Hasher::default(),
        size: 0,
    };
    let w = |out: &mut Hashing<BufWriter<File>>, data: &[u8]| {
        out.write_all(data).map_err(Error::io("writing", tmp))
    };
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&VERSION.to_le_bytes());
    match from {
        Some(f) => {
            header.push(1);
            header.extend_from_slice(&f.0);
        }
        None => header.push(0),
    }
    header.extend_from_slice(&to.0);
    w(&mut out, &header)?;
    let (mut objects, mut patched, mut parts) = (0u64, 0u64, 0u64);
    let mut windows: Vec<&[Plan]> = Vec::new();
    let (mut start, mut bytes) = (0usize, 0u64);
    for (i, p) in plans.iter().enumerate() {
        if i > start && (bytes + p.cost() > WINDOW_BYTES || i - start == WINDOW_PARTS) {
            windows.push(&plans[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += p.cost();
    }
    windows.push(&plans[start..]);
    for window in windows {
        let encoded: Vec<Result<(Vec<u8>, u64, bool)>> = window
            .par_iter()
            // One part per task: a few parts cost far more than the rest.
            .with_max_len(1)
            .map(|p| encode_part(repo, p, opts))
            .collect();
        for part in encoded {
            let (bytes, n, is_patch) = part?;
            w(&mut out, &bytes)?;
            objects += n;
            patched += u64::from(is_patch);
            parts += 1;
        }
    }
    w(
        &mut out,
        &part_header(
            PART_END,
            u32::try_from(objects).map_err(|_| bad("too many objects"))?,
            0,
            0,
        ),
    )?;
    out.flush().map_err(Error::io("writing", tmp))?;
    Ok(DeltaInfo {
        from: from.copied(),
        to: *to,
        size: out.size,
        sha256: out.hasher.finish().to_hex(),
        objects,
        patched,
        parts,
    })
}

/// Caps a reader applies to a delta it did not make.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Largest object (a file's content, a tree's encoding).
    pub max_object_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_object_bytes: 1 << 30,
        }
    }
}

/// An object rebuilt from a delta and checked against its id.
pub enum DeltaObject {
    File(CheckedFile),
    /// A tree, dirmeta or commit: its canonical encoding.
    Meta {
        id: ObjectId,
        kind: ObjectKind,
        data: Vec<u8>,
    },
}

/// A file object the reader rebuilt and hashed to its id: only [`read`]
/// makes one, so storing it needs no second hash.
pub struct CheckedFile {
    id: ObjectId,
    header: FileHeader,
    content: Vec<u8>,
}

impl CheckedFile {
    pub fn id(&self) -> ObjectId {
        self.id
    }
    pub fn header(&self) -> &FileHeader {
        &self.header
    }
    pub fn content(&self) -> &[u8] {
        &self.content
    }
    /// Stores the object in `txn` (without hashing it again).
    pub fn store(&self, txn: &crate::store::Transaction) -> Result<()> {
        txn.write_file_with_id(self.id, &self.header, &self.content)
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(format!("truncated in {what}"))
        } else {
            bad(format!("reading {what}: {e}"))
        }
    })
}

fn read_id(r: &mut impl Read, what: &str) -> Result<ObjectId> {
    let mut b = [0u8; ID_LEN];
    read_exact(r, &mut b, what)?;
    Ok(ObjectId(b))
}

/// Reads a delta from `input`, handing every object to `sink` once it is
/// rebuilt and hashes to the id the delta gives it. Patch bases come from
/// `repo` (verified as they are read). Stops at the first bad byte: a
/// truncated, altered or endless delta is one error, and the objects
/// handed on before it are each correct. With `expect`, a delta between
/// other commits is refused before any object. Returns what the delta held
/// (size and hash are not computed here: zero and empty).
pub fn read(
    repo: &Repo,
    input: impl Read,
    expect: Option<(Option<&ObjectId>, &ObjectId)>,
    limits: &ReadLimits,
    sink: &(dyn Fn(DeltaObject) -> Result<()> + Sync),
) -> Result<DeltaInfo> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let mut magic = [0u8; 8];
    read_exact(&mut r, &mut magic, "the header")?;
    if &magic != MAGIC {
        return Err(bad("not a treectl delta (wrong magic)"));
    }
    let mut v = [0u8; 4];
    read_exact(&mut r, &mut v, "the header")?;
    let version = u32::from_le_bytes(v);
    if !(1..=VERSION).contains(&version) {
        return Err(bad(format!(
            "delta format version {version}; this treectl reads versions 1 to {VERSION}"
        )));
    }
    let mut flag = [0u8; 1];
    read_exact(&mut r, &mut flag, "the header")?;
    let from = match flag[0] {
        0 => None,
        1 => Some(read_id(&mut r, "the header")?),
        other => return Err(bad(format!("invalid from flag {other}"))),
    };
    let to = read_id(&mut r, "the header")?;
    if let Some((want_from, want_to)) = expect {
        if from.as_ref() != want_from || to != *want_to {
            return Err(bad(format!(
                "it is the delta {} -> {}, not the one asked for",
                from.map_or("scratch".to_owned(), |f| f.short()),
                to.short()
            )));
        }
    }
    // A part never needs more than the largest object plus a full part.
    let max_raw = limits.max_object_bytes.saturating_add(2 * PART_TARGET);
    let mut info = DeltaInfo {
        from,
        to,
        size: 0,
        sha256: String::new(),
        objects: 0,
        patched: 0,
        parts: 0,
    };
    let mut batch: Vec<RawPart> = Vec::new();
    let mut batch_bytes = 0u64;
    loop {
        let mut h = [0u8; PART_HEADER_LEN];
        read_exact(&mut r, &mut h, "a part header")?;
        let kind = h[0];
        let count = u32::from_le_bytes(h[1..5].try_into().expect("4 bytes"));
        let raw = u64::from_le_bytes(h[5..13].try_into().expect("8 bytes"));
        let body_len = u64::from_le_bytes(h[13..21].try_into().expect("8 bytes"));
        let index = info.parts + batch.len() as u64;
        if kind == PART_END {
            rebuild(repo, std::mem::take(&mut batch), limits, &mut info, sink)?;
            if u64::from(count) != info.objects || raw != 0 || body_len != 0 {
                return Err(bad(format!(
                    "the end says {count} objects, the parts held {}",
                    info.objects
                )));
            }
            let mut rest = [0u8; 1];
            return match r.read(&mut rest) {
                Ok(0) => Ok(info),
                Ok(_) => Err(bad("bytes after the end")),
                Err(e) => Err(bad(format!("reading: {e}"))),
            };
        }
        let known = match kind {
            PART_OBJECTS => true,
            PART_BSDIFF | PART_DEFLATE if version < 2 => false,
            PART_PATCH | PART_BSDIFF | PART_DEFLATE if count != 1 => {
                return Err(bad(format!("patch part {index} with {count} objects")))
            }
            PART_PATCH => true,
            PART_BSDIFF | PART_DEFLATE => version >= 2,
            _ => false,
        };
        if !known {
            return Err(bad(format!("unknown part kind {kind}")));
        }
        if raw > max_raw || body_len > max_raw {
            return Err(bad(format!(
                "part {index} declares {raw} bytes ({body_len} compressed), over the limit {max_raw}"
            )));
        }
        let mut body = Vec::new();
        (&mut r)
            .take(body_len)
            .read_to_end(&mut body)
            .map_err(|e| bad(format!("reading part {index}: {e}")))?;
        if body.len() as u64 != body_len {
            return Err(bad(format!("truncated in part {index}")));
        }
        batch_bytes += raw;
        batch.push(RawPart {
            index,
            kind,
            count,
            raw,
            body,
        });
        if batch.len() >= READ_BATCH || batch_bytes >= READ_BATCH_BYTES {
            rebuild(repo, std::mem::take(&mut batch), limits, &mut info, sink)?;
            batch_bytes = 0;
        }
    }
}

/// A part as read, before its objects are rebuilt.
struct RawPart {
    index: u64,
    kind: u8,
    count: u32,
    raw: u64,
    body: Vec<u8>,
}

/// Rebuilds a batch of parts in parallel, the costliest first, each
/// part's objects handed on as it is done; the error is the first failing
/// part's.
fn rebuild(
    repo: &Repo,
    batch: Vec<RawPart>,
    limits: &ReadLimits,
    info: &mut DeltaInfo,
    sink: &(dyn Fn(DeltaObject) -> Result<()> + Sync),
) -> Result<()> {
    // Objects arrive in no particular order.
    let failure: Mutex<Option<(u64, Error)>> = Mutex::new(None);
    let (objects, patched, parts) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    // The costliest parts first, each thread taking the next one left: a
    // large part started last would run alone at the end.
    let mut order: Vec<&RawPart> = batch.iter().collect();
    order.sort_by_key(|p| std::cmp::Reverse(rebuild_cost(p)));
    let next = AtomicUsize::new(0);
    let work = |p: &RawPart| {
        if failure.lock().expect("poisoned").is_some() {
            return;
        }
        let mut rebuilt = Vec::new();
        let result = rebuild_part(repo, p, limits, &mut rebuilt).map_err(|e| in_part(e, p.index));
        // What a part rebuilt before it failed is correct: hand it on.
        match rebuilt.into_iter().try_for_each(sink).and(result) {
            Ok(()) => {
                objects.fetch_add(u64::from(p.count), Ordering::Relaxed);
                patched.fetch_add(u64::from(p.kind != PART_OBJECTS), Ordering::Relaxed);
                parts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let mut f = failure.lock().expect("poisoned");
                if f.as_ref().is_none_or(|(first, _)| p.index < *first) {
                    *f = Some((p.index, e));
                }
            }
        }
    };
    rayon::scope(|s| {
        for _ in 0..rayon::current_num_threads().min(order.len()) {
            s.spawn(|_| {
                while let Some(p) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    work(p);
                }
            });
        }
    });
    if let Some((_, e)) = failure.into_inner().expect("poisoned") {
        return Err(e);
    }
    info.objects += objects.into_inner();
    info.patched += patched.into_inner();
    info.parts += parts.into_inner();
    Ok(())
}

/// A rough measure of the CPU a part takes to rebuild: recompressing a
/// gzip file's text (kind 4) costs far more per byte than the rest.
fn rebuild_cost(p: &RawPart) -> u64 {
    match p.kind {
        PART_DEFLATE => p.raw.saturating_mul(16),
        PART_BSDIFF => p.raw.saturating_mul(2),
        _ => p.raw,
    }
}

fn rebuild_part(
    repo: &Repo,
    p: &RawPart,
    limits: &ReadLimits,
    out: &mut Vec<DeltaObject>,
) -> Result<()> {
    if p.kind == PART_OBJECTS {
        let data = decompress(&p.body, None, p.raw).map_err(bad)?;
        return read_objects(&data, p.count, limits, out);
    }
    let (id, base, header, payload) = patch_fields(&p.body, limits)?;
    // Not hashed here: the object rebuilt from it is, so a damaged base
    // can only make the patch fail.
    let (_, base_content) = repo.read_file_unverified(&base)?;
    let size = header.size;
    let content = match p.kind {
        PART_PATCH => {
            if p.raw != size {
                return Err(bad(format!(
                    "patch of {id} declares {} bytes, its header {size}",
                    p.raw
                )));
            }
            decompress(payload, Some(&base_content), size)
        }
        PART_BSDIFF => decompress(payload, None, p.raw)
            .and_then(|diff| bsdiff::apply(&base_content, &diff, size as usize)),
        _ => rebuild_gzip(payload, &base_content, p.raw, size),
    }
    .map_err(|e| bad(format!("patch of {id}: {e}")))?;
    let actual = header.id_with_content(&content);
    if actual != id {
        return Err(Error::Corrupt {
            kind: ObjectKind::File,
            id,
            reason: format!("the delta's patch rebuilds an object that hashes to {actual}"),
        });
    }
    out.push(DeltaObject::File(CheckedFile {
        id,
        header,
        content,
    }));
    Ok(())
}

/// The fields every patch part starts with: the object's id, its base's
/// id and its file header; then what the kind carries.
fn patch_fields<'b>(
    body: &'b [u8],
    limits: &ReadLimits,
) -> Result<(ObjectId, ObjectId, FileHeader, &'b [u8])> {
    if body.len() < 2 * ID_LEN + 4 {
        return Err(bad("truncated patch"));
    }
    let id = ObjectId(body[..ID_LEN].try_into().expect("id length"));
    let base = ObjectId(body[ID_LEN..2 * ID_LEN].try_into().expect("id length"));
    let hlen = u32::from_le_bytes(
        body[2 * ID_LEN..2 * ID_LEN + 4]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    let rest = &body[2 * ID_LEN + 4..];
    if hlen > MAX_HEADER_LEN || hlen > rest.len() {
        return Err(bad("truncated patch header"));
    }
    let (raw_header, payload) = rest.split_at(hlen);
    let header = FileHeader::decode(raw_header).map_err(|err| Error::Decode {
        kind: ObjectKind::File,
        id,
        err,
    })?;
    if header.size > limits.max_object_bytes || header.kind() != FileKind::Regular {
        return Err(bad(format!(
            "patch of {id}: a {} byte {:?} file is not what a patch makes",
            header.size,
            header.kind()
        )));
    }
    Ok((id, base, header, payload))
}

/// A gzip file from its base and a deflate payload (see
/// [`deflate_payload`]): `text_len` is the part's `raw`.
fn rebuild_gzip(payload: &[u8], base: &[u8], text_len: u64, size: u64) -> Result<Vec<u8>, String> {
    let mut rest = payload;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err("truncated deflate patch".into());
        }
        let (field, after) = rest.split_at(n);
        rest = after;
        Ok(field)
    };
    let base_start = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
    let mut fields = [&[][..]; 3];
    for f in &mut fields {
        let n = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        *f = take(n)?;
    }
    let [head, tail, reconstruction] = fields;
    let frame = rest;
    if text_len > DEFLATE_MAX_TEXT as u64 {
        return Err(format!("a text of {text_len} bytes is over the limit"));
    }
    let start = usize::try_from(base_start).map_err(|_| "the base's stream offset is too large")?;
    let base_text = deflate::inflate(base, start, DEFLATE_MAX_TEXT as u64)?;
    let text = decompress(frame, Some(&base_text), text_len)?;
    let stream = deflate::recreate(&text, reconstruction)?;
    if (head.len() + stream.len() + tail.len()) as u64 != size {
        return Err(format!(
            "rebuilds {} bytes, the header says {size}",
            head.len() + stream.len() + tail.len()
        ));
    }
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(head);
    out.extend_from_slice(&stream);
    out.extend_from_slice(tail);
    Ok(out)
}

fn in_part(e: Error, part: u64) -> Error {
    match e {
        Error::Delta { reason } => bad(format!("part {part}: {reason}")),
        other => other,
    }
}

fn decompress(data: &[u8], prefix: Option<&[u8]>, size: u64) -> Result<Vec<u8>, String> {
    use zstd::zstd_safe::{get_error_name, DCtx, ResetDirective};
    thread_local! {
        // One context per thread: making one per object (some 100 KiB of
        // tables, fresh pages) costs more than a small object does.
        static DCTX: std::cell::RefCell<DCtx<'static>> = std::cell::RefCell::new(DCtx::create());
    }
    // zstd's dictionary magic number: a prefix starting with it would be
    // read as a dictionary by `decompress_using_dict`.
    const DICT_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();
    // Exactly `size` bytes: a frame that decodes to more fails for want
    // of room, one that decodes to fewer is caught below.
    let mut out = Vec::with_capacity(size as usize);
    let decoded = match prefix {
        // Only a prefix reads such a base as raw content.
        Some(p) if p.len() >= 8 && p.starts_with(&DICT_MAGIC) => {
            let mut d = DCtx::create();
            d.ref_prefix(p).and_then(|_| d.decompress(&mut out, data))
        }
        _ => DCTX.with_borrow_mut(|d| {
            // A frame that failed half-way leaves its state behind.
            d.reset(ResetDirective::SessionOnly)?;
            match prefix {
                // Any other base is raw content, exactly as a prefix.
                Some(p) => d.decompress_using_dict(&mut out, data, p),
                None => d.decompress(&mut out, data),
            }
        }),
    };
    decoded.map_err(|c| format!("decompressing: {}", get_error_name(c)))?;
    if out.len() as u64 != size {
        return Err(format!(
            "decompresses to {} bytes, declared {size}",
            out.len()
        ));
    }
    Ok(out)
}

/// The records of an objects part, checked, into `out` (those before a
/// bad one stay there).
fn read_objects(
    mut data: &[u8],
    count: u32,
    limits: &ReadLimits,
    out: &mut Vec<DeltaObject>,
) -> Result<()> {
    for _ in 0..count {
        if data.len() < 1 + ID_LEN + 8 {
            return Err(bad("truncated object record"));
        }
        let kind = ObjectKind::ALL
            .into_iter()
            .find(|k| k.tag() == data[0])
            .ok_or_else(|| bad(format!("unknown object kind {}", data[0])))?;
        let id = ObjectId(data[1..1 + ID_LEN].try_into().expect("id length"));
        let len = u64::from_le_bytes(
            data[1 + ID_LEN..1 + ID_LEN + 8]
                .try_into()
                .expect("8 bytes"),
        );
        data = &data[1 + ID_LEN + 8..];
        if len > data.len() as u64 {
            return Err(bad("truncated object record"));
        }
        let (obj, rest) = data.split_at(len as usize);
        data = rest;
        out.push(check(kind, id, obj, limits)?);
    }
    if !data.is_empty() {
        return Err(bad(format!("{} bytes after the last object", data.len())));
    }
    Ok(())
}

/// Rebuilds an object from its canonical encoding and checks its id.
fn check(kind: ObjectKind, id: ObjectId, data: &[u8], limits: &ReadLimits) -> Result<DeltaObject> {
    let actual = ObjectId::of(data);
    if actual != id {
        return Err(Error::Corrupt {
            kind,
            id,
            reason: format!("the delta's copy hashes to {actual}"),
        });
    }
    let decode = |err| Error::Decode { kind, id, err };
    match kind {
        ObjectKind::File => {
            let (header, content) = FileHeader::decode_prefix(data).map_err(decode)?;
            if content.len() as u64 != header.size || header.size > limits.max_object_bytes {
                return Err(Error::Corrupt {
                    kind,
                    id,
                    reason: format!(
                        "{} bytes of content, header says {}",
                        content.len(),
                        header.size
                    ),
                });
            }
            Ok(DeltaObject::File(CheckedFile {
                id,
                content: content.to_vec(),
                header,
            }))
        }
        _ => {
            match kind {
                ObjectKind::Tree => Tree::decode(data).map(drop),
                ObjectKind::DirMeta => DirMeta::decode(data).map(drop),
                _ => Commit::decode(data).map(drop),
            }
            .map_err(decode)?;
            Ok(DeltaObject::Meta {
                id,
                kind,
                data: data.to_vec(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::{commit_dir, CommitOptions};
    use crate::refs::RefName;
    use crate::store::Transaction;
    use crate::RepoMode;

    /// `len` bytes zstd cannot shrink on their own (xorshift).
    pub(super) fn noise(seed: u32, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_base_is_raw_content_whatever_it_starts_with() {
        let magic = 0xEC30_A437u32.to_le_bytes();
        let dictionary_like = [&magic[..], &noise(3, 60_000)].concat();
        for base in [
            dictionary_like,
            noise(5, 60_000),
            b"short".to_vec(),
            Vec::new(),
        ] {
            let content = [&base[..], b"and a little more"].concat();
            let frame = compress(&content, Some(&base), 3).expect("compress");
            // Twice: the second reuses the thread's context.
            for _ in 0..2 {
                let out = decompress(&frame, Some(&base), content.len() as u64);
                assert_eq!(out.as_deref(), Ok(&content[..]));
            }
        }
    }

    /// Content a patch shrinks: long, varied, and mostly the same in both
    /// versions.
    fn big(seed: u32, change: bool) -> Vec<u8> {
        let mut v = noise(seed, 200_000);
        if change {
            v[1000..1010].copy_from_slice(b"0123456789");
        }
        v
    }

    fn write_tree(dir: &Path, v2: bool) {
        fs::create_dir_all(dir.join("usr/bin")).expect("mkdir");
        fs::write(dir.join("usr/bin/tool"), big(7, v2)).expect("write");
        fs::write(dir.join("same"), b"unchanged\n").expect("write");
        if v2 {
            fs::write(dir.join("new.txt"), b"added in v2\n").expect("write");
            std::os::unix::fs::symlink("new.txt", dir.join("link")).expect("symlink");
        } else {
            fs::write(dir.join("gone.txt"), b"only in v1\n").expect("write");
        }
    }

    fn commit(repo: &Repo, dir: &Path, v2: bool) -> ObjectId {
        let tree = dir.join(if v2 { "v2" } else { "v1" });
        write_tree(&tree, v2);
        let opts = CommitOptions {
            subject: "t".into(),
            timestamp: 1,
            ..Default::default()
        };
        let name = if v2 { "v2" } else { "v1" };
        commit_dir(repo, &tree, &RefName::new(name).expect("ref"), &opts)
            .expect("commit")
            .0
    }

    fn closure_ids(repo: &Repo, c: &ObjectId) -> HashSet<(ObjectId, ObjectKind)> {
        list_commit(repo, c).expect("list").ids
    }

    struct Setup {
        _dir: tempfile::TempDir,
        server: Repo,
        client: Repo,
        v1: ObjectId,
        v2: ObjectId,
        info: DeltaInfo,
        bytes: Vec<u8>,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Repo::init(&dir.path().join("server"), RepoMode::Archive).expect("init");
        let client = Repo::init(&dir.path().join("client"), RepoMode::BareUser).expect("init");
        let v1 = commit(&server, dir.path(), false);
        let v2 = commit(&server, dir.path(), true);
        // The client has v1 (ids do not depend on the mode).
        assert_eq!(commit(&client, &dir.path().join("c"), false), v1);
        let info = generate(&server, Some(&v1), &v2, &DeltaOptions::default()).expect("generate");
        let bytes = fs::read(server.path().join(relative_path(Some(&v1), &v2))).expect("read");
        Setup {
            _dir: dir,
            server,
            client,
            v1,
            v2,
            info,
            bytes,
        }
    }

    /// Reads `bytes` with the client's store as base; returns what was
    /// handed on (each checked again here) and the outcome.
    fn read_all(
        client: &Repo,
        bytes: &[u8],
        expect: Option<(Option<&ObjectId>, &ObjectId)>,
    ) -> (Vec<(ObjectId, ObjectKind)>, Result<DeltaInfo>) {
        let got = Mutex::new(Vec::new());
        let res = read(client, bytes, expect, &ReadLimits::default(), &|o| {
            got.lock().expect("poisoned").push(match o {
                DeltaObject::File(f) => {
                    assert_eq!(f.header().id_with_content(f.content()), f.id());
                    (f.id(), ObjectKind::File)
                }
                DeltaObject::Meta { id, kind, data } => {
                    assert_eq!(ObjectId::of(&data), id);
                    (id, kind)
                }
            });
            Ok(())
        });
        (got.into_inner().expect("poisoned"), res)
    }

    #[test]
    fn a_delta_holds_exactly_what_to_adds_and_patches_the_changed_file() {
        let s = setup();
        let want: HashSet<_> = closure_ids(&s.server, &s.v2)
            .difference(&closure_ids(&s.server, &s.v1))
            .copied()
            .collect();
        let (got, res) = read_all(&s.client, &s.bytes, None);
        let info = res.expect("reads");
        assert_eq!(got.iter().copied().collect::<HashSet<_>>(), want);
        assert_eq!(got.len(), want.len(), "each object once");
        assert_eq!(info.objects, want.len() as u64);
        assert_eq!((info.from, info.to), (Some(s.v1), s.v2));
        assert_eq!(s.info.patched, 1, "usr/bin/tool travels as a patch");
        // The patch is far smaller than the file compressed on its own.
        let alone = compress(&big(7, true), None, 19).expect("compress").len();
        assert!(
            (s.info.size as usize) < alone / 4,
            "{} vs {alone}",
            s.info.size
        );
        assert_eq!(s.info.size, s.bytes.len() as u64);
        assert_eq!(s.info.sha256, ObjectId::of(&s.bytes).to_hex());
        // Generating again finds the same immutable file.
        let again =
            generate(&s.server, Some(&s.v1), &s.v2, &DeltaOptions::default()).expect("again");
        assert_eq!(again, s.info);
    }

    #[test]
    fn applied_objects_complete_the_client_commit() {
        let s = setup();
        let txn = Transaction::begin(&s.client).expect("txn");
        read(
            &s.client,
            &s.bytes[..],
            None,
            &ReadLimits::default(),
            &|o| {
                match o {
                    DeltaObject::File(f) => f.store(&txn)?,
                    DeltaObject::Meta { id, kind, data } => {
                        assert!(txn.stage_bytes(id, kind, &data)?)
                    }
                }
                Ok(())
            },
        )
        .expect("apply");
        txn.commit(&[]).expect("commit");
        for (id, kind) in closure_ids(&s.server, &s.v2) {
            assert!(s.client.has_object(&id, kind), "{kind} {id}");
        }
        let tool = list_commit(&s.server, &s.v2).expect("list").files[&b"/usr/bin/tool"[..]];
        let (_, content) = s.client.read_file(&tool).expect("patched file stored");
        assert_eq!(content, big(7, true));
    }

    #[test]
    fn damaged_deltas_are_refused_and_only_good_objects_pass() {
        let s = setup();
        // Flipped bytes anywhere: an error, never a wrong object (read_all
        // re-checks every one handed on).
        let step = (s.bytes.len() / 97).max(1);
        for at in (0..s.bytes.len()).step_by(step) {
            let mut b = s.bytes.clone();
            b[at] ^= 0x55;
            let (_, res) = read_all(&s.client, &b, Some((Some(&s.v1), &s.v2)));
            assert!(res.is_err(), "flip at {at} accepted");
        }
        // Truncated anywhere.
        for cut in (0..s.bytes.len()).step_by(step) {
            let (_, res) = read_all(&s.client, &s.bytes[..cut], None);
            let e = res.expect_err("truncated accepted");
            assert!(matches!(e, Error::Delta { .. }), "cut at {cut}: {e}");
        }
        // Endless: bytes after the end.
        let mut longer = s.bytes.clone();
        longer.extend_from_slice(&[0u8; 4096]);
        let e = read_all(&s.client, &longer, None).1.expect_err("endless");
        assert_eq!(e.to_string(), "bad delta: bytes after the end");
        // Another pair of commits than the one asked for.
        let e = read_all(&s.client, &s.bytes, Some((Some(&s.v2), &s.v2)))
            .1
            .expect_err("other commits");
        assert!(e.to_string().contains("not the one asked for"), "{e}");
        // Without the patch's base the patch cannot be read.
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = Repo::init(&dir.path().join("r"), RepoMode::BareUser).expect("init");
        let e = read_all(&empty, &s.bytes, None).1.expect_err("no base");
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }

    /// A well-formed delta whose object is not what its id says.
    #[test]
    fn an_object_that_does_not_hash_to_its_claimed_id_is_refused() {
        let s = setup();
        let header = FileHeader::regular(0o644, 0, 0, Vec::new(), 4);
        let mut data = header.encode();
        data.extend_from_slice(b"evil");
        let claimed = FileHeader::regular(0o644, 0, 0, Vec::new(), 4).id_with_content(b"good");
        let mut raw = vec![ObjectKind::File.tag()];
        raw.extend_from_slice(&claimed.0);
        raw.extend_from_slice(&(data.len() as u64).to_le_bytes());
        raw.extend_from_slice(&data);
        let body = compress(&raw, None, 3).expect("compress");
        let mut d = MAGIC.to_vec();
        d.extend_from_slice(&VERSION.to_le_bytes());
        d.push(0);
        d.extend_from_slice(&s.v2.0);
        d.extend_from_slice(&part_header(
            PART_OBJECTS,
            1,
            raw.len() as u64,
            body.len() as u64,
        ));
        d.extend_from_slice(&body);
        d.extend_from_slice(&part_header(PART_END, 1, 0, 0));
        let (got, res) = read_all(&s.client, &d, None);
        let e = res.expect_err("refused");
        assert!(
            matches!(e, Error::Corrupt { id, .. } if id == claimed),
            "{e}"
        );
        assert!(got.is_empty());
        let _ = &s.server;
    }

    /// The test vector of `docs/repository-format.md` ("Static deltas"):
    /// the header of the delta from scratch of a commit of an empty tree.
    #[test]
    fn header_test_vector() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&dir.path().join("r"), RepoMode::Archive).expect("init");
        let txn = Transaction::begin(&repo).expect("txn");
        let tree = txn.write_tree(&Tree::default()).expect("tree");
        let meta = txn
            .write_dirmeta(&DirMeta::new(0o755, 0, 0, Vec::new()))
            .expect("dirmeta");
        let c = txn
            .write_commit(&Commit {
                parent: None,
                root_tree: tree,
                root_meta: meta,
                timestamp: 0,
                subject: String::new(),
                body: String::new(),
                metadata: Default::default(),
            })
            .expect("commit");
        txn.commit(&[]).expect("store");
        let info = generate(&repo, None, &c, &DeltaOptions::default()).expect("generate");
        assert_eq!((info.objects, info.parts, info.patched), (3, 1, 0));
        let bytes = fs::read(repo.path().join(relative_path(None, &c))).expect("read");
        let mut header = b"TCDELTA\n\x02\x00\x00\x00\x00".to_vec();
        header.extend_from_slice(&c.0);
        assert_eq!(&bytes[..header.len()], &header[..]);
        // The part: kind 1, 3 objects, raw length (1 + 32 + 8) * 3 + the
        // three encodings, then the end: kind 0, 3 objects, zeros.
        let raw = 3 * (1 + 32 + 8)
            + Tree::default().encode().len()
            + DirMeta::new(0o755, 0, 0, Vec::new()).encode().len()
            + repo
                .read_meta_bytes(&c, ObjectKind::Commit)
                .expect("c")
                .len();
        let p = &bytes[header.len()..];
        assert_eq!(p[0], 1);
        assert_eq!(&p[1..5], &3u32.to_le_bytes());
        assert_eq!(&p[5..13], &(raw as u64).to_le_bytes());
        let end = &bytes[bytes.len() - PART_HEADER_LEN..];
        let mut want = vec![0u8, 3, 0, 0, 0];
        want.extend_from_slice(&[0u8; 16]);
        assert_eq!(end, &want[..]);
        // The same bytes as version 1 read too (it has no kind 3 or 4).
        let mut v1 = bytes.clone();
        v1[8] = 1;
        let read_v1 = |b: &[u8]| read(&repo, b, None, &ReadLimits::default(), &|_| Ok(()));
        assert_eq!(read_v1(&v1).expect("version 1").objects, 3);
        // A version-1 delta with a version-2 part kind, and version 3.
        let mut v1_bsdiff = v1.clone();
        v1_bsdiff[header.len()] = PART_BSDIFF;
        let e = read_v1(&v1_bsdiff).expect_err("kind 3 in version 1");
        assert!(e.to_string().contains("unknown part kind 3"), "{e}");
        let mut v3 = bytes.clone();
        v3[8] = 3;
        let e = read_v1(&v3).expect_err("version 3");
        assert!(e.to_string().contains("reads versions 1 to 2"), "{e}");
    }

    /// A tree of the corpus kind in miniature: an ELF file that moves,
    /// a gzip'd changelog that grows at the top.
    fn write_release(dir: &Path, v2: bool) {
        use std::io::Write;
        fs::create_dir_all(dir.join("usr/lib")).expect("mkdir");
        fs::create_dir_all(dir.join("usr/share/doc/p")).expect("mkdir");
        let mut elf = b"\x7fELF".to_vec();
        elf.extend_from_slice(&big(11, false));
        if v2 {
            elf.splice(5000..5000, big(12, false)[..300].iter().copied());
            for at in (9000..elf.len()).step_by(101) {
                elf[at] = elf[at].wrapping_add(1);
            }
        }
        fs::write(dir.join("usr/lib/libx.so"), &elf).expect("write");
        let mut text = String::new();
        if v2 {
            text.push_str("p (2.0) unstable; urgency=medium\n\n  * A new release.\n\n");
        }
        for i in 0..2000 {
            text.push_str(&format!(
                "p (1.{i}) unstable; urgency=low\n\n  * Change {}.\n\n",
                i * 37 % 101
            ));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(text.as_bytes()).expect("gzip");
        fs::write(
            dir.join("usr/share/doc/p/changelog.gz"),
            gz.finish().expect("gzip"),
        )
        .expect("write");
    }

    #[test]
    fn elf_files_travel_as_bsdiff_and_gzip_files_through_their_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Repo::init(&dir.path().join("server"), RepoMode::Archive).expect("init");
        let client = Repo::init(&dir.path().join("client"), RepoMode::BareUser).expect("init");
        let mut ids = Vec::new();
        for v2 in [false, true] {
            let tree = dir.path().join(format!("t{v2}"));
            write_release(&tree, v2);
            let opts = CommitOptions {
                timestamp: 1,
                ..Default::default()
            };
            let name = RefName::new(if v2 { "v2" } else { "v1" }).expect("ref");
            ids.push(commit_dir(&server, &tree, &name, &opts).expect("commit").0);
            if !v2 {
                commit_dir(&client, &tree, &name, &opts).expect("client commit");
            }
        }
        let info =
            generate(&server, Some(&ids[0]), &ids[1], &DeltaOptions::default()).expect("generate");
        let bytes =
            fs::read(server.path().join(relative_path(Some(&ids[0]), &ids[1]))).expect("read");
        // Both changed files are patches, of the new kinds.
        let mut kinds = Vec::new();
        let mut at = MAGIC.len() + 4 + 1 + 2 * ID_LEN;
        while bytes[at] != PART_END {
            kinds.push(bytes[at]);
            let body = u64::from_le_bytes(bytes[at + 13..at + 21].try_into().expect("8"));
            at += PART_HEADER_LEN + body as usize;
        }
        kinds.sort();
        assert_eq!(kinds, [PART_OBJECTS, PART_BSDIFF, PART_DEFLATE], "{info:?}");
        assert_eq!(info.patched, 2);
        // Far smaller than the two files compressed alone.
        let alone: usize = ["usr/lib/libx.so", "usr/share/doc/p/changelog.gz"]
            .iter()
            .map(|p| {
                let b = fs::read(dir.path().join("ttrue").join(p)).expect("read");
                zstd::bulk::compress(&b, 12).expect("zstd").len()
            })
            .sum();
        assert!((info.size as usize) * 4 < alone, "{} vs {alone}", info.size);
        // The client rebuilds both, byte for byte.
        let (got, res) = read_all(&client, &bytes, Some((Some(&ids[0]), &ids[1])));
        res.expect("read");
        assert_eq!(got.len() as u64, info.objects);
        // A flipped byte in the two patch parts is refused, or (where it
        // lands on a parameter that does not change this stream) rebuilds
        // the very same objects: nothing wrong is ever handed on.
        let good: HashSet<_> = got.into_iter().collect();
        let (mut flips, mut inert) = (0, 0);
        let mut at = MAGIC.len() + 4 + 1 + 2 * ID_LEN;
        while bytes[at] != PART_END {
            let body = u64::from_le_bytes(bytes[at + 13..at + 21].try_into().expect("8")) as usize;
            if bytes[at] == PART_BSDIFF || bytes[at] == PART_DEFLATE {
                for i in (at..at + PART_HEADER_LEN + body).step_by(3) {
                    let mut bad = bytes.clone();
                    bad[i] ^= 0x20;
                    let (handed, res) = read_all(&client, &bad, Some((Some(&ids[0]), &ids[1])));
                    flips += 1;
                    if res.is_ok() {
                        inert += 1;
                        assert_eq!(handed.into_iter().collect::<HashSet<_>>(), good);
                    }
                }
            }
            at += PART_HEADER_LEN + body;
        }
        assert!(
            inert * 20 < flips,
            "{inert} of {flips} flips changed nothing"
        );
    }
}

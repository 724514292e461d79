//! Pack files for static mirrors: at publish, the objects of a release
//! that no earlier pack holds are also written, in the order a pull asks
//! for them, into a few large immutable files `packs/<sha256>.pack`, each
//! with an index `packs/<sha256>.idx` giving every object's byte range. A
//! client pulling from a plain file server (nginx, a CDN, object storage)
//! then fetches whole runs of objects with a few Range requests instead of
//! one GET per object.
//!
//! A pack is the objects' wire forms (exactly the bytes of their files in
//! an `archive` repository's `objects/`) concatenated, so every object read
//! out of a pack is verified by its id like a loose GET. The signed index
//! lists the packs with the SHA-256 of each pack index, so a client trusts
//! an index only once its hash matches. Byte format:
//! `docs/repository-format.md`, "Packs for static mirrors".

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use treectl_store::closure;
use treectl_store::error::Error;
use treectl_store::fsutil::fsync_dir;
use treectl_store::hash::{Hasher, ObjectId};
use treectl_store::object::ObjectKind;
use treectl_store::store::TMP_DIR;
use treectl_store::{Repo, RepoMode};

/// The packs' directory, relative to the repository.
pub const PACKS_DIR: &str = "packs";
/// The first 8 bytes of a pack index.
pub const PACK_INDEX_MAGIC: &[u8; 8] = b"TCTLPIDX";
/// The pack index version this build writes and the newest it reads.
pub const PACK_INDEX_VERSION: u32 = 1;
/// A pack is closed once it reaches this size (an object is never split,
/// so one larger object makes a larger pack): a release is a few packs,
/// each a file a CDN or object store keeps whole.
pub const PACK_TARGET_BYTES: u64 = 64 << 20;
/// Largest pack index a reader accepts (about 1.3 million objects).
pub const MAX_PACK_INDEX_BYTES: u64 = 64 << 20;
/// Names of packs being written in `tmp/`.
const TMP_PREFIX: &str = "pack-";
/// Bytes of the index header: magic, version, pack size, pack hash, count.
const HEADER_LEN: usize = 8 + 4 + 8 + 32 + 4;
/// Bytes of one index entry: id, kind tag, offset, length.
const ENTRY_LEN: usize = 32 + 1 + 8 + 8;

/// What can go wrong reading or writing packs.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the pack index is malformed: {reason}")]
    Malformed { reason: String },
    #[error(
        "the pack index has version {found}, newer than this treectl reads ({PACK_INDEX_VERSION})"
    )]
    UnsupportedVersion { found: u32 },
    #[error(transparent)]
    Repo(#[from] Error),
}

/// A pack as the signed index lists it (`packs` in the payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    /// SHA-256 of the pack file: its name, `packs/<name>.pack`.
    pub name: ObjectId,
    /// Bytes of the pack file.
    pub size: u64,
    /// SHA-256 of the pack index file `packs/<name>.idx`.
    pub index_sha256: ObjectId,
    /// Bytes of the pack index file.
    pub index_size: u64,
}

impl PackRef {
    /// `packs/<name>.pack`, relative to the repository (and a mirror's URL).
    pub fn pack_path(&self) -> String {
        format!("{PACKS_DIR}/{}.pack", self.name.to_hex())
    }

    /// `packs/<name>.idx`.
    pub fn index_path(&self) -> String {
        format!("{PACKS_DIR}/{}.idx", self.name.to_hex())
    }
}

/// One object of a pack: its bytes are `offset..offset + length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ObjectId,
    pub kind: ObjectKind,
    pub offset: u64,
    pub length: u64,
}

/// The content of a pack index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackIndex {
    /// SHA-256 of the pack it describes.
    pub pack: ObjectId,
    /// Bytes of that pack.
    pub size: u64,
    /// The pack's objects in pack order: contiguous from offset 0 to
    /// `size`.
    pub entries: Vec<PackEntry>,
}

fn malformed(reason: impl Into<String>) -> PackError {
    PackError::Malformed {
        reason: reason.into(),
    }
}

impl PackIndex {
    /// The index file's bytes (big-endian integers throughout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.entries.len());
        out.extend_from_slice(PACK_INDEX_MAGIC);
        out.extend_from_slice(&PACK_INDEX_VERSION.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.pack.0);
        let count = u32::try_from(self.entries.len()).expect("a pack holds under 2^32 objects");
        out.extend_from_slice(&count.to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.id.0);
            out.push(e.kind.tag());
            out.extend_from_slice(&e.offset.to_be_bytes());
            out.extend_from_slice(&e.length.to_be_bytes());
        }
        out
    }

    /// Parses and checks an index file: the version (read right after the
    /// magic, so a newer file gets a clear error), the length, known kinds,
    /// non-empty objects, each once, contiguous from 0 to the pack's size.
    pub fn decode(bytes: &[u8]) -> Result<PackIndex, PackError> {
        if bytes.len() < 12 || &bytes[..8] != PACK_INDEX_MAGIC {
            return Err(malformed("it does not start with TCTLPIDX"));
        }
        let version = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != PACK_INDEX_VERSION {
            return Err(PackError::UnsupportedVersion { found: version });
        }
        if bytes.len() < HEADER_LEN {
            return Err(malformed(format!(
                "{} bytes, shorter than its header",
                bytes.len()
            )));
        }
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let size = u64_at(12);
        let pack = ObjectId(bytes[20..52].try_into().expect("32 bytes"));
        let count = u32::from_be_bytes(bytes[52..56].try_into().expect("4 bytes")) as usize;
        let want = count
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN));
        if want != Some(bytes.len()) {
            return Err(malformed(format!(
                "{} bytes for {count} entries",
                bytes.len()
            )));
        }
        let mut entries = Vec::with_capacity(count);
        let mut seen = HashSet::with_capacity(count);
        let mut next = 0u64;
        for (i, rec) in bytes[HEADER_LEN..].chunks_exact(ENTRY_LEN).enumerate() {
            let id = ObjectId(rec[..32].try_into().expect("32 bytes"));
            let kind = ObjectKind::ALL
                .into_iter()
                .find(|k| k.tag() == rec[32])
                .ok_or_else(|| malformed(format!("entry {i} has kind tag {}", rec[32])))?;
            let offset = u64::from_be_bytes(rec[33..41].try_into().expect("8 bytes"));
            let length = u64::from_be_bytes(rec[41..49].try_into().expect("8 bytes"));
            if offset != next || length == 0 {
                return Err(malformed(format!(
                    "entry {i} is at {offset}, {length} bytes; expected a non-empty object at {next}"
                )));
            }
            if !seen.insert((id, kind)) {
                return Err(malformed(format!("{kind} {id} is listed twice")));
            }
            next = offset
                .checked_add(length)
                .ok_or_else(|| malformed(format!("entry {i} overflows")))?;
            entries.push(PackEntry {
                id,
                kind,
                offset,
                length,
            });
        }
        if next != size {
            return Err(malformed(format!(
                "its objects end at {next}, the pack has {size} bytes"
            )));
        }
        Ok(PackIndex {
            pack,
            size,
            entries,
        })
    }
}

/// The order a pull asks for a commit's objects, which packs keep so that
/// each request is one run: the commit, then every tree and dirmeta level
/// by level (the closure walk's order, as the pull's walk fetches them),
/// then every file in the order the walk finds them.
pub fn pull_order(repo: &Repo, commit_id: &ObjectId) -> Result<Vec<(ObjectId, ObjectKind)>, Error> {
    let commit = repo.read_commit(commit_id)?;
    let mut walk = closure::Closure::new();
    walk.add_root(commit.root_tree, commit.root_meta, *commit_id);
    walk.load_with(|id| repo.read_tree(id).map(Some))?;
    let mut order = Vec::with_capacity(walk.len() + 1);
    order.push((*commit_id, ObjectKind::Commit));
    let objects = walk.objects();
    order.extend(objects.iter().filter(|o| o.1 != ObjectKind::File));
    order.extend(objects.iter().filter(|o| o.1 == ObjectKind::File));
    Ok(order)
}

/// Reads and checks a listed pack's index from the repository; `None` when
/// it is missing or does not match what the signed index says.
fn read_listed(repo: &Repo, pack: &PackRef) -> Result<Option<PackIndex>, Error> {
    let path = repo.path().join(pack.index_path());
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", &path)(e)),
    };
    if ObjectId::of(&bytes) != pack.index_sha256 {
        return Ok(None);
    }
    Ok(PackIndex::decode(&bytes)
        .ok()
        .filter(|i| i.pack == pack.name && i.size == pack.size))
}

/// The packs a publish of `commit_id` lists: the `listed` packs whose
/// index is intact, then new packs of the commit's objects that none of
/// those holds. Only `archive` repositories (the layout static mirrors
/// serve) get packs; others keep `listed` as it is.
pub fn pack_release(
    repo: &Repo,
    commit_id: &ObjectId,
    listed: &[PackRef],
    target_bytes: u64,
) -> Result<Vec<PackRef>, PackError> {
    if repo.mode() != RepoMode::Archive {
        return Ok(listed.to_vec());
    }
    remove_stale_tmp(repo)?;
    let mut kept = Vec::with_capacity(listed.len() + 1);
    let mut held = HashSet::new();
    for pack in listed {
        // A damaged or missing pack is dropped from the list (its objects
        // are packed again below), so one bad file does not stop publishing.
        if let Some(index) = read_listed(repo, pack)? {
            held.extend(index.entries.iter().map(|e| (e.id, e.kind)));
            kept.push(pack.clone());
        }
    }
    let new: Vec<_> = pull_order(repo, commit_id)?
        .into_iter()
        .filter(|o| !held.contains(o))
        .collect();
    kept.extend(write_packs(repo, &new, target_bytes)?);
    Ok(kept)
}

/// Removes `tmp/pack-*`, what a publish interrupted while writing packs
/// left. Only publishes write packs, under the publish lock the caller
/// holds, so none is being written.
fn remove_stale_tmp(repo: &Repo) -> Result<(), Error> {
    let dir = repo.path().join(TMP_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", &dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("reading", &dir))?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(Error::io("removing", &path))?;
        }
    }
    Ok(())
}

/// A pack being written in `tmp/`.
struct Open {
    path: PathBuf,
    file: io::BufWriter<File>,
    hasher: Hasher,
    entries: Vec<PackEntry>,
    size: u64,
}

/// Writes `objects` in order into packs of about `target_bytes` each;
/// returns them in order. Memory stays at one object and the index
/// entries: each object is read, hashed and appended in turn.
pub fn write_packs(
    repo: &Repo,
    objects: &[(ObjectId, ObjectKind)],
    target_bytes: u64,
) -> Result<Vec<PackRef>, PackError> {
    let mut done = Vec::new();
    let mut open: Option<Open> = None;
    for (seq, &(id, kind)) in objects.iter().enumerate() {
        let data = repo.read_wire_form(&id, kind)?;
        if open
            .as_ref()
            .is_some_and(|o| o.size > 0 && o.size + data.len() as u64 > target_bytes)
        {
            done.push(finish(repo, open.take().expect("open pack"))?);
        }
        let o = match open.as_mut() {
            Some(o) => o,
            None => open.insert(start(repo, seq)?),
        };
        o.file
            .write_all(&data)
            .map_err(Error::io("writing", &o.path))?;
        o.hasher.update(&data);
        o.entries.push(PackEntry {
            id,
            kind,
            offset: o.size,
            length: data.len() as u64,
        });
        o.size += data.len() as u64;
    }
    if let Some(o) = open {
        done.push(finish(repo, o)?);
    }
    Ok(done)
}

fn start(repo: &Repo, seq: usize) -> Result<Open, Error> {
    let dir = repo.path().join(TMP_DIR);
    fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let path = dir.join(format!("{TMP_PREFIX}{}-{seq}", std::process::id()));
    let file = File::create(&path).map_err(Error::io("creating", &path))?;
    Ok(Open {
        path,
        file: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Hasher::default(),
        entries: Vec::new(),
        size: 0,
    })
}

/// Names the pack by its hash and moves it, then its index, into `packs/`
/// (an index present means its pack is too).
fn finish(repo: &Repo, o: Open) -> Result<PackRef, Error> {
    let Open {
        path,
        file,
        hasher,
        entries,
        size,
    } = o;
    let file = file
        .into_inner()
        .map_err(|e| Error::io("writing", &path)(e.into_error()))?;
    if repo.fsync() {
        file.sync_all().map_err(Error::io("flushing", &path))?;
    }
    drop(file);
    let name = hasher.finish();
    let index = PackIndex {
        pack: name,
        size,
        entries,
    }
    .encode();
    let pack = PackRef {
        name,
        size,
        index_sha256: ObjectId::of(&index),
        index_size: index.len() as u64,
    };
    let dir = repo.path().join(PACKS_DIR);
    fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let dest = repo.path().join(pack.pack_path());
    fs::rename(&path, &dest).map_err(Error::io("renaming into place", &dest))?;
    let idx_tmp = path.with_extension("idx");
    write_file(&idx_tmp, &index, repo.fsync())?;
    let idx = repo.path().join(pack.index_path());
    fs::rename(&idx_tmp, &idx).map_err(Error::io("renaming into place", &idx))?;
    if repo.fsync() {
        fsync_dir(&dir).map_err(Error::io("flushing", &dir))?;
    }
    Ok(pack)
}

fn write_file(path: &Path, data: &[u8], fsync: bool) -> Result<(), Error> {
    let mut f = File::create(path).map_err(Error::io("creating", path))?;
    f.write_all(data).map_err(Error::io("writing", path))?;
    if fsync {
        f.sync_all().map_err(Error::io("flushing", path))?;
    }
    Ok(())
}

/// Removes the files in `packs/` that `listed` does not name: packs of a
/// publish that was interrupted before its index was written, or dropped
/// as damaged. Runs under the publish lock after the index is written, so
/// nothing the index names is removed.
pub fn remove_unlisted(repo: &Repo, listed: &[PackRef]) -> Result<usize, Error> {
    let dir = repo.path().join(PACKS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("reading", &dir)(e)),
    };
    let keep: HashSet<String> = listed
        .iter()
        .flat_map(|p| [p.pack_path(), p.index_path()])
        .collect();
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(Error::io("reading", &dir))?;
        let rel = format!("{PACKS_DIR}/{}", entry.file_name().to_string_lossy());
        if !keep.contains(&rel) {
            let path = entry.path();
            fs::remove_file(&path).map_err(Error::io("removing", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of `docs/repository-format.md`: a pack of the 8
    /// bytes `abcdefgh` holding two objects (ids made up: the vector pins
    /// the index layout, not object encodings).
    fn vector() -> PackIndex {
        PackIndex {
            pack: ObjectId::of(b"abcdefgh"),
            size: 8,
            entries: vec![
                PackEntry {
                    id: ObjectId::of(b"abc"),
                    kind: ObjectKind::Tree,
                    offset: 0,
                    length: 3,
                },
                PackEntry {
                    id: ObjectId::of(b"defgh"),
                    kind: ObjectKind::File,
                    offset: 3,
                    length: 5,
                },
            ],
        }
    }

    const VECTOR_HEX: &str = concat!(
        "5443544c50494458",                                                 // TCTLPIDX
        "00000001",                                                         // version 1
        "0000000000000008",                                                 // pack size
        "9c56cc51b374c3ba189210d5b6d4bf57790d351c96c47c02190ecf1e430635ab", // sha256("abcdefgh")
        "00000002",                                                         // two entries
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", // sha256("abc")
        "02",
        "0000000000000000",
        "0000000000000003",
        "383395a769131d15c1c6fc57c6abdb759ace9809c1ad20d1f491d90f7f02650e", // sha256("defgh")
        "01",
        "0000000000000003",
        "0000000000000005",
    );

    #[test]
    fn index_test_vector() {
        let bytes = vector().encode();
        assert_eq!(bytes.len(), HEADER_LEN + 2 * ENTRY_LEN);
        assert_eq!(hex::encode(&bytes), VECTOR_HEX);
        assert_eq!(
            ObjectId::of(&bytes).to_hex(),
            "a4ae629ae1059718a7e99a6f18e4afdf02876019e5831d7975aafa7b30738efe"
        );
        assert_eq!(PackIndex::decode(&bytes).expect("decodes"), vector());
        // The document shows the same bytes (grouped by field) and hash.
        let doc = include_str!("../../../docs/repository-format.md");
        let section = doc
            .split("### Packs for static mirrors")
            .nth(1)
            .expect("the packs section");
        let block = section
            .split("```")
            .nth(3)
            .expect("the vector's code block");
        assert_eq!(block.split_whitespace().collect::<String>(), VECTOR_HEX);
        assert!(section.contains(&ObjectId::of(&bytes).to_hex()));
    }

    #[test]
    fn bad_indexes_are_refused() {
        let good = vector().encode();
        let refused = |bytes: &[u8]| PackIndex::decode(bytes).expect_err("refused").to_string();
        let mut newer = good.clone();
        newer[11] = 2;
        assert_eq!(
            refused(&newer),
            "the pack index has version 2, newer than this treectl reads (1)"
        );
        assert!(refused(&good[..good.len() - 1]).contains("for 2 entries"));
        assert!(refused(b"TCTLPIDY\0\0\0\x01").contains("does not start with"));
        let mut bad_kind = good.clone();
        bad_kind[HEADER_LEN + 32] = 9;
        assert!(refused(&bad_kind).contains("kind tag 9"));
        let mut gap = good.clone();
        gap[HEADER_LEN + ENTRY_LEN + 40] = 4; // second offset 4, not 3
        assert!(refused(&gap).contains("expected a non-empty object at 3"));
        let mut short = good.clone();
        short[19] = 9; // pack size 9, objects end at 8
        assert!(refused(&short).contains("end at 8, the pack has 9 bytes"));
        let mut twice = vector();
        twice.entries[1].id = twice.entries[0].id;
        twice.entries[1].kind = twice.entries[0].kind;
        assert!(refused(&twice.encode()).contains("listed twice"));
    }
}

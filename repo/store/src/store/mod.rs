//! The repository on disk: opening and creating it, finding and reading
//! objects, and the repository lock. Writing goes through [`Transaction`].

mod lock;
pub(crate) mod transaction;
mod wire_form;

pub use lock::lock_file;
pub use lock::{LockKind, RepoLock};
pub use transaction::{RefUpdate, Transaction};
pub use wire_form::{encode_file_wire_form, file_wire_header, verify_wire_form, WireHeaderError};

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, RepoMode};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hash::ObjectId;
use crate::object::{Commit, DirMeta, FileHeader, ObjectKind, Tree};

/// Directory names inside a repository.
pub const OBJECTS_DIR: &str = "objects";
pub const REFS_DIR: &str = "refs";
pub const TMP_DIR: &str = "tmp";
pub const STATE_DIR: &str = "state";
pub const CONFIG_FILE: &str = "config";
pub const LOCK_FILE: &str = "lock";

/// An open repository.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    config: Config,
    /// Device of the objects directory, for recognising hardlinked checkouts.
    dev: u64,
    privileged: bool,
}

/// The file name extension of a stored object of `kind` in `mode`.
pub fn extension(kind: ObjectKind, mode: RepoMode) -> &'static str {
    match (kind, mode) {
        (ObjectKind::File, RepoMode::Archive) => "filez",
        (ObjectKind::File, RepoMode::BareUser) => "file",
        (ObjectKind::Tree, _) => "tree",
        (ObjectKind::DirMeta, _) => "dirmeta",
        (ObjectKind::Commit, _) => "commit",
    }
}

/// An object's path relative to the repository (`objects/ab/cdef….ext`):
/// where a repository of `mode` keeps it, and (for `archive`) the path a
/// static mirror serves it at.
pub fn relative_object_path(id: &ObjectId, kind: ObjectKind, mode: RepoMode) -> String {
    let hex = id.to_hex();
    format!(
        "{OBJECTS_DIR}/{}/{}.{}",
        &hex[..2],
        &hex[2..],
        extension(kind, mode)
    )
}

/// Parses an object's relative store path (`objects/ab/cdef….kind`) parts.
pub fn parse_object_name(dir: &str, file: &str, mode: RepoMode) -> Option<(ObjectId, ObjectKind)> {
    let (rest, ext) = file.rsplit_once('.')?;
    let kind = ObjectKind::ALL
        .into_iter()
        .find(|k| extension(*k, mode) == ext)?;
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if dir.len() != 2 || !lower_hex(dir) || !lower_hex(rest) {
        return None;
    }
    let id = ObjectId::from_hex(&format!("{dir}{rest}"))?;
    Some((id, kind))
}

impl Repo {
    /// Creates a new, empty repository at `path` (which must not exist, or be
    /// an empty directory).
    pub fn init(path: &Path, mode: RepoMode) -> Result<Repo> {
        if path.join(CONFIG_FILE).exists() {
            return Err(Error::AlreadyExists {
                path: path.to_owned(),
            });
        }
        match fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::Unsupported {
                        path: path.to_owned(),
                        reason: "directory exists and is not empty; pick a new path".into(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(Error::io("creating", path))?
            }
            Err(e) => return Err(Error::io("reading", path)(e)),
        }
        for dir in [
            OBJECTS_DIR,
            TMP_DIR,
            STATE_DIR,
            "refs/heads",
            "refs/remotes",
        ] {
            let p = path.join(dir);
            fs::create_dir_all(&p).map_err(Error::io("creating", &p))?;
        }
        // All 256 fan-out directories up front: writers never race to create them.
        for i in 0..=255u8 {
            let p = path.join(OBJECTS_DIR).join(format!("{i:02x}"));
            fs::create_dir(&p).map_err(Error::io("creating", &p))?;
        }
        File::create(path.join(LOCK_FILE)).map_err(Error::io("creating", path.join(LOCK_FILE)))?;
        // The config is written last: a directory without one is not a
        // repository, so a crash during init leaves nothing that looks like one.
        let config = Config::new(mode);
        write_atomic(&path.join(CONFIG_FILE), config.to_text().as_bytes(), true)?;
        Repo::open(path)
    }

    /// Opens an existing repository.
    pub fn open(path: &Path) -> Result<Repo> {
        let cfg_path = path.join(CONFIG_FILE);
        let text = match fs::read_to_string(&cfg_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotARepo {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(Error::io("reading", &cfg_path)(e)),
        };
        let config = Config::parse(&text, &cfg_path)?;
        let objects = path.join(OBJECTS_DIR);
        let dev = fs::metadata(&objects)
            .map_err(Error::io("reading", &objects))?
            .dev();
        Ok(Repo {
            path: path.to_owned(),
            config,
            dev,
            privileged: fsutil::privileged(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> RepoMode {
        self.config.core.mode
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether data is flushed before objects and refs become visible.
    pub fn fsync(&self) -> bool {
        self.config.core.fsync
    }

    pub(crate) fn dev(&self) -> u64 {
        self.dev
    }

    pub(crate) fn privileged(&self) -> bool {
        self.privileged
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.path.join(OBJECTS_DIR)
    }

    /// Where an object lives: `objects/ab/cdef….ext`.
    pub fn object_path(&self, id: &ObjectId, kind: ObjectKind) -> PathBuf {
        self.path.join(relative_object_path(id, kind, self.mode()))
    }

    pub fn has_object(&self, id: &ObjectId, kind: ObjectKind) -> bool {
        self.object_path(id, kind).symlink_metadata().is_ok()
    }

    /// Reads a tree, dirmeta or commit object's bytes and checks their hash.
    pub fn read_meta_bytes(&self, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
        debug_assert!(kind != ObjectKind::File);
        read_verified(&self.object_path(id, kind), id, kind)
    }

    pub fn read_tree(&self, id: &ObjectId) -> Result<Tree> {
        let data = self.read_meta_bytes(id, ObjectKind::Tree)?;
        Tree::decode(&data).map_err(|err| Error::Decode {
            kind: ObjectKind::Tree,
            id: *id,
            err,
        })
    }

    pub fn read_dirmeta(&self, id: &ObjectId) -> Result<DirMeta> {
        let data = self.read_meta_bytes(id, ObjectKind::DirMeta)?;
        DirMeta::decode(&data).map_err(|err| Error::Decode {
            kind: ObjectKind::DirMeta,
            id: *id,
            err,
        })
    }

    pub fn read_commit(&self, id: &ObjectId) -> Result<Commit> {
        let data = self.read_meta_bytes(id, ObjectKind::Commit)?;
        Commit::decode(&data).map_err(|err| Error::Decode {
            kind: ObjectKind::Commit,
            id: *id,
            err,
        })
    }

    /// Reads a file object's header without its content.
    pub fn read_file_header(&self, id: &ObjectId) -> Result<FileHeader> {
        let path = self.object_path(id, ObjectKind::File);
        let mut file = open_object(&path, id, ObjectKind::File)?;
        let header = match self.mode() {
            RepoMode::BareUser => {
                let raw = fsutil::fget_xattr(&file, fsutil::META_XATTR)
                    .map_err(Error::io("reading header of", &path))?;
                FileHeader::decode(&raw)
            }
            RepoMode::Archive => {
                let raw = read_archive_header(&mut file).map_err(Error::io("reading", &path))?;
                FileHeader::decode(&raw)
            }
        };
        header.map_err(|err| Error::Decode {
            kind: ObjectKind::File,
            id: *id,
            err,
        })
    }

    /// Reads a file object whole, checking its hash.
    pub fn read_file(&self, id: &ObjectId) -> Result<(FileHeader, Vec<u8>)> {
        let (header, content) = self.read_file_unverified(id)?;
        let actual = header.id_with_content(&content);
        if actual != *id {
            return Err(Error::Corrupt {
                kind: ObjectKind::File,
                id: *id,
                reason: format!("content hashes to {actual}"),
            });
        }
        Ok((header, content))
    }

    /// Reads a file object's header and content without hashing them.
    pub(crate) fn read_file_unverified(&self, id: &ObjectId) -> Result<(FileHeader, Vec<u8>)> {
        let path = self.object_path(id, ObjectKind::File);
        let corrupt = |reason: String| Error::Corrupt {
            kind: ObjectKind::File,
            id: *id,
            reason,
        };
        let mut file = open_object(&path, id, ObjectKind::File)?;
        match self.mode() {
            RepoMode::BareUser => {
                let raw = fsutil::fget_xattr(&file, fsutil::META_XATTR)
                    .map_err(|e| corrupt(format!("no readable header attribute: {e}")))?;
                let header = FileHeader::decode(&raw).map_err(|e| corrupt(e.to_string()))?;
                let mut content = Vec::with_capacity(header.size as usize);
                file.read_to_end(&mut content)
                    .map_err(Error::io("reading", &path))?;
                if content.len() as u64 != header.size {
                    return Err(corrupt(format!(
                        "{} bytes of content, header says {}",
                        content.len(),
                        header.size
                    )));
                }
                Ok((header, content))
            }
            RepoMode::Archive => {
                let raw = read_archive_header(&mut file).map_err(|e| corrupt(e.to_string()))?;
                let header = FileHeader::decode(&raw).map_err(|e| corrupt(e.to_string()))?;
                let content = decompress_content(&mut file, header.size).map_err(corrupt)?;
                Ok((header, content))
            }
        }
    }
}

/// Reads a whole metadata object at `path` and checks it hashes to `id`.
pub(crate) fn read_verified(path: &Path, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotFound { kind, id: *id })
        }
        Err(e) => return Err(Error::io("reading", path)(e)),
    };
    let actual = ObjectId::of(&data);
    if actual != *id {
        return Err(Error::Corrupt {
            kind,
            id: *id,
            reason: format!("content hashes to {actual}"),
        });
    }
    Ok(data)
}

/// Archive file objects: `u32 LE header length`, header, zstd frame of the
/// content (absent when the content is empty).
pub(crate) fn read_archive_header(file: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    file.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HEADER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("header length {len} exceeds {MAX_HEADER_LEN}"),
        ));
    }
    let mut raw = vec![0u8; len];
    file.read_exact(&mut raw)?;
    Ok(raw)
}

/// Headers carry xattrs and a symlink target; 1 MiB is far above any real one
/// and keeps a corrupt length from allocating gigabytes.
pub const MAX_HEADER_LEN: usize = 1 << 20;

thread_local! {
    /// One zstd decompression context per thread: creating a context costs
    /// more than decompressing a small object.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Content up to this many bytes is decompressed in one call into a buffer
/// of exactly its declared size. Larger content streams into a buffer that
/// grows with what the frame really decodes to: a header that claims a
/// huge size costs no memory before the bytes exist (fuzz target
/// `filez_decode`).
const BULK_MAX: u64 = 1 << 20;

/// How much more than its compressed size a large object's buffer starts
/// with (it grows beyond that as the frame decodes).
const RESERVE_RATIO: u64 = 16;

/// Like [`decompress_content`] for content already in memory (the rest of
/// a wire form after its header), with a reused context: exactly `size`
/// bytes, anything more or less (or trailing bytes) is refused.
pub(crate) fn decompress_slice(data: &[u8], size: u64) -> Result<Vec<u8>, String> {
    if size == 0 || size > BULK_MAX {
        let reserve = size.min((data.len() as u64).saturating_mul(RESERVE_RATIO));
        return decompress_reserving(&mut io::Cursor::new(data), size, reserve);
    }
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = d.as_mut().expect("set above");
        // The buffer holds exactly `size` bytes: a frame that decodes to
        // more fails with "destination buffer is too small".
        let mut content = Vec::with_capacity(size as usize);
        d.decompress_to_buffer(data, &mut content)
            .map_err(|e| format!("decompressing: {e}"))?;
        if content.len() as u64 != size {
            return Err(format!(
                "decompresses to {} bytes, header says {size}",
                content.len()
            ));
        }
        Ok(content)
    })
}

/// Decompresses exactly `size` bytes and refuses anything more or less.
pub(crate) fn decompress_content(file: &mut impl Read, size: u64) -> Result<Vec<u8>, String> {
    decompress_reserving(file, size, size.min(BULK_MAX))
}

/// [`decompress_content`] with a buffer of `reserve` bytes to start with.
fn decompress_reserving(file: &mut impl Read, size: u64, reserve: u64) -> Result<Vec<u8>, String> {
    if size == 0 {
        let mut rest = [0u8; 1];
        return match file.read(&mut rest) {
            Ok(0) => Ok(Vec::new()),
            Ok(_) => Err("data after an empty file's header".into()),
            Err(e) => Err(e.to_string()),
        };
    }
    let decoder = zstd::stream::read::Decoder::new(file).map_err(|e| e.to_string())?;
    let mut content = Vec::with_capacity(reserve as usize);
    // Read one byte past the declared size to notice content that is too
    // long (a size of u64::MAX cannot be exceeded).
    decoder
        .take(size.saturating_add(1))
        .read_to_end(&mut content)
        .map_err(|e| format!("decompressing: {e}"))?;
    if content.len() as u64 != size {
        return Err(format!(
            "decompresses to {} bytes, header says {size}",
            if content.len() as u64 > size {
                "more".to_string()
            } else {
                content.len().to_string()
            }
        ));
    }
    Ok(content)
}

fn open_object(path: &Path, id: &ObjectId, kind: ObjectKind) -> Result<File> {
    File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound { kind, id: *id }
        } else {
            Error::io("opening", path)(e)
        }
    })
}

/// Writes a small file atomically: a temporary file beside it, flushed when
/// `fsync` is set, renamed over the target, and the directory flushed.
pub fn write_atomic(path: &Path, data: &[u8], fsync: bool) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("path has a parent");
    let name = path
        .file_name()
        .expect("path has a file name")
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if fsync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if fsync {
            fsutil::fsync_dir(dir)?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("writing", path)(e)
    })
}

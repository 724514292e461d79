//! Importers: a `.deb` package, a tarball or a git commit, each committed
//! into its own tree without extracting anything to disk.
//!
//! Archives are read as one stream: every entry is decompressed, hashed and
//! stored in a single pass ([`tar::read_tar`]), and the tree is assembled in
//! memory ([`builder::TreeBuilder`]) with the same rules `tar -x` applies
//! (later entries replace earlier ones), except that anything that could
//! write outside the tree is refused: absolute names, `..`, entries below a
//! symlink, hardlinks to names not seen yet. Caps on entry size, total size
//! and compression ratio ([`Limits`]) stop decompression bombs. Every import
//! runs in one [`Transaction`](treectl_store::store::Transaction): on any error it
//! is dropped, no ref moves and no object becomes visible.
//!
//! What each importer keeps, refuses and records is described in
//! `docs/importing.md`.

pub mod builder;
pub mod compress;
pub mod deb;
pub mod git;
pub mod limits;
pub mod tar;

use std::io;
use std::path::PathBuf;

use treectl_store::hash::ObjectId;
use treectl_store::refs::RefName;

pub use limits::Limits;

/// Options shared by the archive importers.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub limits: Limits,
    /// Skip device nodes and fifos (and report them) instead of refusing the
    /// archive. The store holds only regular files, symlinks and directories.
    pub allow_devices: bool,
}

/// Counts and findings of one import.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ImportStats {
    pub files: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub directories: u64,
    /// Uncompressed bytes of regular file content.
    pub bytes: u64,
    /// Non-fatal findings, such as duplicate entries (the last one wins).
    pub warnings: Vec<String>,
    /// Entries left out with `allow_devices` (device nodes, fifos).
    pub skipped: Vec<String>,
}

/// The result of one import.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportReport {
    pub commit: ObjectId,
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// True when nothing was imported because the ref already holds this
    /// input (a `.deb` with the same sha256).
    pub existing: bool,
    pub stats: ImportStats,
}

impl ImportReport {
    pub(crate) fn new(commit: ObjectId, ref_name: &RefName, stats: ImportStats) -> ImportReport {
        ImportReport {
            commit,
            ref_name: ref_name.to_string(),
            existing: false,
            stats,
        }
    }
}

/// Why an import was refused or failed. Every variant names the input and,
/// where there is one, the archive entry.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: entry {entry:?} has an absolute name; archive entries must be relative", archive.display())]
    AbsoluteName { archive: PathBuf, entry: String },
    #[error("{}: entry {entry:?} contains a '..' component", archive.display())]
    DotDot { archive: PathBuf, entry: String },
    #[error("{}: entry {entry:?} names the archive root but is not a directory", archive.display())]
    RootNotDir { archive: PathBuf, entry: String },
    #[error("{}: entry {entry:?} would be written through the symlink {symlink:?}", archive.display())]
    ThroughSymlink {
        archive: PathBuf,
        entry: String,
        symlink: String,
    },
    #[error("{}: entry {entry:?} lies below {parent:?}, which is not a directory", archive.display())]
    NotADirectory {
        archive: PathBuf,
        entry: String,
        parent: String,
    },
    #[error("{}: hardlink {entry:?} points outside the archive ({target:?})", archive.display())]
    HardlinkOutside {
        archive: PathBuf,
        entry: String,
        target: String,
    },
    #[error("{}: hardlink {entry:?} points at {target:?}, which is not an earlier file entry of the archive", archive.display())]
    HardlinkUnseen {
        archive: PathBuf,
        entry: String,
        target: String,
    },
    #[error("{}: entry {entry:?} is a {kind}; device nodes and fifos are refused (pass --allow-devices to skip them)", archive.display())]
    Device {
        archive: PathBuf,
        entry: String,
        kind: &'static str,
    },
    #[error("{}: entry {entry:?} has unsupported type {kind}", archive.display())]
    UnsupportedEntry {
        archive: PathBuf,
        entry: String,
        kind: String,
    },
    #[error("{}: entry {entry:?} has an invalid {field}", archive.display())]
    BadHeader {
        archive: PathBuf,
        entry: String,
        field: &'static str,
    },
    #[error("{}: entry {entry:?} is {size} bytes, over the {limit}-byte cap per entry (raise it with --max-entry-size)", archive.display())]
    EntryTooLarge {
        archive: PathBuf,
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("{}: uncompressed content exceeds the {limit}-byte total cap (raise it with --max-total-size)", archive.display())]
    TotalTooLarge { archive: PathBuf, limit: u64 },
    #[error("{}: decompresses to more than {limit} times its compressed size, a likely decompression bomb (raise the cap with --max-ratio)", archive.display())]
    RatioTooHigh { archive: PathBuf, limit: u64 },
    #[error("{}: more than {limit} entries (raise the cap with --max-entries)", archive.display())]
    TooManyEntries { archive: PathBuf, limit: u64 },
    #[error("{}: truncated{}", archive.display(), at.as_ref().map(|e| format!(" in entry {e:?}")).unwrap_or_default())]
    Truncated {
        archive: PathBuf,
        at: Option<String>,
    },
    #[error("{}: corrupt archive{}: {detail}", archive.display(), at.as_ref().map(|e| format!(" at entry {e:?}")).unwrap_or_default())]
    Corrupt {
        archive: PathBuf,
        at: Option<String>,
        detail: String,
    },
    #[error("{}: not a Debian package: {reason}", archive.display())]
    NotADeb { archive: PathBuf, reason: String },
    #[error("{}: the package has no {member} member", archive.display())]
    MissingMember {
        archive: PathBuf,
        member: &'static str,
    },
    #[error("{}: invalid control file: {reason}", archive.display())]
    Control { archive: PathBuf, reason: String },
    #[error("{} and {} would both be imported to ref {ref_name}; import them one at a time with --ref", first.display(), second.display())]
    SameRef {
        first: PathBuf,
        second: PathBuf,
        ref_name: String,
    },
    #[error("git repository {}: {reason}", repo.display())]
    Git { repo: PathBuf, reason: String },
    #[error("git repository {}: commit {commit} contains submodules, which cannot be imported: {}", repo.display(), paths.join(", "))]
    Submodule {
        repo: PathBuf,
        commit: String,
        paths: Vec<String>,
    },
    #[error("{op} {}: {err}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error(transparent)]
    Store(#[from] treectl_store::Error),
}

impl ImportError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> ImportError {
        let path = path.into();
        move |err| ImportError::Io { op, path, err }
    }
}

pub type Result<T, E = ImportError> = std::result::Result<T, E>;

/// Lossy text of an entry name, for messages and metadata.
pub(crate) fn display_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

//! The library's error type.

use std::io;
use std::path::PathBuf;

use crate::hash::ObjectId;
use crate::object::{DecodeError, ObjectKind};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with the object or path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {err}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("{kind} object {id} is not in the repository")]
    NotFound { kind: ObjectKind, id: ObjectId },
    #[error("{kind} object {id} is corrupt: {reason}")]
    Corrupt {
        kind: ObjectKind,
        id: ObjectId,
        reason: String,
    },
    #[error("{} is not a treectl repository (no config file); create one with `treectl init`", path.display())]
    NotARepo { path: PathBuf },
    #[error("{} already exists", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("repository format version {found} is newer than this treectl supports ({supported}); upgrade treectl to use this repository")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("invalid repository config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("invalid ref name {name:?}: {reason}")]
    InvalidRef { name: String, reason: &'static str },
    #[error("ref {name} does not exist")]
    RefNotFound { name: String },
    #[error("ref {name} cannot be created: {conflict}")]
    RefConflict { name: String, conflict: String },
    #[error("{rev:?} is not a ref, a commit id or a unique commit id prefix")]
    UnknownRevision { rev: String },
    #[error("commit id prefix {prefix} is ambiguous: it matches {}", candidates.iter().map(|c| c.short()).collect::<Vec<_>>().join(", "))]
    AmbiguousPrefix {
        prefix: String,
        candidates: Vec<ObjectId>,
    },
    #[error("invalid revision {rev:?}: {reason}")]
    InvalidRevision { rev: String, reason: String },
    #[error("commit {id} has no parent")]
    NoParent { id: ObjectId },
    #[error("path {path:?} does not exist in {rev}")]
    PathNotFound { rev: String, path: String },
    #[error("{}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("bad delta: {reason}")]
    Delta { reason: String },
    #[error("decoding {kind} object {id}: {err}")]
    Decode {
        kind: ObjectKind,
        id: ObjectId,
        err: DecodeError,
    },
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |err| Error::Io { op, path, err }
    }
}

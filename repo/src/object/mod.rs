//! The four object kinds and their canonical encodings.
//!
//! Every encoding starts with a kind tag and an encoding version byte, then
//! fields in a fixed order: integers little-endian, byte strings as a `u32`
//! length followed by the bytes, lists as a `u32` count followed by the items,
//! sorted and unique where the format says so. An object's id is the SHA-256
//! of its encoding (for file objects: header followed by content). The byte
//! layout is specified in `docs/repository-format.md`.

mod codec;
mod commit;
pub mod file;
mod tree;

pub use commit::Commit;
pub use file::{FileHeader, FileKind, Xattrs};
pub use tree::{DirMeta, EntryKind, Tree, TreeEntry};

use std::fmt;

/// The encoding version every object of this format carries after its tag.
pub const ENCODING_VERSION: u8 = 1;

/// What kind of object an id names; also the file name extension in the store.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    File,
    Tree,
    DirMeta,
    Commit,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 4] = [
        ObjectKind::File,
        ObjectKind::Tree,
        ObjectKind::DirMeta,
        ObjectKind::Commit,
    ];

    /// The tag byte that starts the canonical encoding.
    pub fn tag(self) -> u8 {
        match self {
            ObjectKind::File => 1,
            ObjectKind::Tree => 2,
            ObjectKind::DirMeta => 3,
            ObjectKind::Commit => 4,
        }
    }

    /// The name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::File => "file",
            ObjectKind::Tree => "tree",
            ObjectKind::DirMeta => "dirmeta",
            ObjectKind::Commit => "commit",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A canonical encoding that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated {kind} object")]
    Truncated { kind: ObjectKind },
    #[error("{kind} object has tag {found}, expected {expected}")]
    WrongTag {
        kind: ObjectKind,
        found: u8,
        expected: u8,
    },
    #[error(
        "{kind} object has encoding version {found}; this treectl reads version {ENCODING_VERSION}"
    )]
    UnsupportedVersion { kind: ObjectKind, found: u8 },
    #[error("invalid {kind} object: {reason}")]
    Invalid {
        kind: ObjectKind,
        reason: &'static str,
    },
    #[error("{kind} object has {extra} bytes after its end")]
    TrailingBytes { kind: ObjectKind, extra: usize },
}

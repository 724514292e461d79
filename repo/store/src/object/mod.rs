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

/// The encoding version every object of this format carries after its tag.
pub const ENCODING_VERSION: u8 = 1;

pub use treectl_id::ObjectKind;

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

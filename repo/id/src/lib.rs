//! treectl-id: the two words every treectl crate shares, an object's id
//! ([`ObjectId`], the SHA-256 of its canonical encoding) and its kind
//! ([`ObjectKind`]). Nothing else lives here, so the wire types can depend
//! on the vocabulary without depending on the store.
//!
//! ```
//! use treectl_id::{ObjectId, ObjectKind};
//!
//! let id = ObjectId::of(b"hello");
//! assert_eq!(id.to_hex().len(), 64);
//! assert_eq!(id.to_hex().parse::<ObjectId>()?, id);
//! assert_eq!(ObjectKind::Tree.name(), "tree");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod hash;

use std::fmt;

pub use hash::{ObjectId, ID_LEN};

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

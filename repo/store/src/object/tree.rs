//! Directory trees and directory metadata.

use super::codec::{read_xattrs, write_xattrs, Reader, Writer};
use super::file::{Xattrs, S_IFDIR, S_IFMT};
use super::{DecodeError, ObjectKind};
use crate::hash::{ObjectId, ID_LEN};

/// What a tree entry points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file object.
    Regular { file: ObjectId },
    /// A symlink file object.
    Symlink { file: ObjectId },
    /// A subdirectory: its tree and its metadata.
    Dir { tree: ObjectId, meta: ObjectId },
}

impl EntryKind {
    fn tag(&self) -> u8 {
        match self {
            EntryKind::Regular { .. } => 1,
            EntryKind::Symlink { .. } => 2,
            EntryKind::Dir { .. } => 3,
        }
    }
}

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TreeEntry {
    pub name: Vec<u8>,
    pub kind: EntryKind,
}

/// A directory's entries, sorted by name bytes, names unique.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tree {
    pub entries: Vec<TreeEntry>,
}

/// True for a name that may appear in a tree: not empty, not `.` or `..`,
/// no `/` and no NUL.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

impl Tree {
    /// Builds a tree from entries in any order. Fails on a duplicate or
    /// invalid name.
    pub fn from_entries(mut entries: Vec<TreeEntry>) -> Result<Tree, &'static str> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        if entries.windows(2).any(|w| w[0].name == w[1].name) {
            return Err("duplicate name in directory");
        }
        if entries.iter().any(|e| !valid_name(&e.name)) {
            return Err("invalid name in directory");
        }
        Ok(Tree { entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(ObjectKind::Tree);
        w.count(self.entries.len());
        for e in &self.entries {
            w.u8(e.kind.tag());
            w.bytes(&e.name);
            match &e.kind {
                EntryKind::Regular { file } | EntryKind::Symlink { file } => w.id(file),
                EntryKind::Dir { tree, meta } => {
                    w.id(tree);
                    w.id(meta);
                }
            }
        }
        w.0
    }

    pub fn decode(data: &[u8]) -> Result<Tree, DecodeError> {
        let mut r = Reader::new(ObjectKind::Tree, data)?;
        // tag + name length + at least one name byte + one id
        let n = r.count(1 + 4 + 1 + ID_LEN)?;
        let mut entries: Vec<TreeEntry> = Vec::with_capacity(n);
        for _ in 0..n {
            let tag = r.u8()?;
            let name = r.bytes()?.to_vec();
            if !valid_name(&name) {
                return Err(r.invalid("invalid entry name"));
            }
            if let Some(last) = entries.last() {
                if last.name >= name {
                    return Err(r.invalid("entries not sorted and unique by name"));
                }
            }
            let kind = match tag {
                1 => EntryKind::Regular { file: r.id()? },
                2 => EntryKind::Symlink { file: r.id()? },
                3 => EntryKind::Dir {
                    tree: r.id()?,
                    meta: r.id()?,
                },
                _ => return Err(r.invalid("unknown entry type")),
            };
            entries.push(TreeEntry { name, kind });
        }
        r.finish()?;
        Ok(Tree { entries })
    }

    pub fn id(&self) -> ObjectId {
        ObjectId::of(&self.encode())
    }

    /// Looks a name up (entries are sorted).
    pub fn get(&self, name: &[u8]) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// A directory's own metadata: mode, owner, xattrs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirMeta {
    /// Full `st_mode` with the directory type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: Xattrs,
}

impl DirMeta {
    pub fn new(perm: u32, uid: u32, gid: u32, xattrs: Xattrs) -> DirMeta {
        DirMeta {
            mode: S_IFDIR | (perm & 0o7777),
            uid,
            gid,
            xattrs,
        }
    }

    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(ObjectKind::DirMeta);
        w.u32(self.mode);
        w.u32(self.uid);
        w.u32(self.gid);
        write_xattrs(&mut w, &self.xattrs);
        w.0
    }

    pub fn decode(data: &[u8]) -> Result<DirMeta, DecodeError> {
        let mut r = Reader::new(ObjectKind::DirMeta, data)?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let xattrs = read_xattrs(&mut r)?;
        if mode & S_IFMT != S_IFDIR || mode & !(S_IFMT | 0o7777) != 0 {
            return Err(r.invalid("dirmeta mode must be a directory mode"));
        }
        r.finish()?;
        Ok(DirMeta {
            mode,
            uid,
            gid,
            xattrs,
        })
    }

    pub fn id(&self) -> ObjectId {
        ObjectId::of(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_round_trip_sorted() {
        let a = ObjectId::of(b"a");
        let t = Tree::from_entries(vec![
            TreeEntry {
                name: b"zz".to_vec(),
                kind: EntryKind::Symlink { file: a },
            },
            TreeEntry {
                name: b"a".to_vec(),
                kind: EntryKind::Dir { tree: a, meta: a },
            },
            TreeEntry {
                name: b"m".to_vec(),
                kind: EntryKind::Regular { file: a },
            },
        ])
        .unwrap();
        assert_eq!(t.entries[0].name, b"a");
        let back = Tree::decode(&t.encode()).unwrap();
        assert_eq!(back, t);
        assert!(back.get(b"m").is_some());
        assert!(back.get(b"q").is_none());
    }

    #[test]
    fn tree_rejects_bad_names_and_duplicates() {
        let a = ObjectId::of(b"a");
        for bad in [&b".."[..], b".", b"", b"a/b"] {
            let e = TreeEntry {
                name: bad.to_vec(),
                kind: EntryKind::Regular { file: a },
            };
            assert!(Tree::from_entries(vec![e.clone()]).is_err());
            // Hand-encode it too: the decoder must refuse what the builder refuses.
            let enc = Tree { entries: vec![e] }.encode();
            assert!(Tree::decode(&enc).is_err());
        }
        let e = TreeEntry {
            name: b"x".to_vec(),
            kind: EntryKind::Regular { file: a },
        };
        assert!(Tree::from_entries(vec![e.clone(), e.clone()]).is_err());
        let enc = Tree {
            entries: vec![e.clone(), e],
        }
        .encode();
        assert!(Tree::decode(&enc).is_err());
    }

    #[test]
    fn dirmeta_round_trip() {
        let m = DirMeta::new(0o1777, 0, 0, vec![]);
        assert_eq!(DirMeta::decode(&m.encode()).unwrap(), m);
        let mut bad = m.clone();
        bad.mode = 0o100644;
        assert!(DirMeta::decode(&bad.encode()).is_err());
    }
}

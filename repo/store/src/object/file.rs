//! File objects: a regular file or a symlink, with its metadata but no
//! timestamps. The id covers the header and the content together.

use super::codec::{read_xattrs, write_xattrs, Reader, Writer};
use super::{DecodeError, ObjectKind};
use crate::hash::{Hasher, ObjectId};

/// Extended attributes, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFDIR: u32 = 0o040000;

/// Regular file or symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Symlink,
}

/// Everything about a file object except its content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileHeader {
    /// Full `st_mode`: type bits and permission bits (including setuid,
    /// setgid and sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: Xattrs,
    /// The symlink target; empty for regular files.
    pub target: Vec<u8>,
    /// Content length in bytes; 0 for symlinks.
    pub size: u64,
}

impl FileHeader {
    /// A regular file header. `perm` holds the permission bits only.
    pub fn regular(perm: u32, uid: u32, gid: u32, xattrs: Xattrs, size: u64) -> FileHeader {
        FileHeader {
            mode: S_IFREG | (perm & 0o7777),
            uid,
            gid,
            xattrs,
            target: Vec::new(),
            size,
        }
    }

    /// A symlink header; symlink permissions are always 0777 on Linux.
    pub fn symlink(target: Vec<u8>, uid: u32, gid: u32, xattrs: Xattrs) -> FileHeader {
        FileHeader {
            mode: S_IFLNK | 0o777,
            uid,
            gid,
            xattrs,
            target,
            size: 0,
        }
    }

    pub fn kind(&self) -> FileKind {
        if self.mode & S_IFMT == S_IFLNK {
            FileKind::Symlink
        } else {
            FileKind::Regular
        }
    }

    /// Permission bits (the low 12 bits of the mode).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// The canonical header encoding: everything before the content.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(ObjectKind::File);
        w.u32(self.mode);
        w.u32(self.uid);
        w.u32(self.gid);
        write_xattrs(&mut w, &self.xattrs);
        w.bytes(&self.target);
        w.u64(self.size);
        w.0
    }

    /// Decodes a header from the front of `data`, returning it and the bytes
    /// that follow it (the content, when `data` is a whole canonical encoding).
    pub fn decode_prefix(data: &[u8]) -> Result<(FileHeader, &[u8]), DecodeError> {
        let mut r = Reader::new(ObjectKind::File, data)?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let xattrs = read_xattrs(&mut r)?;
        let target = r.bytes()?.to_vec();
        let size = r.u64()?;
        let header = FileHeader {
            mode,
            uid,
            gid,
            xattrs,
            target,
            size,
        };
        header.validate().map_err(|reason| r.invalid(reason))?;
        Ok((header, r.rest()))
    }

    /// Decodes a header that must be the whole of `data`.
    pub fn decode(data: &[u8]) -> Result<FileHeader, DecodeError> {
        let (header, rest) = FileHeader::decode_prefix(data)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes {
                kind: ObjectKind::File,
                extra: rest.len(),
            });
        }
        Ok(header)
    }

    fn validate(&self) -> Result<(), &'static str> {
        if self.mode & !(S_IFMT | 0o7777) != 0 {
            return Err("mode has unknown bits");
        }
        match self.mode & S_IFMT {
            S_IFREG if self.target.is_empty() => Ok(()),
            S_IFREG => Err("regular file with a symlink target"),
            S_IFLNK if self.mode != S_IFLNK | 0o777 => Err("symlink mode must be 0777"),
            S_IFLNK if self.target.is_empty() || self.target.contains(&0) => {
                Err("symlink target empty or contains NUL")
            }
            S_IFLNK if self.size != 0 => Err("symlink with content"),
            S_IFLNK => Ok(()),
            _ => Err("file object must be a regular file or a symlink"),
        }
    }

    /// The object id of this header followed by `content`.
    pub fn id_with_content(&self, content: &[u8]) -> ObjectId {
        let mut h = Hasher::default();
        h.update(&self.encode());
        h.update(content);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let cases = [
            FileHeader::regular(0o4755, 0, 0, vec![], 12),
            FileHeader::regular(
                0o644,
                1000,
                100,
                vec![(b"user.a".to_vec(), b"1".to_vec())],
                0,
            ),
            FileHeader::symlink(b"../lib/x".to_vec(), 0, 0, vec![]),
        ];
        for h in cases {
            let enc = h.encode();
            assert_eq!(FileHeader::decode(&enc).unwrap(), h);
            let mut with_content = enc.clone();
            with_content.extend_from_slice(b"abc");
            let (back, rest) = FileHeader::decode_prefix(&with_content).unwrap();
            assert_eq!(back, h);
            assert_eq!(rest, b"abc");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let mut h = FileHeader::symlink(b"x".to_vec(), 0, 0, vec![]);
        h.mode = S_IFLNK | 0o755;
        assert!(FileHeader::decode(&h.encode()).is_err());
        let mut h = FileHeader::regular(0o644, 0, 0, vec![], 0);
        h.mode = S_IFDIR | 0o755;
        assert!(FileHeader::decode(&h.encode()).is_err());
        let h = FileHeader::regular(0o644, 0, 0, vec![], 0);
        let enc = h.encode();
        for cut in 0..enc.len() {
            assert!(FileHeader::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let unsorted = vec![(b"user.b".to_vec(), vec![]), (b"user.a".to_vec(), vec![])];
        let h = FileHeader::regular(0o644, 0, 0, unsorted, 0);
        assert!(FileHeader::decode(&h.encode()).is_err());
    }
}

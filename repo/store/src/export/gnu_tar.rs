//! Tar in the GNU format, written through the `tar` crate: GNU headers
//! (magic `ustar␠␠`), names and link targets longer than the 100-byte
//! fields in GNU long-name (`L`) and long-link (`K`) entries, numbers too
//! large for octal in GNU base-256.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Body, Entry};

/// The width of the name and link name fields of a tar header.
const NAME_FIELD_LEN: usize = 100;
/// The name GNU tar gives long-name and long-link entries.
const LONG_LINK_NAME: &[u8] = b"././@LongLink";

/// Writes tar entries to `W`.
pub struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter {
            builder: tar::Builder::new(out),
        }
    }

    /// Writes one entry: its name is the tree path, `./` for the root and
    /// with a `/` after directories.
    pub fn entry(&mut self, entry: &Entry<'_>) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode & 0o7777);
        header.set_uid(entry.uid.into());
        header.set_gid(entry.gid.into());
        header.set_mtime(entry.mtime.into());
        header.set_size(0);
        match entry.body {
            Body::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                let name = if entry.path.is_empty() {
                    b"./".to_vec()
                } else {
                    [entry.path, b"/"].concat()
                };
                self.builder
                    .append_data(&mut header, path(&name), io::empty())
            }
            Body::File(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                self.builder
                    .append_data(&mut header, path(entry.path), data)
            }
            Body::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                self.link(&mut header, entry.path, target)
            }
            Body::HardLink(first) => {
                header.set_entry_type(tar::EntryType::Link);
                self.link(&mut header, entry.path, first)
            }
        }
    }

    /// A symlink or hardlink entry. The target is written byte for byte
    /// (the crate's `set_link_name` would turn `a//b/./c` into `a/b/c`),
    /// after a long-link entry when it does not fit the header; a long
    /// name follows, so the order is GNU tar's: `K`, `L`, the entry.
    fn link(&mut self, header: &mut tar::Header, name: &[u8], target: &[u8]) -> io::Result<()> {
        if target.len() > NAME_FIELD_LEN {
            self.long_link(target)?;
        }
        header.set_link_name_literal(&target[..target.len().min(NAME_FIELD_LEN)])?;
        self.builder.append_data(header, path(name), io::empty())
    }

    /// A GNU long-link (`K`) entry: the next entry's link target, with a
    /// NUL, as GNU tar writes it.
    fn long_link(&mut self, target: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().expect("a GNU header").name[..LONG_LINK_NAME.len()]
            .copy_from_slice(LONG_LINK_NAME);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(target.len() as u64 + 1);
        header.set_entry_type(tar::EntryType::GNULongLink);
        header.set_cksum();
        self.builder
            .append(&header, io::Read::chain(target, &[0u8][..]))
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the
    /// writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

fn path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a [u8], mode: u32, body: Body<'a>) -> Entry<'a> {
        Entry {
            path,
            ino: 1,
            mode,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 1_704_067_200,
            body,
        }
    }

    /// An entry as read back: name, type, link target, data.
    type ReadEntry = (Vec<u8>, tar::EntryType, Option<Vec<u8>>, Vec<u8>);

    fn read_back(bytes: &[u8]) -> Vec<ReadEntry> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path_bytes().into_owned();
                let kind = e.header().entry_type();
                let link = e.link_name_bytes().map(|l| l.into_owned());
                let mut data = Vec::new();
                io::Read::read_to_end(&mut e, &mut data).unwrap();
                (path, kind, link, data)
            })
            .collect()
    }

    #[test]
    fn long_names_and_targets_and_odd_targets_survive() {
        let long_dir = [b"d".repeat(60), b"/".to_vec(), b"e".repeat(60)].concat();
        let long_file = [long_dir.clone(), b"/f".to_vec()].concat();
        let long_target = b"../".repeat(50);
        let mut w = TarWriter::new(Vec::new());
        let entries = [
            entry(b"", 0o040755, Body::Dir),
            entry(&long_dir, 0o040700, Body::Dir),
            entry(&long_file, 0o104755, Body::File(b"data")),
            entry(b"hard", 0o104755, Body::HardLink(&long_file)),
            entry(b"l1", 0o120777, Body::Symlink(&long_target)),
            entry(b"l2", 0o120777, Body::Symlink(b"a//b/./c/")),
        ];
        for e in &entries {
            w.entry(e).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let back = read_back(&bytes);
        let dir_name = [long_dir.clone(), b"/".to_vec()].concat();
        let want: Vec<ReadEntry> = vec![
            (b"./".to_vec(), tar::EntryType::Directory, None, vec![]),
            (dir_name, tar::EntryType::Directory, None, vec![]),
            (
                long_file.clone(),
                tar::EntryType::Regular,
                None,
                b"data".to_vec(),
            ),
            (
                b"hard".to_vec(),
                tar::EntryType::Link,
                Some(long_file.clone()),
                vec![],
            ),
            (
                b"l1".to_vec(),
                tar::EntryType::Symlink,
                Some(long_target.clone()),
                vec![],
            ),
            (
                b"l2".to_vec(),
                tar::EntryType::Symlink,
                Some(b"a//b/./c/".to_vec()),
                vec![],
            ),
        ];
        assert_eq!(back, want);
    }

    #[test]
    fn header_fields_are_the_entry_s() {
        let mut w = TarWriter::new(Vec::new());
        let mut e = entry(b"bin/su", 0o104755, Body::File(b"x"));
        e.uid = 3_000_000; // beyond 7 octal digits: base-256
        e.gid = 42;
        w.entry(&e).unwrap();
        let bytes = w.finish().unwrap();
        let h = tar::Header::from_byte_slice(&bytes[..512]);
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.uid().unwrap(), 3_000_000);
        assert_eq!(h.gid().unwrap(), 42);
        assert_eq!(h.mtime().unwrap(), 1_704_067_200);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(&bytes[257..265], b"ustar  \0", "GNU magic");
    }
}

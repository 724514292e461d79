//! The "new ASCII" (`newc`, magic `070701`) cpio format, the one the Linux
//! kernel unpacks as an initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte header of ASCII hex fields, the name with a
//! NUL, padding to a multiple of 4, the data, padding to a multiple of 4.
//! The archive ends with an entry named `TRAILER!!!`. Hardlinks share an
//! inode number; the data goes with the first name and later names have
//! size 0 (the kernel links them to the first one).

use std::io::{self, Write};

use super::Entry;

/// The magic number that starts every newc header.
pub const MAGIC: &[u8; 6] = b"070701";
/// The name of the last entry.
pub const TRAILER: &[u8] = b"TRAILER!!!";
/// Header length: the magic and 13 fields of 8 hex digits.
const HEADER_LEN: usize = 6 + 13 * 8;

/// The fixed-width fields of one header, in the order they are written.
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    /// Including the terminating NUL.
    namesize: u32,
}

impl Header {
    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut buf = [0u8; HEADER_LEN];
        buf[..6].copy_from_slice(MAGIC);
        let fields = [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            self.namesize,
            0, // check: only the `070702` variant has a checksum
        ];
        for (i, field) in fields.iter().enumerate() {
            let at = 6 + i * 8;
            write!(&mut buf[at..at + 8], "{field:08X}").expect("8 hex digits fit 8 bytes");
        }
        out.write_all(&buf)
    }
}

/// Zero bytes that bring `len` up to a multiple of 4.
fn pad4(len: usize) -> &'static [u8] {
    &[0u8; 3][..(4 - len % 4) % 4]
}

/// Writes newc entries to `W`.
pub struct NewcWriter<W: Write> {
    out: W,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> NewcWriter<W> {
        NewcWriter { out }
    }

    /// Writes one entry. An inode number or a file size that does not fit
    /// 32 bits is an `InvalidInput` error, before anything is written; the
    /// engine checks both first to report them properly.
    pub fn entry(&mut self, entry: &Entry<'_>) -> io::Result<()> {
        let name: &[u8] = if entry.path.is_empty() {
            b"."
        } else {
            entry.path
        };
        // A later name of a hardlinked file has the same inode and no data.
        let data = entry.body.data();
        let too_big = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        self.raw(
            &Header {
                ino: u32::try_from(entry.ino).map_err(|_| too_big("inode number"))?,
                mode: entry.mode,
                uid: entry.uid,
                gid: entry.gid,
                nlink: entry.nlink,
                mtime: entry.mtime,
                filesize: u32::try_from(data.len()).map_err(|_| too_big("file size"))?,
                namesize: name_size(name)?,
            },
            name,
            data,
        )
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        // As the kernel's gen_init_cpio writes it: inode 0, one link.
        let trailer = Header {
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            namesize: name_size(TRAILER)?,
        };
        self.raw(&trailer, TRAILER, &[])?;
        Ok(self.out)
    }

    fn raw(&mut self, header: &Header, name: &[u8], data: &[u8]) -> io::Result<()> {
        header.write_to(&mut self.out)?;
        self.out.write_all(name)?;
        self.out.write_all(&[0])?;
        self.out.write_all(pad4(HEADER_LEN + name.len() + 1))?;
        self.out.write_all(data)?;
        self.out.write_all(pad4(data.len()))
    }
}

fn name_size(name: &[u8]) -> io::Result<u32> {
    u32::try_from(name.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long for cpio"))
}

#[cfg(test)]
mod tests {
    use super::super::Body;
    use super::*;

    /// A tiny archive, byte for byte: the root directory, a file, a second
    /// name of that file and a symlink, then the trailer.
    #[test]
    fn newc_test_vector() {
        let entries = [
            Entry {
                path: b"",
                ino: 1,
                mode: 0o040755,
                uid: 0,
                gid: 0,
                nlink: 2,
                mtime: 0x6592_0080,
                body: Body::Dir,
            },
            Entry {
                path: b"a",
                ino: 2,
                mode: 0o104755,
                uid: 1000,
                gid: 100,
                nlink: 2,
                mtime: 0x6592_0080,
                body: Body::File(b"hi\n"),
            },
            Entry {
                path: b"b",
                ino: 2,
                mode: 0o104755,
                uid: 1000,
                gid: 100,
                nlink: 2,
                mtime: 0x6592_0080,
                body: Body::HardLink(b"a"),
            },
            Entry {
                path: b"lnk",
                ino: 3,
                mode: 0o120777,
                uid: 0,
                gid: 0,
                nlink: 1,
                mtime: 0x6592_0080,
                body: Body::Symlink(b"a"),
            },
        ];
        let mut w = NewcWriter::new(Vec::new());
        for e in &entries {
            w.entry(e).unwrap();
        }
        let bytes = w.finish().unwrap();

        let want: Vec<u8> = [
            // "." : ino 1, mode 040755, nlink 2, namesize 2; 110 + 2 = 112, no padding.
            &b"070701"[..],
            b"00000001",
            b"000041ED",
            b"00000000",
            b"00000000",
            b"00000002",
            b"65920080",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000002",
            b"00000000",
            b".\0",
            // "a" : ino 2, mode 0104755 (setuid), uid 1000, gid 100, nlink 2, 3 bytes.
            b"070701",
            b"00000002",
            b"000089ED",
            b"000003E8",
            b"00000064",
            b"00000002",
            b"65920080",
            b"00000003",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000002",
            b"00000000",
            b"a\0",
            b"hi\n\0",
            // "b" : the same inode, size 0.
            b"070701",
            b"00000002",
            b"000089ED",
            b"000003E8",
            b"00000064",
            b"00000002",
            b"65920080",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000002",
            b"00000000",
            b"b\0",
            // "lnk" : the target is the data, without a NUL; 110 + 4 = 114, pad 2.
            b"070701",
            b"00000003",
            b"0000A1FF",
            b"00000000",
            b"00000000",
            b"00000001",
            b"65920080",
            b"00000001",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000004",
            b"00000000",
            b"lnk\0",
            b"\0\0",
            b"a\0\0\0",
            // The trailer: 110 + 11 = 121, pad 3.
            b"070701",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000001",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"00000000",
            b"0000000B",
            b"00000000",
            b"TRAILER!!!\0",
            b"\0\0\0",
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn padding() {
        assert_eq!(pad4(0), b"");
        assert_eq!(pad4(1), b"\0\0\0");
        assert_eq!(pad4(2), b"\0\0");
        assert_eq!(pad4(3), b"\0");
        assert_eq!(pad4(112), b"");
    }

    #[test]
    fn values_over_32_bits_are_refused_before_writing() {
        let mut e = Entry {
            path: b"x",
            ino: u64::from(u32::MAX) + 1,
            mode: 0o040755,
            uid: 0,
            gid: 0,
            nlink: 2,
            mtime: 0,
            body: Body::Dir,
        };
        let mut w = NewcWriter::new(Vec::new());
        let err = w.entry(&e).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        e.ino = u64::from(u32::MAX);
        w.entry(&e).unwrap();
        assert_eq!(w.out.len(), HEADER_LEN + 2);
    }
}

//! Byte-level helpers shared by the object encodings.

use super::file::Xattrs;
use super::{DecodeError, ObjectKind, ENCODING_VERSION};
use crate::hash::{ObjectId, ID_LEN};

pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn new(kind: ObjectKind) -> Writer {
        Writer(vec![kind.tag(), ENCODING_VERSION])
    }
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).expect("field longer than 4 GiB"));
        self.0.extend_from_slice(b);
    }
    pub fn id(&mut self, id: &ObjectId) {
        self.0.extend_from_slice(&id.0);
    }
    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("more than 2^32 items"));
    }
}

pub(crate) struct Reader<'a> {
    kind: ObjectKind,
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the tag and version and positions after them.
    pub fn new(kind: ObjectKind, data: &'a [u8]) -> Result<Reader<'a>, DecodeError> {
        let mut r = Reader { kind, data };
        let tag = r.u8()?;
        if tag != kind.tag() {
            return Err(DecodeError::WrongTag {
                kind,
                found: tag,
                expected: kind.tag(),
            });
        }
        let version = r.u8()?;
        if version != ENCODING_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                kind,
                found: version,
            });
        }
        Ok(r)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(DecodeError::Truncated { kind: self.kind });
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A byte string that must be UTF-8.
    pub fn text(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.invalid("text field is not UTF-8"))
    }
    pub fn id(&mut self) -> Result<ObjectId, DecodeError> {
        Ok(ObjectId(self.take(ID_LEN)?.try_into().expect("32 bytes")))
    }
    /// A list count, bounded by what the remaining bytes could hold so a
    /// hostile count cannot make us allocate.
    pub fn count(&mut self, min_item_len: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len) > self.data.len() {
            return Err(DecodeError::Truncated { kind: self.kind });
        }
        Ok(n)
    }
    pub fn invalid(&self, reason: &'static str) -> DecodeError {
        DecodeError::Invalid {
            kind: self.kind,
            reason,
        }
    }
    /// The bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                kind: self.kind,
                extra: self.data.len(),
            })
        }
    }
}

/// Reads a list of `(name, value)` extended attributes, sorted by name.
pub(crate) fn read_xattrs(r: &mut Reader<'_>) -> Result<Xattrs, DecodeError> {
    let n = r.count(8)?;
    let mut out: Xattrs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.bytes()?.to_vec();
        let value = r.bytes()?.to_vec();
        if name.is_empty() || name.contains(&0) {
            return Err(r.invalid("xattr name empty or contains NUL"));
        }
        if name.starts_with(crate::fsutil::PRIVATE_XATTR_PREFIX) {
            return Err(r.invalid("xattr name is reserved for the store (user.treectl.*)"));
        }
        if let Some((last, _)) = out.last() {
            if *last >= name {
                return Err(r.invalid("xattrs not sorted and unique by name"));
            }
        }
        out.push((name, value));
    }
    Ok(out)
}

pub(crate) fn write_xattrs(w: &mut Writer, xattrs: &Xattrs) {
    w.count(xattrs.len());
    for (name, value) in xattrs {
        w.bytes(name);
        w.bytes(value);
    }
}

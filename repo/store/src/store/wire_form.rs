//! The wire form of objects: what uploads, batched fetches and mirrors carry.
//!
//! The wire form of an object is its stored form in an `archive`
//! repository: trees, dirmetas and commits are their canonical encoding; a
//! file object is `u32 LE header length ‖ header ‖ zstd frame of the
//! content` (no frame for empty content), the bytes of a `.filez` file. A
//! receiver verifies the wire form completely (decode, decompress exactly
//! `size` bytes, hash) before staging anything, so an object that does not
//! match its id never reaches `objects/`.

use std::io::Cursor;

use super::transaction::{compress, Claim, Transaction};
use super::{decompress_slice, read_archive_header, Repo};
use crate::config::RepoMode;
use crate::error::{Error, Result};
use crate::hash::{Hasher, ObjectId};
use crate::object::{Commit, DecodeError, DirMeta, FileHeader, ObjectKind, Tree};

/// A verified file object from its wire form.
struct VerifiedFile {
    header: FileHeader,
    content: Vec<u8>,
}

impl Repo {
    /// The object's wire form. In an `archive` repository this is the
    /// stored file as it is (not re-hashed here: receivers verify); in a
    /// `bare-user` one a file object is read, verified and compressed.
    pub fn read_wire_form(&self, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
        match (kind, self.mode()) {
            (ObjectKind::File, RepoMode::BareUser) => {
                let (header, content) = self.read_file(id)?;
                encode_file_wire_form(&header, &content)
                    .map_err(Error::io("compressing", self.object_path(id, kind)))
            }
            (ObjectKind::File, RepoMode::Archive) => {
                let path = self.object_path(id, kind);
                std::fs::read(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::NotFound { kind, id: *id }
                    } else {
                        Error::io("reading", &path)(e)
                    }
                })
            }
            _ => self.read_meta_bytes(id, kind),
        }
    }
}

/// Encodes a file object's wire form (the `.filez` layout).
pub fn encode_file_wire_form(header: &FileHeader, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let encoded = header.encode();
    let mut out = Vec::with_capacity(4 + encoded.len() + content.len() / 2);
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    if !content.is_empty() {
        out.extend_from_slice(&compress(content)?);
    }
    Ok(out)
}

/// Why a file object's wire form has no readable header.
#[derive(Debug, thiserror::Error)]
pub enum WireHeaderError {
    #[error("the object is shorter than its header length")]
    NoLength,
    #[error("the object is shorter than its header")]
    Short,
    #[error("decoding the file header")]
    Decode(#[source] DecodeError),
}

/// The header of a file object's wire form, read without decompressing
/// the content: a receiver checks the declared size before it spends
/// memory on decompression.
pub fn file_wire_header(data: &[u8]) -> std::result::Result<FileHeader, WireHeaderError> {
    let len = data
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(WireHeaderError::NoLength)?;
    let raw = data
        .get(4..4usize.saturating_add(len))
        .ok_or(WireHeaderError::Short)?;
    FileHeader::decode(raw).map_err(WireHeaderError::Decode)
}

fn verify_file(id: &ObjectId, data: &[u8]) -> Result<VerifiedFile> {
    let corrupt = |reason: String| Error::Corrupt {
        kind: ObjectKind::File,
        id: *id,
        reason,
    };
    let mut cursor = Cursor::new(data);
    let raw = read_archive_header(&mut cursor).map_err(|e| corrupt(format!("header: {e}")))?;
    let header = FileHeader::decode(&raw).map_err(|e| corrupt(e.to_string()))?;
    let rest = &data[cursor.position() as usize..];
    let content = decompress_slice(rest, header.size).map_err(corrupt)?;
    let mut h = Hasher::default();
    h.update(&raw);
    h.update(&content);
    let actual = h.finish();
    if actual != *id {
        return Err(corrupt(format!("content hashes to {actual}")));
    }
    Ok(VerifiedFile { header, content })
}

fn verify_meta(id: &ObjectId, kind: ObjectKind, data: &[u8]) -> Result<()> {
    let actual = ObjectId::of(data);
    if actual != *id {
        return Err(Error::Corrupt {
            kind,
            id: *id,
            reason: format!("content hashes to {actual}"),
        });
    }
    let decoded = match kind {
        ObjectKind::Tree => Tree::decode(data).map(drop),
        ObjectKind::DirMeta => DirMeta::decode(data).map(drop),
        ObjectKind::Commit => Commit::decode(data).map(drop),
        ObjectKind::File => unreachable!("file objects are verified by verify_file"),
    };
    decoded.map_err(|err| Error::Decode { kind, id: *id, err })
}

/// Checks that `data` is a valid wire form of `(id, kind)`: it decodes and
/// hashes to `id`.
pub fn verify_wire_form(id: &ObjectId, kind: ObjectKind, data: &[u8]) -> Result<()> {
    match kind {
        ObjectKind::File => verify_file(id, data).map(drop),
        _ => verify_meta(id, kind, data),
    }
}

impl Transaction<'_> {
    /// Verifies an object's wire form against its id and stages it (in an
    /// archive repository the bytes as given, in a bare-user one the
    /// decoded file). Returns false when the object was already stored.
    /// Nothing is staged when verification fails.
    pub fn write_wire_form(&self, id: &ObjectId, kind: ObjectKind, data: &[u8]) -> Result<bool> {
        // One existence check (the claim) per object; a claim is released
        // when the object fails verification. A second copy of an object
        // this transaction is writing is still verified, so a bad copy is
        // refused, but not written again.
        match self.claim_status(*id, kind) {
            Claim::Stored => return Ok(false),
            Claim::Pending => {
                return match kind {
                    ObjectKind::File => verify_file(id, data).map(drop),
                    _ => verify_meta(id, kind, data),
                }
                .map(|()| false)
            }
            Claim::New => {}
        }
        let stored = match kind {
            ObjectKind::File => verify_file(id, data).and_then(|file| match self.repo().mode() {
                RepoMode::Archive => self.stage_claimed_bytes(*id, kind, data),
                RepoMode::BareUser => self.write_claimed_file(*id, &file.header, &file.content),
            }),
            _ => {
                verify_meta(id, kind, data).and_then(|()| self.stage_claimed_bytes(*id, kind, data))
            }
        };
        match stored {
            Ok(()) => Ok(true),
            Err(e) => {
                self.unclaim(*id, kind);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_wire_form_round_trip_and_mismatch() {
        let header = FileHeader::regular(0o644, 0, 0, Vec::new(), 6);
        let id = header.id_with_content(b"hello\n");
        let wire = encode_file_wire_form(&header, b"hello\n").expect("compress");
        verify_wire_form(&id, ObjectKind::File, &wire).expect("valid");
        let other = ObjectId::of(b"other");
        assert!(matches!(
            verify_wire_form(&other, ObjectKind::File, &wire),
            Err(Error::Corrupt { .. })
        ));
        // Truncated frames and trailing garbage are refused.
        assert!(verify_wire_form(&id, ObjectKind::File, &wire[..wire.len() - 1]).is_err());
        let mut longer = wire.clone();
        longer.extend_from_slice(b"junk");
        assert!(verify_wire_form(&id, ObjectKind::File, &longer).is_err());
    }

    #[test]
    fn file_wire_form_must_decompress_to_its_declared_size() {
        // A header declaring fewer (or more) bytes than the frame holds.
        for declared in [5u64, 7] {
            let header = FileHeader::regular(0o644, 0, 0, Vec::new(), declared);
            let encoded = header.encode();
            let mut wire = (encoded.len() as u32).to_le_bytes().to_vec();
            wire.extend_from_slice(&encoded);
            wire.extend_from_slice(&compress(b"hello\n").expect("compress"));
            let id = ObjectId::of(b"any");
            let err = verify_wire_form(&id, ObjectKind::File, &wire).expect_err("refused");
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        }
    }

    /// Found by the `filez_decode` fuzz target: a header declaring
    /// `u64::MAX` bytes overflowed the "one byte more" check (a panic with
    /// overflow checks on), and a declared size up to 1 GiB was reserved
    /// before any byte was decompressed.
    #[test]
    fn filez_declaring_u64_max_or_a_huge_size_is_refused_without_a_panic() {
        for declared in [u64::MAX, u64::MAX - 1, 1 << 30, (1 << 20) + 1] {
            let header = FileHeader::regular(0o644, 0, 0, Vec::new(), declared);
            let encoded = header.encode();
            let mut wire = (encoded.len() as u32).to_le_bytes().to_vec();
            wire.extend_from_slice(&encoded);
            wire.extend_from_slice(&compress(b"hello\n").expect("compress"));
            let err = verify_wire_form(&ObjectId::of(b"any"), ObjectKind::File, &wire)
                .expect_err("refused");
            assert!(
                err.to_string().contains("decompresses to 6 bytes"),
                "{declared}: {err}"
            );
        }
    }

    #[test]
    fn large_content_streams_to_its_exact_size() {
        // Above the one-call limit, through the growing buffer.
        let content: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        let header = FileHeader::regular(0o644, 0, 0, Vec::new(), content.len() as u64);
        let id = header.id_with_content(&content);
        let wire = encode_file_wire_form(&header, &content).expect("compress");
        verify_wire_form(&id, ObjectKind::File, &wire).expect("valid");
        let mut longer = content.clone();
        longer.push(0);
        let short = FileHeader::regular(0o644, 0, 0, Vec::new(), content.len() as u64);
        let encoded = short.encode();
        let mut wire = (encoded.len() as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&encoded);
        wire.extend_from_slice(&compress(&longer).expect("compress"));
        let err = verify_wire_form(&id, ObjectKind::File, &wire).expect_err("one byte too long");
        assert!(err.to_string().contains("decompresses to more"), "{err}");
    }

    #[test]
    fn file_wire_header_without_decompressing() {
        let header = FileHeader::regular(0o644, 0, 0, Vec::new(), 6);
        let wire = encode_file_wire_form(&header, b"hello\n").expect("compress");
        assert_eq!(file_wire_header(&wire).expect("header").size, 6);
        assert!(matches!(
            file_wire_header(&wire[..2]),
            Err(WireHeaderError::NoLength)
        ));
        assert!(matches!(
            file_wire_header(&wire[..6]),
            Err(WireHeaderError::Short)
        ));
    }

    #[test]
    fn meta_wire_form_must_decode() {
        let tree = Tree::default().encode();
        let id = ObjectId::of(&tree);
        verify_wire_form(&id, ObjectKind::Tree, &tree).expect("empty tree");
        // The right hash but the wrong kind does not decode.
        assert!(verify_wire_form(&id, ObjectKind::Commit, &tree).is_err());
    }
}

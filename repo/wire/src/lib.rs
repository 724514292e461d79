//! Types shared by the HTTP server and its clients: the JSON bodies of the
//! `/v1/` API and the binary *pack* framing that carries many objects in one
//! body (uploads and batched fetches). Serde and bytes only: no HTTP here.
//! The API is specified in `docs/http-api.md`.
//!
//! A pack is `PACK_MAGIC` followed by records
//! `u8 kind tag ‖ 32-byte id ‖ u64 LE length ‖ wire form`, and ends with one
//! byte `0`. A pack without that end byte was cut short.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use treectl_id::{ObjectId, ObjectKind};

/// The first 8 bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"TCPACK\x00\x01";
/// The tag that ends a pack.
pub const PACK_END: u8 = 0;
/// Media type of packs.
pub const PACK_CONTENT_TYPE: &str = "application/x-treectl-pack";

/// An object named with its kind (the kind picks the file extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub id: ObjectId,
    pub kind: ObjectKind,
}

/// `POST /v1/objects/missing`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingRequest {
    pub objects: Vec<ObjectRef>,
}

/// The answer: the subset the server does not have, in request order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingResponse {
    pub missing: Vec<ObjectRef>,
}

/// The answer to an upload (`POST /v1/objects`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadResponse {
    /// Objects in the pack.
    pub received: usize,
    /// Objects newly stored (the rest were already there).
    pub stored: usize,
}

/// `POST /v1/objects/fetch`: objects to stream back as one pack.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchRequest {
    pub objects: Vec<ObjectRef>,
}

/// `POST /v1/objects/sizes`: how large objects are, without their bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizesRequest {
    pub objects: Vec<ObjectRef>,
}

/// The answer, in request order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizesResponse {
    pub sizes: Vec<ObjectSize>,
}

/// One object's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSize {
    /// Bytes of its wire form: what fetching it transfers.
    pub wire: u64,
    /// For a file object: its content's size (uncompressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<u64>,
}

/// `POST /v1/publish`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishRequest {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub commit: ObjectId,
    /// Publish a commit the ref rejected (reverted away from) anyway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Roll the release out to this share of machines first (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<u8>,
    /// Every machine must deploy this release before any later one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub barrier: bool,
}

/// The answer to `POST /v1/publish/check` (the body is a
/// [`PublishRequest`]): the publish would not be refused for a hold or a
/// rejection. Refusals are errors, as for the publish itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishCheckResponse {
    pub publishable: bool,
}

/// `POST /v1/rollout`: change the head's phased rollout. `action` is a
/// percentage (`"25"`), `"pause"`, `"resume"` or `"complete"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutRequest {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub action: String,
}

/// `POST /v1/promote`: publish on `to` exactly the commit `from` has now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PromoteRequest {
    pub from: String,
    pub to: String,
    /// Promote even a commit `to` rejected (reverted away from).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `POST /v1/hold`: pause every publish of a ref until it is released.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoldRequest {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub reason: String,
}

/// `POST /v1/release`: lift a ref's hold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleaseRequest {
    #[serde(rename = "ref")]
    pub ref_name: String,
}

/// `POST /v1/revert`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevertRequest {
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// A revision on the server (commit id, prefix, ref, `REF^`); default:
    /// the head published before the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub reason: String,
}

/// `POST /v1/keys/rotate`: rotate the index's signing keys to a new key
/// set of these public keys (64 hex digits each) and threshold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RotateRequest {
    pub keys: Vec<String>,
    pub threshold: u32,
}

/// The answer to a key rotation: the new key set and the index serial
/// that first names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateResponse {
    pub version: u64,
    pub threshold: u32,
    /// Public keys, 64 hex digits each.
    pub keys: Vec<String>,
    pub key_ids: Vec<String>,
    pub serial: u64,
}

/// The answer to a publish or a revert.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishResponse {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub commit: ObjectId,
    pub serial: u64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ObjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts_to: Option<ObjectId>,
}

impl From<&HistoryEntry> for PublishResponse {
    fn from(e: &HistoryEntry) -> PublishResponse {
        PublishResponse {
            ref_name: e.ref_name.clone(),
            commit: e.commit,
            serial: e.serial,
            kind: e.kind,
            previous: e.previous,
            reverts_to: e.reverts_to,
        }
    }
}

/// What an event of the history was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The ref was published at a commit.
    Publish,
    /// A new release restoring an earlier tree.
    Revert,
    /// Publishes of the ref were paused (`commit`: its head then).
    Hold,
    /// The hold was lifted (`commit`: the ref's head then).
    Release,
    /// The commit another ref had was published on this one (`from_ref`),
    /// or this ref's commit was published on another (`to_ref`).
    Promote,
    /// The head's phased rollout changed (`reason`: `25%`, `pause`,
    /// `resume`, `complete`).
    Rollout,
}

impl EventKind {
    /// The kebab-case name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Publish => "publish",
            EventKind::Revert => "revert",
            EventKind::Hold => "hold",
            EventKind::Release => "release",
            EventKind::Promote => "promote",
            EventKind::Rollout => "rollout",
        }
    }
}

/// One line of the history log: a publish or a revert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The index serial this event produced.
    pub serial: u64,
    /// When it happened (seconds since the epoch).
    pub time: i64,
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The commit the ref was published at.
    pub commit: ObjectId,
    pub kind: EventKind,
    /// The ref's previously published commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ObjectId>,
    /// For a revert: the commit whose tree was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts_to: Option<ObjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The token name (server) or user (local) that did it.
    pub who: String,
    /// The commit's `version` metadata, when it has one (older servers
    /// did not record it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// For a promote onto this ref: the ref it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ref: Option<String>,
    /// For a promote from this ref: the ref it went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ref: Option<String>,
}

/// `GET /v1/history?ref=REF`: the ref's events, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryResponse {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub entries: Vec<HistoryEntry>,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    /// The published index's serial (0: nothing published).
    pub serial: u64,
}

/// Every error body: `{ "error": "one sentence" }`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A malformed pack.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("not a treectl pack (bad magic)")]
    BadMagic,
    #[error("pack record has unknown kind tag {0}")]
    BadTag(u8),
    #[error("pack record for {id} is {len} bytes, over the limit of {limit}")]
    TooLarge { id: ObjectId, len: u64, limit: u64 },
    #[error("pack is truncated")]
    Truncated,
    #[error("reading pack: {0}")]
    Io(#[source] io::Error),
}

/// Writes the pack header.
pub fn write_pack_start(out: &mut impl Write) -> io::Result<()> {
    out.write_all(PACK_MAGIC)
}

/// Writes one record.
pub fn write_pack_record(
    out: &mut impl Write,
    kind: ObjectKind,
    id: &ObjectId,
    data: &[u8],
) -> io::Result<()> {
    let mut head = [0u8; 41];
    head[0] = kind.tag();
    head[1..33].copy_from_slice(&id.0);
    head[33..].copy_from_slice(&(data.len() as u64).to_le_bytes());
    out.write_all(&head)?;
    out.write_all(data)
}

/// The header bytes of one record (for streaming writers).
pub fn pack_record_head(kind: ObjectKind, id: &ObjectId, len: u64) -> [u8; 41] {
    let mut head = [0u8; 41];
    head[0] = kind.tag();
    head[1..33].copy_from_slice(&id.0);
    head[33..].copy_from_slice(&len.to_le_bytes());
    head
}

/// Writes the end marker.
pub fn write_pack_end(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&[PACK_END])
}

/// The most a record's buffer holds before its bytes arrive.
const RECORD_RESERVE: u64 = 1 << 20;

/// Reads a pack record by record.
pub struct PackReader<R> {
    inner: R,
    max_record: u64,
    started: bool,
    done: bool,
}

impl<R: Read> PackReader<R> {
    /// Records longer than `max_record` bytes are refused before reading them.
    pub fn new(inner: R, max_record: u64) -> PackReader<R> {
        PackReader {
            inner,
            max_record,
            started: false,
            done: false,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), PackError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                PackError::Truncated
            } else {
                PackError::Io(e)
            }
        })
    }

    /// The next record, or `None` after the end marker.
    pub fn next_record(&mut self) -> Result<Option<(ObjectKind, ObjectId, Vec<u8>)>, PackError> {
        if self.done {
            return Ok(None);
        }
        if !self.started {
            let mut magic = [0u8; 8];
            self.read_exact(&mut magic)?;
            if &magic != PACK_MAGIC {
                return Err(PackError::BadMagic);
            }
            self.started = true;
        }
        let mut tag = [0u8; 1];
        self.read_exact(&mut tag)?;
        if tag[0] == PACK_END {
            self.done = true;
            return Ok(None);
        }
        let kind = ObjectKind::ALL
            .into_iter()
            .find(|k| k.tag() == tag[0])
            .ok_or(PackError::BadTag(tag[0]))?;
        let mut id = [0u8; 32];
        self.read_exact(&mut id)?;
        let id = ObjectId(id);
        let mut len = [0u8; 8];
        self.read_exact(&mut len)?;
        let len = u64::from_le_bytes(len);
        if len > self.max_record {
            return Err(PackError::TooLarge {
                id,
                len,
                limit: self.max_record,
            });
        }
        // The buffer grows with the bytes that arrive: a record that claims
        // more than the pack holds costs no memory (fuzz target
        // `pack_frames`).
        let mut data = Vec::with_capacity(len.min(RECORD_RESERVE) as usize);
        (&mut self.inner)
            .take(len)
            .read_to_end(&mut data)
            .map_err(PackError::Io)?;
        if (data.len() as u64) < len {
            return Err(PackError::Truncated);
        }
        Ok(Some((kind, id, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_truncation_and_limits() {
        let a = ObjectId::of(b"a");
        let b = ObjectId::of(b"b");
        let mut pack = Vec::new();
        write_pack_start(&mut pack).expect("write");
        write_pack_record(&mut pack, ObjectKind::File, &a, b"aaaa").expect("write");
        write_pack_record(&mut pack, ObjectKind::Tree, &b, b"").expect("write");
        write_pack_end(&mut pack).expect("write");
        let mut r = PackReader::new(&pack[..], 100);
        assert_eq!(
            r.next_record().expect("one"),
            Some((ObjectKind::File, a, b"aaaa".to_vec()))
        );
        assert_eq!(
            r.next_record().expect("two"),
            Some((ObjectKind::Tree, b, Vec::new()))
        );
        assert_eq!(r.next_record().expect("end"), None);
        // Without the end marker the pack is truncated.
        let mut r = PackReader::new(&pack[..pack.len() - 1], 100);
        r.next_record().expect("one");
        r.next_record().expect("two");
        assert!(matches!(r.next_record(), Err(PackError::Truncated)));
        let mut r = PackReader::new(&pack[..], 3);
        assert!(matches!(r.next_record(), Err(PackError::TooLarge { .. })));
        assert!(matches!(
            PackReader::new(&b"NOTAPACK\x00"[..], 3).next_record(),
            Err(PackError::BadMagic)
        ));
    }

    /// Found by the `pack_frames` fuzz target: a record claiming a length
    /// within the cap was allocated in full before its bytes were read, so
    /// a few hostile bytes could ask for the whole cap (or abort the
    /// process when the cap is high).
    #[test]
    fn pack_record_claiming_more_than_the_pack_holds_is_truncated_not_allocated() {
        let id = ObjectId::of(b"a");
        for claimed in [u64::MAX, 1 << 50, 5] {
            let mut pack = Vec::new();
            write_pack_start(&mut pack).expect("write");
            pack.extend_from_slice(&pack_record_head(ObjectKind::File, &id, claimed));
            pack.extend_from_slice(b"abcd");
            let mut r = PackReader::new(&pack[..], u64::MAX);
            assert!(
                matches!(r.next_record(), Err(PackError::Truncated)),
                "{claimed}"
            );
        }
    }
}

//! The signed ref index (OSTree calls it the summary): `summary.json` at the
//! top of a repository lists every published ref with its commit, a serial
//! that only ever increases, the commit's timestamp and version, when it was
//! published, and when the index expires. Clients read it with a plain GET
//! from the server or any mirror and verify its signature before trusting a
//! single ref.
//!
//! The file is a JSON envelope `{ "payload": "<JSON text>", "signatures":
//! [...] }`: the signatures cover the exact bytes of the payload string, so
//! no canonical JSON is needed. It is rewritten atomically (temporary file,
//! fsync, rename) on every change. Byte format: `docs/repository-format.md`.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};

use crate::keyset::{KeySet, KeySetError};
use crate::packs::PackRef;
use crate::sign::{PublicKey, SecretKey, SignError, Signature};
use treectl_store::hash::ObjectId;
use treectl_store::store::{write_atomic, Repo};

/// The index file, relative to the repository.
pub const INDEX_FILE: &str = "summary.json";
/// The newest payload `format` this build reads; readers refuse a newer
/// one. Writers use the lowest format that carries what the index holds
/// ([`RefIndex::required_format`]), so older readers keep reading indexes
/// that use nothing new.
pub const INDEX_FORMAT: u32 = 3;
/// The first format: refs, serials, versions and (ignorable) rejections.
pub const INDEX_FORMAT_V1: u32 = 1;
/// Format 2 adds what a reader must not ignore: phased rollouts and
/// barrier releases (a format-1 reader would upgrade every machine at
/// once and skip barriers, so it must refuse the index instead).
pub const INDEX_FORMAT_ROLLOUTS: u32 = 2;
/// Format 3 adds the key set that may sign the index (`keys`, after the
/// first key rotation): a format-2 reader would check the index against
/// the keys it was configured with and miss a rotation, so it must refuse
/// the index instead.
pub const INDEX_FORMAT_KEYS: u32 = 3;
/// The payload's `type`, which also keeps index and commit signatures apart.
pub const INDEX_TYPE: &str = "treectl-ref-index";
/// Prefix of the message signed for an index: this, then the payload bytes.
pub const INDEX_SIGNATURE_DOMAIN: &[u8] = b"treectl ref index v1\0";
/// How long a freshly written index stays valid by default.
pub const DEFAULT_VALIDITY_SECS: i64 = 30 * 24 * 3600;

/// What can go wrong reading, writing or verifying the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the ref index is malformed: {reason}")]
    Malformed { reason: String },
    #[error("the ref index has format {found}, newer than this treectl reads ({INDEX_FORMAT}); upgrade treectl")]
    UnsupportedFormat { found: u32 },
    #[error("the ref index expired at {expires} (now {now}): the server or mirror has not re-signed it; it may be frozen")]
    Expired { expires: i64, now: i64 },
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    KeySet(#[from] KeySetError),
    #[error(transparent)]
    Repo(#[from] treectl_store::Error),
}

/// One published ref.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEntry {
    pub commit: ObjectId,
    /// The index serial at which the ref last changed.
    pub serial: u64,
    /// The commit's own timestamp (seconds since the epoch).
    pub timestamp: i64,
    /// The commit's `version` metadata, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the ref was published (seconds since the epoch).
    pub published: i64,
    /// Commits this ref was reverted away from, oldest first: publishing
    /// one again is refused (unless forced, which lifts its rejection) and
    /// clients never deploy one. Index format 1 (readers that ignore it
    /// still follow the head, which is never rejected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejection>,
    /// A phased rollout of this head (absent: every machine takes it).
    /// Index format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Releases of this ref every machine must deploy before any later
    /// one, oldest first. Index format 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub barriers: Vec<Barrier>,
}

/// A phased rollout: only machines whose bucket is inside the wave take
/// the release (see `docs/deployments.md`, "Phased rollouts").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The share of machines in the wave, 0 to 100.
    pub percent: u8,
    /// No machine starts taking the release while paused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// A release every machine must pass through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    pub commit: ObjectId,
    /// The index serial at which it was published on the ref.
    pub serial: u64,
}

/// A commit a ref was reverted away from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub commit: ObjectId,
    /// The revert's reason.
    pub reason: String,
    /// The serial of the revert that rejected it.
    pub serial: u64,
}

impl RefEntry {
    /// The rejection of `commit` on this ref, if it is rejected.
    pub fn rejection(&self, commit: &ObjectId) -> Option<&Rejection> {
        self.rejected.iter().find(|r| r.commit == *commit)
    }
}

/// The signed content of the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefIndex {
    #[serde(rename = "type")]
    pub kind: String,
    pub format: u32,
    /// Increases by at least one every time the index is rewritten.
    pub serial: u64,
    /// When this index was written.
    pub generated: i64,
    /// After this time clients treat the index as stale.
    pub expires: i64,
    pub refs: BTreeMap<String, RefEntry>,
    /// The key set that may sign this index, once keys have been rotated
    /// (absent: the index is signed by the one key clients were given).
    /// Index format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeySet>,
    /// Pack files of the published objects, for clients of static mirrors
    /// (`packs/`). Ignorable: a reader that skips them fetches the same
    /// objects one by one, so they change no format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<PackRef>,
    /// Static deltas to the refs' heads (`deltas/FROM-TO.delta`).
    /// Ignorable, like `packs`: a reader that skips them fetches the same
    /// objects by themselves, so they change no format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<DeltaEntry>,
}

/// A static delta the index vouches for: clients check its size and
/// SHA-256 before they read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaEntry {
    pub from: ObjectId,
    pub to: ObjectId,
    /// The delta file's size in bytes.
    pub size: u64,
    /// The SHA-256 of the delta file, hex.
    pub sha256: String,
}

impl RefIndex {
    /// An empty index (serial 0), as if nothing had been published.
    pub fn empty() -> RefIndex {
        RefIndex {
            kind: INDEX_TYPE.to_owned(),
            format: INDEX_FORMAT_V1,
            serial: 0,
            generated: 0,
            expires: 0,
            refs: BTreeMap::new(),
            keys: None,
            packs: Vec::new(),
            deltas: Vec::new(),
        }
    }

    /// The lowest format that carries everything this index holds.
    pub fn required_format(&self) -> u32 {
        if self.keys.is_some() {
            INDEX_FORMAT_KEYS
        } else if self
            .refs
            .values()
            .any(|r| r.rollout.is_some() || !r.barriers.is_empty())
        {
            INDEX_FORMAT_ROLLOUTS
        } else {
            INDEX_FORMAT_V1
        }
    }

    /// Refuses an index whose `expires` is before `now`.
    pub fn check_fresh(&self, now: i64) -> Result<(), IndexError> {
        if now > self.expires {
            return Err(IndexError::Expired {
                expires: self.expires,
                now,
            });
        }
        Ok(())
    }
}

/// The file as stored: the payload text and the signatures over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIndex {
    pub payload: String,
    pub signatures: Vec<Signature>,
}

/// `INDEX_SIGNATURE_DOMAIN ‖ payload`.
fn index_message(payload: &str) -> Vec<u8> {
    let mut m = INDEX_SIGNATURE_DOMAIN.to_vec();
    m.extend_from_slice(payload.as_bytes());
    m
}

impl SignedIndex {
    /// Serializes `index` and signs it with `key` (unsigned without one).
    pub fn sign(index: &RefIndex, key: Option<&SecretKey>) -> SignedIndex {
        let payload = serde_json::to_string(index).expect("index serializes");
        debug_assert!(index.format >= index.required_format());
        let signatures = key
            .map(|k| vec![k.sign(&index_message(&payload))])
            .unwrap_or_default();
        SignedIndex {
            payload,
            signatures,
        }
    }

    /// Serializes `index` and signs it with every key of `keys`.
    pub fn sign_with(index: &RefIndex, keys: &[&SecretKey]) -> SignedIndex {
        let payload = serde_json::to_string(index).expect("index serializes");
        debug_assert!(index.format >= index.required_format());
        let message = index_message(&payload);
        SignedIndex {
            signatures: keys.iter().map(|k| k.sign(&message)).collect(),
            payload,
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<SignedIndex, IndexError> {
        serde_json::from_slice(bytes).map_err(|e| IndexError::Malformed {
            reason: e.to_string(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("index serializes");
        out.push(b'\n');
        out
    }

    /// The payload, parsed, without checking signatures.
    pub fn index_unverified(&self) -> Result<RefIndex, IndexError> {
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let malformed = |e: serde_json::Error| IndexError::Malformed {
            reason: e.to_string(),
        };
        // The format first, so a newer index gets a clear error.
        let head: Head = serde_json::from_str(&self.payload).map_err(malformed)?;
        if head.format > INDEX_FORMAT {
            return Err(IndexError::UnsupportedFormat { found: head.format });
        }
        let index: RefIndex = serde_json::from_str(&self.payload).map_err(malformed)?;
        if index.kind != INDEX_TYPE {
            return Err(IndexError::Malformed {
                reason: format!("type is {:?}, not {INDEX_TYPE:?}", index.kind),
            });
        }
        Ok(index)
    }

    /// Checks `key`'s signature over the payload, then parses it.
    pub fn verify(&self, key: &PublicKey) -> Result<RefIndex, IndexError> {
        key.verify_any(
            "the ref index",
            &index_message(&self.payload),
            &self.signatures,
        )?;
        self.index_unverified()
    }

    /// Checks that a threshold of `set` signed the payload, then parses it.
    pub fn verify_set(&self, set: &KeySet) -> Result<RefIndex, IndexError> {
        set.verify_threshold(
            "the ref index",
            &index_message(&self.payload),
            &self.signatures,
        )?;
        self.index_unverified()
    }
}

/// Reads `summary.json`, if the repository has one.
pub fn read_index(repo: &Repo) -> Result<Option<SignedIndex>, IndexError> {
    let path = repo.path().join(INDEX_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => SignedIndex::parse(&bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(treectl_store::Error::Io {
            op: "reading",
            path,
            err,
        }
        .into()),
    }
}

/// Writes `summary.json` atomically.
pub fn write_index(repo: &Repo, index: &SignedIndex) -> Result<(), IndexError> {
    write_atomic(
        &repo.path().join(INDEX_FILE),
        &index.to_bytes(),
        repo.fsync(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RefIndex {
        let mut index = RefIndex::empty();
        index.serial = 3;
        index.generated = 100;
        index.expires = 200;
        index.refs.insert(
            "os/stable".into(),
            RefEntry {
                commit: ObjectId::of(b"c"),
                serial: 3,
                timestamp: 50,
                version: Some("1.0".into()),
                published: 100,
                rejected: vec![],
                rollout: None,
                barriers: vec![],
            },
        );
        index
    }

    #[test]
    fn signed_round_trip_and_tamper() {
        let key = SecretKey::from_seed([1; 32]);
        let signed = SignedIndex::sign(&sample(), Some(&key));
        let back = SignedIndex::parse(&signed.to_bytes()).expect("parses");
        assert_eq!(back.verify(&key.public()).expect("verifies"), sample());
        let mut tampered = back.clone();
        tampered.payload = tampered.payload.replace("\"serial\":3", "\"serial\":4");
        assert_ne!(tampered.payload, back.payload);
        assert!(matches!(
            tampered.verify(&key.public()),
            Err(IndexError::Sign(SignError::BadSignature { .. }))
        ));
        let unsigned = SignedIndex::sign(&sample(), None);
        assert!(matches!(
            unsigned.verify(&key.public()),
            Err(IndexError::Sign(SignError::Unsigned { .. }))
        ));
    }

    /// Row 16 of docs/security.md: the same bytes signed as one kind
    /// (index, key set, commit) never verify as another, because each kind
    /// signs its own domain prefix first. The signed content is chosen so
    /// it is a valid payload of every kind: 32 bytes that can be a commit
    /// id, then a ref name.
    #[test]
    fn signatures_of_one_kind_never_verify_as_another() {
        use crate::keyset::{key_set_message, SignedKeySet, KEY_SET_SIGNATURE_DOMAIN};
        use crate::sign::{
            commit_message, CommitSignatures, RefSignature, COMMIT_SIGNATURE_DOMAIN,
        };
        use treectl_store::refs::RefName;

        // No prefix may start another: then no message of one kind can be
        // a message of another, whatever follows the prefix.
        let prefixes = [
            INDEX_SIGNATURE_DOMAIN,
            KEY_SET_SIGNATURE_DOMAIN,
            COMMIT_SIGNATURE_DOMAIN,
        ];
        for (i, a) in prefixes.iter().enumerate() {
            for (j, b) in prefixes.iter().enumerate() {
                if i != j {
                    assert!(
                        !a.starts_with(b),
                        "{:?} starts with {:?}",
                        String::from_utf8_lossy(a),
                        String::from_utf8_lossy(b)
                    );
                }
            }
        }

        let key = SecretKey::from_seed([9; 32]);
        let public = key.public();
        let id_bytes: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
        let id = ObjectId(id_bytes);
        let stable = RefName::new("os/stable").expect("valid");
        let content = format!("{}{stable}", std::str::from_utf8(&id_bytes).expect("ascii"));
        let set = KeySet::new(1, 1, &[public]).expect("key set");

        let kinds = ["index", "key set", "commit"];
        let sign_as = |kind: &str| -> Signature {
            key.sign(&match kind {
                "index" => index_message(&content),
                "key set" => key_set_message(&content),
                _ => commit_message(&id, &stable),
            })
        };
        // Whether the verifier of `kind` accepts `sig` over `content`.
        let accepted_as = |kind: &str, sig: Signature| -> bool {
            match kind {
                "index" => {
                    let signed = SignedIndex {
                        payload: content.clone(),
                        signatures: vec![sig],
                    };
                    // The signature is checked before the payload is
                    // parsed: a good signature gets past it to "malformed".
                    match signed.verify(&public) {
                        Err(IndexError::Sign(_)) => false,
                        Err(IndexError::Malformed { .. }) => true,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                "key set" => SignedKeySet {
                    payload: content.clone(),
                    signatures: vec![sig],
                }
                .verify_by(&set)
                .is_ok(),
                _ => CommitSignatures {
                    commit: id,
                    signatures: vec![RefSignature {
                        ref_name: stable.to_string(),
                        signature: sig,
                    }],
                }
                .verify(&stable, &public)
                .is_ok(),
            }
        };
        for signer in kinds {
            for verifier in kinds {
                assert_eq!(
                    accepted_as(verifier, sign_as(signer)),
                    signer == verifier,
                    "a {signer} signature checked as a {verifier} signature"
                );
            }
        }
    }

    #[test]
    fn newer_format_and_expiry() {
        let mut index = sample();
        index.format = INDEX_FORMAT + 1;
        let signed = SignedIndex::sign(&index, None);
        assert!(matches!(
            signed.index_unverified(),
            Err(IndexError::UnsupportedFormat { found }) if found == INDEX_FORMAT + 1
        ));
        // A rollout needs format 2; without one an index stays format 1,
        // which older readers understand.
        assert_eq!(sample().required_format(), 1);
        let mut rolling = sample();
        rolling.refs.get_mut("os/stable").expect("ref").rollout = Some(Rollout {
            percent: 10,
            paused: false,
        });
        assert_eq!(rolling.required_format(), 2);
        // A key set needs format 3, which a format-2 reader refuses.
        let mut keyed = sample();
        keyed.keys =
            Some(KeySet::new(2, 1, &[SecretKey::from_seed([5; 32]).public()]).expect("key set"));
        assert_eq!(keyed.required_format(), INDEX_FORMAT_KEYS);
        let err = IndexError::UnsupportedFormat {
            found: INDEX_FORMAT_KEYS,
        };
        assert!(err
            .to_string()
            .starts_with("the ref index has format 3, newer than"));
        // Deltas, like packs, need no newer format: older readers ignore
        // them and fetch the same objects by themselves.
        let mut with_delta = sample();
        with_delta.deltas.push(DeltaEntry {
            from: ObjectId::of(b"a"),
            to: ObjectId::of(b"c"),
            size: 10,
            sha256: "00".repeat(32),
        });
        assert_eq!(with_delta.required_format(), sample().required_format());
        with_delta.format = with_delta.required_format();
        let back = SignedIndex::sign(&with_delta, None)
            .index_unverified()
            .expect("an index with deltas reads");
        assert_eq!(back.deltas, with_delta.deltas);
        assert!(sample().check_fresh(200).is_ok());
        assert!(matches!(
            sample().check_fresh(201),
            Err(IndexError::Expired { .. })
        ));
    }
}

//! Key sets and in-band key rotation, modelled on TUF's root rotation.
//!
//! A *key set* names the public keys that may sign the ref index and how
//! many of them must (the threshold). Key sets are numbered: version 1 is
//! the key that signed the index before the first rotation, and each
//! rotation writes version N+1 signed by a threshold of version N (so only
//! the holders of the old keys can hand trust on) *and* by a threshold of
//! version N+1 (so the new keys are held by someone who can sign with
//! them). Every key set ever written is kept in `keys.json` at the top of
//! the repository, oldest first, so a client that was offline across
//! several rotations walks the chain from the set it trusts to the set the
//! index names, one verified step at a time.
//!
//! The checks here are pure (no I/O beyond the repository file): the
//! client fetches `keys.json` and calls [`KeyChain::walk`].

use std::io;

use serde::{Deserialize, Serialize};

use crate::sign::{PublicKey, SecretKey, SignError, Signature};
use treectl_store::store::{write_atomic, Repo};

/// The chain file, relative to the repository.
pub const KEYS_FILE: &str = "keys.json";
/// The newest `keys.json` format this build reads.
pub const KEYS_FORMAT: u32 = 1;
/// The payload's `type`, which keeps key-set signatures apart from others.
pub const KEY_SET_TYPE: &str = "treectl-key-set";
/// Prefix of the message signed for a key set: this, then the payload.
pub const KEY_SET_SIGNATURE_DOMAIN: &[u8] = b"treectl key set v1\0";
/// Most keys one set may name (bounds the work of verifying a hostile one).
pub const MAX_KEYS: usize = 64;
/// Most key sets a chain may hold.
pub const MAX_SETS: usize = 4096;

/// What can go wrong with key sets and their chain.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("the key set chain is malformed: {reason}")]
    Malformed { reason: String },
    #[error("the key set chain has format {found}, newer than this treectl reads ({KEYS_FORMAT}); upgrade treectl")]
    UnsupportedFormat { found: u32 },
    #[error("{what} has {found} valid signatures by keys of key set version {version}, it needs {threshold}")]
    BelowThreshold {
        what: String,
        version: u64,
        found: usize,
        threshold: u32,
    },
    #[error("the key set chain has no version {version} (it has versions {first} to {last})")]
    Missing { version: u64, first: u64, last: u64 },
    #[error("key set version {found} is older than version {trusted}, which this client already trusts: a replayed old key set is refused")]
    Replayed { found: u64, trusted: u64 },
    #[error("key set version {version} differs from the version {version} this client already trusts: refused")]
    Forked { version: u64 },
    #[error("no key set in the chain is signed by a trusted key ({trusted})")]
    NoAnchor { trusted: String },
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Repo(#[from] treectl_store::Error),
}

/// A set of keys and its threshold: the signed content of one rotation,
/// and what the index names (field `keys`, index format 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// 1 for the first set; each rotation adds one.
    pub version: u64,
    /// How many distinct keys of the set must sign.
    pub threshold: u32,
    /// The public keys, 64 hex digits each.
    pub keys: Vec<String>,
}

impl KeySet {
    /// A set of `keys` (deduplicated, in order) at `version`.
    pub fn new(version: u64, threshold: u32, keys: &[PublicKey]) -> Result<KeySet, KeySetError> {
        let mut hex_keys: Vec<String> = Vec::new();
        for k in keys {
            let h = k.to_hex();
            if !hex_keys.contains(&h) {
                hex_keys.push(h);
            }
        }
        let set = KeySet {
            version,
            threshold,
            keys: hex_keys,
        };
        set.check()?;
        Ok(set)
    }

    /// The keys, parsed.
    pub fn public_keys(&self) -> Result<Vec<PublicKey>, KeySetError> {
        self.keys
            .iter()
            .map(|h| {
                PublicKey::from_hex(h).ok_or_else(|| KeySetError::Malformed {
                    reason: format!(
                        "key set version {}: {h:?} is not an ed25519 public key",
                        self.version
                    ),
                })
            })
            .collect()
    }

    /// The key ids, in order.
    pub fn key_ids(&self) -> Vec<String> {
        self.public_keys()
            .map(|ks| ks.iter().map(PublicKey::key_id).collect())
            .unwrap_or_default()
    }

    /// Checks the shape: a version, a threshold between 1 and the number of
    /// keys, valid distinct keys.
    pub fn check(&self) -> Result<(), KeySetError> {
        let bad = |reason: String| KeySetError::Malformed {
            reason: format!("key set version {}: {reason}", self.version),
        };
        if self.version == 0 {
            return Err(bad("versions start at 1".into()));
        }
        if self.keys.is_empty() || self.keys.len() > MAX_KEYS {
            return Err(bad(format!(
                "it names {} keys (1 to {MAX_KEYS})",
                self.keys.len()
            )));
        }
        if self.threshold == 0 || self.threshold as usize > self.keys.len() {
            return Err(bad(format!(
                "threshold {} with {} keys",
                self.threshold,
                self.keys.len()
            )));
        }
        let keys = self.public_keys()?;
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(bad(format!("key {} is named twice", k.key_id())));
            }
        }
        Ok(())
    }

    /// Checks that at least `threshold` distinct keys of this set made a
    /// valid signature of `message` among `signatures`.
    pub fn verify_threshold(
        &self,
        what: &str,
        message: &[u8],
        signatures: &[Signature],
    ) -> Result<(), KeySetError> {
        let mut found = 0;
        for key in self.public_keys()? {
            if key.verify_any(what, message, signatures).is_ok() {
                found += 1;
            }
        }
        if found < self.threshold as usize {
            return Err(KeySetError::BelowThreshold {
                what: what.to_owned(),
                version: self.version,
                found,
                threshold: self.threshold,
            });
        }
        Ok(())
    }

    /// Checks that a threshold of this set signed commit `sigs` for
    /// `ref_name`.
    pub fn verify_commit(
        &self,
        sigs: &crate::sign::CommitSignatures,
        ref_name: &treectl_store::refs::RefName,
    ) -> Result<(), KeySetError> {
        let mine: Vec<Signature> = sigs
            .signatures
            .iter()
            .filter(|s| s.ref_name == ref_name.as_str())
            .map(|s| s.signature.clone())
            .collect();
        self.verify_threshold(
            &format!("commit {} as {ref_name}", sigs.commit),
            &crate::sign::commit_message(&sigs.commit, ref_name),
            &mine,
        )
    }

    /// The keys of `held` that are in this set.
    pub fn held<'k>(&self, held: &'k [SecretKey]) -> Vec<&'k SecretKey> {
        held.iter()
            .filter(|k| self.keys.contains(&k.public().to_hex()))
            .collect()
    }
}

/// The signed payload of a key set.
#[derive(Serialize, Deserialize)]
struct KeySetPayload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    set: KeySet,
}

/// One key set as stored: its payload text and the signatures over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedKeySet {
    pub payload: String,
    pub signatures: Vec<Signature>,
}

/// `KEY_SET_SIGNATURE_DOMAIN ‖ payload`.
pub(crate) fn key_set_message(payload: &str) -> Vec<u8> {
    let mut m = KEY_SET_SIGNATURE_DOMAIN.to_vec();
    m.extend_from_slice(payload.as_bytes());
    m
}

impl SignedKeySet {
    /// Serializes `set` and signs it with every key of `signers`.
    pub fn sign(set: &KeySet, signers: &[&SecretKey]) -> SignedKeySet {
        let payload = serde_json::to_string(&KeySetPayload {
            kind: KEY_SET_TYPE.to_owned(),
            set: set.clone(),
        })
        .expect("key set serializes");
        let message = key_set_message(&payload);
        SignedKeySet {
            signatures: signers.iter().map(|k| k.sign(&message)).collect(),
            payload,
        }
    }

    /// The payload, parsed and shape-checked, without checking signatures.
    pub fn set_unverified(&self) -> Result<KeySet, KeySetError> {
        let p: KeySetPayload =
            serde_json::from_str(&self.payload).map_err(|e| KeySetError::Malformed {
                reason: e.to_string(),
            })?;
        if p.kind != KEY_SET_TYPE {
            return Err(KeySetError::Malformed {
                reason: format!("type is {:?}, not {KEY_SET_TYPE:?}", p.kind),
            });
        }
        p.set.check()?;
        Ok(p.set)
    }

    /// Checks that a threshold of `signer` signed this key set.
    pub fn verify_by(&self, signer: &KeySet) -> Result<(), KeySetError> {
        let what = match self.set_unverified() {
            Ok(s) => format!("key set version {}", s.version),
            Err(_) => "a key set".to_owned(),
        };
        signer.verify_threshold(&what, &key_set_message(&self.payload), &self.signatures)
    }
}

/// `keys.json`: every key set, oldest first (versions 1, 2, … in order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChain {
    pub format: u32,
    pub sets: Vec<SignedKeySet>,
}

impl KeyChain {
    pub fn parse(bytes: &[u8]) -> Result<KeyChain, KeySetError> {
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let malformed = |e: serde_json::Error| KeySetError::Malformed {
            reason: e.to_string(),
        };
        // The format first, so a newer chain gets a clear error.
        let head: Head = serde_json::from_slice(bytes).map_err(malformed)?;
        if head.format > KEYS_FORMAT {
            return Err(KeySetError::UnsupportedFormat { found: head.format });
        }
        let chain: KeyChain = serde_json::from_slice(bytes).map_err(malformed)?;
        if chain.sets.len() > MAX_SETS {
            return Err(KeySetError::Malformed {
                reason: format!("{} key sets (at most {MAX_SETS})", chain.sets.len()),
            });
        }
        Ok(chain)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("key chain serializes");
        out.push(b'\n');
        out
    }

    /// The key sets, parsed (unverified), checking that their versions
    /// run 1, 2, 3, … without gaps.
    pub fn sets_unverified(&self) -> Result<Vec<KeySet>, KeySetError> {
        let sets: Vec<KeySet> = self
            .sets
            .iter()
            .map(SignedKeySet::set_unverified)
            .collect::<Result<_, _>>()?;
        for (i, s) in sets.iter().enumerate() {
            if s.version != i as u64 + 1 {
                return Err(KeySetError::Malformed {
                    reason: format!(
                        "entry {} is key set version {}, not {}",
                        i + 1,
                        s.version,
                        i + 1
                    ),
                });
            }
        }
        Ok(sets)
    }

    /// The newest key set (unverified), if any.
    pub fn current(&self) -> Result<Option<KeySet>, KeySetError> {
        Ok(self.sets_unverified()?.pop())
    }

    /// Verifies the chain from what the client trusts up to `target`
    /// version and returns that key set. `trusted` is the key set the
    /// client accepted last, if any; without one the client starts from
    /// its configured keys `anchors`: the first set signed by one of them
    /// (and by its own threshold) is where the walk begins. Each later
    /// set must be signed by a threshold of the one before and of itself.
    pub fn walk(
        &self,
        trusted: Option<&KeySet>,
        anchors: &[PublicKey],
        target: u64,
    ) -> Result<KeySet, KeySetError> {
        let sets = self.sets_unverified()?;
        let missing = |version| KeySetError::Missing {
            version,
            first: if sets.is_empty() { 0 } else { 1 },
            last: sets.len() as u64,
        };
        let (mut current, start) = match trusted {
            Some(t) => {
                if target < t.version {
                    return Err(KeySetError::Replayed {
                        found: target,
                        trusted: t.version,
                    });
                }
                // The chain must still hold the set the client trusts,
                // unchanged: a chain rewritten from an older point is a fork.
                let at = sets
                    .get(t.version as usize - 1)
                    .ok_or_else(|| missing(t.version))?;
                if at != t {
                    return Err(KeySetError::Forked { version: t.version });
                }
                (t.clone(), t.version as usize)
            }
            None => {
                let mut found = None;
                for (i, s) in sets.iter().enumerate().take(target as usize) {
                    let by_anchor = anchors.iter().any(|a| {
                        a.verify_any(
                            "a key set",
                            &key_set_message(&self.sets[i].payload),
                            &self.sets[i].signatures,
                        )
                        .is_ok()
                    });
                    if by_anchor {
                        self.sets[i].verify_by(s)?;
                        found = Some((s.clone(), i + 1));
                        break;
                    }
                }
                found.ok_or_else(|| KeySetError::NoAnchor {
                    trusted: anchors
                        .iter()
                        .map(PublicKey::key_id)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?
            }
        };
        if target as usize > sets.len() {
            return Err(missing(target));
        }
        for (signed, next) in self.sets[start..target as usize]
            .iter()
            .zip(&sets[start..target as usize])
        {
            signed.verify_by(&current)?;
            signed.verify_by(next)?;
            current = next.clone();
        }
        Ok(current)
    }
}

/// Reads `keys.json`, if the repository has one.
pub fn read_chain(repo: &Repo) -> Result<Option<KeyChain>, KeySetError> {
    let path = repo.path().join(KEYS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => KeyChain::parse(&bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(treectl_store::Error::Io {
            op: "reading",
            path,
            err,
        }
        .into()),
    }
}

/// Writes `keys.json` atomically.
pub fn write_chain(repo: &Repo, chain: &KeyChain) -> Result<(), KeySetError> {
    write_atomic(
        &repo.path().join(KEYS_FILE),
        &chain.to_bytes(),
        repo.fsync(),
    )?;
    Ok(())
}

/// Builds the chain of a rotation from `old` (the key that signed before
/// the first rotation, or the current chain) to a set of `new` keys with
/// `threshold`, signed by the `held` secret keys. Refuses unless `held`
/// meets the threshold of both the current set and the new one.
pub fn rotate(
    chain: Option<KeyChain>,
    first_key: Option<&SecretKey>,
    held: &[SecretKey],
    new: &[PublicKey],
    threshold: u32,
) -> Result<KeyChain, KeySetError> {
    let mut chain = match chain {
        Some(c) => c,
        None => {
            // Version 1: the key that signed the index so far, self-signed.
            let first = first_key.ok_or_else(|| KeySetError::BelowThreshold {
                what: "the first key set".into(),
                version: 1,
                found: 0,
                threshold: 1,
            })?;
            let v1 = KeySet::new(1, 1, &[first.public()])?;
            KeyChain {
                format: KEYS_FORMAT,
                sets: vec![SignedKeySet::sign(&v1, &[first])],
            }
        }
    };
    let current = chain.current()?.ok_or_else(|| KeySetError::Malformed {
        reason: "the chain is empty".into(),
    })?;
    let next = KeySet::new(current.version + 1, threshold, new)?;
    let mut signers = current.held(held);
    for k in next.held(held) {
        if !signers.iter().any(|s| s.public() == k.public()) {
            signers.push(k);
        }
    }
    let signed = SignedKeySet::sign(&next, &signers);
    signed.verify_by(&current)?;
    signed.verify_by(&next)?;
    chain.sets.push(signed);
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn offline_client_walks_several_rotations() {
        let (a, b, c) = (key(1), key(2), key(3));
        let chain = rotate(None, Some(&a), &[key(1), key(2)], &[b.public()], 1).expect("a->b");
        let chain = rotate(Some(chain), None, &[key(2), key(3)], &[c.public()], 1).expect("b->c");
        let chain = KeyChain::parse(&chain.to_bytes()).expect("round trip");
        // Trusting only A, the client reaches C.
        let got = chain.walk(None, &[a.public()], 3).expect("walk");
        assert_eq!(got.keys, vec![c.public().to_hex()]);
        // Trusting version 2, it also reaches C; asked for version 1, refused.
        let v2 = chain.walk(None, &[a.public()], 2).expect("v2");
        assert_eq!(chain.walk(Some(&v2), &[], 3).expect("v3"), got);
        assert!(matches!(
            chain.walk(Some(&got), &[], 2),
            Err(KeySetError::Replayed {
                found: 2,
                trusted: 3
            })
        ));
        // A client set up with B starts at version 2.
        assert_eq!(chain.walk(None, &[b.public()], 3).expect("from b"), got);
        // An unrelated key anchors nothing.
        assert!(matches!(
            chain.walk(None, &[key(9).public()], 3),
            Err(KeySetError::NoAnchor { .. })
        ));
        // A chain shorter than the index's version is refused.
        assert!(matches!(
            chain.walk(None, &[a.public()], 4),
            Err(KeySetError::Missing { version: 4, .. })
        ));
    }

    #[test]
    fn rotation_needs_the_old_and_the_new_keys() {
        let (a, b) = (key(1), key(2));
        // Without B's secret the new set is not signed by its own threshold.
        assert!(matches!(
            rotate(None, Some(&a), &[key(1)], &[b.public()], 1),
            Err(KeySetError::BelowThreshold { version: 2, .. })
        ));
        // Without A's, the old set did not sign it.
        assert!(matches!(
            rotate(None, Some(&a), &[key(2)], &[b.public()], 1),
            Err(KeySetError::BelowThreshold { version: 1, .. })
        ));
        // A set signed only by its own new key does not chain.
        let chain = rotate(None, Some(&a), &[key(1), key(2)], &[b.public()], 1).expect("a->b");
        let mut forged = chain.clone();
        let v3 = KeySet::new(3, 1, &[key(7).public()]).expect("set");
        forged.sets.push(SignedKeySet::sign(&v3, &[&key(7)]));
        assert!(matches!(
            forged.walk(None, &[a.public()], 3),
            Err(KeySetError::BelowThreshold { version: 2, .. })
        ));
        // A threshold above the number of keys is malformed.
        assert!(matches!(
            rotate(Some(chain), None, &[key(2)], &[b.public()], 2),
            Err(KeySetError::Malformed { .. })
        ));
    }

    #[test]
    fn newer_chain_format_is_refused_clearly() {
        let err = KeyChain::parse(br#"{"format": 2, "sets": [], "more": 1}"#).expect_err("newer");
        assert_eq!(
            err.to_string(),
            "the key set chain has format 2, newer than this treectl reads (1); upgrade treectl"
        );
    }
}

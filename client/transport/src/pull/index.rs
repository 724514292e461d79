//! Step 1: the ref index. Fetched from the first source whose index passes
//! every check: it parses, it is signed by a trusted key (integrity only
//! when the remote has none), it has not expired, and it does not take the
//! client back (serials never go down; the same serial means the same
//! index).
//!
//! Once keys have been rotated the index names its key set; the client
//! then trusts the key set it accepted last (or, before any, its
//! configured keys) and follows `keys.json`, from the same source, one
//! verified rotation at a time up to the named set ([`KeyChain::walk`]).
//! A key set older than the one accepted is a replay and is refused.

use sha2::{Digest, Sha256};
use treectl_release::keyset::{KeyChain, KeySet, KeySetError, KEYS_FILE};
use treectl_release::remote::{Remote, TrustState};
use treectl_release::sign::PublicKey;
use treectl_release::summary::{RefEntry, RefIndex, SignedIndex, INDEX_FILE};
use treectl_store::refs::RefName;
use treectl_store::time::now;

use crate::error::{ErrorClass, TransportError};
use crate::source::HttpSource;

/// An index that passed every check.
pub(super) struct Accepted {
    /// The source it came from (signatures are fetched there too).
    pub source: usize,
    pub index: RefIndex,
    /// The sha256 of its payload, recorded in the trust state.
    pub sha256: String,
    /// The pulled ref's entry.
    pub entry: RefEntry,
    /// The key set that signed it, when keys have been rotated.
    pub key_set: Option<KeySet>,
}

/// The index from the first source that passes; else every source's
/// failure, in order.
pub(super) fn accept(
    http: &HttpSource,
    remote: &Remote,
    trust: &TrustState,
    ref_name: &RefName,
    max_bytes: u64,
) -> Result<Accepted, TransportError> {
    let mut attempts = Vec::new();
    for src in 0..http.sources().len() {
        match from_source(http, src, remote, trust, ref_name, max_bytes) {
            Ok(accepted) => {
                let refused: Vec<(usize, TransportError)> = attempts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (_, e))| (i, e))
                    .collect();
                http.note_fallback(&format!("/{INDEX_FILE}"), &refused, src);
                return Ok(accepted);
            }
            Err(e) => attempts.push((http.sources()[src].clone(), e)),
        }
    }
    Err(TransportError::AllSources {
        target: format!("{}:{ref_name}", remote.name),
        attempts,
    })
}

fn from_source(
    http: &HttpSource,
    src: usize,
    remote: &Remote,
    trust: &TrustState,
    ref_name: &RefName,
    max_bytes: u64,
) -> Result<Accepted, TransportError> {
    let bytes = http
        .get(src, &format!("/{INDEX_FILE}"), max_bytes)
        .map_err(|e| match e.class() {
            ErrorClass::NotFound => TransportError::NothingPublished {
                url: http.sources()[src].clone(),
            },
            _ => e,
        })?;
    let signed = SignedIndex::parse(&bytes)?;
    let fetch_chain = || -> Result<KeyChain, TransportError> {
        let bytes = http.get(src, &format!("/{KEYS_FILE}"), max_bytes)?;
        Ok(KeyChain::parse(&bytes)?)
    };
    let (index, key_set) = verify_rotated(&signed, remote, trust, now(), fetch_chain)?;
    let sha256 = hex_sha256(signed.payload.as_bytes());
    let entry = check_trust(trust, &index, &sha256, &remote.name, ref_name.as_str())?.clone();
    Ok(Accepted {
        source: src,
        index,
        sha256,
        entry,
        key_set,
    })
}

/// Verifies an index against what the client trusts: the key set it
/// accepted last, else its configured keys. When the index names a newer
/// key set, the chain (`fetch_chain`, asked only then) must lead there
/// from the trusted one. Returns the index and the key set it was signed
/// by (none before any rotation).
pub fn verify_rotated(
    signed: &SignedIndex,
    remote: &Remote,
    trust: &TrustState,
    now: i64,
    fetch_chain: impl FnOnce() -> Result<KeyChain, TransportError>,
) -> Result<(RefIndex, Option<KeySet>), TransportError> {
    // Parsing first: a format this build cannot read is refused clearly.
    let named = signed.index_unverified()?.keys;
    let trusted = trust.key_set.as_ref();
    if remote.trusted_keys.is_empty() && trusted.is_none() {
        // Integrity only: nothing to follow.
        return Ok((verify_index(signed, &[], now)?, None));
    }
    let set = match (named, trusted) {
        (None, None) => return Ok((verify_index(signed, &remote.trusted_keys, now)?, None)),
        // An index from before the first rotation names no set: version 1.
        (None, Some(t)) => {
            return Err(KeySetError::Replayed {
                found: 1,
                trusted: t.version,
            }
            .into())
        }
        (Some(named), Some(t)) if named == *t => named,
        (Some(named), Some(t)) if named.version < t.version => {
            return Err(KeySetError::Replayed {
                found: named.version,
                trusted: t.version,
            }
            .into())
        }
        (Some(named), Some(t)) if named.version == t.version => {
            return Err(KeySetError::Forked { version: t.version }.into())
        }
        (Some(named), trusted) => {
            let walked = fetch_chain()?.walk(trusted, &remote.trusted_keys, named.version)?;
            if walked != named {
                return Err(KeySetError::Malformed {
                    reason: format!(
                        "the index names key set version {} with keys other than the chain's",
                        named.version
                    ),
                }
                .into());
            }
            walked
        }
    };
    let index = signed.verify_set(&set)?;
    index.check_fresh(now)?;
    Ok((index, Some(set)))
}

/// Verifies an index's signature with any trusted key (integrity only
/// without keys), its format and its expiry.
pub fn verify_index(
    signed: &SignedIndex,
    keys: &[PublicKey],
    now: i64,
) -> Result<RefIndex, TransportError> {
    let index = if keys.is_empty() {
        signed.index_unverified()?
    } else {
        let mut first = None;
        let mut good = None;
        for key in keys {
            match signed.verify(key) {
                Ok(i) => {
                    good = Some(i);
                    break;
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        match good {
            Some(i) => i,
            None => return Err(first.expect("at least one key").into()),
        }
    };
    index.check_fresh(now)?;
    Ok(index)
}

/// Checks an accepted index against the trust state: serials never go
/// down, and the same serial means the same index. Returns the ref entry.
pub fn check_trust<'i>(
    state: &TrustState,
    index: &'i RefIndex,
    payload_sha256: &str,
    remote: &str,
    ref_name: &str,
) -> Result<&'i RefEntry, TransportError> {
    if index.serial < state.serial {
        return Err(TransportError::ReplayedIndex {
            serial: index.serial,
            accepted: state.serial,
            remote: remote.to_owned(),
        });
    }
    let same_serial_other_content = index.serial == state.serial
        && state
            .index_sha256
            .as_deref()
            .is_some_and(|h| h != payload_sha256);
    if same_serial_other_content {
        return Err(TransportError::ForkedIndex {
            serial: index.serial,
            remote: remote.to_owned(),
        });
    }
    let entry = index
        .refs
        .get(ref_name)
        .ok_or_else(|| TransportError::NotPublished {
            remote: remote.to_owned(),
            ref_name: ref_name.to_owned(),
            published: index.refs.keys().cloned().collect(),
        })?;
    match state.refs.get(ref_name) {
        Some(trusted) if entry.serial < trusted.serial => Err(TransportError::Downgrade {
            remote: remote.to_owned(),
            ref_name: ref_name.to_owned(),
            serial: entry.serial,
            accepted: trusted.serial,
        }),
        _ => Ok(entry),
    }
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use treectl_release::remote::TrustedRef;
    use treectl_release::sign::SecretKey;
    use treectl_store::ObjectId;

    fn index(serial: u64, ref_serial: u64) -> RefIndex {
        let mut i = RefIndex::empty();
        i.serial = serial;
        i.expires = 1000;
        i.refs.insert(
            "os/stable".into(),
            RefEntry {
                commit: ObjectId::of(b"c"),
                serial: ref_serial,
                timestamp: 0,
                version: None,
                published: 0,
                rejected: vec![],
                rollout: None,
                barriers: vec![],
            },
        );
        i
    }

    #[test]
    fn trust_serials_never_go_down() {
        let mut state = TrustState {
            serial: 5,
            index_sha256: Some("aa".into()),
            ..TrustState::default()
        };
        state.refs.insert(
            "os/stable".into(),
            TrustedRef {
                serial: 4,
                commit: ObjectId::of(b"c"),
                rejected: vec![],
            },
        );
        assert!(check_trust(&state, &index(6, 6), "bb", "o", "os/stable").is_ok());
        assert!(check_trust(&state, &index(5, 4), "aa", "o", "os/stable").is_ok());
        let refused = |i: RefIndex, sha: &str| -> TransportError {
            match check_trust(&state, &i, sha, "o", "os/stable") {
                Ok(_) => panic!("accepted serial {}", i.serial),
                Err(e) => e,
            }
        };
        let replay = refused(index(4, 4), "cc");
        assert!(replay.to_string().contains("lower than serial 5"));
        assert_eq!(replay.class(), ErrorClass::TrustRefused);
        assert!(refused(index(5, 4), "cc")
            .to_string()
            .contains("different content"));
        assert!(refused(index(7, 3), "dd").to_string().contains("downgrade"));
        let other = check_trust(&state, &index(7, 7), "dd", "o", "os/testing").expect_err("absent");
        assert_eq!(
            other.to_string(),
            "o does not publish os/testing (published: os/stable)"
        );
        assert_eq!(other.class(), ErrorClass::NotFound);
    }

    #[test]
    fn rotations_are_followed_and_old_keys_refused() {
        use treectl_release::keyset::{self, KeyChain};
        let (a, b, c) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        );
        let held = [
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        ];
        let ab = keyset::rotate(None, Some(&a), &held, &[b.public()], 1).expect("a->b");
        let abc = keyset::rotate(Some(ab.clone()), None, &held, &[c.public()], 1).expect("b->c");
        let set = |chain: &KeyChain| chain.current().expect("sets").expect("a set");
        let named = |serial, set: &KeySet, by: &SecretKey| {
            let mut i = index(serial, serial);
            i.keys = Some(set.clone());
            i.format = i.required_format();
            SignedIndex::sign(&i, Some(by))
        };
        let remote = Remote {
            name: "o".into(),
            url: "http://x".into(),
            mirrors: vec![],
            trusted_keys: vec![a.public()],
        };
        let fresh = TrustState::default();
        let chain = |c: &KeyChain| {
            let c = c.clone();
            move || Ok(c)
        };
        // Offline across two rotations, trusting only A: it reaches C.
        let (_, got) = verify_rotated(&named(5, &set(&abc), &c), &remote, &fresh, 10, chain(&abc))
            .expect("follows A -> B -> C");
        assert_eq!(got.as_ref(), Some(&set(&abc)));
        // After the rotation to B, an index signed by A is refused, whatever
        // key set it names.
        let at_b = TrustState {
            key_set: Some(set(&ab)),
            ..TrustState::default()
        };
        let e = verify_rotated(&named(6, &set(&ab), &a), &remote, &at_b, 10, chain(&ab))
            .expect_err("A no longer signs");
        assert_eq!(e.class(), ErrorClass::TrustRefused);
        let unnamed = SignedIndex::sign(&index(6, 6), Some(&a));
        let e = verify_rotated(&unnamed, &remote, &at_b, 10, chain(&ab)).expect_err("pre-rotation");
        assert!(e.to_string().contains("replayed old key set"), "{e}");
        // Having followed C, the key set of B (validly signed) is a replay.
        let at_c = TrustState {
            key_set: got,
            ..TrustState::default()
        };
        let e = verify_rotated(&named(7, &set(&ab), &b), &remote, &at_c, 10, chain(&abc))
            .expect_err("replayed B");
        assert_eq!(
            e.to_string(),
            "key set version 2 is older than version 3, which this client already trusts: a replayed old key set is refused"
        );
    }

    #[test]
    fn index_signature_and_expiry() {
        let key = SecretKey::from_seed([9; 32]);
        let other = SecretKey::from_seed([10; 32]);
        let signed = SignedIndex::sign(&index(1, 1), Some(&key));
        assert!(verify_index(&signed, &[key.public()], 10).is_ok());
        assert!(verify_index(&signed, &[other.public(), key.public()], 10).is_ok());
        let untrusted = verify_index(&signed, &[other.public()], 10).expect_err("untrusted");
        assert_eq!(untrusted.class(), ErrorClass::TrustRefused);
        let expired = verify_index(&signed, &[key.public()], 1001).expect_err("expired");
        assert_eq!(expired.class(), ErrorClass::TrustRefused);
        let unsigned = SignedIndex::sign(&index(1, 1), None);
        assert!(verify_index(&unsigned, &[key.public()], 10).is_err());
        assert!(verify_index(&unsigned, &[], 10).is_ok());
    }
}

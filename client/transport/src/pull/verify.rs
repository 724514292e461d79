//! Step 2: the commit's detached signature. With a trusted key, the
//! commit must be signed for the pulled ref by one of the keys: a commit
//! signed for another ref, or not at all, is refused before any object is
//! fetched.

use treectl_release::keyset::KeySet;
use treectl_release::remote::Remote;
use treectl_release::sign::{commit_signatures_rel_path, CommitSignatures};
use treectl_store::refs::RefName;
use treectl_store::ObjectId;

use crate::error::{ErrorClass, TransportError};
use crate::source::HttpSource;

/// Checks `commit`'s signatures, fetched from source `src` (the one whose
/// index was accepted): by a threshold of `key_set` (the set that signed
/// the index) once keys have been rotated, else by a configured key.
/// Nothing to check when the remote has no key.
pub(super) fn commit_signature(
    http: &HttpSource,
    src: usize,
    remote: &Remote,
    key_set: Option<&KeySet>,
    ref_name: &RefName,
    commit: &ObjectId,
) -> Result<(), TransportError> {
    if remote.trusted_keys.is_empty() && key_set.is_none() {
        return Ok(());
    }
    let path = format!("/{}", commit_signatures_rel_path(commit));
    let bytes = http.get(src, &path, 1 << 20).map_err(|e| match e.class() {
        ErrorClass::NotFound => TransportError::UnsignedCommit {
            commit: *commit,
            url: http.sources()[src].clone(),
        },
        _ => e,
    })?;
    let sigs = CommitSignatures::parse(commit, &bytes)?;
    if let Some(set) = key_set {
        return Ok(set.verify_commit(&sigs, ref_name)?);
    }
    let mut first = None;
    for key in &remote.trusted_keys {
        match sigs.verify(ref_name, key) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.expect("at least one key").into())
}

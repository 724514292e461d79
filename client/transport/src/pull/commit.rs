//! Step 6: the pull takes effect. The accepted index is recorded in the
//! remote's trust state (so an older one is refused from now on), then
//! `refs/remotes/NAME/REF` moves to the pulled commit. Everything the ref
//! names is in the store by then.

use treectl_release::remote::{self, TrustState, TrustedRef};
use treectl_store::refs::RefName;
use treectl_store::{failpoint, ObjectId, Repo};

use super::index::Accepted;
use crate::error::TransportError;

/// Records `accepted` in the trust state and moves the remote ref.
pub(super) fn record(
    repo: &Repo,
    remote_name: &str,
    ref_name: &RefName,
    trust: &TrustState,
    accepted: &Accepted,
    (commit, serial): (ObjectId, u64),
) -> Result<(), TransportError> {
    failpoint::hit("pull-before-ref");
    let mut state = trust.clone();
    state.serial = accepted.index.serial;
    state.index_sha256 = Some(accepted.sha256.clone());
    state.generated = accepted.index.generated;
    if accepted.key_set.is_some() {
        state.key_set = accepted.key_set.clone();
    }
    // The head (at its entry's serial), or a barrier on the way to it
    // (at the serial it was published with).
    let ref_serial = if commit == accepted.entry.commit {
        accepted.entry.serial
    } else {
        serial
    };
    state.refs.insert(
        ref_name.to_string(),
        TrustedRef {
            serial: ref_serial,
            commit,
            rejected: accepted.entry.rejected.clone(),
        },
    );
    state.save(repo, remote_name)?;
    remote::write_remote_ref(repo, remote_name, ref_name, &commit)?;
    Ok(())
}

/// Records `accepted` as the newest index seen from the remote (so an
/// older one is refused from now on) and the ref's rejections in it,
/// without moving the ref: what a pull's plan learns.
pub(super) fn record_index(
    repo: &Repo,
    remote_name: &str,
    ref_name: &RefName,
    trust: &TrustState,
    accepted: &Accepted,
) -> Result<(), TransportError> {
    let mut state = trust.clone();
    state.serial = accepted.index.serial;
    state.index_sha256 = Some(accepted.sha256.clone());
    state.generated = accepted.index.generated;
    if accepted.key_set.is_some() {
        state.key_set = accepted.key_set.clone();
    }
    if let Some(r) = state.refs.get_mut(ref_name.as_str()) {
        r.rejected = accepted.entry.rejected.clone();
    }
    state.save(repo, remote_name)?;
    Ok(())
}

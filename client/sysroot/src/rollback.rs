//! `rollback` and pinning: reordering the deployments of the live
//! generation.

use crate::cleanup::collect_garbage;
use crate::finalize::remove_staged;
use crate::state::{read_state, write_generation, State};
use crate::{Result, Sysroot, SysrootError};

/// Makes the rollback deployment (index 1) the default; the old default
/// becomes the rollback one, and `upgrade` will not re-apply it until a
/// newer release appears. Drops a staged deployment.
pub fn rollback(sysroot: &Sysroot) -> Result<State> {
    let _lock = sysroot.lock()?;
    let mut state = read_state(sysroot)?;
    if state.deployments.len() < 2 {
        return Err(SysrootError::NoRollback);
    }
    remove_staged(sysroot)?;
    collect_garbage(sysroot, &state)?;
    state.rollback_floor = Some(state.deployments[0].order);
    state.deployments.swap(0, 1);
    write_generation(sysroot, &state, "rollback")?;
    Ok(state)
}

/// Pins or unpins the deployment at `index`.
pub fn set_pinned(sysroot: &Sysroot, index: usize, pinned: bool) -> Result<State> {
    let _lock = sysroot.lock()?;
    let mut state = read_state(sysroot)?;
    let count = state.deployments.len();
    let d = state
        .deployments
        .get_mut(index)
        .ok_or(SysrootError::NoSuchIndex { index, count })?;
    if d.pinned != pinned {
        d.pinned = pinned;
        write_generation(sysroot, &state, "pin")?;
    }
    Ok(state)
}

//! What `treectl status` shows: each deployment with its markers, its
//! boot entry's counting state, the component versions that differ from
//! the booted one, `/etc` conflicts, and whether the machine fell back
//! from a default that failed to boot.

use serde::Serialize;

use crate::boot::{BootEntry, Counter};
use crate::finalize::{read_finalize_failure, read_staged, FinalizeFailure};
use crate::state::{fallback_of, live_menu, read_state, Deployment, Fallback, State};
use crate::upgrade::{component_changes, ComponentChange};
use crate::{Result, Sysroot};

/// A deployment's live boot entry.
#[derive(Clone, Debug, Serialize)]
pub struct EntryStatus {
    /// The file name under `boot/loader/entries/`.
    pub file: String,
    /// `good` (no counter), `indeterminate` (tries left) or `bad` (none
    /// left: the boot loader passes over it while another entry is left).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<Counter>,
}

impl EntryStatus {
    fn of(e: &BootEntry) -> EntryStatus {
        let state = match e.counter {
            None => "good",
            Some(c) if c.is_bad() => "bad",
            Some(_) => "indeterminate",
        };
        EntryStatus {
            file: e.file_name.clone(),
            state,
            counter: e.counter,
        }
    }
}

/// One deployment as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct StatusEntry {
    /// Position in the list (0: default); `None` for the staged deployment.
    pub index: Option<usize>,
    #[serde(flatten)]
    pub deployment: Deployment,
    /// The deployment's directory.
    pub path: String,
    pub booted: bool,
    pub staged: bool,
    pub default: bool,
    pub rollback: bool,
    /// The boot loader starts this deployment's entry (the first in its
    /// order): the default's, unless that entry is bad.
    pub loader_default: bool,
    /// The default whose failed boots made the machine fall back
    /// ([`Status::fallback`]).
    pub failed: bool,
    /// The live boot entry (`None` for the staged deployment).
    pub boot_entry: Option<EntryStatus>,
    /// Components whose version differs from the booted (else default) one.
    pub component_changes: Vec<ComponentChange>,
}

/// The whole status.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub sysroot: String,
    /// The `treectl=` value of the booted deployment, when known.
    pub booted: Option<String>,
    /// Staged first, then index 0, 1, ...
    pub deployments: Vec<StatusEntry>,
    /// Set when the booted deployment is not the default because the
    /// default's entry went bad; `null` otherwise.
    pub fallback: Option<Fallback>,
    /// Set when the last `finalize-staged` failed (the staged deployment
    /// was dropped and the old default kept); `null` otherwise.
    pub finalize_failure: Option<FinalizeFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_floor: Option<super::state::ReleaseOrder>,
}

pub fn status(sysroot: &Sysroot) -> Result<Status> {
    let state: State = read_state(sysroot)?;
    let staged = read_staged(sysroot)?;
    let menu = live_menu(sysroot)?;
    let loader_target = menu.default_entry().and_then(BootEntry::treectl_target);
    let booted = sysroot.booted_arg().map(str::to_owned);
    let fallback = fallback_of(&state, &menu, booted.as_deref());
    let base = state
        .deployments
        .iter()
        .find(|d| Some(d.rel_path()) == booted)
        .or_else(|| state.deployments.first())
        .map(|d| d.components.clone())
        .unwrap_or_default();
    let entry = |index: Option<usize>, d: &Deployment, staged: bool| StatusEntry {
        index,
        path: d.path(sysroot).display().to_string(),
        booted: booted.as_deref() == Some(d.rel_path().as_str()),
        staged,
        default: index == Some(0),
        rollback: index == Some(1),
        loader_default: !staged && loader_target.as_deref() == Some(d.rel_path().as_str()),
        failed: !staged && fallback.as_ref().is_some_and(|f| f.failed == d.rel_path()),
        boot_entry: if staged {
            None
        } else {
            menu.find_target(&d.rel_path()).map(EntryStatus::of)
        },
        component_changes: component_changes(&base, &d.components),
        deployment: d.clone(),
    };
    let mut deployments = vec![];
    if let Some(s) = &staged {
        deployments.push(entry(None, s, true));
    }
    for (i, d) in state.deployments.iter().enumerate() {
        deployments.push(entry(Some(i), d, false));
    }
    Ok(Status {
        sysroot: sysroot.root().display().to_string(),
        booted,
        deployments,
        fallback,
        finalize_failure: read_finalize_failure(sysroot)?,
        rollback_floor: state.rollback_floor,
    })
}

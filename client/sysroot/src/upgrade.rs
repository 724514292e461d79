//! `upgrade`: the whole policy of moving a machine to its origin's newest
//! release (pull, decide, fetch, stage or deploy), the decision itself, and
//! component differences between releases. The CLI only formats what
//! [`upgrade`] returns; an update timer can call it the same way.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;
use treectl_store::object::{Commit, ObjectKind};
use treectl_store::refs::RefName;
use treectl_store::ObjectId;
use treectl_transport::progress::Progress;
use treectl_transport::pull::{plan, pull, PullOptions, PullOutcome};

use crate::deploy::{components_of, deploy_commit, Switch};
use crate::rollout::{machine_id, RolloutStatus};
use crate::source::{ancestors_of, fetch, find_head, Head, Source};
use crate::state::{read_fallback, read_state, Deployment, Fallback, State};
use crate::{Result, Sysroot, SysrootError};

/// What `upgrade` would do with a head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    /// The head is the default deployment's commit.
    UpToDate,
    /// The head is the release the machine rolled back or fell back from
    /// (or older): stay put until a newer one is published.
    RolledBackFrom,
    /// The head is older than the default: a replay or a reset ref.
    Downgrade,
    /// A newer release.
    Update,
    /// A newer release in a phased rollout whose wave does not include
    /// this machine yet (or is paused): see [`UpgradeOutcome::rollout`].
    NotInWave,
}

/// Decides what `upgrade` does with `head` given the live state;
/// `default_ancestors` are the default deployment's ancestors (nearest
/// first, as far as the sysroot's repository holds them).
pub fn decide(state: &State, head: &Head, default_ancestors: &[ObjectId]) -> Decision {
    let Some(default) = state.deployments.first() else {
        return Decision::Update;
    };
    if default.commit == head.commit.to_hex() {
        return Decision::UpToDate;
    }
    if compare_to_default(head, default, default_ancestors) != Ordering::Greater {
        return Decision::Downgrade;
    }
    if let Some(floor) = &state.rollback_floor {
        if head.order().compare(floor) != Ordering::Greater {
            return Decision::RolledBackFrom;
        }
    }
    Decision::Update
}

/// Release order of `head` against the default deployment: the release
/// serial when both have one; else ancestry (a head that descends from the
/// default is newer, a head the default descends from is older, whatever
/// the clocks say); else the commit timestamp (docs/deployments.md).
pub fn compare_to_default(
    head: &Head,
    default: &Deployment,
    default_ancestors: &[ObjectId],
) -> Ordering {
    if let (Some(a), Some(b)) = (head.serial, default.order.serial) {
        return a.cmp(&b);
    }
    if let Some(default_commit) = ObjectId::from_hex(&default.commit) {
        if head.descends_from(&default_commit) {
            return Ordering::Greater;
        }
    }
    if default_ancestors.contains(&head.commit) {
        return Ordering::Less;
    }
    head.meta.timestamp.cmp(&default.order.timestamp)
}

/// A component whose version differs between two deployments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentChange {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Components that differ from `base` to `other`.
pub fn component_changes(
    base: &BTreeMap<String, String>,
    other: &BTreeMap<String, String>,
) -> Vec<ComponentChange> {
    let names: std::collections::BTreeSet<&String> = base.keys().chain(other.keys()).collect();
    names
        .into_iter()
        .filter(|n| base.get(*n) != other.get(*n))
        .map(|n| ComponentChange {
            name: n.clone(),
            from: base.get(n).cloned(),
            to: other.get(n).cloned(),
        })
        .collect()
}

/// Components of a commit, for `--preview`.
pub fn commit_components(meta: &Commit) -> BTreeMap<String, String> {
    components_of(meta)
}

/// How far `upgrade` goes once it has found a newer release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Only decide (`--check`, `--preview`): nothing is fetched for a
    /// local origin, a remote origin's pull is verified metadata and objects.
    Check,
    /// Fetch the release into the local repository, deploy nothing.
    DownloadOnly,
    /// Build the deployment now; `finalize-staged` swaps it in at shutdown.
    Stage,
    /// Build the deployment and make it the default now.
    Now,
}

/// What `upgrade` is asked to do.
#[derive(Clone, Debug)]
pub struct UpgradeOptions {
    pub mode: UpgradeMode,
    /// Accept a head older than the default (a replay or a reset ref).
    pub allow_downgrade: bool,
    /// Take a release in a phased rollout now, inside its wave or not.
    pub ignore_rollout: bool,
    /// How to pull a remote origin (token, timeouts, jobs).
    pub pull: PullOptions,
}

impl Default for UpgradeOptions {
    fn default() -> Self {
        UpgradeOptions {
            mode: UpgradeMode::Now,
            allow_downgrade: false,
            ignore_rollout: false,
            pull: PullOptions::default(),
        }
    }
}

/// What `upgrade` found and did.
#[derive(Clone, Debug, Serialize)]
pub struct UpgradeOutcome {
    /// The default deployment's origin.
    pub origin: String,
    pub decision: Decision,
    /// The origin's head.
    pub head: ObjectId,
    pub version: Option<String>,
    /// The origin's release serial (a remote's signed index).
    pub serial: Option<u64>,
    /// Components that differ from the default deployment to the head.
    pub changes: Vec<ComponentChange>,
    /// The deployment made (`Now`) or staged (`Stage`).
    pub deployment: Option<Deployment>,
    /// The release is in the local repository (fetched or already there).
    pub downloaded: bool,
    /// What the pull of a remote origin did.
    pub pull: Option<PullOutcome>,
    /// For a check of a remote origin: what the update costs, found
    /// without downloading any file object.
    pub price: Option<Price>,
    /// Where this machine stands in the head's phased rollout, if any.
    pub rollout: Option<RolloutStatus>,
    /// The barrier release taken before the head (every machine deploys
    /// it before any later release).
    pub barrier: Option<ObjectId>,
    /// The machine fell back from a default that failed to boot; releases
    /// were judged against the booted deployment, with the failed one as
    /// the rollback floor.
    pub fallback: Option<Fallback>,
}

impl UpgradeOutcome {
    /// `VERSION (COMMIT)` of the head, as messages name it.
    pub fn head_desc(&self) -> String {
        format!(
            "{} ({})",
            self.version.as_deref().unwrap_or("-"),
            self.head.short()
        )
    }

    /// A newer release exists (whether or not it was deployed).
    pub fn update_available(&self) -> bool {
        self.decision == Decision::Update
    }
}

/// What an update costs this machine, from its repository's content
/// (the booted release's objects are not downloaded again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Price {
    /// File objects `upgrade` will download, and their bytes as sent:
    /// exactly the object bytes the pull moves.
    pub download_objects: u64,
    pub download_bytes: u64,
    /// The size of the static delta `upgrade` downloads instead of those
    /// objects, when the signed index lists one from a release this
    /// machine has (the objects are what a failing delta falls back to).
    pub delta_bytes: Option<u64>,
    /// Commit, trees and dirmetas the check itself fetched (verified and
    /// kept for the pull, which does not download them again).
    pub metadata_objects: u64,
    pub metadata_bytes: u64,
    /// Disk the new deployment needs: its new objects in the sysroot's
    /// repository (checkouts hardlink them; only `/etc` is copied).
    /// `None` when a static mirror cannot tell content sizes.
    pub disk_bytes: Option<u64>,
}

/// Upgrades the machine from its default deployment's origin: pulls a
/// remote origin (verifying everything), decides, and fetches, stages or
/// deploys the head as `opts.mode` says. A head the machine rolled back or
/// fell back from is not deployed again until a newer release appears; an
/// older head is refused unless `allow_downgrade`.
pub fn upgrade(
    sysroot: &Sysroot,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<UpgradeOutcome> {
    let _lock = sysroot.lock()?;
    let state = read_state(sysroot)?;
    // After a fallback, judge as after a rollback to the booted deployment.
    let fallback = read_fallback(sysroot, &state)?;
    let state = match &fallback {
        Some(f) => state.after_fallback(f),
        None => state,
    };
    let default = state.deployments.first().ok_or(SysrootError::NoOrigin)?;
    let origin = default.origin.clone().ok_or(SysrootError::NoOrigin)?;
    let source = Source::from_origin(&origin).ok_or(SysrootError::NoOrigin)?;
    let mut price = None;
    let mut plan_of_remote = None;
    let mut barrier = None;
    let (head, pulled) = match &source {
        // Remote: price the update first (metadata only), so a check, a
        // machine outside the rollout's wave or an up-to-date machine
        // downloads no file object.
        Source::Remote { name, refname } => {
            let repo = sysroot.open_repo()?;
            let refname = RefName::new(refname)?;
            let mut p = plan(&repo, name, &refname, &opts.pull, progress)?;
            // A barrier published after the default's release comes first.
            let default_commit = crate::deploy::commit_id(sysroot, default)?;
            if let Some(b) = p.barriers.iter().find(|b| {
                default.order.serial.is_some_and(|s| b.serial > s)
                    && b.commit != default_commit
                    && b.commit != p.commit
            }) {
                let commit = b.commit;
                let pull = PullOptions {
                    barrier: Some(commit),
                    ..opts.pull.clone()
                };
                p = plan(&repo, name, &refname, &pull, progress)?;
                barrier = Some(commit);
            }
            let head = Head {
                commit: p.commit,
                meta: p.meta.clone(),
                serial: Some(p.serial),
                ancestors: ancestors_of(&repo, &p.meta)?,
            };
            price = Some(Price {
                download_objects: p.download_objects,
                download_bytes: p.download_bytes,
                delta_bytes: p.delta.as_ref().map(|d| d.bytes),
                metadata_objects: p.metadata_objects,
                metadata_bytes: p.metadata_bytes,
                disk_bytes: p.store_bytes,
            });
            plan_of_remote = Some(p);
            (head, None)
        }
        Source::LocalRepo { .. } => (find_head(sysroot, &source)?, None),
    };
    let default_ancestors = {
        let repo = sysroot.open_repo()?;
        let id = crate::deploy::commit_id(sysroot, default)?;
        match repo.has_object(&id, ObjectKind::Commit) {
            true => ancestors_of(&repo, &repo.read_commit(&id)?)?,
            false => Vec::new(),
        }
    };
    let decision = decide(&state, &head, &default_ancestors);
    let mut outcome = UpgradeOutcome {
        origin: origin.to_string(),
        decision: decision.clone(),
        head: head.commit,
        version: head.meta.version().map(str::to_owned),
        serial: head.serial,
        changes: component_changes(&default.components, &components_of(&head.meta)),
        deployment: None,
        downloaded: pulled.is_some(),
        pull: pulled,
        price,
        rollout: None,
        barrier,
        fallback,
    };
    match decision {
        Decision::UpToDate => return Ok(outcome),
        Decision::RolledBackFrom if !opts.allow_downgrade => return Ok(outcome),
        Decision::Downgrade if !opts.allow_downgrade => {
            return Err(SysrootError::Downgrade {
                current: default.describe(),
                candidate: outcome.head_desc(),
            })
        }
        _ => {}
    }
    // Past the refusals above, what remains is an update (possibly an
    // allowed downgrade): report it as one.
    outcome.decision = Decision::Update;
    // A phased rollout (never of a barrier, which every machine takes).
    if let (Some(r), None) = (plan_of_remote.as_ref().and_then(|p| p.rollout), barrier) {
        let mut status = if opts.ignore_rollout {
            let id = machine_id(sysroot, default).unwrap_or_default();
            RolloutStatus::new(&id, &head.commit, r.percent, r.paused)
        } else {
            RolloutStatus::new(
                &machine_id(sysroot, default)?,
                &head.commit,
                r.percent,
                r.paused,
            )
        };
        status.ignored = opts.ignore_rollout;
        let wait = !status.in_wave && !status.ignored;
        outcome.rollout = Some(status);
        if wait {
            outcome.decision = Decision::NotInWave;
            return Ok(outcome);
        }
    }
    if opts.mode == UpgradeMode::Check {
        return Ok(outcome);
    }
    let head = match &source {
        Source::Remote { name, refname } => {
            let pull = PullOptions {
                barrier,
                ..opts.pull.clone()
            };
            let pulled = pull_remote(sysroot, name, refname, &pull, progress)?;
            let head = head_of_pull(sysroot, &pulled)?;
            outcome.pull = Some(pulled);
            head
        }
        Source::LocalRepo { .. } => head,
    };
    fetch(sysroot, &source, &head)?;
    outcome.downloaded = true;
    let switch = match opts.mode {
        UpgradeMode::Check | UpgradeMode::DownloadOnly => return Ok(outcome),
        UpgradeMode::Stage => Switch::Stage,
        UpgradeMode::Now => Switch::Now,
    };
    outcome.deployment = Some(deploy_commit(
        sysroot,
        &head.commit,
        Some(origin),
        head.serial,
        switch,
        opts.allow_downgrade,
        None,
    )?);
    Ok(outcome)
}

/// Pulls `name:refname` into the sysroot's repository: every object is
/// verified there, and deployments are built only from what was pulled.
pub fn pull_remote(
    sysroot: &Sysroot,
    name: &str,
    refname: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullOutcome> {
    let repo = sysroot.open_repo()?;
    let ref_name = RefName::new(refname)?;
    let outcome = pull(&repo, name, &ref_name, opts, progress);
    progress.finish();
    Ok(outcome?)
}

/// The head a pull just verified: its commit and serial come from the
/// pull's outcome, not from what is on disk.
fn head_of_pull(sysroot: &Sysroot, pulled: &PullOutcome) -> Result<Head> {
    let repo = sysroot.open_repo()?;
    Head::read(&repo, pulled.commit, Some(pulled.serial))
}

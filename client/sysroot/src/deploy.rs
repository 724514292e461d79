//! Building a deployment and making it the default or staging it. Every
//! writing operation takes the sysroot lock and removes garbage first; the
//! one atomic step of each is [`crate::state::write_generation`]. See `docs/deployments.md`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use treectl_store::checkout::{checkout, resolve_path, CheckoutOptions, Resolved};
use treectl_store::object::{Commit, EntryKind};
use treectl_store::refs::RefName;
use treectl_store::store::{RefUpdate, Transaction};
use treectl_store::{failpoint, ObjectId, Repo};

use crate::cleanup::collect_garbage;
use crate::etc_merge::{merge_etc, MergeReport};
use crate::finalize::{clear_finalize_failure, read_staged, remove_staged, StagedFile};
use crate::state::{
    loader_default, read_state, write_generation, Deployment, Kernel, Origin, ReleaseOrder, State,
};
use crate::{fsync_dir, io_err, remove_tree, Result, Sysroot, SysrootError};

/// Commit metadata keys starting with this name a component and its version.
pub const COMPONENT_PREFIX: &str = "component.";

/// The deployment whose `/etc` is the machine's: the booted one, else the
/// default.
pub fn merge_deployment<'s>(sysroot: &Sysroot, state: &'s State) -> Option<&'s Deployment> {
    let booted = sysroot.booted_arg();
    state
        .deployments
        .iter()
        .find(|d| Some(d.rel_path().as_str()) == booted)
        .or_else(|| state.deployments.first())
}

/// The deployment the next boot starts: the staged one, else the one
/// whose live entry the boot loader picks ([`loader_default`]: the
/// default, unless its entry went bad and the loader falls back). New
/// deployments take their kernel arguments from it; `treectl kargs`
/// shows and edits it.
pub fn next_boot(
    sysroot: &Sysroot,
    state: &State,
    staged: Option<&Deployment>,
) -> Result<Option<Deployment>> {
    if let Some(s) = staged {
        return Ok(Some(s.clone()));
    }
    let index = loader_default(sysroot, state)?.unwrap_or(0);
    Ok(state.deployments.get(index).cloned())
}

/// Where a commit keeps its `/etc` defaults.
fn etc_subpath(repo: &Repo, commit: &ObjectId) -> Option<&'static str> {
    ["etc", "usr/etc"]
        .into_iter()
        .find(|p| matches!(resolve_path(repo, commit, p), Ok(Resolved::Dir { .. })))
}

/// Checks a commit's `/etc` defaults out into a fresh directory under
/// `treectl/tmp` (or returns a path that does not exist).
pub(crate) fn defaults_of(
    sysroot: &Sysroot,
    repo: &Repo,
    commit: &ObjectId,
    name: &str,
) -> Result<PathBuf> {
    let tmp = sysroot.tmp_dir();
    fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    let dest = tmp.join(name);
    remove_tree(&dest)?;
    if let Some(sub) = etc_subpath(repo, commit) {
        let opts = CheckoutOptions {
            copy: false,
            subpath: Some(sub.into()),
            ..Default::default()
        };
        checkout(repo, commit, &dest, &opts)?;
    }
    Ok(dest)
}

/// The first serial not in use for `commit` in `stateroot`.
fn next_serial(sysroot: &Sysroot, state: &State, stateroot: &str, commit: &str) -> Result<u32> {
    let staged = read_staged(sysroot)?;
    let used: HashSet<u32> = state
        .deployments
        .iter()
        .chain(staged.iter())
        .filter(|d| d.stateroot == stateroot && d.commit == commit)
        .map(|d| d.serial)
        .collect();
    Ok((0..)
        .find(|s| !used.contains(s))
        .expect("a free serial exists"))
}

/// Builds a complete deployment of `commit` (not yet in any generation):
/// sets its ref, checks it out into `<id>.tmp`, merges `/etc` from the
/// merge deployment, syncs, renames it into place, copies its kernel.
pub fn build_deployment(
    sysroot: &Sysroot,
    repo: &Repo,
    state: &State,
    stateroot: &str,
    commit: &ObjectId,
    origin: Option<Origin>,
    release_serial: Option<u64>,
) -> Result<Deployment> {
    let meta = repo.read_commit(commit)?;
    // Everything that can be checked is checked before the first write.
    let kernel = kernel_plan(sysroot, repo, commit, stateroot)?;
    check_boot_space(sysroot, commit, kernel.as_ref())?;
    let hex = commit.to_hex();
    let mut d = Deployment {
        stateroot: stateroot.to_owned(),
        serial: next_serial(sysroot, state, stateroot, &hex)?,
        commit: hex,
        origin,
        version: meta.version().map(str::to_owned),
        order: ReleaseOrder {
            serial: release_serial,
            timestamp: meta.timestamp,
        },
        pinned: false,
        etc_conflicts: vec![],
        components: components_of(&meta),
        kernel: None,
        kargs: vec![],
    };
    // The ref first: from here on no prune can take the commit away.
    Transaction::begin(repo)?.commit(&[RefUpdate {
        name: RefName::new(&d.ref_name())?,
        target: Some(*commit),
    }])?;
    let root = sysroot.stateroot_dir(stateroot);
    fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
    let final_path = d.path(sysroot);
    let tmp = root.join(format!("{}.tmp", d.id()));
    remove_tree(&tmp)?;
    checkout(repo, commit, &tmp, &CheckoutOptions::default())?;
    failpoint::hit("deploy-checkout");
    let report = write_etc(sysroot, repo, state, commit, &tmp, "etc.merged")?;
    d.etc_conflicts = report.conflicts;
    rustix::fs::syncfs(fs::File::open(&tmp).map_err(io_err("opening", &tmp))?)
        .map_err(|e| io_err("syncing", &tmp)(e.into()))?;
    failpoint::hit("deploy-before-rename");
    fs::rename(&tmp, &final_path).map_err(io_err("renaming into place", &final_path))?;
    fsync_dir(&root)?;
    d.kernel = install_kernel(sysroot, kernel, &final_path)?;
    Ok(d)
}

/// Merges `/etc` for a deployment being built at `dep` (whose `etc` is
/// still the commit's hardlinked defaults, if it has any): writes the
/// merge into `dep/<scratch>` and puts it in place of `dep/etc`.
fn write_etc(
    sysroot: &Sysroot,
    repo: &Repo,
    state: &State,
    commit: &ObjectId,
    dep: &Path,
    scratch: &str,
) -> Result<MergeReport> {
    let new_defaults = defaults_of(sysroot, repo, commit, "new-etc")?;
    let out = dep.join(scratch);
    remove_tree(&out)?;
    let report = match merge_deployment(sysroot, state) {
        Some(m) => {
            let old_commit = commit_id(sysroot, m)?;
            let old_defaults = defaults_of(sysroot, repo, &old_commit, "old-etc")?;
            let local = m.path(sysroot).join("etc");
            merge_etc(&old_defaults, &local, &new_defaults, &out)
                .map_err(io_err("merging /etc into", &out))?
        }
        // A first deployment: copies of the defaults.
        None => merge_etc(&new_defaults, &new_defaults, &new_defaults, &out)
            .map_err(io_err("copying /etc into", &out))?,
    };
    remove_tree(&sysroot.tmp_dir())?;
    let etc = dep.join("etc");
    if out.exists() {
        remove_tree(&etc)?;
        fs::rename(&out, &etc).map_err(io_err("renaming", &out))?;
    }
    Ok(report)
}

/// A deployment's commit id.
pub fn commit_id(sysroot: &Sysroot, d: &Deployment) -> Result<ObjectId> {
    ObjectId::from_hex(&d.commit).ok_or_else(|| SysrootError::BadState {
        path: sysroot.boot_dir().join("loader"),
        reason: format!("bad commit id {:?}", d.commit),
    })
}

/// A commit's components and their versions: the list compose records
/// (`compose.components`), plus any `component.<name>` = version entries.
pub(crate) fn components_of(meta: &Commit) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = meta
        .metadata
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(COMPONENT_PREFIX)?.to_owned(), v.clone())))
        .collect();
    // A composed commit whose list does not parse shows no components
    // rather than failing status or upgrade.
    if let Some(Ok(list)) = treectl_compose::components::commit_components(meta) {
        out.extend(list.into_iter().map(|c| (c.name, c.version)));
    }
    out
}

/// The kernel a tree boots: the first `/usr/lib/modules/<kver>/` with a
/// `vmlinuz` (and its `initramfs.img`, if any), and the directory under
/// `/boot/treectl/` that holds the pair (named by their content, so
/// deployments of the same kernel share it).
struct KernelPlan {
    kver: String,
    name: String,
    initrd: bool,
    /// The bytes the pair takes in `/boot` (0 when it is already there).
    bytes: u64,
}

fn kernel_plan(
    sysroot: &Sysroot,
    repo: &Repo,
    commit: &ObjectId,
    stateroot: &str,
) -> Result<Option<KernelPlan>> {
    let Ok(Resolved::Dir { tree, .. }) = resolve_path(repo, commit, "usr/lib/modules") else {
        return Ok(None);
    };
    for entry in repo.read_tree(&tree)?.entries {
        let EntryKind::Dir { tree: sub, .. } = entry.kind else {
            continue;
        };
        let sub = repo.read_tree(&sub)?;
        let Some(EntryKind::Regular { file: vmlinuz }) = sub.get(b"vmlinuz").map(|e| e.kind) else {
            continue;
        };
        let initrd = match sub.get(b"initramfs.img").map(|e| e.kind) {
            Some(EntryKind::Regular { file }) => Some(file),
            _ => None,
        };
        let mut h = Sha256::new();
        h.update(vmlinuz.0);
        if let Some(i) = initrd {
            h.update(i.0);
        }
        let hash: String = h
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("{stateroot}-{hash}");
        let mut bytes = 0;
        if !sysroot.boot_dir().join("treectl").join(&name).exists() {
            for id in std::iter::once(vmlinuz).chain(initrd) {
                // Rounded up to whole 4 KiB blocks, plus one for the inode's
                // share of the directory.
                bytes += repo.read_file_header(&id)?.size.div_ceil(4096) * 4096 + 4096;
            }
        }
        return Ok(Some(KernelPlan {
            kver: String::from_utf8_lossy(&entry.name).into_owned(),
            name,
            initrd: initrd.is_some(),
            bytes,
        }));
    }
    Ok(None)
}

/// Refuses, before anything is written, when `/boot` cannot take the
/// kernel and initramfs `commit` needs.
fn check_boot_space(sysroot: &Sysroot, commit: &ObjectId, plan: Option<&KernelPlan>) -> Result<()> {
    let Some(plan) = plan.filter(|p| p.bytes > 0) else {
        return Ok(());
    };
    let boot = sysroot.boot_dir();
    // At install, `/boot` may not exist yet: its parent's filesystem
    // will hold it.
    let measured = boot.ancestors().find(|p| p.exists()).unwrap_or(&boot);
    let st = rustix::fs::statvfs(measured).map_err(|e| io_err("measuring", measured)(e.into()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < plan.bytes {
        return Err(SysrootError::BootFull {
            path: boot,
            kver: plan.kver.clone(),
            commit: commit.to_hex(),
            free,
            needed: plan.bytes,
        });
    }
    Ok(())
}

/// Copies `/usr/lib/modules/<kver>/{vmlinuz,initramfs.img}` of the tree to
/// `/boot/treectl/<stateroot>-<hash>/` (shared by content).
fn install_kernel(
    sysroot: &Sysroot,
    plan: Option<KernelPlan>,
    dep: &Path,
) -> Result<Option<Kernel>> {
    let Some(KernelPlan {
        kver, name, initrd, ..
    }) = plan
    else {
        return Ok(None);
    };
    let kroot = sysroot.boot_dir().join("treectl");
    let dir = kroot.join(&name);
    let src = dep.join("usr/lib/modules").join(&kver);
    if !dir.exists() {
        let tmp = kroot.join(format!("{name}.tmp"));
        remove_tree(&tmp)?;
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let mut files = vec!["vmlinuz"];
        if initrd {
            files.push("initramfs.img");
        }
        for f in files {
            let to = tmp.join(f);
            if let Err(e) = fs::copy(src.join(f), &to).and_then(|_| fs::File::open(&to)?.sync_all())
            {
                // No half-copied kernel left behind.
                let _ = remove_tree(&tmp);
                return Err(io_err("copying the kernel to", &to)(e));
            }
        }
        fsync_dir(&tmp)?;
        fs::rename(&tmp, &dir).map_err(io_err("renaming", &tmp))?;
        fsync_dir(&kroot)?;
    }
    Ok(Some(Kernel {
        kver,
        linux: format!("/treectl/{name}/vmlinuz"),
        initrd: initrd.then(|| format!("/treectl/{name}/initramfs.img")),
    }))
}

/// How a new deployment takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Swap it in now as the default.
    Now,
    /// Stage it: `finalize-staged` swaps it in at shutdown.
    Stage,
}

/// Deploys `commit` (in the local repository) as the new default, or
/// stages it. Its kernel arguments are `kargs`, else those of the
/// deployment the next boot would start ([`next_boot`]). The caller holds
/// the lock.
pub fn deploy_commit(
    sysroot: &Sysroot,
    commit: &ObjectId,
    origin: Option<Origin>,
    release_serial: Option<u64>,
    switch: Switch,
    clear_floor: bool,
    kargs: Option<Vec<String>>,
) -> Result<Deployment> {
    let mut state = read_state(sysroot)?;
    // Never move to a rejected commit; redeploying the default itself (a
    // kernel argument edit on a machine still running it) is no move.
    let is_default = state
        .deployments
        .first()
        .is_some_and(|d| d.commit == commit.to_hex());
    if let (Some(o), false) = (&origin, is_default) {
        crate::source::check_not_rejected(sysroot, o, commit)?;
    }
    collect_garbage(sysroot, &state)?;
    if switch == Switch::Stage {
        sysroot.check_free_space()?;
    }
    let kargs = match kargs {
        Some(k) => k,
        None => next_boot(sysroot, &state, read_staged(sysroot)?.as_ref())?
            .map(|d| d.kargs)
            .unwrap_or_default(),
    };
    let repo = sysroot.open_repo()?;
    let stateroot = state
        .deployments
        .first()
        .map_or(super::DEFAULT_STATEROOT.to_owned(), |d| d.stateroot.clone());
    let mut d = build_deployment(
        sysroot,
        &repo,
        &state,
        &stateroot,
        commit,
        origin,
        release_serial,
    )?;
    d.kargs = kargs;
    if clear_floor {
        state.rollback_floor = None;
    }
    match switch {
        Switch::Now => {
            // A staged deployment is superseded by one made now.
            state.deployments.insert(0, d.clone());
            write_generation(sysroot, &state, "deploy")?;
            remove_staged(sysroot)?;
        }
        Switch::Stage => {
            let old = read_staged(sysroot)?;
            let staged = StagedFile {
                version: crate::finalize::STAGED_VERSION,
                deployment: d.clone(),
                clear_floor,
            };
            let json = serde_json::to_vec_pretty(&staged).expect("staged state serializes");
            treectl_store::store::write_atomic(&sysroot.staged_path(), &json, true)?;
            failpoint::hit("stage-written");
            if let Some(old) = old {
                remove_tree(&old.path(sysroot))?;
            }
        }
    }
    // A new deployment answers an earlier finalize failure.
    clear_finalize_failure(sysroot)?;
    Ok(d)
}

//! The deployment operations: install, deploy, stage, finalize, rollback,
//! pin, cleanup, and the upgrade decision. Every writing operation takes
//! the sysroot lock and removes garbage first; the one atomic step of each
//! is [`state::write_generation`]. See `docs/deployments.md`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use treectl_repo::checkout::{checkout, resolve_path, CheckoutOptions, Resolved};
use treectl_repo::object::{Commit, EntryKind};
use treectl_repo::prune::{prune, PruneOptions, PruneReport};
use treectl_repo::refs::{list_refs, rev_parse, RefName};
use treectl_repo::store::{RefUpdate, Transaction};
use treectl_repo::{failpoint, ObjectId, Repo, RepoMode};

use super::etc_merge::{merge_etc, MergeReport};
use super::fetch::fetch_commit;
use super::state::{
    live_generation, read_state, write_generation, Deployment, Kernel, Origin, ReleaseOrder, State,
    STATE_VERSION,
};
use super::{fsync_dir, io_err, remove_tree, Result, Sysroot, SysrootError};

/// Commit metadata keys starting with this name a component and its version.
pub const COMPONENT_PREFIX: &str = "component.";

/// Where a commit comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A local repository and a ref in it.
    LocalRepo { path: PathBuf, refname: String },
    /// A configured remote (`NAME:REF`), fetched by `treectl pull`.
    Remote { name: String, refname: String },
}

impl Source {
    pub fn origin(&self) -> Origin {
        match self {
            Source::LocalRepo { path, refname } => Origin {
                remote: None,
                repo: Some(path.clone()),
                refname: refname.clone(),
            },
            Source::Remote { name, refname } => Origin {
                remote: Some(name.clone()),
                repo: None,
                refname: refname.clone(),
            },
        }
    }

    pub fn from_origin(o: &Origin) -> Option<Source> {
        match (&o.remote, &o.repo) {
            (Some(name), _) => Some(Source::Remote {
                name: name.clone(),
                refname: o.refname.clone(),
            }),
            (None, Some(path)) => Some(Source::LocalRepo {
                path: path.clone(),
                refname: o.refname.clone(),
            }),
            (None, None) => None,
        }
    }
}

/// A head found at an origin, not yet fetched.
pub struct Head {
    pub commit: ObjectId,
    pub meta: Commit,
    /// The origin's release serial, when it has one (a remote's index).
    pub serial: Option<u64>,
}

impl Head {
    pub fn order(&self) -> ReleaseOrder {
        ReleaseOrder {
            serial: self.serial,
            timestamp: self.meta.timestamp,
        }
    }
}

/// Looks up the head of `source` without fetching it. A remote origin is
/// read from what `treectl pull` last verified and stored in the sysroot's
/// repository (its remote ref and the serial in its trust state): the
/// caller pulls first.
pub fn find_head(sysroot: &Sysroot, source: &Source) -> Result<Head> {
    match source {
        Source::LocalRepo { path, refname } => {
            let repo = Repo::open(path)?;
            let commit = rev_parse(&repo, refname)?;
            Ok(Head {
                commit,
                meta: repo.read_commit(&commit)?,
                serial: None,
            })
        }
        Source::Remote { name, refname } => {
            let repo = sysroot.open_repo()?;
            let not_pulled = || SysrootError::NotPulled {
                origin: format!("{name}:{refname}"),
            };
            let commit =
                treectl_repo::refs::try_read_remote_ref(&repo, name, &RefName::new(refname)?)?
                    .ok_or_else(not_pulled)?;
            let trust = treectl_repo::remote::TrustState::load(&repo, name)?;
            let serial = trust.refs.get(refname.as_str()).map(|r| r.serial);
            Ok(Head {
                commit,
                meta: repo.read_commit(&commit)?,
                serial,
            })
        }
    }
}

/// Fetches `head` from `source` into the sysroot's repository.
pub fn fetch(sysroot: &Sysroot, source: &Source, head: &Head) -> Result<()> {
    sysroot.check_free_space()?;
    let dst = sysroot.open_repo()?;
    match source {
        Source::LocalRepo { path, refname } => {
            let src = Repo::open(path)?;
            let origin_ref = RefName::new(&format!("origin/{refname}"))?;
            fetch_commit(&src, &dst, &head.commit, &[origin_ref])?;
            Ok(())
        }
        // `treectl pull` already verified and stored it (see find_head).
        Source::Remote { .. } => Ok(()),
    }
}

/// What `install` needs.
pub struct InstallOptions {
    pub stateroot: String,
}

/// Creates a sysroot with its first deployment of `source`'s head.
pub fn install(sysroot: &Sysroot, source: &Source, opts: &InstallOptions) -> Result<Deployment> {
    let _lock = sysroot.lock()?;
    if live_generation(sysroot)?.is_some() {
        return Err(SysrootError::AlreadyInstalled(sysroot.root().to_owned()));
    }
    let repo_path = sysroot.repo_path();
    if !repo_path.join("config").exists() {
        Repo::init(&repo_path, RepoMode::BareUser)?;
    }
    let head = find_head(sysroot, source)?;
    fetch(sysroot, source, &head)?;
    let repo = sysroot.open_repo()?;
    let state = State {
        version: STATE_VERSION,
        deployments: vec![],
        rollback_floor: None,
    };
    let d = build_deployment(
        sysroot,
        &repo,
        &state,
        &opts.stateroot,
        &head.commit,
        Some(source.origin()),
        head.serial,
    )?;
    // /var: seeded once from the first commit, shared from then on.
    let var = sysroot.stateroot_dir(&opts.stateroot).join("var");
    if !var.exists() {
        let tmp = sysroot.stateroot_dir(&opts.stateroot).join("var.tmp");
        remove_tree(&tmp)?;
        let seeded = match resolve_path(&repo, &head.commit, "var") {
            Ok(Resolved::Dir { .. }) => {
                let opts = CheckoutOptions {
                    copy: true,
                    subpath: Some("var".into()),
                    union: false,
                };
                checkout(&repo, &head.commit, &tmp, &opts)?;
                true
            }
            _ => false,
        };
        if !seeded {
            fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;
        }
        fs::rename(&tmp, &var).map_err(io_err("creating", &var))?;
    }
    let state = State {
        deployments: vec![d.clone()],
        ..state
    };
    write_generation(sysroot, &state, "deploy")?;
    Ok(d)
}

/// Removes what no generation, staged deployment or ref needs: `*.tmp`
/// deployments, deployments nothing names, their refs, stale kernels.
/// Runs under the lock at the start of every writing command.
pub fn collect_garbage(sysroot: &Sysroot, state: &State) -> Result<()> {
    let staged = read_staged(sysroot)?;
    let keep: HashSet<PathBuf> = state
        .deployments
        .iter()
        .chain(staged.iter())
        .map(|d| d.path(sysroot))
        .collect();
    let deploy_root = sysroot.treectl_dir().join("deploy");
    if let Ok(rd) = fs::read_dir(&deploy_root) {
        for sr in rd {
            let sr = sr.map_err(io_err("reading", &deploy_root))?.path();
            for e in fs::read_dir(&sr).map_err(io_err("reading", &sr))? {
                let p = e.map_err(io_err("reading", &sr))?.path();
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.as_deref() == Some("var") || keep.contains(&p) {
                    continue;
                }
                remove_tree(&p)?;
            }
        }
    }
    remove_tree(&sysroot.tmp_dir())?;
    let repo = sysroot.open_repo()?;
    let wanted: HashSet<String> = state
        .deployments
        .iter()
        .chain(staged.iter())
        .map(Deployment::ref_name)
        .collect();
    let stale: Vec<RefUpdate> = list_refs(&repo)?
        .into_iter()
        .filter(|(name, _)| name.as_str().starts_with("deploy/") && !wanted.contains(name.as_str()))
        .map(|(name, _)| RefUpdate { name, target: None })
        .collect();
    if !stale.is_empty() {
        Transaction::begin(&repo)?.commit(&stale)?;
    }
    let kernels: HashSet<String> = state
        .deployments
        .iter()
        .chain(staged.iter())
        .filter_map(|d| d.kernel.as_ref())
        .filter_map(|k| k.linux.split('/').nth(2).map(str::to_owned))
        .collect();
    let kdir = sysroot.boot_dir().join("treectl");
    if let Ok(rd) = fs::read_dir(&kdir) {
        for e in rd {
            let p = e.map_err(io_err("reading", &kdir))?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !kernels.contains(&name) {
                remove_tree(&p)?;
            }
        }
    }
    Ok(())
}

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

/// Where a commit keeps its `/etc` defaults.
fn etc_subpath(repo: &Repo, commit: &ObjectId) -> Option<&'static str> {
    ["etc", "usr/etc"]
        .into_iter()
        .find(|p| matches!(resolve_path(repo, commit, p), Ok(Resolved::Dir { .. })))
}

/// Checks a commit's `/etc` defaults out into a fresh directory under
/// `treectl/tmp` (or returns a path that does not exist).
fn defaults_of(sysroot: &Sysroot, repo: &Repo, commit: &ObjectId, name: &str) -> Result<PathBuf> {
    let tmp = sysroot.tmp_dir();
    fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    let dest = tmp.join(name);
    remove_tree(&dest)?;
    if let Some(sub) = etc_subpath(repo, commit) {
        let opts = CheckoutOptions {
            copy: false,
            subpath: Some(sub.into()),
            union: false,
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
    d.kernel = install_kernel(sysroot, repo, commit, &final_path, stateroot)?;
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
fn components_of(meta: &Commit) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = meta
        .metadata
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(COMPONENT_PREFIX)?.to_owned(), v.clone())))
        .collect();
    // A composed commit whose list does not parse shows no components
    // rather than failing status or upgrade.
    if let Some(Ok(list)) = treectl_lockfiles::ops::commit_components(meta) {
        out.extend(list.into_iter().map(|c| (c.name, c.version)));
    }
    out
}

/// Copies `/usr/lib/modules/<kver>/{vmlinuz,initramfs.img}` of the tree to
/// `/boot/treectl/<stateroot>-<hash>/` (shared by content).
fn install_kernel(
    sysroot: &Sysroot,
    repo: &Repo,
    commit: &ObjectId,
    dep: &Path,
    stateroot: &str,
) -> Result<Option<Kernel>> {
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
        let kver = String::from_utf8_lossy(&entry.name).into_owned();
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
        let kroot = sysroot.boot_dir().join("treectl");
        let dir = kroot.join(&name);
        let src = dep.join("usr/lib/modules").join(&kver);
        if !dir.exists() {
            let tmp = kroot.join(format!("{name}.tmp"));
            remove_tree(&tmp)?;
            fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
            let mut files = vec!["vmlinuz"];
            if initrd.is_some() {
                files.push("initramfs.img");
            }
            for f in files {
                let to = tmp.join(f);
                fs::copy(src.join(f), &to).map_err(io_err("copying the kernel to", &to))?;
                fs::File::open(&to)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("syncing", &to))?;
            }
            fsync_dir(&tmp)?;
            fs::rename(&tmp, &dir).map_err(io_err("renaming", &tmp))?;
            fsync_dir(&kroot)?;
        }
        return Ok(Some(Kernel {
            kver,
            linux: format!("/treectl/{name}/vmlinuz"),
            initrd: initrd.map(|_| format!("/treectl/{name}/initramfs.img")),
        }));
    }
    Ok(None)
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
/// stages it. The caller holds the lock.
pub fn deploy_commit(
    sysroot: &Sysroot,
    commit: &ObjectId,
    origin: Option<Origin>,
    release_serial: Option<u64>,
    switch: Switch,
    clear_floor: bool,
) -> Result<Deployment> {
    let mut state = read_state(sysroot)?;
    collect_garbage(sysroot, &state)?;
    if switch == Switch::Stage {
        sysroot.check_free_space()?;
    }
    let repo = sysroot.open_repo()?;
    let stateroot = state
        .deployments
        .first()
        .map_or(super::DEFAULT_STATEROOT.to_owned(), |d| d.stateroot.clone());
    let d = build_deployment(
        sysroot,
        &repo,
        &state,
        &stateroot,
        commit,
        origin,
        release_serial,
    )?;
    if clear_floor {
        state.rollback_floor = None;
    }
    match switch {
        Switch::Now => {
            // A staged deployment is superseded by one made now.
            let staged = read_staged(sysroot)?;
            state.deployments.insert(0, d.clone());
            write_generation(sysroot, &state, "deploy")?;
            if staged.is_some() {
                remove_staged(sysroot)?;
            }
        }
        Switch::Stage => {
            let old = read_staged(sysroot)?;
            let staged = StagedFile {
                deployment: d.clone(),
                clear_floor,
            };
            let json = serde_json::to_vec_pretty(&staged).expect("staged state serializes");
            treectl_repo::store::write_atomic(&sysroot.staged_path(), &json, true)?;
            failpoint::hit("stage-written");
            if let Some(old) = old {
                remove_tree(&old.path(sysroot))?;
            }
        }
    }
    Ok(d)
}

#[derive(Serialize, serde::Deserialize)]
struct StagedFile {
    deployment: Deployment,
    #[serde(default)]
    clear_floor: bool,
}

fn read_staged_file(sysroot: &Sysroot) -> Result<Option<StagedFile>> {
    let path = sysroot.staged_path();
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| SysrootError::BadState {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &path)(e)),
    }
}

/// The staged deployment, if one waits for `finalize-staged`.
pub fn read_staged(sysroot: &Sysroot) -> Result<Option<Deployment>> {
    Ok(read_staged_file(sysroot)?.map(|s| s.deployment))
}

fn remove_staged(sysroot: &Sysroot) -> Result<()> {
    let path = sysroot.staged_path();
    match fs::remove_file(&path) {
        Ok(()) => fsync_dir(&sysroot.treectl_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", &path)(e)),
    }
}

/// Makes the staged deployment the default: merges `/etc` again from the
/// machine's current `/etc`, then swaps in the generation. Returns it, or
/// `None` when nothing was staged.
pub fn finalize_staged(sysroot: &Sysroot) -> Result<Option<Deployment>> {
    let _lock = sysroot.lock()?;
    let Some(staged) = read_staged_file(sysroot)? else {
        return Ok(None);
    };
    let mut d = staged.deployment;
    let mut state = read_state(sysroot)?;
    if state.deployments.first().map(Deployment::id) == Some(d.id()) {
        // Swapped in before a crash: only the file is left to remove.
        remove_staged(sysroot)?;
        return Ok(Some(d));
    }
    let dep = d.path(sysroot);
    let repo = sysroot.open_repo()?;
    let commit = commit_id(sysroot, &d)?;
    // Leftovers of an interrupted finalize.
    remove_tree(&dep.join("etc.final"))?;
    let report = write_etc_exchange(sysroot, &repo, &state, &commit, &dep)?;
    d.etc_conflicts = report.conflicts;
    rustix::fs::syncfs(fs::File::open(&dep).map_err(io_err("opening", &dep))?)
        .map_err(|e| io_err("syncing", &dep)(e.into()))?;
    if staged.clear_floor {
        state.rollback_floor = None;
    }
    state.deployments.insert(0, d.clone());
    write_generation(sysroot, &state, "finalize")?;
    remove_staged(sysroot)?;
    Ok(Some(d))
}

/// The `/etc` merge of finalize: into `etc.final`, then exchanged with the
/// deployment's `etc` in one `renameat2(RENAME_EXCHANGE)`.
fn write_etc_exchange(
    sysroot: &Sysroot,
    repo: &Repo,
    state: &State,
    commit: &ObjectId,
    dep: &Path,
) -> Result<MergeReport> {
    let Some(m) = merge_deployment(sysroot, state) else {
        return Ok(MergeReport::default());
    };
    let new_defaults = defaults_of(sysroot, repo, commit, "new-etc")?;
    let old_commit = commit_id(sysroot, m)?;
    let old_defaults = defaults_of(sysroot, repo, &old_commit, "old-etc")?;
    let out = dep.join("etc.final");
    let report = merge_etc(
        &old_defaults,
        &m.path(sysroot).join("etc"),
        &new_defaults,
        &out,
    )
    .map_err(io_err("merging /etc into", &out))?;
    remove_tree(&sysroot.tmp_dir())?;
    failpoint::hit("finalize-etc");
    let etc = dep.join("etc");
    match (out.exists(), etc.exists()) {
        (true, true) => {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &out,
                rustix::fs::CWD,
                &etc,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .map_err(|e| io_err("exchanging /etc of", dep)(e.into()))?;
            failpoint::hit("finalize-exchanged");
            remove_tree(&out)?;
        }
        (true, false) => fs::rename(&out, &etc).map_err(io_err("renaming", &out))?,
        (false, true) => remove_tree(&etc)?,
        (false, false) => {}
    }
    Ok(report)
}

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

/// What `cleanup` removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CleanupReport {
    pub removed: Vec<String>,
    pub prune: PruneReport,
}

/// Drops deployments that are not booted, default, rollback, pinned or
/// staged, then prunes the local repository.
pub fn cleanup(sysroot: &Sysroot) -> Result<CleanupReport> {
    let _lock = sysroot.lock()?;
    let mut state = read_state(sysroot)?;
    let booted = sysroot.booted_arg().map(str::to_owned);
    let before: Vec<Deployment> = state.deployments.clone();
    let mut removed = vec![];
    let mut index = 0;
    state.deployments.retain(|d| {
        let keep = index < 2 || d.pinned || booted.as_deref() == Some(d.rel_path().as_str());
        index += 1;
        if !keep {
            removed.push(d.id());
        }
        keep
    });
    if state.deployments.len() != before.len() {
        write_generation(sysroot, &state, "cleanup")?;
    }
    collect_garbage(sysroot, &state)?;
    let repo = sysroot.open_repo()?;
    let prune = prune(&repo, &PruneOptions::default())?;
    Ok(CleanupReport { removed, prune })
}

/// What `upgrade` would do with a head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    /// The head is the default deployment's commit.
    UpToDate,
    /// The head is the release the machine rolled back from (or older):
    /// stay put until a newer one is published.
    RolledBackFrom,
    /// The head is older than the default: a replay or a reset ref.
    Downgrade,
    /// A newer release.
    Update,
}

/// Decides what `upgrade` does with `head` given the live state.
pub fn decide(state: &State, head: &Head) -> Decision {
    let Some(default) = state.deployments.first() else {
        return Decision::Update;
    };
    if default.commit == head.commit.to_hex() {
        return Decision::UpToDate;
    }
    let order = head.order();
    if order.compare(&default.order) != Ordering::Greater {
        return Decision::Downgrade;
    }
    if let Some(floor) = &state.rollback_floor {
        if order.compare(floor) != Ordering::Greater {
            return Decision::RolledBackFrom;
        }
    }
    Decision::Update
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

/// Resolves `rev` for `deploy REV`: a revision or a `version` in the local
/// repository, else in the origin's repository (then fetched).
pub fn resolve_rev(sysroot: &Sysroot, rev: &str) -> Result<ObjectId> {
    let repo = sysroot.open_repo()?;
    if let Some(id) = find_rev(&repo, rev)? {
        return Ok(id);
    }
    let state = read_state(sysroot)?;
    if let Some(Source::LocalRepo { path, .. }) = state
        .deployments
        .first()
        .and_then(|d| d.origin.as_ref())
        .and_then(Source::from_origin)
    {
        let src = Repo::open(&path)?;
        if let Some(id) = find_rev(&src, rev)? {
            sysroot.check_free_space()?;
            fetch_commit(&src, &repo, &id, &[])?;
            return Ok(id);
        }
    }
    Err(SysrootError::UnknownRev {
        rev: rev.to_owned(),
    })
}

/// A revision, or the newest commit whose `version` is `rev` along any
/// ref's history.
fn find_rev(repo: &Repo, rev: &str) -> Result<Option<ObjectId>> {
    match rev_parse(repo, rev) {
        Ok(id) => return Ok(Some(id)),
        Err(treectl_repo::Error::UnknownRevision { .. })
        | Err(treectl_repo::Error::RefNotFound { .. })
        | Err(treectl_repo::Error::InvalidRevision { .. })
        | Err(treectl_repo::Error::InvalidRef { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for (_, head) in list_refs(repo)? {
        let mut cur = Some(head);
        while let Some(id) = cur {
            let Ok(c) = repo.read_commit(&id) else { break };
            if c.version() == Some(rev) {
                return Ok(Some(id));
            }
            cur = c.parent;
        }
    }
    Ok(None)
}

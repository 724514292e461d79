//! `install`: a new sysroot with its first deployment.

use std::fs;
use std::path::Path;
use std::process::Command;

use treectl_store::checkout::{checkout, resolve_path, CheckoutOptions, Resolved};
use treectl_store::{Repo, RepoMode};

use treectl_release::remote::{self, Remote};
use treectl_release::sign::PublicKey;
use treectl_transport::progress::Progress;
use treectl_transport::pull::PullOptions;

use crate::deploy::build_deployment;
use crate::source::{fetch, find_head, Source};
use crate::state::{live_generation, write_generation, Deployment, State, STATE_VERSION};
use crate::upgrade::pull_remote;
use crate::{io_err, remove_tree, Result, Sysroot, SysrootError};

/// What `install` needs.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The operating system's name (its deployments share `/var`).
    pub stateroot: String,
    /// For a remote source: the remote to add to the new sysroot's
    /// repository, if it is not configured there yet.
    pub remote: Option<NewRemote>,
    /// How to pull a remote source.
    pub pull: PullOptions,
    /// The value of the `root=` kernel argument (`UUID=…`, `/dev/vda2`,
    /// `LABEL=…`). `None`: the UUID of the filesystem the sysroot is the
    /// root of ([`detect_root_arg`]), else no `root=` at all.
    pub root_arg: Option<String>,
    /// Further kernel arguments of the first deployment.
    pub kargs: Vec<String>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            stateroot: crate::DEFAULT_STATEROOT.to_owned(),
            remote: None,
            pull: PullOptions::default(),
            root_arg: None,
            kargs: vec![],
        }
    }
}

/// The first deployment's kernel arguments: `root=` (given, else
/// detected) and `opts.kargs`, each checked.
fn first_kargs(sysroot: &Sysroot, opts: &InstallOptions) -> Result<Vec<String>> {
    let root = match &opts.root_arg {
        // `--root-arg root=X` means the same as `--root-arg X`.
        Some(value) => Some(format!(
            "root={}",
            value.strip_prefix("root=").unwrap_or(value)
        )),
        None => detect_root_arg(sysroot.root()),
    };
    let kargs: Vec<String> = root.into_iter().chain(opts.kargs.iter().cloned()).collect();
    for k in &kargs {
        crate::kargs::validate(k)?;
    }
    Ok(kargs)
}

/// `root=UUID=<uuid>` of the filesystem whose root directory is `root`,
/// as `findmnt --mountpoint` reports it. `None` when `root` is a directory
/// inside another filesystem (an image being built: its filesystem does
/// not exist yet, and the host's would be wrong), when the filesystem has
/// no UUID, or when findmnt (util-linux) cannot tell: a missing `root=`
/// is what treectl wrote before it knew about `root=`, and the initramfs
/// then finds the root by other means.
pub fn detect_root_arg(root: &Path) -> Option<String> {
    let root = fs::canonicalize(root).ok()?;
    let out = Command::new("findmnt")
        .args(["--noheadings", "--output", "UUID", "--mountpoint"])
        .arg(&root)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let uuid = text.lines().next()?.trim();
    let plausible = !uuid.is_empty() && uuid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    plausible.then(|| format!("root=UUID={uuid}"))
}

/// A remote to configure in the sysroot's repository.
#[derive(Clone, Debug)]
pub struct NewRemote {
    pub url: String,
    /// Tried in order after `url`.
    pub mirrors: Vec<String>,
    /// Content must be signed by one of these; none: integrity only.
    pub trusted_keys: Vec<PublicKey>,
}

/// Creates a sysroot with its first deployment of `source`'s head. A
/// remote source is configured (from `opts.remote`) and pulled first.
pub fn install(
    sysroot: &Sysroot,
    source: &Source,
    opts: &InstallOptions,
    progress: &dyn Progress,
) -> Result<Deployment> {
    fs::create_dir_all(sysroot.root()).map_err(io_err("creating", sysroot.root()))?;
    let kargs = first_kargs(sysroot, opts)?;
    if let Source::Remote { name, refname } = source {
        ensure_remote(sysroot, name, opts.remote.as_ref())?;
        pull_remote(sysroot, name, refname, &opts.pull, progress)?;
    }
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
    let mut d = build_deployment(
        sysroot,
        &repo,
        &state,
        &opts.stateroot,
        &head.commit,
        Some(source.origin()),
        head.serial,
    )?;
    d.kargs = kargs;
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
                    ..Default::default()
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

/// Creates the sysroot's repository if needed and makes sure it has remote
/// `name`: added from `new` when missing; an existing remote of the same
/// URL is kept, so a failed install can be retried.
pub fn ensure_remote(sysroot: &Sysroot, name: &str, new: Option<&NewRemote>) -> Result<()> {
    let repo_path = sysroot.repo_path();
    if !repo_path.join("config").exists() {
        Repo::init(&repo_path, RepoMode::BareUser)?;
    }
    let repo = sysroot.open_repo()?;
    let existing = remote::get_remote(&repo, name).ok();
    match (new, existing) {
        (Some(new), Some(r)) if r.url == new.url => Ok(()),
        (Some(new), Some(r)) => Err(SysrootError::RemoteMismatch {
            name: name.to_owned(),
            existing: r.url,
            wanted: new.url.clone(),
            repo: repo_path,
        }),
        (Some(new), None) => {
            remote::add_remote(
                &repo,
                &Remote {
                    name: name.to_owned(),
                    url: new.url.clone(),
                    mirrors: new.mirrors.clone(),
                    trusted_keys: new.trusted_keys.clone(),
                },
            )?;
            Ok(())
        }
        (None, Some(_)) => Ok(()),
        (None, None) => Err(SysrootError::NoRemote {
            name: name.to_owned(),
        }),
    }
}

//! `install`: a new sysroot with its first deployment.

use std::fs;

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
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            stateroot: crate::DEFAULT_STATEROOT.to_owned(),
            remote: None,
            pull: PullOptions::default(),
        }
    }
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

//! `install`, `status`, `upgrade`, `deploy`, `rollback`, `finalize-staged`,
//! `pin`, `unpin`, `cleanup`, `boot-ok`: thin layers over
//! `treectl_client::sysroot`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use treectl_client::sysroot::deploy::{
    self, commit_components, component_changes, decide, find_head, Decision, InstallOptions,
    Source, Switch,
};
use treectl_client::sysroot::state::{self, read_state, Deployment};
use treectl_client::sysroot::status::status;
use treectl_client::sysroot::{Sysroot, SysrootError};

use treectl_repo::refs::RefName;
use treectl_repo::remote::{self, Remote};
use treectl_repo::sign::PublicKey;
use treectl_repo::{Repo, RepoMode};

use crate::cli_sysroot::SysrootCommand;
use crate::progress::{Progress, ProgressMode};
use crate::pull::{self, PullOptions};

/// `println!` that returns broken pipes as errors (a clean exit in `main`)
/// instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {
        writeln!(std::io::stdout(), $($t)*)?
    };
}

/// Exit status of `upgrade --check` and `--preview` when an update exists.
pub const EXIT_UPDATE_AVAILABLE: u8 = 10;

pub fn run(cmd: SysrootCommand) -> Result<ExitCode> {
    match cmd {
        SysrootCommand::Install {
            sysroot,
            source,
            from_repo,
            url,
            mirror,
            trusted_key,
            stateroot,
        } => {
            let sr = sysroot_at(&sysroot.sysroot)?;
            let src = match from_repo {
                Some(path) => Source::LocalRepo {
                    path: std::fs::canonicalize(&path)
                        .with_context(|| format!("opening the repository {}", path.display()))?,
                    refname: source,
                },
                None => {
                    let (name, refname) = source.split_once(':').with_context(|| {
                        format!("{source:?} is not NAME:REF; to install from a local repository pass --from-repo PATH REF")
                    })?;
                    Source::Remote {
                        name: name.to_owned(),
                        refname: refname.to_owned(),
                    }
                }
            };
            std::fs::create_dir_all(&sysroot.sysroot)
                .with_context(|| format!("creating {}", sysroot.sysroot.display()))?;
            if let Source::Remote { name, refname } = &src {
                prepare_remote(&sr, name, url, mirror, &trusted_key)?;
                pull_origin(&sr, name, refname)?;
            }
            let d = deploy::install(&sr, &src, &InstallOptions { stateroot })?;
            outln!("installed {} in {}", describe(&d), d.path(&sr).display());
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::Status { sysroot, json } => {
            let st = status(&sysroot_at(&sysroot.sysroot)?)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&st)?);
                return Ok(ExitCode::SUCCESS);
            }
            for e in &st.deployments {
                let mut marks = vec![];
                for (on, name) in [
                    (e.staged, "staged"),
                    (e.default, "default"),
                    (e.rollback, "rollback"),
                    (e.booted, "booted"),
                    (e.deployment.pinned, "pinned"),
                ] {
                    if on {
                        marks.push(name);
                    }
                }
                let index = e.index.map_or("-".to_owned(), |i| i.to_string());
                let star = if e.booted { '*' } else { ' ' };
                outln!(
                    "{star} {index} {} [{}]",
                    describe(&e.deployment),
                    marks.join(" ")
                );
                if let Some(o) = &e.deployment.origin {
                    outln!("      origin: {o}");
                }
                outln!("      path: {}", e.path);
                for c in &e.component_changes {
                    outln!(
                        "      component {}: {} -> {}",
                        c.name,
                        c.from.as_deref().unwrap_or("(none)"),
                        c.to.as_deref().unwrap_or("(none)")
                    );
                }
                for c in &e.deployment.etc_conflicts {
                    outln!("      /etc conflict (local version kept): {c}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::Upgrade {
            sysroot,
            check,
            preview,
            download_only,
            stage,
            allow_downgrade,
            json,
        } => {
            let sr = sysroot_at(&sysroot.sysroot)?;
            let _lock = sr.lock()?;
            let st = read_state(&sr)?;
            let default = st.deployments.first().ok_or(SysrootError::NoOrigin)?;
            let origin = default.origin.clone().ok_or(SysrootError::NoOrigin)?;
            let source = Source::from_origin(&origin).ok_or(SysrootError::NoOrigin)?;
            if let Source::Remote { name, refname } = &source {
                pull_origin(&sr, name, refname)?;
            }
            let head = find_head(&sr, &source)?;
            let decision = decide(&st, &head);
            let head_desc = format!(
                "{} ({})",
                head.meta.version().unwrap_or("-"),
                head.commit.short()
            );
            let report = |decision: &Decision, deployed: Option<&Deployment>| -> Result<()> {
                if json {
                    let v = serde_json::json!({
                        "decision": decision,
                        "head": head.commit.to_hex(),
                        "version": head.meta.version(),
                        "deployment": deployed,
                    });
                    outln!("{}", serde_json::to_string_pretty(&v)?);
                }
                Ok(())
            };
            match decision {
                Decision::UpToDate => {
                    report(&decision, None)?;
                    if !json {
                        outln!("no update: {origin} is at {head_desc}, already the default");
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                Decision::RolledBackFrom if !allow_downgrade => {
                    report(&decision, None)?;
                    if !json {
                        outln!("no update: {origin} is at {head_desc}, the release this machine rolled back from; waiting for a newer one");
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                Decision::Downgrade if !allow_downgrade => {
                    return Err(SysrootError::Downgrade {
                        current: describe(default),
                        candidate: head_desc,
                    }
                    .into())
                }
                _ => {}
            }
            if check || preview {
                report(&Decision::Update, None)?;
                if !json {
                    outln!("update available: {origin} -> {head_desc}");
                    if preview {
                        let changes =
                            component_changes(&default.components, &commit_components(&head.meta));
                        for c in changes {
                            outln!(
                                "  {}: {} -> {}",
                                c.name,
                                c.from.as_deref().unwrap_or("(none)"),
                                c.to.as_deref().unwrap_or("(none)")
                            );
                        }
                    }
                }
                return Ok(ExitCode::from(EXIT_UPDATE_AVAILABLE));
            }
            deploy::fetch(&sr, &source, &head)?;
            if download_only {
                report(&Decision::Update, None)?;
                if !json {
                    outln!("downloaded {head_desc}; run `treectl upgrade` to deploy it");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let switch = if stage { Switch::Stage } else { Switch::Now };
            let d = deploy::deploy_commit(
                &sr,
                &head.commit,
                Some(origin),
                head.serial,
                switch,
                allow_downgrade,
            )?;
            report(&Decision::Update, Some(&d))?;
            if !json {
                print_deployed(&sr, &d, switch)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::Deploy {
            sysroot,
            rev,
            stage,
        } => {
            let sr = sysroot_at(&sysroot.sysroot)?;
            let _lock = sr.lock()?;
            let st = read_state(&sr)?;
            let origin = st.deployments.first().and_then(|d| d.origin.clone());
            let id = deploy::resolve_rev(&sr, &rev)?;
            let switch = if stage { Switch::Stage } else { Switch::Now };
            let d = deploy::deploy_commit(&sr, &id, origin, None, switch, true)?;
            print_deployed(&sr, &d, switch)?;
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::Rollback { sysroot } => {
            let sr = sysroot_at(&sysroot.sysroot)?;
            let st = deploy::rollback(&sr)?;
            outln!(
                "rolled back: the default is now {} (was {}); takes effect at the next boot",
                describe(&st.deployments[0]),
                describe(&st.deployments[1])
            );
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::FinalizeStaged { sysroot } => {
            let sr = sysroot_at(&sysroot.sysroot)?;
            match deploy::finalize_staged(&sr)? {
                Some(d) => outln!("finalized: {} is the default", describe(&d)),
                None => outln!("nothing staged"),
            }
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::Pin { sysroot, index } => pin(&sysroot.sysroot, index, true),
        SysrootCommand::Unpin { sysroot, index } => pin(&sysroot.sysroot, index, false),
        SysrootCommand::Cleanup { sysroot, json } => {
            let sr = sysroot_at(&sysroot.sysroot)?;
            let r = deploy::cleanup(&sr)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                outln!(
                    "removed {} deployment(s); pruned {} object(s), {} bytes",
                    r.removed.len(),
                    r.prune.objects_deleted,
                    r.prune.bytes_freed
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::BootOk { sysroot } => {
            let sr = sysroot_at(&sysroot.sysroot)?;
            if state::mark_boot_ok(&sr)? {
                outln!("marked the booted entry good");
            } else {
                outln!("nothing to mark (no booted deployment, or already good)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Creates the sysroot's repository if needed and, with `url`, adds the
/// remote to it (an existing remote of the same URL is kept, so a failed
/// install can be retried).
fn prepare_remote(
    sr: &Sysroot,
    name: &str,
    url: Option<String>,
    mirrors: Vec<String>,
    trusted_keys: &[std::path::PathBuf],
) -> Result<()> {
    let repo_path = sr.repo_path();
    if !repo_path.join("config").exists() {
        Repo::init(&repo_path, RepoMode::BareUser)?;
    }
    let repo = sr.open_repo()?;
    let existing = remote::get_remote(&repo, name).ok();
    match (url, existing) {
        (Some(url), Some(r)) if r.url == url => Ok(()),
        (Some(url), Some(r)) => anyhow::bail!(
            "the sysroot already has remote {name} with URL {}, not {url}; remove it with `treectl --repo {} remote remove {name}`",
            r.url,
            repo_path.display()
        ),
        (Some(url), None) => {
            let keys = trusted_keys
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            remote::add_remote(
                &repo,
                &Remote {
                    name: name.to_owned(),
                    url,
                    mirrors,
                    trusted_keys: keys,
                },
            )?;
            Ok(())
        }
        (None, Some(_)) => Ok(()),
        (None, None) => anyhow::bail!(
            "the sysroot has no remote {name}: pass --url URL (and --trusted-key FILE) to add it"
        ),
    }
}

/// Pulls a remote origin into the sysroot's repository: every object is
/// verified there, and the deployment engine works from what was pulled.
fn pull_origin(sr: &Sysroot, name: &str, refname: &str) -> Result<()> {
    let repo = sr.open_repo()?;
    let ref_name = RefName::new(refname)?;
    let progress = Progress::start(ProgressMode::pick(false), format!("{name}:{refname}"));
    let outcome = pull::pull(&repo, name, &ref_name, &PullOptions::default(), &progress);
    progress.finish();
    outcome?;
    Ok(())
}

fn pin(root: &std::path::Path, index: usize, pin: bool) -> Result<ExitCode> {
    let sr = sysroot_at(root)?;
    let st = deploy::set_pinned(&sr, index, pin)?;
    outln!(
        "{} {index}: {}",
        if pin { "pinned" } else { "unpinned" },
        describe(&st.deployments[index])
    );
    Ok(ExitCode::SUCCESS)
}

/// The sysroot at `root`, made absolute (paths in status and errors).
fn sysroot_at(root: &std::path::Path) -> Result<Sysroot> {
    let abs = std::path::absolute(root).with_context(|| format!("resolving {}", root.display()))?;
    Ok(Sysroot::new(&abs))
}

fn describe(d: &Deployment) -> String {
    format!(
        "{} {} ({}.{})",
        d.stateroot,
        d.version.as_deref().unwrap_or("-"),
        &d.commit[..12.min(d.commit.len())],
        d.serial
    )
}

fn print_deployed(sr: &Sysroot, d: &Deployment, switch: Switch) -> Result<()> {
    match switch {
        Switch::Now => outln!(
            "deployed {} as the default in {}; takes effect at the next boot",
            describe(d),
            d.path(sr).display()
        ),
        Switch::Stage => outln!(
            "staged {}; `treectl finalize-staged` (at shutdown) makes it the default",
            describe(d)
        ),
    }
    for c in &d.etc_conflicts {
        outln!("  /etc conflict (local version kept): {c}");
    }
    Ok(())
}

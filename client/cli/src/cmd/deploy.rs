//! `install`, `status`, `upgrade`, `deploy`, `rollback`, `finalize-staged`,
//! `pin`, `unpin`, `cleanup`, `boot-ok`, `kargs`: each parses, calls one
//! function of `treectl_sysroot` and formats its result.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use treectl_release::sign::PublicKey;
use treectl_sysroot::deploy::{self, Switch};
use treectl_sysroot::install::{install, InstallOptions, NewRemote};
use treectl_sysroot::kargs::{kargs, KargsEdit, KargsOutcome};
use treectl_sysroot::source::Source;
use treectl_sysroot::state::{self, read_state, Deployment};
use treectl_sysroot::status::{status, Status};
use treectl_sysroot::upgrade::{
    upgrade, ComponentChange, Decision, UpgradeMode, UpgradeOptions, UpgradeOutcome,
};
use treectl_sysroot::{cleanup, finalize, rollback, Sysroot};

use crate::cli_sysroot::{InstallArgs, KargsArgs, SysrootCommand, UpgradeArgs};
use crate::cmd::pull::pull_options;
use crate::progress::{Progress, ProgressMode};

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
        SysrootCommand::Install(args) => run_install(args),
        SysrootCommand::Status { sysroot, json } => {
            print_status(&status(&sysroot_at(&sysroot.sysroot)?)?, json)
        }
        SysrootCommand::Upgrade(args) => run_upgrade(&sysroot_at(&args.sysroot.sysroot)?, args),
        SysrootCommand::Deploy {
            sysroot,
            rev,
            stage,
        } => {
            let sr = sysroot_at(&sysroot.sysroot)?;
            let _lock = sr.lock()?;
            let st = read_state(&sr)?;
            let origin = st.deployments.first().and_then(|d| d.origin.clone());
            let id = treectl_sysroot::source::resolve_rev(&sr, &rev)?;
            let switch = if stage { Switch::Stage } else { Switch::Now };
            let d = deploy::deploy_commit(&sr, &id, origin, None, switch, true, None)?;
            print_deployed(&sr, &d, switch)?;
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::Rollback { sysroot } => {
            let st = rollback::rollback(&sysroot_at(&sysroot.sysroot)?)?;
            outln!(
                "rolled back: the default is now {} (was {}); takes effect at the next boot",
                st.deployments[0].describe(),
                st.deployments[1].describe()
            );
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::FinalizeStaged {
            sysroot,
            check: true,
        } => match finalize::read_finalize_failure(&sysroot_at(&sysroot.sysroot)?)? {
            Some(f) => {
                eprintln!("error: {}", finalize_failure_line(&f));
                Ok(ExitCode::FAILURE)
            }
            None => {
                outln!("the last finalize did not fail");
                Ok(ExitCode::SUCCESS)
            }
        },
        SysrootCommand::FinalizeStaged {
            sysroot,
            check: false,
        } => {
            match finalize::finalize_staged_or_record(&sysroot_at(&sysroot.sysroot)?)? {
                Some(d) => outln!("finalized: {} is the default", d.describe()),
                None => outln!("nothing staged"),
            }
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::Pin { sysroot, index } => pin(&sysroot.sysroot, index, true),
        SysrootCommand::Unpin { sysroot, index } => pin(&sysroot.sysroot, index, false),
        SysrootCommand::Cleanup { sysroot, json } => {
            let r = cleanup::cleanup(&sysroot_at(&sysroot.sysroot)?)?;
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
            if state::mark_boot_ok(&sysroot_at(&sysroot.sysroot)?)? {
                outln!("marked the booted entry good");
            } else {
                outln!("nothing to mark (no booted deployment, or already good)");
            }
            Ok(ExitCode::SUCCESS)
        }
        SysrootCommand::Kargs(args) => run_kargs(args),
    }
}

fn run_kargs(args: KargsArgs) -> Result<ExitCode> {
    let sr = sysroot_at(&args.sysroot.sysroot)?;
    let edit = KargsEdit {
        append: args.append,
        append_if_missing: args.append_if_missing,
        delete: args.delete,
        delete_if_present: args.delete_if_present,
        replace: args.replace,
    };
    let out: KargsOutcome = kargs(&sr, &edit)?;
    let d = &out.deployment;
    if args.json {
        let v = serde_json::json!({
            "kargs": d.kargs,
            "options": d.cmdline(),
            "deployment": d.id(),
            "path": d.rel_path(),
            "staged": out.staged,
            "changed": out.changed,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if edit.is_empty() {
        outln!("{}", d.kargs.join(" "));
    } else if !out.changed {
        outln!(
            "kernel arguments unchanged: {} already has them",
            d.describe()
        );
    } else {
        print_deployed(
            &sr,
            d,
            if out.staged {
                Switch::Stage
            } else {
                Switch::Now
            },
        )?;
        outln!("  kernel arguments: {}", d.kargs.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_install(args: InstallArgs) -> Result<ExitCode> {
    let src = install_source(args.source, args.from_repo.as_deref())?;
    let remote = match args.url {
        Some(url) => Some(NewRemote {
            url,
            mirrors: args.mirror,
            trusted_keys: args
                .trusted_key
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<Result<Vec<_>, _>>()?,
        }),
        None => None,
    };
    let opts = InstallOptions {
        stateroot: args.stateroot,
        remote,
        pull: pull_options(&args.transfer)?,
        root_arg: args.root_arg,
        kargs: args.karg,
    };
    let sr = sysroot_at(&args.sysroot.sysroot)?;
    let progress = Progress::start(ProgressMode::pick(false), src.origin().to_string());
    let d = install(&sr, &src, &opts, &progress)?;
    outln!("installed {} in {}", d.describe(), d.path(&sr).display());
    Ok(ExitCode::SUCCESS)
}

/// `install`'s source: `REF` in `--from-repo PATH`, else `NAME:REF`.
fn install_source(source: String, from_repo: Option<&Path>) -> Result<Source> {
    Ok(match from_repo {
        Some(path) => Source::LocalRepo {
            path: std::fs::canonicalize(path)
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
    })
}

/// What `status` and the next boot say about a failed finalize.
fn finalize_failure_line(f: &finalize::FinalizeFailure) -> String {
    format!(
        "the staged deployment {} failed to finalize at shutdown ({}): {}; \
         the machine kept its previous default. Stage the update again with `treectl upgrade --stage`",
        f.deployment,
        crate::output::format_time(f.time),
        f.error
    )
}

fn print_status(st: &Status, json: bool) -> Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(st)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(f) = &st.finalize_failure {
        outln!("{}", finalize_failure_line(f));
    }
    if let Some(f) = &st.fallback {
        let which = match st.deployments.iter().find(|e| e.booted) {
            Some(e) if e.rollback => "the rollback deployment".to_owned(),
            Some(e) => format!("deployment {}", e.index.unwrap_or_default()),
            None => "another deployment".to_owned(),
        };
        let times = if f.attempts == 1 { "time" } else { "times" };
        outln!(
            "booted {which} because the default failed {} {times}",
            f.attempts
        );
    }
    for e in &st.deployments {
        let bad = e.boot_entry.as_ref().is_some_and(|b| b.state == "bad");
        let marks: Vec<&str> = [
            (e.staged, "staged"),
            (e.default, "default"),
            (e.rollback, "rollback"),
            (e.booted, "booted"),
            (e.deployment.pinned, "pinned"),
            (bad, "bad"),
            (e.failed, "failed"),
            (e.loader_default && !e.default, "fallback"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        let index = e.index.map_or("-".to_owned(), |i| i.to_string());
        let star = if e.booted { '*' } else { ' ' };
        outln!(
            "{star} {index} {} [{}]",
            e.deployment.describe(),
            marks.join(" ")
        );
        if let Some(o) = &e.deployment.origin {
            outln!("      origin: {o}");
        }
        outln!("      path: {}", e.path);
        if !e.deployment.kargs.is_empty() {
            outln!("      kernel arguments: {}", e.deployment.kargs.join(" "));
        }
        if let Some(c) = e.boot_entry.as_ref().and_then(|b| b.counter) {
            let done = c.done.unwrap_or(0);
            if c.is_bad() {
                outln!("      boot entry: bad after {done} failed tries; the boot loader starts another entry");
            } else {
                outln!(
                    "      boot entry: not yet marked good, {} tries left ({done} failed)",
                    c.left
                );
            }
        }
        for c in &e.component_changes {
            outln!("      component {}", change_line(c));
        }
        for c in &e.deployment.etc_conflicts {
            outln!("      /etc conflict (local version kept): {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_upgrade(sr: &Sysroot, args: UpgradeArgs) -> Result<ExitCode> {
    let mode = if args.check || args.preview {
        UpgradeMode::Check
    } else if args.download_only {
        UpgradeMode::DownloadOnly
    } else if args.stage {
        UpgradeMode::Stage
    } else {
        UpgradeMode::Now
    };
    let opts = UpgradeOptions {
        mode,
        allow_downgrade: args.allow_downgrade,
        ignore_rollout: args.ignore_rollout,
        pull: pull_options(&args.transfer)?,
    };
    let progress = Progress::start(ProgressMode::pick(false), "upgrade".to_owned());
    let out = upgrade(sr, &opts, &progress)?;
    drop(progress);
    for f in out.pull.iter().flat_map(|p| &p.fallbacks) {
        eprintln!("warning: {f}");
    }
    if args.json {
        let v = serde_json::json!({
            "decision": out.decision,
            "head": out.head.to_hex(),
            "version": out.version,
            "deployment": out.deployment,
            "fallback": out.fallback,
            "price": out.price,
            "changes": out.changes,
            "rollout": out.rollout,
            "barrier": out.barrier,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_upgrade(sr, &out, mode, args.preview)?;
    }
    let available = out.update_available() && mode == UpgradeMode::Check;
    Ok(if available {
        ExitCode::from(EXIT_UPDATE_AVAILABLE)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_upgrade(
    sr: &Sysroot,
    out: &UpgradeOutcome,
    mode: UpgradeMode,
    preview: bool,
) -> Result<()> {
    let (origin, head) = (&out.origin, out.head_desc());
    match (&out.decision, mode, &out.deployment) {
        (Decision::UpToDate, ..) => {
            outln!("no update: {origin} is at {head}, already the default")
        }
        (Decision::RolledBackFrom, ..) if out.fallback.is_some() => outln!(
            "no update: {origin} is at {head}, the release this machine fell back from after it failed to boot; waiting for a newer one"
        ),
        (Decision::RolledBackFrom, ..) => outln!(
            "no update: {origin} is at {head}, the release this machine rolled back from; waiting for a newer one"
        ),
        (Decision::NotInWave, ..) => {
            let wave = out.rollout.as_ref().map(|r| r.describe()).unwrap_or_default();
            outln!("no update yet: {origin} is at {head}, rolled out in waves; {wave}")
        }
        (_, UpgradeMode::DownloadOnly, _) => {
            outln!("downloaded {head}; run `treectl upgrade` to deploy it")
        }
        (_, UpgradeMode::Stage, Some(d)) => print_deployed(sr, d, Switch::Stage)?,
        (_, UpgradeMode::Now, Some(d)) => print_deployed(sr, d, Switch::Now)?,
        _ => {
            outln!("update available: {origin} -> {head}");
            if out.barrier.is_some() {
                outln!("  a barrier release: every machine deploys it before any later one");
            }
            if let Some(r) = &out.rollout {
                outln!("  {}", r.describe());
            }
            if let Some(p) = &out.price {
                let disk = p
                    .disk_bytes
                    .map_or("an unknown amount of".to_owned(), |d| d.to_string());
                match p.delta_bytes {
                    Some(delta) => outln!(
                        "  download: a static delta of {delta} bytes (by objects: {} bytes in {} objects); disk: {disk} bytes",
                        p.download_bytes,
                        p.download_objects
                    ),
                    None => outln!(
                        "  download: {} bytes in {} objects; disk: {disk} bytes",
                        p.download_bytes,
                        p.download_objects
                    ),
                }
            }
            if preview {
                for c in &out.changes {
                    outln!("  {}", change_line(c));
                }
            }
        }
    }
    Ok(())
}

/// `NAME: FROM -> TO`, `(none)` for a side without the component.
fn change_line(c: &ComponentChange) -> String {
    format!(
        "{}: {} -> {}",
        c.name,
        c.from.as_deref().unwrap_or("(none)"),
        c.to.as_deref().unwrap_or("(none)")
    )
}

fn pin(root: &Path, index: usize, pin: bool) -> Result<ExitCode> {
    let st = rollback::set_pinned(&sysroot_at(root)?, index, pin)?;
    outln!(
        "{} {index}: {}",
        if pin { "pinned" } else { "unpinned" },
        st.deployments[index].describe()
    );
    Ok(ExitCode::SUCCESS)
}

/// The sysroot at `root`, made absolute (paths in status and errors).
fn sysroot_at(root: &Path) -> Result<Sysroot> {
    let abs = std::path::absolute(root).with_context(|| format!("resolving {}", root.display()))?;
    Ok(Sysroot::new(&abs))
}

fn print_deployed(sr: &Sysroot, d: &Deployment, switch: Switch) -> Result<()> {
    match switch {
        Switch::Now => outln!(
            "deployed {} as the default in {}; takes effect at the next boot",
            d.describe(),
            d.path(sr).display()
        ),
        Switch::Stage => outln!(
            "staged {}; `treectl finalize-staged` (at shutdown) makes it the default",
            d.describe()
        ),
    }
    for c in &d.etc_conflicts {
        outln!("  /etc conflict (local version kept): {c}");
    }
    Ok(())
}

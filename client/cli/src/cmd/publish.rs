//! Release engineering: `keygen`, `serve` (runs `treectl-server`), `push`,
//! `publish`, `revert` and `history`, against a server URL or a local
//! repository path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use treectl_release::sign::SecretKey;
use treectl_store::refs::{self, RefName};
use treectl_store::{ObjectId, Repo};
use treectl_wire::{HistoryEntry, HistoryResponse, PublishResponse};

use crate::cli::TargetArgs;
use crate::output::format_time;
use treectl_transport::http::is_url;
use treectl_transport::push::{open_target, PublishTarget, PushPlan};

/// The server binary `treectl serve` runs.
const SERVER_BIN: &str = "treectl-server";

pub fn keygen(out: &Path) -> Result<ExitCode> {
    let key = SecretKey::generate().context("reading random bytes for the key")?;
    let pub_path = key.write_files(out)?;
    println!(
        "wrote {} (secret, keep it safe) and {} (key id {})",
        out.display(),
        pub_path.display(),
        key.public().key_id()
    );
    Ok(ExitCode::SUCCESS)
}

/// `treectl-server` beside this executable, else on `PATH`.
fn find_server() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(SERVER_BIN)));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(SERVER_BIN))
        .find(|p| p.is_file())
}

/// Replaces this process with `treectl-server`, passing the arguments on
/// (signals then reach the server directly).
pub fn serve(repo: Option<PathBuf>, args: Vec<OsString>) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let server = find_server().with_context(|| {
        format!("{SERVER_BIN} is not installed: `treectl serve` runs it and looks beside the treectl executable and on PATH; build it with `cargo build -p treectl-server`")
    })?;
    let mut cmd = std::process::Command::new(&server);
    if let Some(repo) = repo {
        cmd.arg("--repo").arg(repo);
    }
    cmd.args(args);
    let err = cmd.exec();
    Err(err).with_context(|| format!("running {}", server.display()))
}

/// The target the user named, with the flags that go with it.
fn open(url: &str, args: &TargetArgs) -> Result<Box<dyn PublishTarget>> {
    Ok(open_target(
        url,
        args.token_file.as_deref(),
        args.sign_key.as_deref(),
    )?)
}

fn print_outcome(resp: &PublishResponse, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(resp)?);
    } else {
        println!("{} {} serial {}", resp.commit, resp.ref_name, resp.serial);
    }
    Ok(())
}

pub fn push(src: &Repo, url: &str, name: &str, force: bool, args: &TargetArgs) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let plan = PushPlan::new(src, &name)?;
    let target = open(url, args)?;
    let out = plan.send(src, target.as_ref(), force)?;
    let resp = &out.published;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ref": resp.ref_name,
                "commit": resp.commit,
                "serial": resp.serial,
                "objects": out.objects,
                "uploaded": out.uploaded,
                "stored": out.stored,
                "bytes": out.bytes,
            }))?
        );
    } else {
        eprintln!(
            "{} of {} objects uploaded ({} bytes)",
            out.uploaded, out.objects, out.bytes
        );
        print_outcome(resp, false)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn publish(
    repo: Option<PathBuf>,
    url: &str,
    name: &str,
    rev: &str,
    force: bool,
    args: &TargetArgs,
) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let commit = match &repo {
        Some(path) => refs::rev_parse(&Repo::open(path)?, rev)?,
        None if !is_url(url) => refs::rev_parse(&Repo::open(Path::new(url))?, rev)?,
        None => ObjectId::from_hex(rev).with_context(|| {
            format!(
                "{rev:?} is not a full commit id; pass --repo PATH to resolve revisions locally"
            )
        })?,
    };
    let target = open(url, args)?;
    print_outcome(&target.publish(&name, &commit, force)?, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn revert(
    url: &str,
    name: &str,
    to: Option<&str>,
    reason: &str,
    args: &TargetArgs,
) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    if reason.trim().is_empty() {
        bail!("a revert needs a reason: --reason TEXT");
    }
    let target = open(url, args)?;
    print_outcome(&target.revert(&name, to, reason)?, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_event(e: &HistoryEntry, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(e)?);
    } else {
        println!("{} {} serial {}", e.kind.as_str(), e.ref_name, e.serial);
    }
    Ok(())
}

pub fn hold(url: &str, name: &str, reason: &str, args: &TargetArgs) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    if reason.trim().is_empty() {
        bail!("a hold needs a reason: --reason TEXT");
    }
    let target = open(url, args)?;
    print_event(&target.hold(&name, reason)?, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn release(url: &str, name: &str, args: &TargetArgs) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let target = open(url, args)?;
    print_event(&target.release(&name)?, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn history(url: &str, name: &str, args: &TargetArgs) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let target = open(url, args)?;
    let entries = target.history(&name)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&HistoryResponse {
                ref_name: name.to_string(),
                entries,
            })?
        );
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for e in &entries {
        let kind = e.kind.as_str();
        write!(
            out,
            "{:>5}  {}  {:<7}  {}  {:<12}  {}",
            e.serial,
            format_time(e.time),
            kind,
            e.commit.short(),
            e.version.as_deref().unwrap_or("-"),
            e.who
        )?;
        if let Some(to) = e.reverts_to {
            write!(out, "  reverts to {}", to.short())?;
        }
        if let Some(reason) = &e.reason {
            write!(out, "  reason: {reason}")?;
        }
        writeln!(out)?;
    }
    if entries.is_empty() {
        eprintln!("{name} has never been published there");
    }
    Ok(ExitCode::SUCCESS)
}

//! Release engineering: `keygen`, `serve` (runs `treectl-server`), `push`,
//! `publish`, `revert` and `history`, against a server URL or a local
//! repository path.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use treectl_release::sign::SecretKey;
use treectl_store::refs::{self, RefName};
use treectl_store::{ObjectId, Repo};
use treectl_sysroot::upgrade::{commit_components, component_changes, ComponentChange};
use treectl_wire::{EventKind, HistoryEntry, PublishResponse};

use crate::cli::{ReleaseArgs, TargetArgs};
use crate::output::format_time;
use treectl_transport::http::is_url;
use treectl_transport::push::{
    open_target, PublishOptions, PublishTarget, PushPlan, RolloutAction,
};

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
pub(crate) fn open(url: &str, args: &TargetArgs) -> Result<Box<dyn PublishTarget>> {
    Ok(open_target(
        url,
        args.token_file.as_deref(),
        &args.sign_key,
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

/// The publish options the flags ask for.
pub fn options(force: bool, release: &ReleaseArgs) -> PublishOptions {
    PublishOptions {
        force,
        rollout: release.rollout,
        barrier: release.barrier,
    }
}

pub fn rollout(url: &str, name: &str, action: &str, args: &TargetArgs) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let action: RolloutAction = action.parse().map_err(anyhow::Error::msg)?;
    let target = open(url, args)?;
    let resp = target.rollout(&name, action)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
    } else {
        println!("rollout {name} {action} serial {}", resp.serial);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn push(
    src: &Repo,
    url: &str,
    name: &str,
    opts: &PublishOptions,
    args: &TargetArgs,
) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let plan = PushPlan::new(src, &name)?;
    let target = open(url, args)?;
    let out = plan.send(src, target.as_ref(), opts)?;
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
    opts: &PublishOptions,
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
    print_outcome(&target.publish(&name, &commit, opts)?, args.json)?;
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

/// `--contains NAME[=VERSION]`: a component, at any or one version.
pub struct Contains {
    name: String,
    version: Option<String>,
}

impl Contains {
    pub fn parse(text: &str) -> Result<Contains> {
        let (name, version) = match text.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (text, None),
        };
        if name.trim().is_empty() || version.is_some_and(|v| v.trim().is_empty()) {
            bail!("--contains wants NAME or NAME=VERSION, not {text:?}");
        }
        Ok(Contains {
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }

    /// Whether a commit with these components (name -> version) ships it.
    pub fn matches(&self, components: &BTreeMap<String, String>) -> bool {
        match (components.get(&self.name), &self.version) {
            (Some(v), Some(want)) => v == want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Whether an event put a (possibly new) commit on its ref.
fn releases(e: &HistoryEntry) -> bool {
    e.to_ref.is_none()
        && matches!(
            e.kind,
            EventKind::Publish | EventKind::Revert | EventKind::Promote
        )
}

pub fn history(
    url: &str,
    name: &str,
    components: bool,
    contains: Option<&str>,
    args: &TargetArgs,
) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let contains = contains.map(Contains::parse).transpose()?;
    let target = open(url, args)?;
    let mut entries = target.history(&name)?;
    // Components come from commit objects alone (never file content),
    // each commit read once.
    let mut cache: HashMap<ObjectId, BTreeMap<String, String>> = HashMap::new();
    let mut components_of = |id: &ObjectId| -> Result<BTreeMap<String, String>> {
        if let Some(c) = cache.get(id) {
            return Ok(c.clone());
        }
        let commit = target
            .read_commit(id)
            .with_context(|| format!("reading the components of {id}"))?;
        let c = commit_components(&commit);
        cache.insert(*id, c.clone());
        Ok(c)
    };
    if let Some(want) = &contains {
        let mut kept = Vec::new();
        for e in entries {
            if releases(&e) && want.matches(&components_of(&e.commit)?) {
                kept.push(e);
            }
        }
        entries = kept;
    }
    let mut changes: Vec<Option<Vec<ComponentChange>>> = Vec::new();
    for e in &entries {
        changes.push(if components && releases(e) {
            let new = components_of(&e.commit)?;
            let old = match &e.previous {
                Some(p) => components_of(p)?,
                None => BTreeMap::new(),
            };
            Some(component_changes(&old, &new))
        } else {
            None
        });
    }
    if args.json {
        let mut list = Vec::new();
        for (e, c) in entries.iter().zip(&changes) {
            let mut v = serde_json::to_value(e)?;
            if let Some(c) = c {
                v["components"] = serde_json::to_value(c)?;
            }
            list.push(v);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ref": name.as_str(),
                "entries": list,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (e, c) in entries.iter().zip(&changes) {
        write!(
            out,
            "{:>5}  {}  {:<7}  {}  {:<12}  {}",
            e.serial,
            format_time(e.time),
            e.kind.as_str(),
            e.commit.short(),
            e.version.as_deref().unwrap_or("-"),
            e.who
        )?;
        if let Some(from) = &e.from_ref {
            write!(out, "  from {from}")?;
        }
        if let Some(to) = &e.to_ref {
            write!(out, "  to {to}")?;
        }
        if let Some(to) = e.reverts_to {
            write!(out, "  reverts to {}", to.short())?;
        }
        if let Some(reason) = &e.reason {
            write!(out, "  reason: {reason}")?;
        }
        writeln!(out)?;
        for change in c.iter().flatten() {
            match (&change.from, &change.to) {
                (None, Some(v)) => writeln!(out, "         added {} {v}", change.name)?,
                (Some(v), None) => writeln!(out, "         removed {} {v}", change.name)?,
                (Some(a), Some(b)) => writeln!(out, "         {} {a} -> {b}", change.name)?,
                (None, None) => {}
            }
        }
    }
    if entries.is_empty() {
        match &contains {
            Some(_) => eprintln!("no release of {name} there ships that"),
            None => eprintln!("{name} has never been published there"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn promote(
    url: &str,
    from: &str,
    to: &str,
    force: bool,
    args: &TargetArgs,
) -> Result<ExitCode> {
    let from = RefName::new(from)?;
    let to = RefName::new(to)?;
    if from == to {
        bail!("promote needs two different refs");
    }
    let target = open(url, args)?;
    print_outcome(&target.promote(&from, &to, force)?, args.json)?;
    Ok(ExitCode::SUCCESS)
}

//! Repository commands: init, commit, log, show, ls, cat, diff, refs,
//! reset, rev-parse, checkout, export, fsck, prune.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;
use treectl_store::checkout::{checkout as do_checkout, resolve_path, CheckoutOptions, Resolved};
use treectl_store::commit::{commit_dir, default_timestamp, CommitOptions};
use treectl_store::diff::diff_trees;
use treectl_store::export::{
    export as export_to, export_to_file, ArchiveFormat, Compression, ExportOptions,
    EXPORT_FORMAT_VERSION,
};
use treectl_store::fsck::is_partial;
use treectl_store::object::{EntryKind, FileKind};
use treectl_store::prune::{prune as do_prune, PruneOptions};
use treectl_store::refs::{self, RefName};
use treectl_store::store::{RefUpdate, Transaction};
use treectl_store::{ObjectId, Repo, RepoMode};
use treectl_sysroot::upgrade::commit_components;

use super::publish::Contains;
use crate::cli::CommitArgs;
use crate::output::{format_time, mode_string, parse_time};
use crate::EXIT_FINDINGS;

fn ok() -> Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

pub fn init(path: &Path, mode: RepoMode) -> Result<ExitCode> {
    Repo::init(path, mode)?;
    println!("initialized {mode} repository at {}", path.display());
    ok()
}

pub fn commit(repo: &Repo, args: CommitArgs) -> Result<ExitCode> {
    let timestamp = match &args.timestamp {
        Some(t) => Some(parse_time(t).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let mut metadata = BTreeMap::new();
    for kv in &args.metadata {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--metadata {kv:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            bail!("--metadata {kv:?} has an empty key");
        }
        metadata.insert(k.to_owned(), v.to_owned());
    }
    let common = super::import::Common {
        subject: args.subject.clone(),
        body: args.body.clone(),
        timestamp,
        metadata,
        json: args.json,
    };
    if !args.deb.is_empty() {
        return super::import::deb(repo, &args, common);
    }
    let ref_name = RefName::new(
        args.ref_name
            .as_deref()
            .context("--ref REF is required with --tree, --tar and --git")?,
    )?;
    if args.tar.is_some() {
        return super::import::tar(repo, &args, &ref_name, common);
    }
    if args.git.is_some() {
        return super::import::git(repo, &args, &ref_name, common);
    }
    let tree = args
        .tree
        .clone()
        .context("one of --tree, --tar, --deb or --git is required")?;
    let timestamp = timestamp.unwrap_or_else(default_timestamp);
    let metadata = common.metadata;
    let meta = std::fs::symlink_metadata(&tree).with_context(|| {
        format!(
            "cannot commit {}: it does not exist or cannot be read",
            tree.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("cannot commit {}: not a directory", tree.display());
    }
    let opts = CommitOptions {
        subject: args.subject,
        body: args.body,
        timestamp,
        metadata,
    };
    let (id, stats) = commit_dir(repo, &tree, &ref_name, &opts)
        .with_context(|| format!("committing {}", tree.display()))?;
    if args.json {
        print_json(&json!({ "commit": id, "ref": ref_name.as_str(), "stats": stats }))?;
    } else {
        println!("{id}");
    }
    ok()
}

fn resolve(repo: &Repo, rev: &str) -> Result<ObjectId> {
    Ok(refs::rev_parse(repo, rev)?)
}

pub fn rev_parse(repo: &Repo, rev: &str) -> Result<ExitCode> {
    println!("{}", resolve(repo, rev)?);
    ok()
}

fn commit_json(repo: &Repo, id: &ObjectId, c: &treectl_store::object::Commit) -> serde_json::Value {
    json!({
        "commit": id,
        "parent": c.parent,
        "root_tree": c.root_tree,
        "root_dirmeta": c.root_meta,
        "timestamp": c.timestamp,
        "date": format_time(c.timestamp),
        "subject": c.subject,
        "body": c.body,
        "metadata": c.metadata,
        "partial": is_partial(repo, id),
    })
}

pub fn log(
    repo: &Repo,
    rev: &str,
    max: Option<usize>,
    contains: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let contains = contains.map(Contains::parse).transpose()?;
    let mut id = resolve(repo, rev)?;
    let first = id;
    let mut entries = Vec::new();
    let mut truncated = None;
    let limit = max.unwrap_or(usize::MAX);
    while entries.len() < limit {
        let commit = match repo.read_commit(&id) {
            Ok(c) => c,
            Err(treectl_store::Error::NotFound { .. }) if id != first => {
                truncated = Some(id);
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let parent = commit.parent;
        if contains
            .as_ref()
            .is_none_or(|want| want.matches(&commit_components(&commit)))
        {
            entries.push((id, commit));
        }
        match parent {
            Some(p) => id = p,
            None => break,
        }
    }
    if json {
        let list: Vec<_> = entries
            .iter()
            .map(|(id, c)| commit_json(repo, id, c))
            .collect();
        return print_json(&list).map(|()| ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for (id, c) in &entries {
        writeln!(out, "commit {id}")?;
        writeln!(out, "Date:    {}", format_time(c.timestamp))?;
        if let Some(v) = c.version() {
            writeln!(out, "Version: {v}")?;
        }
        writeln!(out)?;
        for line in c.subject.lines().chain(c.body.lines()) {
            writeln!(out, "    {line}")?;
        }
        writeln!(out)?;
    }
    if let Some(missing) = truncated {
        writeln!(
            out,
            "(history truncated: parent {missing} is not in this repository)"
        )?;
    }
    ok()
}

/// A file whose mode has the setuid or setgid bit.
#[derive(serde::Serialize)]
struct SpecialFile {
    path: String,
    mode: String,
    uid: u32,
    gid: u32,
}

/// Every setuid or setgid file below a tree, by path.
fn setuid_setgid_files(
    repo: &Repo,
    tree: &ObjectId,
    prefix: &str,
    out: &mut Vec<SpecialFile>,
) -> Result<()> {
    for e in &repo.read_tree(tree)?.entries {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
        match e.kind {
            EntryKind::Regular { file } => {
                let h = repo.read_file_header(&file)?;
                if h.mode & 0o6000 != 0 {
                    out.push(SpecialFile {
                        path,
                        mode: format!("{:o}", h.mode),
                        uid: h.uid,
                        gid: h.gid,
                    });
                }
            }
            EntryKind::Symlink { .. } => {}
            EntryKind::Dir { tree, .. } => setuid_setgid_files(repo, &tree, &path, out)?,
        }
    }
    Ok(())
}

pub fn show(repo: &Repo, rev: &str, json: bool) -> Result<ExitCode> {
    let id = resolve(repo, rev)?;
    let c = repo.read_commit(&id)?;
    let mut special = Vec::new();
    // A partial commit may lack some of its tree; list what is there.
    if !is_partial(repo, &id) {
        setuid_setgid_files(repo, &c.root_tree, "", &mut special)
            .with_context(|| format!("listing setuid/setgid files of {id}"))?;
    }
    if json {
        let mut v = commit_json(repo, &id, &c);
        v["setuid_setgid"] = serde_json::to_value(&special)?;
        return print_json(&v).map(|()| ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "commit  {id}")?;
    match c.parent {
        Some(p) => writeln!(out, "Parent:  {p}")?,
        None => writeln!(out, "Parent:  (none)")?,
    }
    writeln!(out, "Tree:    {} (dirmeta {})", c.root_tree, c.root_meta)?;
    writeln!(out, "Date:    {}", format_time(c.timestamp))?;
    if is_partial(repo, &id) {
        writeln!(
            out,
            "Partial: yes (some objects are not in this repository)"
        )?;
    }
    if !c.metadata.is_empty() {
        writeln!(out, "Metadata:")?;
        for (k, v) in &c.metadata {
            let mut lines = v.lines();
            writeln!(out, "  {k}: {}", lines.next().unwrap_or(""))?;
            for more in lines {
                writeln!(out, "    {more}")?;
            }
        }
    }
    if !special.is_empty() {
        writeln!(out, "Setuid/setgid files:")?;
        for f in &special {
            let mode = u32::from_str_radix(&f.mode, 8).expect("formatted as octal");
            writeln!(
                out,
                "  {} {:>5} {:>5} {}",
                mode_string(mode),
                f.uid,
                f.gid,
                f.path
            )?;
        }
    }
    writeln!(out)?;
    for line in c.subject.lines().chain(c.body.lines()) {
        writeln!(out, "    {line}")?;
    }
    ok()
}

#[derive(serde::Serialize)]
struct LsEntry {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    id: ObjectId,
}

fn ls_file(repo: &Repo, path: String, id: &ObjectId) -> Result<LsEntry> {
    let h = repo.read_file_header(id)?;
    let symlink = h.kind() == FileKind::Symlink;
    Ok(LsEntry {
        path,
        kind: if symlink { "symlink" } else { "file" },
        mode: format!("{:o}", h.mode),
        uid: h.uid,
        gid: h.gid,
        size: h.size,
        target: symlink.then(|| String::from_utf8_lossy(&h.target).into_owned()),
        id: *id,
    })
}

fn ls_dir(
    repo: &Repo,
    path: &str,
    tree: &ObjectId,
    meta: &ObjectId,
    recursive: bool,
    descend: bool,
    out: &mut Vec<LsEntry>,
) -> Result<()> {
    let m = repo.read_dirmeta(meta)?;
    out.push(LsEntry {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.to_owned()
        },
        kind: "directory",
        mode: format!("{:o}", m.mode),
        uid: m.uid,
        gid: m.gid,
        size: 0,
        target: None,
        id: *tree,
    });
    if !descend {
        return Ok(());
    }
    let t = repo.read_tree(tree)?;
    for e in &t.entries {
        let child = format!("{path}/{}", String::from_utf8_lossy(&e.name));
        match e.kind {
            EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                out.push(ls_file(repo, child, &file)?)
            }
            EntryKind::Dir { tree, meta } => {
                ls_dir(repo, &child, &tree, &meta, recursive, recursive, out)?;
            }
        }
    }
    Ok(())
}

pub fn ls(repo: &Repo, rev: &str, path: &str, recursive: bool, json: bool) -> Result<ExitCode> {
    let id = resolve(repo, rev)?;
    let mut entries = Vec::new();
    let norm = normalize(path);
    match resolve_path(repo, &id, path).with_context(|| format!("listing {path} in {rev}"))? {
        Resolved::Dir { tree, meta } => {
            ls_dir(repo, &norm, &tree, &meta, recursive, true, &mut entries)?
        }
        Resolved::File { id: fid, .. } => entries.push(ls_file(repo, norm, &fid)?),
    }
    if json {
        return print_json(&entries).map(|()| ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for e in &entries {
        let mode: u32 = u32::from_str_radix(&e.mode, 8).expect("formatted as octal");
        write!(
            out,
            "{} {:>5} {:>5} {:>10} {}",
            mode_string(mode),
            e.uid,
            e.gid,
            e.size,
            e.path
        )?;
        if let Some(t) = &e.target {
            write!(out, " -> {t}")?;
        }
        writeln!(out)?;
    }
    ok()
}

/// `a/b/` and `/a//b` become `/a/b`; the root is the empty string.
fn normalize(path: &str) -> String {
    treectl_store::commit::split_tree_path(path)
        .iter()
        .map(|n| format!("/{}", String::from_utf8_lossy(n)))
        .collect()
}

pub fn cat(repo: &Repo, rev: &str, path: &str) -> Result<ExitCode> {
    let id = resolve(repo, rev)?;
    match resolve_path(repo, &id, path)? {
        Resolved::Dir { .. } => {
            bail!("{path} is a directory in {rev}; use `treectl ls {rev} {path}`")
        }
        Resolved::File {
            symlink: true,
            id: fid,
        } => {
            let h = repo.read_file_header(&fid)?;
            bail!(
                "{path} is a symlink to {} in {rev}; cat its target instead",
                String::from_utf8_lossy(&h.target)
            )
        }
        Resolved::File { id: fid, .. } => {
            let (_, content) = repo.read_file(&fid)?;
            std::io::stdout().lock().write_all(&content)?;
        }
    }
    ok()
}

pub fn diff(repo: &Repo, from: &str, to: &str, json: bool) -> Result<ExitCode> {
    let a = repo.read_commit(&resolve(repo, from)?)?;
    let b = repo.read_commit(&resolve(repo, to)?)?;
    let changes = diff_trees(repo, (a.root_tree, a.root_meta), (b.root_tree, b.root_meta))?;
    if json {
        return print_json(&changes).map(|()| ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for c in &changes {
        writeln!(out, "{} {}", c.change.letter(), c.path)?;
    }
    ok()
}

pub fn refs(repo: &Repo, delete: Option<&str>, json: bool) -> Result<ExitCode> {
    if let Some(name) = delete {
        let name = RefName::new(name)?;
        refs::read_ref(repo, &name)?;
        let txn = Transaction::begin(repo)?;
        txn.commit(&[RefUpdate { name, target: None }])?;
        return ok();
    }
    let list = refs::list_refs(repo)?;
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|(n, id)| json!({"ref": n.as_str(), "commit": id}))
            .collect();
        return print_json(&v).map(|()| ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for (name, id) in &list {
        writeln!(out, "{id} {name}")?;
    }
    ok()
}

pub fn reset(repo: &Repo, name: &str, rev: &str) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let id = resolve(repo, rev)?;
    let txn = Transaction::begin(repo)?;
    txn.commit(&[RefUpdate {
        name: name.clone(),
        target: Some(id),
    }])?;
    println!("{name} -> {id}");
    ok()
}

pub fn checkout(
    repo: &Repo,
    rev: &str,
    dest: &Path,
    copy: bool,
    subpath: Option<String>,
    union: bool,
) -> Result<ExitCode> {
    let id = resolve(repo, rev)?;
    if !union && dest.symlink_metadata().is_ok() {
        bail!(
            "destination {} already exists; choose a new path or pass --union",
            dest.display()
        );
    }
    let opts = CheckoutOptions {
        copy,
        subpath,
        union,
        ..Default::default()
    };
    do_checkout(repo, &id, dest, &opts)
        .with_context(|| format!("checking out {rev} into {}", dest.display()))?;
    ok()
}

pub fn export(
    repo: &Repo,
    rev: &str,
    format: ArchiveFormat,
    compression: Compression,
    output: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let id = resolve(repo, rev)?;
    let opts = ExportOptions {
        format,
        compression,
    };
    let Some(dest) = output else {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            bail!(
                "refusing to write a {format} archive to a terminal; redirect standard output or pass -o FILE"
            );
        }
        // The file descriptor itself: `Stdout` would flush at every newline.
        let out = std::fs::File::from(stdout.as_fd().try_clone_to_owned()?);
        export_to(repo, &id, &opts, out).with_context(|| format!("exporting {rev}"))?;
        return ok();
    };
    let stats =
        export_to_file(repo, &id, &opts, &dest).with_context(|| format!("exporting {rev}"))?;
    if json {
        print_json(&json!({
            "commit": id,
            "format": format,
            "compression": compression,
            "export_format": EXPORT_FORMAT_VERSION,
            "output": dest,
            "stats": stats,
        }))?;
    }
    ok()
}

pub fn fsck(repo: &Repo, repair: bool, json: bool) -> Result<ExitCode> {
    let report = treectl_store::fsck::fsck(repo, repair)?;
    if json {
        print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        for f in &report.findings {
            match (&f.object, &f.object_kind) {
                (Some(id), Some(kind)) => {
                    writeln!(out, "{}: {kind} {id}: {}", f.kind.name(), f.detail)?
                }
                _ => writeln!(out, "{}: {}", f.kind.name(), f.detail)?,
            }
        }
        for r in &report.repaired {
            writeln!(out, "repaired: {r}")?;
        }
        for p in &report.partial_commits {
            writeln!(out, "partial commit: {p}")?;
        }
        writeln!(
            out,
            "checked {} objects, {} commits, {} refs: {}",
            report.objects_checked,
            report.commits,
            report.refs,
            if report.is_clean() {
                "no problems".to_string()
            } else {
                match report.findings.len() {
                    1 => "1 problem".to_string(),
                    n => format!("{n} problems"),
                }
            }
        )?;
    }
    if report.is_clean() {
        ok()
    } else {
        Ok(ExitCode::from(EXIT_FINDINGS))
    }
}

pub fn prune(
    repo: &Repo,
    keep_younger_than: Option<Duration>,
    depth: Option<u64>,
    dry_run: bool,
    json: bool,
) -> Result<ExitCode> {
    let opts = PruneOptions {
        keep_younger_than,
        depth,
        dry_run,
    };
    let report = do_prune(repo, &opts)?;
    if json {
        return print_json(&report).map(|()| ExitCode::SUCCESS);
    }
    let deltas = match report.deltas_deleted {
        0 => String::new(),
        1 => " and 1 static delta".to_owned(),
        n => format!(" and {n} static deltas"),
    };
    println!(
        "{} {} of {} objects ({} commits){deltas}, {} bytes",
        if dry_run { "would delete" } else { "deleted" },
        report.objects_deleted,
        report.objects_total,
        report.commits_deleted,
        report.bytes_freed
    );
    ok()
}

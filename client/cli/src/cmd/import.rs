//! `treectl commit --tar | --deb | --git`: importers, each into its own tree.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use treectl_import::deb::{import_debs, DebCommitOptions, DebRequest};
use treectl_import::git::{import_git, GitCommitOptions};
use treectl_import::tar::import_tar;
use treectl_import::{ImportOptions, ImportStats, Limits};
use treectl_store::commit::CommitOptions;
use treectl_store::refs::RefName;
use treectl_store::Repo;

use crate::cli::CommitArgs;

/// What every importer needs from the command line.
pub struct Common {
    pub subject: String,
    pub body: String,
    pub timestamp: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub json: bool,
}

fn options(args: &CommitArgs) -> ImportOptions {
    ImportOptions {
        limits: Limits {
            max_entry_size: args.max_entry_size,
            max_total_size: args.max_total_size,
            max_ratio: args.max_ratio,
            max_entries: args.max_entries,
        },
        allow_devices: args.allow_devices,
    }
}

/// Warnings and skipped entries go to stderr, one line each.
fn report_findings(what: &str, stats: &ImportStats) {
    let mut err = std::io::stderr().lock();
    for w in &stats.warnings {
        let _ = writeln!(err, "warning: {what}: {w}");
    }
    for s in &stats.skipped {
        let _ = writeln!(err, "warning: {what}: skipped {s} (--allow-devices)");
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

pub fn tar(repo: &Repo, args: &CommitArgs, ref_name: &RefName, common: Common) -> Result<ExitCode> {
    let path = args.tar.as_deref().context("--tar FILE is required")?;
    let commit = CommitOptions {
        subject: common.subject,
        body: common.body,
        timestamp: common
            .timestamp
            .unwrap_or_else(treectl_store::commit::default_timestamp),
        metadata: common.metadata,
    };
    let report = import_tar(repo, path, ref_name, &commit, &options(args))
        .context("nothing was imported")?;
    report_findings(&path.display().to_string(), &report.stats);
    if common.json {
        print_json(&report)?;
    } else {
        println!("{}", report.commit);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn git(repo: &Repo, args: &CommitArgs, ref_name: &RefName, common: Common) -> Result<ExitCode> {
    let path = args.git.as_deref().context("--git REPO is required")?;
    let rev = args.rev.as_deref().context("--git needs --rev REV")?;
    let opts = GitCommitOptions {
        subject: common.subject,
        body: common.body,
        timestamp: common.timestamp,
        metadata: common.metadata,
    };
    let report = import_git(repo, path, rev, ref_name, &opts).context("nothing was imported")?;
    if common.json {
        print_json(&report)?;
    } else {
        println!("{}", report.commit);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn deb(repo: &Repo, args: &CommitArgs, common: Common) -> Result<ExitCode> {
    let ref_name = match &args.ref_name {
        Some(r) if args.deb.len() > 1 => anyhow::bail!(
            "--ref {r} names one ref but {} packages were given; import them one at a time or drop --ref to use deb/<Package>/<Version>/<Architecture>",
            args.deb.len()
        ),
        Some(r) => Some(RefName::new(r)?),
        None => None,
    };
    let requests: Vec<DebRequest> = args
        .deb
        .iter()
        .map(|p| DebRequest {
            path: p.clone(),
            ref_name: ref_name.clone(),
        })
        .collect();
    let commit = DebCommitOptions {
        subject: common.subject,
        body: common.body,
        timestamp: common.timestamp,
        metadata: common.metadata,
    };
    let reports = import_debs(repo, &requests, &commit, &options(args))
        .context("nothing was imported (all packages given are imported together, or none)")?;
    for r in &reports {
        report_findings(&r.path.display().to_string(), &r.import.stats);
        if r.import.existing {
            eprintln!(
                "{}: already imported as {} (commit {})",
                r.path.display(),
                r.import.ref_name,
                r.import.commit
            );
        }
    }
    if common.json {
        print_json(&reports)?;
    } else {
        let mut out = std::io::stdout().lock();
        for r in &reports {
            writeln!(out, "{}", r.import.commit)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! Command implementations, one module per area.

mod delta;
mod deploy;
mod import;
mod key;
pub mod lock;
mod publish;
pub mod pull;
mod repo;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use treectl_store::Repo;

use crate::cli::{Cli, Command, DeltaCommand, KeyCommand};

pub fn run(cli: Cli) -> Result<ExitCode> {
    let repo_path = cli.repo;
    match cli.command {
        Command::Init { mode } => repo::init(&require_path(repo_path)?, mode),
        Command::Commit(args) => repo::commit(&open(repo_path)?, *args),
        Command::Log {
            rev,
            max_count,
            contains,
            json,
        } => repo::log(
            &open(repo_path)?,
            &rev,
            max_count,
            contains.as_deref(),
            json,
        ),
        Command::Show {
            rev,
            components: true,
            json,
        } => lock::show_components(&open(repo_path)?, &rev, json),
        Command::Show { rev, json, .. } => repo::show(&open(repo_path)?, &rev, json),
        Command::Ls {
            rev,
            path,
            recursive,
            json,
        } => repo::ls(&open(repo_path)?, &rev, &path, recursive, json),
        Command::Cat { rev, path } => repo::cat(&open(repo_path)?, &rev, &path),
        Command::Diff {
            from: url,
            to: from,
            third: Some(to),
            components: true,
            json,
        } => lock::diff_components_at(&url, &from, &to, json),
        Command::Diff {
            from,
            to,
            components: true,
            json,
            ..
        } => lock::diff_components(&open(repo_path)?, &from, &to, json),
        Command::Diff { from, to, json, .. } => repo::diff(&open(repo_path)?, &from, &to, json),
        Command::Refs { delete, json } => repo::refs(&open(repo_path)?, delete.as_deref(), json),
        Command::Reset { r#ref, rev } => repo::reset(&open(repo_path)?, &r#ref, &rev),
        Command::RevParse { rev } => repo::rev_parse(&open(repo_path)?, &rev),
        Command::Lock(cmd) => lock::run(repo_path, cmd),
        Command::Compose {
            lockfile,
            r#ref,
            json,
        } => lock::compose(&open(repo_path)?, &lockfile, &r#ref, json),
        Command::Checkout {
            rev,
            dest,
            copy,
            subpath,
            union,
        } => repo::checkout(&open(repo_path)?, &rev, &dest, copy, subpath, union),
        Command::Export {
            rev,
            format,
            output,
            compress,
            json,
        } => repo::export(&open(repo_path)?, &rev, format, compress, output, json),
        Command::Fsck { repair, json } => repo::fsck(&open(repo_path)?, repair, json),
        Command::Prune {
            keep_younger_than,
            depth,
            dry_run,
            json,
        } => repo::prune(&open(repo_path)?, keep_younger_than, depth, dry_run, json),
        Command::Keygen { out } => publish::keygen(&out),
        Command::Key(KeyCommand::List {
            target,
            remote,
            token_file,
            json,
        }) => match (target, remote) {
            (_, Some(name)) => key::list_remote(&open(repo_path)?, &name, json),
            (Some(target), None) => key::list(&target, token_file.as_deref(), json),
            (None, None) => {
                anyhow::bail!("name a TARGET (URL or repository path) or --remote NAME")
            }
        },
        Command::Key(KeyCommand::Rotate {
            url,
            new_key,
            threshold,
            target,
        }) => key::rotate(&url, &new_key, threshold, &target),
        Command::Delta(DeltaCommand::Generate {
            from,
            to,
            from_scratch,
            json,
        }) => delta::generate(&open(repo_path)?, from, to, from_scratch, json),
        Command::Delta(DeltaCommand::List { json }) => delta::list(&open(repo_path)?, json),
        Command::Serve { args } => publish::serve(repo_path, args),
        Command::Push {
            url,
            r#ref,
            force,
            release,
            target,
        } => publish::push(
            &open(repo_path)?,
            &url,
            &r#ref,
            &publish::options(force, &release),
            &target,
        ),
        Command::Publish {
            url,
            r#ref,
            rev,
            force,
            release,
            target,
        } => publish::publish(
            repo_path,
            &url,
            &r#ref,
            &rev,
            &publish::options(force, &release),
            &target,
        ),
        Command::Rollout {
            url,
            r#ref,
            action,
            target,
        } => publish::rollout(&url, &r#ref, &action, &target),
        Command::Hold {
            url,
            r#ref,
            reason,
            target,
        } => publish::hold(&url, &r#ref, &reason, &target),
        Command::Release { url, r#ref, target } => publish::release(&url, &r#ref, &target),
        Command::Revert {
            url,
            r#ref,
            to,
            reason,
            target,
        } => publish::revert(&url, &r#ref, to.as_deref(), &reason, &target),
        Command::History {
            url,
            r#ref,
            components,
            contains,
            target,
        } => publish::history(&url, &r#ref, components, contains.as_deref(), &target),
        Command::Promote {
            url,
            from,
            to,
            force,
            target,
        } => publish::promote(&url, &from, &to, force, &target),
        Command::Remote(cmd) => pull::remote(&open(repo_path)?, cmd),
        Command::Pull(args) => pull::pull(&open(repo_path)?, args),
        Command::Sysroot(cmd) => deploy::run(cmd),
    }
}

fn require_path(path: Option<PathBuf>) -> Result<PathBuf> {
    path.context("no repository given: pass --repo PATH or set TREECTL_REPO")
}

fn open(path: Option<PathBuf>) -> Result<Repo> {
    let path = require_path(path)?;
    Ok(Repo::open(&path)?)
}

//! `treectl remote add|list|remove` and `treectl pull NAME:REF`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use treectl_release::remote::{self, Remote};
use treectl_release::sign::PublicKey;
use treectl_store::Repo;

use crate::cli::{PullArgs, RemoteCommand, TransferArgs};
use crate::progress::{Progress, ProgressMode};
use treectl_transport::progress::Progress as _;
use treectl_transport::pull::{parse_target, pull as pull_ref, PullOptions};
use treectl_transport::read_token;

pub fn remote(repo: &Repo, cmd: RemoteCommand) -> Result<ExitCode> {
    match cmd {
        RemoteCommand::Add {
            name,
            url,
            trusted_key,
            mirror,
        } => {
            let keys = trusted_key
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            remote::add_remote(
                repo,
                &Remote {
                    name: name.clone(),
                    url,
                    mirrors: mirror,
                    trusted_keys: keys,
                },
            )?;
            if trusted_key.is_empty() {
                eprintln!(
                    "warning: remote {name} has no trusted key: pulls check integrity, not who published"
                );
            }
        }
        RemoteCommand::List { json } => {
            let remotes = remote::list_remotes(repo)?;
            if json {
                let list: Vec<serde_json::Value> = remotes
                    .iter()
                    .map(|r| {
                        let state = remote::TrustState::load(repo, &r.name).ok();
                        serde_json::json!({
                            "name": r.name,
                            "url": r.url,
                            "mirrors": r.mirrors,
                            "trusted_keys": r.trusted_keys.iter().map(|k| k.key_id()).collect::<Vec<_>>(),
                            "serial": state.map(|s| s.serial).unwrap_or(0),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for r in &remotes {
                    let keys: Vec<String> = r.trusted_keys.iter().map(|k| k.key_id()).collect();
                    let mut line = format!("{}\t{}", r.name, r.url);
                    for m in &r.mirrors {
                        line.push_str(&format!(" mirror={m}"));
                    }
                    if keys.is_empty() {
                        line.push_str(" (no trusted key)");
                    } else {
                        line.push_str(&format!(" keys={}", keys.join(",")));
                    }
                    println!("{line}");
                }
            }
        }
        RemoteCommand::Remove { name } => remote::remove_remote(repo, &name)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The pull settings the transfer flags ask for.
pub fn pull_options(args: &TransferArgs) -> Result<PullOptions> {
    Ok(PullOptions {
        jobs: args.jobs.max(1),
        timeout: args.timeout,
        connect_timeout: args.connect_timeout,
        low_speed_limit: args.low_speed_limit,
        low_speed_time: args.low_speed_time,
        retries: args.retries,
        retry_delay: args.retry_delay,
        max_index_bytes: args.max_index_size,
        max_object_bytes: args.max_object_size,
        commit_every: args.commit_every.max(1),
        no_batch: args.no_batch,
        no_packs: args.no_packs,
        token: read_token(args.token_file.as_deref())?,
        barrier: None,
        no_delta: args.no_delta,
    })
}

pub fn pull(repo: &Repo, args: PullArgs) -> Result<ExitCode> {
    let (name, ref_name) = parse_target(&args.target)?;
    let opts = pull_options(&args.transfer)?;
    let progress = Progress::start(ProgressMode::pick(args.json), format!("{name}:{ref_name}"));
    let outcome = pull_ref(repo, &name, &ref_name, &opts, &progress);
    progress.finish();
    let outcome = outcome?;
    for f in &outcome.fallbacks {
        eprintln!("warning: {f}");
    }
    if let Some(d) = &outcome.delta {
        if let Some(e) = &d.error {
            eprintln!(
                "warning: static delta from {} not used: {e}; pulled by objects",
                d.from.short()
            );
        }
    }
    if args.json {
        let mut v = serde_json::to_value(&outcome).context("encoding the result")?;
        v["event"] = "done".into();
        println!("{v}");
    } else {
        println!(
            "{name}:{ref_name} {} (serial {}{}): {} objects, {} bytes fetched in {:.2}s",
            outcome.commit,
            outcome.serial,
            outcome
                .version
                .as_deref()
                .map(|v| format!(", version {v}"))
                .unwrap_or_default(),
            outcome.objects_fetched,
            outcome.bytes_fetched,
            outcome.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

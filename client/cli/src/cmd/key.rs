//! `treectl key list|rotate`: the key sets that may sign a repository's
//! index, and in-band rotation to a new one (see `docs/security.md`, "Key
//! rotation").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use treectl_release::keyset::{KeyChain, KeySet, KEYS_FILE};
use treectl_release::remote::{get_remote, TrustState};
use treectl_release::sign::{PublicKey, SecretKey, PUBLIC_KEY_TAG, SECRET_KEY_TAG};
use treectl_release::summary::{SignedIndex, INDEX_FILE};
use treectl_store::Repo;
use treectl_transport::http::is_url;
use treectl_transport::push::open_target;

use crate::cli::TargetArgs;

fn set_json(set: &KeySet) -> serde_json::Value {
    json!({
        "version": set.version,
        "threshold": set.threshold,
        "keys": set.keys,
        "key_ids": set.key_ids(),
    })
}

/// `treectl key list TARGET`: the chain of key sets and who signed the
/// index (the key ids its signatures name; `pull` verifies them).
pub fn list(target: &str, token_file: Option<&Path>, json: bool) -> Result<ExitCode> {
    let t = open_target(target, token_file, &[])?;
    let sets = match t.read_public_file(KEYS_FILE)? {
        Some(bytes) => KeyChain::parse(&bytes)
            .and_then(|c| c.sets_unverified())
            .with_context(|| format!("reading {KEYS_FILE} of {target}"))?,
        None => Vec::new(),
    };
    let index = match t.read_public_file(INDEX_FILE)? {
        Some(bytes) => Some(
            SignedIndex::parse(&bytes)
                .with_context(|| format!("reading {INDEX_FILE} of {target}"))?,
        ),
        None => None,
    };
    let signed_by: Vec<String> = index
        .as_ref()
        .map(|i| i.signatures.iter().map(|s| s.key_id.clone()).collect())
        .unwrap_or_default();
    let serial = index
        .as_ref()
        .map(|i| i.index_unverified().map(|x| x.serial))
        .transpose()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "sets": sets.iter().map(set_json).collect::<Vec<_>>(),
                "current": sets.last().map(|s| s.version),
                "index": serial.map(|serial| json!({ "serial": serial, "signed_by": signed_by })),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if sets.is_empty() {
        println!("no key rotation yet: the index is signed by the key clients were given");
    }
    for (i, s) in sets.iter().enumerate() {
        let current = if i + 1 == sets.len() {
            " (current)"
        } else {
            ""
        };
        println!(
            "key set {}{current}: threshold {}, keys {}",
            s.version,
            s.threshold,
            s.key_ids().join(", ")
        );
    }
    match serial {
        Some(serial) => println!("index serial {serial} signed by {}", signed_by.join(", ")),
        None => println!("nothing published"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `treectl key list --remote NAME`: what this client trusts.
pub fn list_remote(repo: &Repo, name: &str, json: bool) -> Result<ExitCode> {
    let remote = get_remote(repo, name)?;
    let state = TrustState::load(repo, name)?;
    let configured: Vec<String> = remote.trusted_keys.iter().map(|k| k.key_id()).collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "remote": name,
                "configured": configured,
                "key_set": state.key_set.as_ref().map(set_json),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("configured keys: {}", none_if_empty(&configured));
    match &state.key_set {
        Some(s) => println!(
            "follows key set {}: threshold {}, keys {}",
            s.version,
            s.threshold,
            s.key_ids().join(", ")
        ),
        None => println!("follows no key set yet: the configured keys sign"),
    }
    Ok(ExitCode::SUCCESS)
}

fn none_if_empty(ids: &[String]) -> String {
    if ids.is_empty() {
        "none (integrity only)".to_owned()
    } else {
        ids.join(", ")
    }
}

/// A key file of either kind: its public key, and the secret key when it
/// is a secret key file.
fn load_any_key(path: &Path) -> Result<(PublicKey, Option<SecretKey>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    match text.split_whitespace().next() {
        Some(SECRET_KEY_TAG) => {
            let k = SecretKey::load(path)?;
            Ok((k.public(), Some(k)))
        }
        Some(PUBLIC_KEY_TAG) => Ok((PublicKey::load(path)?, None)),
        _ => anyhow::bail!(
            "{} is not a treectl key file (it starts with neither {PUBLIC_KEY_TAG} nor {SECRET_KEY_TAG})",
            path.display()
        ),
    }
}

/// `treectl key rotate TARGET --new-key FILE…`.
pub fn rotate(
    url: &str,
    new_keys: &[PathBuf],
    threshold: u32,
    args: &TargetArgs,
) -> Result<ExitCode> {
    let mut public = Vec::new();
    let mut sign_keys = args.sign_key.clone();
    for path in new_keys {
        let (p, secret) = load_any_key(path)?;
        public.push(p);
        if secret.is_some() && !is_url(url) {
            sign_keys.push(path.clone());
        }
    }
    let target = open_target(url, args.token_file.as_deref(), &sign_keys)?;
    let resp = target.rotate_keys(&public, threshold)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
    } else {
        println!(
            "key set {}: threshold {}, keys {} (index serial {})",
            resp.version,
            resp.threshold,
            resp.key_ids.join(", "),
            resp.serial
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! Release engineering: `keygen`, `serve` (runs `treectl-server`), `push`,
//! `publish`, `revert` and `history`, against a server URL or a local
//! repository path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use treectl_repo::publish::{self, HistoryEntry, Publisher};
use treectl_repo::refs::{self, RefName};
use treectl_repo::sign::SecretKey;
use treectl_repo::store::Transaction;
use treectl_repo::summary::DEFAULT_VALIDITY_SECS;
use treectl_repo::wire::{
    self, HistoryResponse, MissingRequest, MissingResponse, ObjectRef, PublishRequest,
    PublishResponse, RevertRequest, UploadResponse,
};
use treectl_repo::{ObjectId, Repo};

use crate::cli::TargetArgs;
use crate::http::{is_url, HttpRemote};
use crate::output::format_time;

/// The server binary `treectl serve` runs.
const SERVER_BIN: &str = "treectl-server";
/// Objects per "which do you lack" request.
const MISSING_BATCH: usize = 20_000;
/// Upload packs are cut at about this many bytes.
const PACK_TARGET_BYTES: usize = 32 << 20;

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

fn read_token(target: &TargetArgs) -> Result<Option<String>> {
    if let Some(path) = &target.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let token = text.trim().to_owned();
        if token.is_empty() {
            bail!("the token file {} is empty", path.display());
        }
        return Ok(Some(token));
    }
    Ok(std::env::var("TREECTL_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty()))
}

/// Where pushes, publishes and reverts go.
enum Target {
    Http(HttpRemote),
    Local {
        repo: Box<Repo>,
        key: Option<SecretKey>,
        who: String,
    },
}

impl Target {
    fn open(url: &str, args: &TargetArgs) -> Result<Target> {
        if is_url(url) {
            if args.sign_key.is_some() {
                bail!("--sign-key is for local repository targets; a server signs with its own key (treectl serve --sign-key)");
            }
            return Ok(Target::Http(HttpRemote::new(url, read_token(args)?)?));
        }
        let repo = Repo::open(Path::new(url))
            .with_context(|| format!("opening the target repository {url}"))?;
        let key = args.sign_key.as_deref().map(SecretKey::load).transpose()?;
        let who = std::env::var("USER").unwrap_or_else(|_| "local".into());
        Ok(Target::Local {
            repo: Box::new(repo),
            key,
            who,
        })
    }

    fn publisher<'a>(repo: &'a Repo, key: &'a Option<SecretKey>) -> Publisher<'a> {
        Publisher {
            repo,
            key: key.as_ref(),
            validity_secs: DEFAULT_VALIDITY_SECS,
        }
    }

    fn missing(&self, objects: &[ObjectRef]) -> Result<Vec<ObjectRef>> {
        match self {
            Target::Http(h) => {
                let mut out = Vec::new();
                for chunk in objects.chunks(MISSING_BATCH) {
                    let resp: MissingResponse = h.post_json(
                        "/v1/objects/missing",
                        &MissingRequest {
                            objects: chunk.to_vec(),
                        },
                        "asking which objects the server lacks",
                    )?;
                    out.extend(resp.missing);
                }
                Ok(out)
            }
            Target::Local { repo, .. } => Ok(objects
                .iter()
                .filter(|o| !repo.has_object(&o.id, o.kind))
                .copied()
                .collect()),
        }
    }

    /// Sends `objects` (in order: children first) from `src`. Returns the
    /// number stored and the bytes sent.
    fn upload(&self, src: &Repo, objects: &[ObjectRef]) -> Result<(usize, u64)> {
        match self {
            Target::Http(h) => {
                let (mut stored, mut bytes) = (0, 0u64);
                let mut pack = Vec::new();
                let flush = |pack: &mut Vec<u8>, stored: &mut usize, bytes: &mut u64| {
                    if pack.is_empty() {
                        return Ok::<_, anyhow::Error>(());
                    }
                    wire::write_pack_end(pack).expect("writing to a Vec");
                    *bytes += pack.len() as u64;
                    let resp: UploadResponse =
                        h.post_pack("/v1/objects", std::mem::take(pack), "uploading objects")?;
                    *stored += resp.stored;
                    Ok(())
                };
                for o in objects {
                    if pack.is_empty() {
                        wire::write_pack_start(&mut pack).expect("writing to a Vec");
                    }
                    let data = src.read_wire_form(&o.id, o.kind)?;
                    wire::write_pack_record(&mut pack, o.kind, &o.id, &data)
                        .expect("writing to a Vec");
                    if pack.len() >= PACK_TARGET_BYTES {
                        flush(&mut pack, &mut stored, &mut bytes)?;
                    }
                }
                flush(&mut pack, &mut stored, &mut bytes)?;
                Ok((stored, bytes))
            }
            Target::Local { repo, .. } => {
                let txn = Transaction::begin(repo)?;
                let (mut stored, mut bytes) = (0, 0u64);
                for o in objects {
                    let data = src.read_wire_form(&o.id, o.kind)?;
                    bytes += data.len() as u64;
                    if txn.write_wire_form(&o.id, o.kind, &data)? {
                        stored += 1;
                    }
                }
                txn.commit(&[])?;
                Ok((stored, bytes))
            }
        }
    }

    fn publish(&self, name: &RefName, commit: &ObjectId) -> Result<PublishResponse> {
        match self {
            Target::Http(h) => h.post_json(
                "/v1/publish",
                &PublishRequest {
                    ref_name: name.to_string(),
                    commit: *commit,
                },
                &format!("publishing {name}"),
            ),
            Target::Local { repo, key, who } => {
                let out = Target::publisher(repo, key).publish(name, commit, who)?;
                Ok(PublishResponse::from(&out.entry))
            }
        }
    }

    fn revert(&self, name: &RefName, to: Option<&str>, reason: &str) -> Result<PublishResponse> {
        match self {
            Target::Http(h) => h.post_json(
                "/v1/revert",
                &RevertRequest {
                    ref_name: name.to_string(),
                    to: to.map(str::to_owned),
                    reason: reason.to_owned(),
                },
                &format!("reverting {name}"),
            ),
            Target::Local { repo, key, who } => {
                let out = Target::publisher(repo, key).revert(name, to, reason, who)?;
                Ok(PublishResponse::from(&out.entry))
            }
        }
    }

    fn history(&self, name: &RefName) -> Result<Vec<HistoryEntry>> {
        match self {
            Target::Http(h) => {
                let resp: HistoryResponse = h.get_json(
                    "/v1/history",
                    &[("ref", name.as_str())],
                    &format!("reading the history of {name}"),
                )?;
                Ok(resp.entries)
            }
            Target::Local { repo, .. } => Ok(publish::read_history(repo)?
                .into_iter()
                .filter(|e| e.ref_name == name.as_str())
                .collect()),
        }
    }
}

fn print_outcome(resp: &PublishResponse, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(resp)?);
    } else {
        println!("{} {} serial {}", resp.commit, resp.ref_name, resp.serial);
    }
    Ok(())
}

pub fn push(src: &Repo, url: &str, name: &str, args: &TargetArgs) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let commit = refs::read_ref(src, &name)?;
    let closure = publish::commit_closure(src, &commit)?;
    if let Some((id, kind)) = closure.missing.first() {
        bail!(
            "commit {commit} of {name} is incomplete in {}: {kind} {id} and {} more object(s) are missing; run `treectl fsck`",
            src.path().display(),
            closure.missing.len() - 1
        );
    }
    let target = Target::open(url, args)?;
    let all: Vec<ObjectRef> = closure
        .objects
        .iter()
        .map(|&(id, kind)| ObjectRef { id, kind })
        .collect();
    let missing = target.missing(&all)?;
    let (stored, bytes) = target.upload(src, &missing)?;
    let resp = target.publish(&name, &commit)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ref": resp.ref_name,
                "commit": resp.commit,
                "serial": resp.serial,
                "objects": all.len(),
                "uploaded": missing.len(),
                "stored": stored,
                "bytes": bytes,
            }))?
        );
    } else {
        eprintln!(
            "{} of {} objects uploaded ({} bytes)",
            missing.len(),
            all.len(),
            bytes
        );
        print_outcome(&resp, false)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn publish(
    repo: Option<PathBuf>,
    url: &str,
    name: &str,
    rev: &str,
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
    let target = Target::open(url, args)?;
    print_outcome(&target.publish(&name, &commit)?, args.json)?;
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
    let target = Target::open(url, args)?;
    print_outcome(&target.revert(&name, to, reason)?, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn history(url: &str, name: &str, args: &TargetArgs) -> Result<ExitCode> {
    let name = RefName::new(name)?;
    let target = Target::open(url, args)?;
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
        let kind = match e.kind {
            publish::EventKind::Publish => "publish",
            publish::EventKind::Revert => "revert",
        };
        write!(
            out,
            "{:>5}  {}  {:<7}  {}  {}",
            e.serial,
            format_time(e.time),
            kind,
            e.commit.short(),
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

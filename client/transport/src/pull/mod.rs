//! Pulling a published ref from a remote (`treectl pull NAME:REF`), in seven
//! steps, one module each:
//!
//! 1. [`index`]: fetch `summary.json` from the remote's URL (then its
//!    mirrors), check its signature against the trusted keys (after a key
//!    rotation, the key set followed through `keys.json`), its expiry,
//!    and that its serial (and the ref's) is not lower than what this
//!    client accepted last ([`TrustState`]).
//! 2. [`verify`]: fetch the commit's detached signature, which must bind
//!    it to the ref.
//! 3. [`delta`]: when the signed index lists a static delta to the
//!    commit from one this repository has, download it (resumable),
//!    check it and keep every object it rebuilds that hashes to its id;
//!    whatever it did not deliver is fetched by objects below.
//! 4. [`walk`]: fetch the commit, then the trees and dirmetas the
//!    repository lacks, level by level (the store's [`Closure`] walk). They
//!    are verified and kept in a resumable staging directory
//!    (`tmp/pull-NAME/`) until the end, so `objects/` never holds a tree
//!    whose children are missing.
//! 5. [`fetch`]: fetch the missing file objects, many at a time (the
//!    batched `/v1/objects/fetch` when the server offers it, Range requests
//!    of the packs a static mirror's signed index lists, else plain GETs),
//!    verify each against its id, and store them in
//!    batches: an interrupted pull keeps what it finished.
//! 6. [`stage`]: store the staged trees, dirmetas and commit, children
//!    first.
//! 7. [`commit`]: record the accepted index in the trust state, then move
//!    `refs/remotes/NAME/REF`.
//!
//! Transient failures (timeouts, 5xx, cut connections, a transfer slower
//! than the low-speed limit) are retried with backoff, then the next mirror
//! is tried ([`crate::retry`]). Bodies are capped (declared sizes checked
//! before reading, actual sizes while reading).
//!
//! [`Closure`]: treectl_store::closure::Closure

mod commit;
mod delta;
mod fetch;
mod index;
mod stage;
mod verify;
mod walk;

use std::time::{Duration, Instant};

use treectl_release::remote::{self, TrustState};
pub use treectl_release::summary::{Barrier, Rollout};
use treectl_store::object::Commit;
use treectl_store::refs::RefName;
use treectl_store::store::{LockKind, RepoLock};
use treectl_store::{ObjectId, ObjectKind, Repo};

use crate::client::{HttpPolicy, LowSpeed};
use crate::error::TransportError;
use crate::progress::Progress;
use crate::retry::RetryPolicy;
use crate::source::{HttpSource, HttpSourceOptions};

pub use delta::DeltaUse;
pub use index::{check_trust, verify_index};

/// Settings of one pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Requests in flight at once.
    pub jobs: usize,
    /// Limit for a request to be sent and answered, and for each wait on
    /// its body ([`HttpPolicy::request_timeout`]).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// A transfer slower than this many bytes per second over
    /// `low_speed_time` is aborted (and retried).
    pub low_speed_limit: u64,
    pub low_speed_time: Duration,
    /// Retries of a transient failure per source, with doubling backoff.
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_index_bytes: u64,
    /// Largest object, both as sent and (files) uncompressed.
    pub max_object_bytes: u64,
    /// File objects per transaction: what an interrupted pull keeps.
    pub commit_every: usize,
    /// Use plain GETs even when the server offers the batched fetch.
    pub no_batch: bool,
    /// Ignore a static mirror's packs: one GET per object.
    pub no_packs: bool,
    pub token: Option<String>,
    /// Pull this barrier release of the ref (one its index lists in
    /// `barriers`) instead of its head.
    pub barrier: Option<ObjectId>,
    /// Fetch by objects even when the index lists a static delta.
    pub no_delta: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        let http = HttpPolicy::default();
        let retry = RetryPolicy::default();
        PullOptions {
            jobs: 8,
            timeout: http.request_timeout,
            connect_timeout: http.connect_timeout,
            low_speed_limit: http.low_speed.limit,
            low_speed_time: http.low_speed.time,
            retries: retry.retries,
            retry_delay: retry.first_delay,
            max_index_bytes: 16 << 20,
            max_object_bytes: 1 << 30,
            commit_every: 2000,
            no_batch: false,
            no_packs: false,
            token: None,
            barrier: None,
            no_delta: false,
        }
    }
}

impl PullOptions {
    /// The HTTP policy these options ask for.
    pub fn http_policy(&self) -> HttpPolicy {
        HttpPolicy {
            connect_timeout: self.connect_timeout,
            request_timeout: self.timeout,
            low_speed: LowSpeed {
                limit: self.low_speed_limit,
                time: self.low_speed_time,
            },
            // One idle connection per worker, and as many again for the
            // moment a batch ends and the next begins.
            pool_max_idle_per_host: self.jobs.max(1) * 2,
        }
    }

    /// The retry policy these options ask for.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            first_delay: self.retry_delay,
            ..RetryPolicy::default()
        }
    }

    fn source_options(&self) -> HttpSourceOptions {
        HttpSourceOptions {
            http: self.http_policy(),
            retry: self.retry_policy(),
            jobs: self.jobs.max(1),
            max_object_bytes: self.max_object_bytes,
            no_batch: self.no_batch,
            no_packs: self.no_packs,
            token: self.token.clone(),
        }
    }
}

/// What a pull did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PullOutcome {
    pub remote: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub commit: ObjectId,
    /// The accepted index's serial.
    pub serial: u64,
    /// The version the publisher gave this commit, if any.
    pub version: Option<String>,
    /// The remote ref already named this commit.
    pub unchanged: bool,
    pub objects_fetched: u64,
    pub bytes_fetched: u64,
    pub seconds: f64,
    /// Answers refused from one source and taken from the next (a bad
    /// index or object from a mirror), one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// The static delta the pull used, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaUse>,
}

impl PullOutcome {
    /// Whether the pull brought a commit the remote ref did not name yet:
    /// what an upgrade waits for.
    pub fn is_new(&self) -> bool {
        !self.unchanged
    }
}

/// Pulls `remote_name:ref_name` into `repo`.
pub fn pull(
    repo: &Repo,
    remote_name: &str,
    ref_name: &RefName,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullOutcome, TransportError> {
    let started = Instant::now();
    let counters = progress.counters();
    let Opened {
        trust,
        mut source,
        accepted,
        commit_id,
        serial,
        where_,
    } = open(repo, remote_name, ref_name, opts, counters, "pulling")?;

    let already = treectl_store::refs::try_read_remote_ref(repo, remote_name, ref_name)?;
    source.probe();
    // Prune waits until this pull is done, so nothing it relies on goes.
    let _lock = RepoLock::acquire(repo.path(), LockKind::Shared)?;
    let staging = stage::Staging::open(repo, remote_name)?;
    let chosen = match opts.no_delta {
        true => None,
        false => delta::choose(repo, &accepted.index.deltas, &commit_id, already.as_ref()),
    };
    let (delta, delivered) = match chosen {
        Some(entry) => {
            progress.phase("delta");
            let (used, delivered) = delta::apply(repo, &source, &staging, entry, opts);
            (Some(used), delivered)
        }
        None => (None, None),
    };
    // A delta that worked delivered every object TO adds, and a commit
    // already stored whole needs nothing: the packs' indexes would be
    // fetched for nothing.
    let stored_whole = repo.has_object(&commit_id, ObjectKind::Commit)
        && !treectl_store::fsck::is_partial(repo, &commit_id);
    if !stored_whole && delta.as_ref().is_none_or(|d| d.error.is_some()) {
        source.load_packs(&accepted.index.packs);
    }
    // The delta's objects are committed (mostly a flush to disk) while
    // the walk finds what else is missing, the fetch gets it and the new
    // metadata is written; that is committed only once they are in.
    // Unflushed, like the object fetch's batches: the metadata's commit
    // flushes their renames before its own.
    let present = delivered
        .as_ref()
        .map(delta::delivered_objects)
        .unwrap_or_default();
    let flush = !present.is_empty();
    let (walked, files, metas) = std::thread::scope(|s| {
        let committing = delivered.map(|txn| s.spawn(move || txn.commit_unflushed()));
        let fetched = walk::walk(
            repo, &present, &source, &staging, &commit_id, counters, &where_,
        )
        .and_then(|walked| {
            progress.phase("objects");
            let files = fetch::files(repo, &source, &walked.files, opts, counters, &where_)?;
            let metas = stage::write(repo, &walked, flush)?;
            // Written to disk while the delta's commit may still run: the
            // commit below then has little left to flush.
            if let (Some(txn), Some(_)) = (&metas, &committing) {
                txn.flush_staged()?;
            }
            Ok((walked, files, metas))
        });
        if let Some(c) = committing {
            c.join().expect("the delta's commit panicked")?;
        }
        fetched
    })?;
    if let Some(txn) = metas {
        txn.commit(&[])?;
    }
    commit::record(
        repo,
        remote_name,
        ref_name,
        &trust,
        &accepted,
        (commit_id, serial),
    )?;
    staging.remove()?;
    progress.finish();
    Ok(PullOutcome {
        remote: remote_name.to_owned(),
        ref_name: ref_name.to_string(),
        commit: commit_id,
        serial,
        version: match opts.barrier {
            None => accepted.entry.version.clone(),
            Some(_) => repo.read_commit(&commit_id)?.version().map(str::to_owned),
        },
        unchanged: already == Some(commit_id),
        objects_fetched: walked.fetched + files + delta.as_ref().map_or(0, |d| d.objects),
        bytes_fetched: counters.bytes.load(std::sync::atomic::Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        fallbacks: source.fallbacks(),
        delta,
    })
}

/// The commit and release serial a pull takes from the accepted index:
/// the ref's head (at the index serial), or the barrier `opts` names (at
/// the serial it was published with), which the index must list.
fn target_of(
    accepted: &index::Accepted,
    opts: &PullOptions,
    target: &str,
) -> Result<(ObjectId, u64), TransportError> {
    match opts.barrier {
        None => Ok((accepted.entry.commit, accepted.index.serial)),
        Some(b) => accepted
            .entry
            .barriers
            .iter()
            .find(|x| x.commit == b)
            .map(|x| (x.commit, x.serial))
            .ok_or_else(|| {
                TransportError::Usage(format!(
                    "{target}: {b} is not a barrier release in the signed index"
                ))
            }),
    }
}

/// A static delta a pull will use.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlannedDelta {
    pub from: ObjectId,
    /// Its size, from the signed index.
    pub bytes: u64,
}

/// What pulling a ref would download, and the space its new objects take,
/// found before downloading any file object ([`plan`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PullPlan {
    pub remote: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub commit: ObjectId,
    pub serial: u64,
    pub version: Option<String>,
    /// The head's commit object.
    #[serde(skip)]
    pub meta: Commit,
    /// The head's phased rollout, if any.
    pub rollout: Option<Rollout>,
    /// The ref's barrier releases.
    pub barriers: Vec<Barrier>,
    /// Objects the pull will download (the file objects the repository
    /// lacks) and their bytes as sent: the exact object bytes the pull
    /// moves by objects.
    pub download_objects: u64,
    pub download_bytes: u64,
    /// The static delta the pull downloads instead, when the index lists
    /// one from a commit the repository has (the objects above are what a
    /// delta that fails falls back to).
    pub delta: Option<PlannedDelta>,
    /// The commit, trees and dirmetas the repository lacks: fetched and
    /// verified by the plan and kept in the pull's staging, so the pull
    /// does not download them again.
    pub metadata_objects: u64,
    pub metadata_bytes: u64,
    /// Bytes the new objects take in the repository (file contents in a
    /// `bare-user` repository, their wire forms in an `archive` one, plus
    /// the metadata); `None` when a static mirror cannot tell a file's
    /// content size.
    pub store_bytes: Option<u64>,
}

/// A remote's ref, opened for a pull or its plan: the signed index
/// accepted against the trust state, the commit chosen and its signature
/// checked.
struct Opened<'c> {
    trust: TrustState,
    source: HttpSource<'c>,
    accepted: index::Accepted,
    commit_id: ObjectId,
    serial: u64,
    /// `"<verb> <remote>:<ref>"`, the context of later errors.
    where_: String,
}

fn open<'c>(
    repo: &Repo,
    remote_name: &str,
    ref_name: &RefName,
    opts: &PullOptions,
    counters: &'c crate::progress::Counters,
    verb: &str,
) -> Result<Opened<'c>, TransportError> {
    let remote = remote::get_remote(repo, remote_name)?;
    let trust = TrustState::load(repo, remote_name)?;
    let source = HttpSource::new(remote.sources(), opts.source_options(), counters)?;
    let target = format!("{remote_name}:{ref_name}");
    let accepted = index::accept(&source, &remote, &trust, ref_name, opts.max_index_bytes)?;
    let (commit_id, serial) = target_of(&accepted, opts, &target)?;
    let where_ = format!("{verb} {target}");
    verify::commit_signature(
        &source,
        accepted.source,
        &remote,
        accepted.key_set.as_ref(),
        ref_name,
        &commit_id,
    )
    .map_err(|e| e.context(&where_))?;
    Ok(Opened {
        trust,
        source,
        accepted,
        commit_id,
        serial,
        where_,
    })
}

/// Plans a pull of `remote_name:ref_name` into `repo`: the signed index is
/// verified as for a pull and recorded as the newest seen (with the ref's
/// rejections; the ref does not move), the commit's signature
/// checked, the commit, trees and dirmetas the repository lacks are
/// fetched into the pull's staging (the later pull takes them from there),
/// and the sizes of the missing file objects are asked for, never their
/// bytes.
pub fn plan(
    repo: &Repo,
    remote_name: &str,
    ref_name: &RefName,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullPlan, TransportError> {
    let counters = progress.counters();
    let Opened {
        trust,
        mut source,
        accepted,
        commit_id,
        serial,
        where_,
    } = open(repo, remote_name, ref_name, opts, counters, "pricing")?;
    commit::record_index(repo, remote_name, ref_name, &trust, &accepted)?;
    // The delta `pull` would choose (the plan stores nothing that changes
    // its choice: the metadata waits in the staging).
    let current = treectl_store::refs::try_read_remote_ref(repo, remote_name, ref_name)?;
    let planned_delta = match opts.no_delta {
        true => None,
        false => delta::choose(repo, &accepted.index.deltas, &commit_id, current.as_ref()),
    }
    .map(|d| PlannedDelta {
        from: d.from,
        bytes: d.size,
    });
    source.probe();
    source.load_packs(&accepted.index.packs);
    let _lock = RepoLock::acquire(repo.path(), LockKind::Shared)?;
    let staging = stage::Staging::open(repo, remote_name)?;
    let walked = walk::walk(
        repo,
        &Default::default(),
        &source,
        &staging,
        &commit_id,
        counters,
        &where_,
    )?;
    let sizes = source
        .sizes(&walked.files)
        .map_err(|e| e.context(&where_))?;
    progress.finish();
    let metadata_bytes: u64 = walked
        .need
        .iter()
        .filter_map(|o| walked.metas.get(o))
        .map(|d| d.len() as u64)
        .sum();
    let store_files: Option<u64> = match repo.mode() {
        treectl_store::RepoMode::Archive => Some(sizes.iter().map(|s| s.wire).sum()),
        _ => sizes.iter().map(|s| s.content).sum(),
    };
    let meta = match walked.metas.get(&walked.commit) {
        Some(data) => Commit::decode(data).map_err(|err| TransportError::Decode {
            what: "commit",
            id: commit_id,
            err,
        })?,
        None => repo.read_commit(&commit_id)?,
    };
    Ok(PullPlan {
        remote: remote_name.to_owned(),
        ref_name: ref_name.to_string(),
        commit: commit_id,
        serial,
        version: meta.version().map(str::to_owned),
        rollout: accepted.entry.rollout,
        barriers: accepted.entry.barriers.clone(),
        meta,
        download_objects: walked.files.len() as u64,
        download_bytes: sizes.iter().map(|s| s.wire).sum(),
        delta: planned_delta,
        metadata_objects: walked.need.len() as u64,
        metadata_bytes,
        store_bytes: store_files.map(|f| f + metadata_bytes),
    })
}

/// Parses `NAME:REF`.
pub fn parse_target(target: &str) -> Result<(String, RefName), TransportError> {
    let (name, r) = target.split_once(':').ok_or_else(|| {
        TransportError::Usage(format!(
            "{target:?} is not REMOTE:REF (for example origin:os/stable)"
        ))
    })?;
    remote::validate_name(name)?;
    Ok((name.to_owned(), RefName::new(r)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (n, r) = parse_target("origin:os/stable").expect("valid");
        assert_eq!((n.as_str(), r.as_str()), ("origin", "os/stable"));
        assert!(parse_target("os/stable").is_err());
        assert!(parse_target("a/b:os").is_err());
    }

    #[test]
    fn options_make_the_policies() {
        let o = PullOptions::default();
        assert_eq!(o.http_policy().request_timeout, Duration::from_secs(300));
        assert_eq!(o.http_policy().pool_max_idle_per_host, 16);
        assert_eq!(o.retry_policy(), RetryPolicy::default());
    }
}

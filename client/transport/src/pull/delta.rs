//! Before the walk: a static delta, when the signed index lists one to
//! the pulled commit from a commit this repository has. The delta is
//! downloaded into the pull's staging (`tmp/pull-NAME/`), resuming an
//! interrupted download with a Range request, checked against the size and
//! SHA-256 the index gives, then read: every object it holds is rebuilt
//! and hashed against its id before it is kept (file objects into a
//! store transaction, the commit, trees and dirmetas into the staging).
//! The transaction is handed back uncommitted ([`Delivered`]): the pull
//! commits it while the walk runs, the walk counting its objects as
//! present, and fetches by objects only what is still missing, which is
//! everything when the delta failed: a bad delta costs its download, never
//! a wrong object, and what it delivered correctly before it failed is
//! kept.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use treectl_release::summary::DeltaEntry;
use treectl_store::delta::{self, DeltaObject, ReadLimits};
use treectl_store::fsck::is_partial;
use treectl_store::store::Transaction;
use treectl_store::{ObjectId, ObjectKind, Repo};
use treectl_wire::ObjectRef;

use super::stage::Staging;
use super::PullOptions;
use crate::error::TransportError;
use crate::source::HttpSource;

/// Bytes of rebuilt objects after which the delta's reader starts writing
/// them to disk.
const FLUSH_EVERY: u64 = 4 << 20;

/// What a pull did with a static delta.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeltaUse {
    pub from: ObjectId,
    pub size: u64,
    /// Objects the delta delivered (all of them unless it failed).
    pub objects: u64,
    /// Why the delta was not used to the end (the pull went on by
    /// objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The delta to use for `to`: from a complete commit this repository
/// has, the remote ref's current commit first, else the smallest.
pub(super) fn choose<'i>(
    repo: &Repo,
    deltas: &'i [DeltaEntry],
    to: &ObjectId,
    current: Option<&ObjectId>,
) -> Option<&'i DeltaEntry> {
    if repo.has_object(to, ObjectKind::Commit) {
        return None;
    }
    let usable = |d: &&DeltaEntry| {
        d.to == *to && repo.has_object(&d.from, ObjectKind::Commit) && !is_partial(repo, &d.from)
    };
    let mut candidates: Vec<&DeltaEntry> = deltas.iter().filter(usable).collect();
    candidates.sort_by_key(|d| (Some(&d.from) != current, d.size));
    candidates.first().copied()
}

/// Downloads, checks and reads `entry`; returns how it went and the store
/// transaction holding the file objects it delivered, not committed yet
/// (`None` when it failed before reading). Never fails the pull: a delta
/// that cannot be used is reported in `error`.
pub(super) fn apply<'r>(
    repo: &'r Repo,
    source: &HttpSource,
    staging: &Staging,
    entry: &DeltaEntry,
    opts: &PullOptions,
) -> (DeltaUse, Option<Transaction<'r>>) {
    let mut used = DeltaUse {
        from: entry.from,
        size: entry.size,
        objects: 0,
        error: None,
    };
    let path = format!("/{}", delta::relative_path(Some(&entry.from), &entry.to));
    let part = staging.dir().join(format!(
        "{}.part",
        delta::file_name(Some(&entry.from), &entry.to)
    ));
    let mut delivered = None;
    let result = download(source, entry, &path, &part).and_then(|file| {
        // What is rebuilt before a failure is correct: the transaction is
        // kept either way.
        let txn = delivered.insert(Transaction::begin(repo)?);
        read_into(txn, staging, entry, opts, file, &mut used.objects).map_err(|e| e.context(&path))
    });
    match result {
        Ok(()) => {
            let _ = std::fs::remove_file(&part);
        }
        Err(e) => {
            // A delta that failed its checks is not resumed next time.
            if !e.is_transient() {
                let _ = std::fs::remove_file(&part);
            }
            used.error = Some(e.chain_text());
        }
    }
    (used, delivered)
}

/// The objects `txn` holds, as the walk counts them present.
pub(super) fn delivered_objects(txn: &Transaction<'_>) -> HashSet<ObjectRef> {
    txn.staged_objects()
        .into_iter()
        .map(|(id, kind)| ObjectRef { id, kind })
        .collect()
}

/// The delta at `path` into `part` (resumed by Range), checked against
/// the size and SHA-256 the index gives.
fn download(
    source: &HttpSource,
    entry: &DeltaEntry,
    path: &str,
    part: &PathBuf,
) -> Result<File, TransportError> {
    source.download(path, part, entry.size)?;
    let sha = file_sha256(part)?;
    if sha != entry.sha256 {
        return Err(TransportError::Usage(format!(
            "{path}: the delta's SHA-256 is {sha}, the signed index says {}",
            entry.sha256
        )));
    }
    File::open(part).map_err(TransportError::io("opening", part))
}

/// Reads the delta `file`: file objects into `txn`, the commit, trees and
/// dirmetas into the staging; `objects` counts what was kept.
fn read_into(
    txn: &Transaction<'_>,
    staging: &Staging,
    entry: &DeltaEntry,
    opts: &PullOptions,
    file: File,
    objects: &mut u64,
) -> Result<(), TransportError> {
    let limits = ReadLimits {
        max_object_bytes: opts.max_object_bytes,
    };
    // The reader rebuilds and checks the parts in parallel; the thread
    // that rebuilt an object stores it (the work is CPU-bound: more
    // threads would only take turns). Another thread writes what is
    // stored to disk every FLUSH_EVERY bytes meanwhile, so the commit
    // waits for the last few only (on the corpus update some 25 ms of a
    // 0.3 s pull).
    let stored = AtomicU64::new(0);
    // Bytes stored since the start; the flusher is woken each time they
    // pass another FLUSH_EVERY (not once per object: a wake-up costs).
    let written = AtomicU64::new(0);
    let (flush, flushes) = std::sync::mpsc::channel::<()>();
    let (counted, written) = (&stored, &written);
    let store = move |obj: DeltaObject| -> treectl_store::Result<()> {
        match obj {
            DeltaObject::File(f) => {
                let bytes = f.content().len() as u64;
                f.store(txn)?;
                let before = written.fetch_add(bytes, Ordering::Relaxed);
                if (before + bytes) / FLUSH_EVERY > before / FLUSH_EVERY {
                    // Fails only when the flusher is gone: then nothing
                    // starts early, and the commit flushes all.
                    let _ = flush.send(());
                }
            }
            DeltaObject::Meta { id, kind, data } => {
                staging.save(&ObjectRef { id, kind }, &data).map_err(|e| {
                    treectl_store::Error::Delta {
                        reason: e.to_string(),
                    }
                })?;
            }
        }
        counted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };
    let read = std::thread::scope(|s| {
        s.spawn(move || {
            for () in flushes {
                // An error here shows again in the commit's flush.
                let _ = txn.flush_staged();
            }
        });
        let read = delta::read(
            txn.repo(),
            file,
            Some((Some(&entry.from), &entry.to)),
            &limits,
            &store,
        );
        // Ends the flusher's loop.
        drop(store);
        read
    });
    *objects = stored.into_inner();
    let info = read?;
    debug_assert_eq!((info.from, info.to), (Some(entry.from), entry.to));
    Ok(())
}

fn file_sha256(path: &PathBuf) -> Result<String, TransportError> {
    let mut f = File::open(path).map_err(TransportError::io("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(TransportError::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

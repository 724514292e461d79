//! Step 4: the file objects. Fetched many at a time, each checked (its
//! declared size before decompressing, then its hash) and written into a
//! transaction; every `commit_every` objects the transaction is committed
//! on a thread of its own while the next batch downloads, so an
//! interrupted pull keeps what it finished.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{Scope, ScopedJoinHandle};

use treectl_store::store::{file_wire_header, Transaction};
use treectl_store::{failpoint, ObjectKind, Repo};
use treectl_wire::ObjectRef;

use super::PullOptions;
use crate::error::TransportError;
use crate::progress::Counters;
use crate::source::ObjectSource;

type Committing<'s> = ScopedJoinHandle<'s, Result<(), TransportError>>;

/// Fetches and stores `files`; returns how many were fetched.
pub(super) fn files(
    repo: &Repo,
    source: &dyn ObjectSource,
    files: &[ObjectRef],
    opts: &PullOptions,
    counters: &Counters,
    where_: &str,
) -> Result<u64, TransportError> {
    counters
        .objects_total
        .fetch_add(files.len() as u64, Ordering::Relaxed);
    let fetched = AtomicU64::new(0);
    std::thread::scope(|s| -> Result<(), TransportError> {
        // At most one commit in flight.
        let mut committing: Option<Committing<'_>> = None;
        for batch in files.chunks(opts.commit_every.max(1)) {
            let txn = Transaction::begin(repo)?;
            let sink = |obj: ObjectRef, data: Vec<u8>| -> Result<(), TransportError> {
                check_declared_size(&obj, &data, opts.max_object_bytes)?;
                txn.write_wire_form(&obj.id, obj.kind, &data)?;
                fetched.fetch_add(1, Ordering::Relaxed);
                counters.objects_done.fetch_add(1, Ordering::Relaxed);
                failpoint::hit("pull-object");
                Ok(())
            };
            let got = source.fetch(batch, &sink).map_err(|e| e.context(where_));
            if let Some(h) = committing.take() {
                join(h)?;
            }
            got?;
            committing = Some(commit_in_background(s, txn));
        }
        committing.map_or(Ok(()), join)
    })?;
    Ok(fetched.into_inner())
}

/// Commits a batch without flushing: the metadata transaction (step 5)
/// flushes these renames before any tree naming the files is stored.
fn commit_in_background<'s, 'r: 's>(s: &'s Scope<'s, '_>, txn: Transaction<'r>) -> Committing<'s> {
    s.spawn(move || txn.commit_unflushed().map_err(TransportError::from))
}

fn join(h: Committing<'_>) -> Result<(), TransportError> {
    h.join()
        .map_err(|_| TransportError::Panicked)?
        .map_err(|e| e.context("storing pulled objects"))
}

/// Checks a file object's declared (uncompressed) size before it is
/// decompressed, so a decompression bomb is refused up front.
fn check_declared_size(obj: &ObjectRef, data: &[u8], max: u64) -> Result<(), TransportError> {
    if obj.kind != ObjectKind::File {
        return Ok(());
    }
    let header = file_wire_header(data)?;
    if header.size > max {
        return Err(TransportError::ContentTooLarge {
            size: header.size,
            limit: max,
        });
    }
    Ok(())
}

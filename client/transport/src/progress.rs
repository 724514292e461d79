//! How a transfer reports progress. The transport only counts; whoever
//! shows the counts (the CLI's bar or JSON lines, an update timer's log)
//! implements [`Progress`]. [`Silent`] shows nothing.

use std::sync::atomic::AtomicU64;

/// Counters shared by the transfer's workers and whatever displays them.
#[derive(Debug, Default)]
pub struct Counters {
    pub objects_done: AtomicU64,
    pub objects_total: AtomicU64,
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
}

/// A sink for a transfer's progress. Workers update [`Progress::counters`]
/// from several threads; the phase changes as the transfer moves on
/// (`metadata`, `objects`).
pub trait Progress: Sync {
    /// The counters the transfer updates.
    fn counters(&self) -> &Counters;
    /// The transfer entered a new phase.
    fn phase(&self, _name: &'static str) {}
    /// The transfer is over (successfully or not).
    fn finish(&self) {}
}

/// Counts and shows nothing.
#[derive(Debug, Default)]
pub struct Silent(Counters);

impl Progress for Silent {
    fn counters(&self) -> &Counters {
        &self.0
    }
}

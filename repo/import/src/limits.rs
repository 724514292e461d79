//! Caps that keep a hostile archive from exhausting memory or disk, and the
//! readers that enforce them while data streams through.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// One GiB: the default cap per entry.
pub const DEFAULT_MAX_ENTRY_SIZE: u64 = 1 << 30;
/// Eight GiB: the default cap on an archive's uncompressed size.
pub const DEFAULT_MAX_TOTAL_SIZE: u64 = 8 << 30;
/// Default cap on uncompressed / compressed size. Real packages stay far
/// below it (the largest in the bookworm corpus is about 40); gigabytes of
/// zeros reach thousands.
pub const DEFAULT_MAX_RATIO: u64 = 250;
/// The ratio is only checked once this much has been decompressed, so tiny
/// archives of padding (a tar of one empty file is 10 KiB of zeros) pass.
pub const RATIO_GRACE: u64 = 64 << 20;
/// Default cap on the number of entries in one archive.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

/// Caps applied to every archive. The defaults fit real OS packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest size of one entry's content, in bytes.
    pub max_entry_size: u64,
    /// Largest total uncompressed size of one archive (the whole tar stream).
    pub max_total_size: u64,
    /// Largest ratio of uncompressed to compressed bytes.
    pub max_ratio: u64,
    /// Largest number of entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entry_size: DEFAULT_MAX_ENTRY_SIZE,
            max_total_size: DEFAULT_MAX_TOTAL_SIZE,
            max_ratio: DEFAULT_MAX_RATIO,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Which cap a stream ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tripped {
    Total,
    Ratio,
}

/// What the readers observed, shared between the compressed side (bytes
/// in) and the decompressed side (bytes out, caps, end of stream).
#[derive(Debug, Default)]
pub struct StreamState {
    pub compressed: Cell<u64>,
    pub uncompressed: Cell<u64>,
    pub tripped: Cell<Option<Tripped>>,
    /// The decompressed stream reported its end.
    pub eof: Cell<bool>,
}

/// Counts the compressed bytes a decoder consumes.
pub struct CountIn<R> {
    inner: R,
    state: Rc<StreamState>,
}

impl<R: Read> CountIn<R> {
    pub fn new(inner: R, state: Rc<StreamState>) -> CountIn<R> {
        CountIn { inner, state }
    }
}

impl<R: Read> Read for CountIn<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let s = &self.state;
        s.compressed.set(s.compressed.get() + n as u64);
        Ok(n)
    }
}

/// Enforces the total-size and ratio caps on the decompressed stream.
pub struct Capped<R> {
    inner: R,
    state: Rc<StreamState>,
    limits: Limits,
}

impl<R: Read> Capped<R> {
    pub fn new(inner: R, state: Rc<StreamState>, limits: Limits) -> Capped<R> {
        Capped {
            inner,
            state,
            limits,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = &self.state;
        if s.tripped.get().is_some() {
            return Err(io::Error::other("import cap exceeded"));
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            s.eof.set(true);
            return Ok(0);
        }
        let total = s.uncompressed.get() + n as u64;
        s.uncompressed.set(total);
        let trip = if total > self.limits.max_total_size {
            Some(Tripped::Total)
        } else if total > RATIO_GRACE && total / s.compressed.get().max(1) > self.limits.max_ratio {
            Some(Tripped::Ratio)
        } else {
            None
        };
        if let Some(t) = trip {
            s.tripped.set(Some(t));
            return Err(io::Error::other("import cap exceeded"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(data: &[u8], compressed: u64, limits: Limits) -> (io::Result<u64>, Rc<StreamState>) {
        let state = Rc::new(StreamState::default());
        state.compressed.set(compressed);
        let mut r = Capped::new(data, state.clone(), limits);
        let res = io::copy(&mut r, &mut io::sink());
        (res, state)
    }

    #[test]
    fn caps_trip_and_record_why() {
        let data = vec![0u8; 1 << 20];
        let small_total = Limits {
            max_total_size: 1000,
            ..Limits::default()
        };
        let (res, state) = drain(&data, data.len() as u64, small_total);
        assert!(res.is_err());
        assert_eq!(state.tripped.get(), Some(Tripped::Total));

        let (res, state) = drain(&data, data.len() as u64, Limits::default());
        assert_eq!(res.unwrap(), 1 << 20);
        assert!(state.eof.get());
        assert_eq!(state.tripped.get(), None);

        // Past the grace size, 100 MiB from 1 KiB is refused.
        let big = vec![0u8; (RATIO_GRACE + (1 << 20)) as usize];
        let (res, state) = drain(&big, 1024, Limits::default());
        assert!(res.is_err());
        assert_eq!(state.tripped.get(), Some(Tripped::Ratio));
        // ... and accepted when the compressed side is big enough.
        let (res, _) = drain(&big, big.len() as u64 / 10, Limits::default());
        assert!(res.is_ok());
    }
}

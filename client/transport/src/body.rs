//! Reading response bodies safely: [`Metered`] counts bytes and aborts a
//! transfer slower than the low-speed limit; [`read_capped`] reads a whole
//! body of at most a given size (a larger declared length is refused before
//! reading, a longer body while reading).

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::time::Instant;

use reqwest::blocking::Response;

use crate::client::LowSpeed;
use crate::error::{root_cause, TransportError};
use crate::progress::Counters;

/// A body reader that counts bytes (into `counters`, when given) and fails
/// with `TimedOut` when the transfer is slower than the low-speed limit.
pub struct Metered<'a, R> {
    inner: R,
    low_speed: LowSpeed,
    counters: Option<&'a Counters>,
    window_start: Instant,
    window_bytes: u64,
}

impl<'a, R: Read> Metered<'a, R> {
    pub fn new(inner: R, low_speed: LowSpeed, counters: Option<&'a Counters>) -> Self {
        Metered {
            inner,
            low_speed,
            counters,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = self.counters {
            c.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.window_bytes += n as u64;
        let elapsed = self.window_start.elapsed();
        if elapsed >= self.low_speed.time {
            let floor = self.low_speed.limit as f64 * elapsed.as_secs_f64();
            if (self.window_bytes as f64) < floor && n > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "transfer slower than {} bytes/s for {:?} (low-speed limit)",
                        self.low_speed.limit, self.low_speed.time
                    ),
                ));
            }
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        Ok(n)
    }
}

/// Reads a response body of at most `cap` bytes, metered.
pub fn read_capped(
    resp: Response,
    cap: u64,
    low_speed: LowSpeed,
    counters: Option<&Counters>,
) -> Result<Vec<u8>, TransportError> {
    let declared = resp.content_length();
    if let Some(len) = declared.filter(|&len| len > cap) {
        return Err(TransportError::DeclaredTooLong {
            declared: len,
            limit: cap,
        });
    }
    let mut reader = Metered::new(resp, low_speed, counters);
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(cap) as usize);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(cut(&e, out.len())),
        };
        if out.len() as u64 + n as u64 > cap {
            return Err(TransportError::TooLong { limit: cap });
        }
        out.extend_from_slice(&buf[..n]);
    }
    match declared {
        Some(len) if out.len() as u64 != len => Err(TransportError::BodyShort {
            got: out.len(),
            declared: len,
        }),
        _ => Ok(out),
    }
}

/// A read error after `got` bytes: stalled (low-speed limit or timeout)
/// or cut short.
pub(crate) fn cut(e: &io::Error, got: usize) -> TransportError {
    let cause = e
        .get_ref()
        .map(|i| root_cause(i))
        .unwrap_or_else(|| e.to_string());
    TransportError::BodyCut {
        got,
        stalled: e.kind() == io::ErrorKind::TimedOut,
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Gives one byte per read, then waits, like a trickling server.
    struct Trickle(usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(5));
            if self.0 == 0 {
                return Ok(0);
            }
            self.0 -= 1;
            buf[0] = b'x';
            Ok(1)
        }
    }

    #[test]
    fn slow_transfers_are_aborted_and_counted() {
        let counters = Counters::default();
        let low = LowSpeed {
            limit: 1 << 20,
            time: Duration::from_millis(20),
        };
        let mut m = Metered::new(Trickle(100), low, Some(&counters));
        let mut out = Vec::new();
        let err = m.read_to_end(&mut out).expect_err("too slow");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("low-speed limit"));
        assert!(counters.bytes.load(Ordering::Relaxed) > 0);
    }
}

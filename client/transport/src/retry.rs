//! The one retry policy: a transient failure ([`ErrorClass::Transient`]:
//! offline, timed out, cut short, too slow, 5xx) is tried again after a
//! delay that doubles each time; anything else fails at once. When the
//! retries are spent, the caller fails over to its next source.
//!
//! [`ErrorClass::Transient`]: crate::error::ErrorClass::Transient

use std::time::Duration;

use crate::error::TransportError;

/// How often and how patiently a transient failure is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first delay; each retry doubles it, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails permanently, or has failed
    /// transiently `retries + 1` times; returns the last result.
    pub fn run<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let mut delay = self.first_delay;
        let mut tries = 0;
        loop {
            match attempt() {
                Err(e) if e.is_transient() && tries < self.retries => {
                    note_retry(&e);
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.max_delay);
                    tries += 1;
                }
                other => return other,
            }
        }
    }
}

/// With `TREECTL_DEBUG` set, says what is being retried.
fn note_retry(e: &TransportError) {
    if std::env::var_os("TREECTL_DEBUG").is_some() {
        eprintln!("retrying: {}", e.chain_text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(retries: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[test]
    fn transient_failures_are_retried_permanent_ones_are_not() {
        let mut calls = 0;
        let r = quick(2).run(|| {
            calls += 1;
            Err::<(), _>(TransportError::BodyShort {
                got: 0,
                declared: 1,
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, 3, "the first attempt and two retries");
        let mut calls = 0;
        let r = quick(2).run(|| {
            calls += 1;
            Err::<(), _>(TransportError::TooLong { limit: 1 })
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = quick(2).run(|| {
            calls += 1;
            if calls < 2 {
                Err(TransportError::BodyShort {
                    got: 0,
                    declared: 1,
                })
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.expect("second try"), 2);
    }
}

//! The one clock: every "now" in treectl reads it here, as whole seconds
//! since the Unix epoch (the unit commits, the signed index and the
//! history log use).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, now (0 if the clock is before 1970).
pub fn now() -> i64 {
    unix_secs(SystemTime::now())
}

/// Nanoseconds since the epoch, now: for names that must differ between
/// two calls in one second, never for anything recorded.
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `t` as seconds since the epoch (0 before 1970).
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The time a new commit gets: `SOURCE_DATE_EPOCH` when it is set
/// (reproducible builds), otherwise now.
pub fn default_timestamp() -> i64 {
    if let Some(s) = std::env::var_os("SOURCE_DATE_EPOCH") {
        if let Some(t) = s.to_str().and_then(|s| s.trim().parse().ok()) {
            return t;
        }
    }
    now()
}

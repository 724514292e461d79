//! Formatting helpers for human-readable output.

use std::time::{Duration, UNIX_EPOCH};

use treectl_store::object::file::{S_IFDIR, S_IFLNK, S_IFMT};

/// `ls -l` style mode string: `-rwsr-xr-x`, `lrwxrwxrwx`, `drwxrwxrwt`.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & S_IFMT {
        S_IFDIR => 'd',
        S_IFLNK => 'l',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special =
        |x: u32, special: u32, lower: char, upper: char| match (mode & x != 0, mode & special != 0)
        {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(0o001, 0o1000, 't', 'T'));
    s
}

/// RFC 3339 UTC, to the second.
pub fn format_time(secs: i64) -> String {
    if secs >= 0 {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs as u64)).to_string()
    } else {
        format!("@{secs}")
    }
}

/// Parses RFC 3339 (`2024-05-01T12:00:00Z`, `…+02:00`) or `@SECONDS`.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Some(secs) = text.strip_prefix('@') {
        return secs
            .parse()
            .map_err(|_| format!("invalid timestamp {text:?}"));
    }
    let bad =
        || format!("invalid timestamp {text:?}: expected RFC 3339, like 2024-05-01T12:00:00Z");
    // humantime reads UTC only; apply a numeric offset ourselves.
    let (base, offset) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((b, o)) if (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':' => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let h: i64 = o[1..3].parse().map_err(|_| bad())?;
            let m: i64 = o[4..6].parse().map_err(|_| bad())?;
            (format!("{b}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (text.to_owned(), 0),
    };
    let t = humantime::parse_rfc3339_weak(&base).map_err(|_| bad())?;
    let secs = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_secs() as i64;
    Ok(secs - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o102644), "-rw-r-Sr--");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_time("2024-01-01T02:00:00+02:00").unwrap(), 1704067200);
        assert_eq!(parse_time("2024-01-01T00:00:00Z").unwrap(), 1704067200);
        assert_eq!(parse_time("@42").unwrap(), 42);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_time(1704067200), "2024-01-01T00:00:00Z");
    }
}

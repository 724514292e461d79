//! Version order: the comparison the Boot Loader Specification sorts
//! entries by (the UAPI Version Format Specification, systemd's
//! `strverscmp_improved`; like rpm's `rpmvercmp`, but `123a` and `123.a`
//! differ).
//!
//! A string is a run of segments, numeric or alphabetic, each optionally
//! prefixed by `~` (a pre-release), `-` (the version/release separator),
//! `^` (a patched release) or `.` (a point release). Every other character
//! only separates segments. Where one side has a prefix and the other does
//! not, the side with it is older, checked in that order (`~` even before
//! the end of the string, so `1~rc1` < `1`; then `1-2` < `1^2` < `1.2` <
//! `12`). Numbers compare by value (leading zeros ignored), letters byte by
//! byte (`A` < `a`); a numeric segment is newer than an alphabetic one,
//! and with everything else equal the longer string is newer.
//!
//! (The specification's text says `^` sorts higher; systemd, whose order
//! the boot loader uses, puts `1^1` below `1.1` and `1a` but above `1-1`.
//! This follows systemd.)
//!
//! ```
//! use std::cmp::Ordering::*;
//! use treectl_sysroot::verscmp::compare_versions;
//! assert_eq!(compare_versions("1.10", "1.9"), Greater);
//! assert_eq!(compare_versions("123~rc1", "123"), Less);
//! assert_eq!(compare_versions("5.10.0-1-amd64", "5.10.0-10-amd64"), Less);
//! ```

use std::cmp::Ordering;

/// Characters that carry meaning; all others are skipped.
fn meaningful(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.')
}

/// Compares two version strings (see the module documentation). The
/// order is total: equal strings compare `Equal`, and so do strings that
/// differ only in separators (`1_2` and `1.2` do not: `.` is meaningful).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    // The reference implementation works on C strings: a NUL ends them.
    let cut = |s: &str| -> Vec<u8> { s.bytes().take_while(|&c| c != 0).collect() };
    let (a, b) = (cut(a), cut(b));
    let mut a = Cursor { s: &a, at: 0 };
    let mut b = Cursor { s: &b, at: 0 };
    loop {
        a.skip_meaningless();
        b.skip_meaningless();
        // `~` sorts before everything, the end of the string included.
        if let Some(o) = prefix_order(&mut a, &mut b, b'~') {
            return o;
        }
        if a.peek() == 0 || b.peek() == 0 {
            return a.peek().cmp(&b.peek());
        }
        for sep in [b'-', b'^', b'.'] {
            if let Some(o) = prefix_order(&mut a, &mut b, sep) {
                return o;
            }
        }
        if a.peek().is_ascii_digit() || b.peek().is_ascii_digit() {
            let (da, db) = (a.run(|c| c.is_ascii_digit()), b.run(|c| c.is_ascii_digit()));
            // A number is newer than no number (a letter or nothing).
            let o = (!da.is_empty()).cmp(&!db.is_empty());
            if o != Ordering::Equal {
                return o;
            }
            let strip =
                |d: &'_ [u8]| -> Vec<u8> { d.iter().copied().skip_while(|&c| c == b'0').collect() };
            let (na, nb) = (strip(da), strip(db));
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            let (la, lb) = (
                a.run(|c| c.is_ascii_alphabetic()),
                b.run(|c| c.is_ascii_alphabetic()),
            );
            let n = la.len().min(lb.len());
            let o = la[..n].cmp(&lb[..n]).then(la.len().cmp(&lb.len()));
            if o != Ordering::Equal {
                return o;
            }
        }
    }
}

/// When one side is at `sep` and the other is not, that side is older;
/// when both are, both step past it.
fn prefix_order(a: &mut Cursor, b: &mut Cursor, sep: u8) -> Option<Ordering> {
    match (a.peek() == sep, b.peek() == sep) {
        (false, false) => None,
        (true, true) => {
            a.at += 1;
            b.at += 1;
            None
        }
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
    }
}

struct Cursor<'s> {
    s: &'s [u8],
    at: usize,
}

impl<'s> Cursor<'s> {
    /// The current byte, 0 at the end.
    fn peek(&self) -> u8 {
        self.s.get(self.at).copied().unwrap_or(0)
    }

    fn skip_meaningless(&mut self) {
        while self.at < self.s.len() && !meaningful(self.s[self.at]) {
            self.at += 1;
        }
    }

    /// Takes the longest run of bytes matching `f`.
    fn run(&mut self, f: impl Fn(u8) -> bool) -> &'s [u8] {
        let start = self.at;
        while self.at < self.s.len() && f(self.s[self.at]) {
            self.at += 1;
        }
        &self.s[start..self.at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    /// Each pair as `systemd-analyze compare-versions` (systemd 252) orders
    /// it; the specification's examples and systemd's own sequence among
    /// them.
    const CASES: &[(&str, &str, Ordering)] = &[
        ("11", "11", Equal),
        ("systemd-123", "systemd-123", Equal),
        ("bar-123", "foo-123", Less),
        ("123a", "123", Greater),
        ("123.a", "123", Greater),
        ("123.a", "123.b", Less),
        ("123a", "123.a", Greater),
        ("A", "a", Less),
        ("", "0", Less),
        ("0.", "0", Greater),
        ("0.0", "0", Greater),
        ("0", "~", Greater),
        ("", "~", Greater),
        ("1_", "1", Equal),
        ("_1", "1", Equal),
        ("1_", "1.2", Less),
        ("1_2_3", "1.3.3", Greater),
        ("1+", "1", Equal),
        ("+1", "1", Equal),
        ("1+", "1.2", Less),
        ("1+2+3", "1.3.3", Greater),
        ("122.1", "123~rc1-1", Less),
        ("123~rc1-1", "123", Less),
        ("123", "123-a", Less),
        ("123-a", "123-a.1", Less),
        ("123-a.1", "123-1", Less),
        ("123-1", "123-1.1", Less),
        ("123-1.1", "123^post1", Less),
        ("123^post1", "123.a-1", Less),
        ("123.a-1", "123.1-1", Less),
        ("123.1-1", "123a-1", Less),
        ("123a-1", "124-1", Less),
        ("00123", "123", Equal),
        ("1.10", "1.9", Greater),
        ("1~rc1", "1", Less),
        ("1~~", "1~", Greater),
        ("1-", "1", Greater),
        ("1-2", "1", Greater),
        ("1.-2", "1.a", Less),
        ("abc", "abcde", Less),
        ("treectl-os-10-ab.0.conf", "treectl-os-9-ff.1.conf", Greater),
        ("a.conf", "a-1.conf", Greater),
        ("5.10.0-1-amd64", "5.10.0-10-amd64", Less),
        ("1.0^", "1.0", Greater),
        ("1.0^1", "1.0-1", Greater),
        ("~", "~~", Less),
        ("^", "", Greater),
        (".", "", Greater),
        ("-", "", Greater),
        ("1..2", "1.2", Less),
        ("1.2", "1.2.0", Less),
        ("a1", "1a", Less),
        ("B.conf", "a.conf", Less),
        ("x.conf", "x-1.conf", Greater),
        ("2", "10", Less),
        ("01", "1", Equal),
        ("1.01", "1.1", Equal),
        ("1.0010", "1.9", Greater),
        ("1^1", "1.1", Less),
        ("1^1", "1a", Less),
        ("1^1", "11", Less),
        ("1^", "1-", Greater),
        ("1^a", "1", Greater),
        ("1.1", "1a", Less),
        ("1.a", "1a", Less),
    ];

    #[test]
    fn orders_like_systemd() {
        for &(a, b, want) in CASES {
            assert_eq!(compare_versions(a, b), want, "{a:?} vs {b:?}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b:?} vs {a:?}");
        }
    }
}

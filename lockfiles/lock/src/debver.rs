//! Debian version ordering, dpkg's algorithm (`lib/dpkg/version.c`):
//! epoch numerically, then upstream version and Debian revision, each
//! compared as alternating non-digit and digit runs where `~` sorts before
//! everything (even the end of the string) and letters before other
//! characters.
//!
//! Written here rather than taken from the `debversion` crate, which pulls
//! in regex, chrono and num-bigint for what is forty lines; the table test
//! below is checked against `dpkg --compare-versions` when dpkg is present.

use std::cmp::Ordering;

/// Compares two Debian version strings as `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// `[epoch:]upstream[-revision]`; a missing epoch is 0, a missing revision "".
fn split(v: &str) -> (u64, &str, &str) {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = i32::from(a[i]) - i32::from(b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// A version relation of a dependency: `<<`, `<=`, `=`, `>=`, `>>`
/// (and the obsolete `<` and `>`, which mean `<=` and `>=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Relation {
    pub fn parse(s: &str) -> Option<Relation> {
        Some(match s {
            "<<" => Relation::Lt,
            "<=" | "<" => Relation::Le,
            "=" => Relation::Eq,
            ">=" | ">" => Relation::Ge,
            ">>" => Relation::Gt,
            _ => return None,
        })
    }

    /// Whether `version` stands in this relation to `wanted`.
    pub fn holds(self, version: &str, wanted: &str) -> bool {
        let o = compare(version, wanted);
        match self {
            Relation::Lt => o == Ordering::Less,
            Relation::Le => o != Ordering::Greater,
            Relation::Eq => o == Ordering::Equal,
            Relation::Ge => o != Ordering::Less,
            Relation::Gt => o == Ordering::Greater,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Lt => "<<",
            Relation::Le => "<=",
            Relation::Eq => "=",
            Relation::Ge => ">=",
            Relation::Gt => ">>",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (a, b, expected ordering of a vs b).
    const CASES: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Ordering::Equal),
        ("1.0", "1.1", Ordering::Less),
        ("1.0~rc1", "1.0", Ordering::Less),
        ("1.0~rc1", "1.0~rc2", Ordering::Less),
        ("1.0~~", "1.0~", Ordering::Less),
        ("1.0", "1.0+b1", Ordering::Less),
        ("1.0a", "1.0+", Ordering::Less),
        ("1:0.1", "2.0", Ordering::Greater),
        ("0:1.0", "1.0", Ordering::Equal),
        ("1.0-1", "1.0-2", Ordering::Less),
        ("1.0-10", "1.0-9", Ordering::Greater),
        ("1.01", "1.1", Ordering::Equal),
        ("2.36-9+deb12u4", "2.36-9+deb12u10", Ordering::Less),
        ("2.36-9+deb12u4", "2.36-9", Ordering::Greater),
        ("3.0.11-1~deb12u2", "3.0.15-1~deb12u1", Ordering::Less),
        ("3.0.15-1~deb12u1", "3.0.15-1", Ordering::Less),
        ("1.2.3-1-2", "1.2.3-1-1", Ordering::Greater),
        ("a", "B", Ordering::Greater),
        ("1.0.", "1.0", Ordering::Greater),
        ("2024a-0+deb12u1", "2024b-0+deb12u1", Ordering::Less),
        ("", "0", Ordering::Equal),
        ("1.0-0", "1.0", Ordering::Equal),
        ("10", "9", Ordering::Greater),
        ("1.0~beta", "1.0~alpha", Ordering::Greater),
    ];

    #[test]
    fn table() {
        for (a, b, want) in CASES {
            assert_eq!(compare(a, b), *want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// The same table, asked of dpkg itself when it is installed.
    #[test]
    fn table_agrees_with_dpkg() {
        if std::process::Command::new("dpkg")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: dpkg is not installed");
            return;
        }
        for (a, b, want) in CASES {
            if a.is_empty() || b.is_empty() {
                continue; // dpkg refuses empty versions
            }
            let op = match want {
                Ordering::Less => "lt",
                Ordering::Equal => "eq",
                Ordering::Greater => "gt",
            };
            let ok = std::process::Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .unwrap()
                .success();
            assert!(ok, "dpkg disagrees: {a} {op} {b}");
        }
    }

    #[test]
    fn relations() {
        assert!(Relation::parse(">=").unwrap().holds("2.36", "2.14"));
        assert!(!Relation::parse("<<").unwrap().holds("2.0", "2.0"));
        assert!(Relation::parse("=").unwrap().holds("1:1.0", "1:1.0"));
        assert!(Relation::parse("<").unwrap().holds("1.0", "1.0"));
        assert_eq!(Relation::parse("=="), None);
    }
}

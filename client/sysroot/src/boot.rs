//! Boot Loader Specification (Type #1) entries as a boot loader reads
//! them: parsing an entry, its boot counter, and the one order that
//! decides which entry boots ([`BootMenu::from_entries`]).
//!
//! treectl decides the default through this module and nowhere else, and
//! a harness that plays the boot loader (a VM test) uses it the same way:
//! read the directory, take [`BootMenu::default_entry`], rename it to
//! [`BootEntry::next_try_name`] before "booting" it.
//!
//! ```
//! use treectl_sysroot::boot::{BootEntry, BootMenu};
//! let entries = vec![
//!     BootEntry::parse("os-1.conf", "sort-key os\nversion 1\nlinux /a\n"),
//!     BootEntry::parse("os-2+0-3.conf", "sort-key os\nversion 2\nlinux /b\n"),
//!     BootEntry::parse("os-3+2-1.conf", "sort-key os\nversion 3\nlinux /c\n"),
//! ];
//! let menu = BootMenu::from_entries(entries);
//! let names: Vec<_> = menu.entries.iter().map(|e| e.file_name.as_str()).collect();
//! // Newest first; the bad entry (no tries left) last.
//! assert_eq!(names, ["os-3+2-1.conf", "os-1.conf", "os-2+0-3.conf"]);
//! assert_eq!(menu.default_entry().unwrap().next_try_name().as_deref(), Some("os-3+1-2.conf"));
//! ```
//!
//! The order is systemd-boot's (`boot_entry_compare` in its `boot.c`, the
//! specification's "Sorting"): entries with no tries left last; then
//! entries with a `sort-key` before those without; among those with one,
//! by `sort-key` and `machine-id` (byte order, unset first), then
//! `version`, newest first ([`compare_versions`]); then by the file name
//! without its counter, newest first; then more tries left, fewer tries
//! done. Without a `default` in `loader.conf` or EFI variables, systemd-boot
//! boots the first entry. Two things systemd-boot does that this module
//! does not: it hides entries without a `linux`/`efi` line or whose kernel
//! file is missing, and it compares file names lowercased — `bootctl`
//! compares them as they are, so the two disagree only on mixed-case names
//! (treectl writes lowercase ones). This follows systemd-boot.

use std::cmp::Ordering;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::verscmp::compare_versions;
use crate::{io_err, Result};

/// The file name suffix of Type #1 entries.
pub const ENTRY_SUFFIX: &str = ".conf";

/// A boot counter: `+LEFT` or `+LEFT-DONE` right before the suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Counter {
    /// Attempts still to make; 0 means the entry is bad.
    pub left: u32,
    /// Failed attempts so far; `None` when the name has no `-DONE` (the
    /// specification reads that as 0).
    pub done: Option<u32>,
}

impl Counter {
    /// A new entry's counter, in the specification's fixed-width form:
    /// `+tries-0`.
    pub fn fresh(tries: u32) -> Counter {
        Counter {
            left: tries,
            done: Some(0),
        }
    }

    /// No tries left: the boot loader sorts the entry last.
    pub fn is_bad(&self) -> bool {
        self.left == 0
    }

    /// `+LEFT` or `+LEFT-DONE`, as in a file name.
    pub fn suffix(&self) -> String {
        match self.done {
            Some(d) => format!("+{}-{d}", self.left),
            None => format!("+{}", self.left),
        }
    }

    /// The counter after one more attempt, as the boot loader renames it
    /// (`+3-0` → `+2-1` → `+1-2` → `+0-3`); `None` when no tries are left.
    pub fn after_attempt(&self) -> Option<Counter> {
        (self.left > 0).then(|| Counter {
            left: self.left - 1,
            done: Some(self.done.unwrap_or(0).saturating_add(1)),
        })
    }
}

/// The largest counter value systemd-boot accepts.
const MAX_TRIES: u64 = i32::MAX as u64;

/// Splits a file name into the name without its boot counter and the
/// counter, as systemd-boot reads it: the last `+`, digits, optionally `-`
/// and digits, then exactly `suffix` (any case). Anything else is no
/// counter, and the name is returned whole.
pub fn split_counter<'n>(file_name: &'n str, suffix: &str) -> (String, Option<Counter>) {
    let whole = (file_name.to_owned(), None);
    let Some(plus) = file_name.rfind('+') else {
        return whole;
    };
    let (base, rest) = (&file_name[..plus], &file_name[plus + 1..]);
    let number = |s: &'n str| -> Option<(u32, &'n str)> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        let value: u64 = s[..n].parse().ok()?;
        (value <= MAX_TRIES).then_some((value as u32, &s[n..]))
    };
    let Some((left, rest)) = number(rest) else {
        return whole;
    };
    let (done, rest) = match rest.strip_prefix('-') {
        Some(r) => match number(r) {
            Some((d, r)) => (Some(d), r),
            None => return whole,
        },
        None => (None, rest),
    };
    if !rest.eq_ignore_ascii_case(suffix) {
        return whole;
    }
    (format!("{base}{rest}"), Some(Counter { left, done }))
}

/// One Type #1 entry: its file name and the keys the order and a boot
/// need. Unknown keys are ignored, as boot loaders do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootEntry {
    /// The name on disk, counter included.
    pub file_name: String,
    /// The name without the counter, lowercased: how systemd-boot
    /// identifies (and sorts) the entry.
    pub id: String,
    pub counter: Option<Counter>,
    pub title: Option<String>,
    pub version: Option<String>,
    pub sort_key: Option<String>,
    pub machine_id: Option<String>,
    pub linux: Option<String>,
    pub initrd: Vec<String>,
    /// Every `options` line, in order; the kernel gets them joined by
    /// spaces.
    pub options: Vec<String>,
}

impl BootEntry {
    /// Parses an entry's text. Lines are `KEY VALUE`; `#` starts a
    /// comment line; a repeated key replaces the earlier value, except
    /// `initrd` and `options`, which add up. Keys without a value are
    /// ignored.
    pub fn parse(file_name: &str, text: &str) -> BootEntry {
        let (id, counter) = split_counter(file_name, ENTRY_SUFFIX);
        let mut e = BootEntry {
            file_name: file_name.to_owned(),
            id: id.to_lowercase(),
            counter,
            title: None,
            version: None,
            sort_key: None,
            machine_id: None,
            linux: None,
            initrd: vec![],
            options: vec![],
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once([' ', '\t']) else {
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let v = Some(value.to_owned());
            match key {
                "title" => e.title = v,
                "version" => e.version = v,
                "sort-key" => e.sort_key = v,
                "machine-id" => e.machine_id = v,
                "linux" => e.linux = v,
                "initrd" => e.initrd.push(value.to_owned()),
                "options" => e.options.push(value.to_owned()),
                _ => {}
            }
        }
        e
    }

    /// No tries left: sorted last, booted only when nothing else is left.
    pub fn is_bad(&self) -> bool {
        self.counter.is_some_and(|c| c.is_bad())
    }

    /// The kernel command line the entry gives (its `options` lines).
    pub fn cmdline(&self) -> String {
        self.options.join(" ")
    }

    /// The `treectl=` value of the command line: the deployment it boots.
    pub fn treectl_target(&self) -> Option<String> {
        crate::parse_cmdline(&self.cmdline())
    }

    /// The file name without the counter: what marking the entry good
    /// renames it to.
    pub fn good_name(&self) -> String {
        match self.counter {
            Some(_) => split_counter(&self.file_name, ENTRY_SUFFIX).0,
            None => self.file_name.clone(),
        }
    }

    /// What a boot loader renames the entry to before it boots it (one
    /// more attempt counted); `None` without a counter or with no tries
    /// left.
    pub fn next_try_name(&self) -> Option<String> {
        let next = self.counter?.after_attempt()?;
        Some(with_counter(&self.good_name(), Some(next)))
    }
}

/// `name.conf` with the counter put before the suffix.
pub fn with_counter(good_name: &str, counter: Option<Counter>) -> String {
    let stem = good_name.strip_suffix(ENTRY_SUFFIX).unwrap_or(good_name);
    match counter {
        Some(c) => format!("{stem}{}{ENTRY_SUFFIX}", c.suffix()),
        None => format!("{stem}{ENTRY_SUFFIX}"),
    }
}

/// Byte order with an unset value first (`strcmp` with NULL lowest).
fn cmp_unset_first(a: &Option<String>, b: &Option<String>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// systemd-boot's order of two entries: `Less` means `a` comes first.
pub fn compare_entries(a: &BootEntry, b: &BootEntry) -> Ordering {
    a.is_bad()
        .cmp(&b.is_bad())
        .then_with(|| b.sort_key.is_some().cmp(&a.sort_key.is_some()))
        .then_with(|| {
            if a.sort_key.is_none() || b.sort_key.is_none() {
                return Ordering::Equal;
            }
            cmp_unset_first(&a.sort_key, &b.sort_key)
                .then_with(|| cmp_unset_first(&a.machine_id, &b.machine_id))
                .then_with(|| {
                    let v = |e: &BootEntry| e.version.clone().unwrap_or_default();
                    compare_versions(&v(b), &v(a))
                })
        })
        .then_with(|| compare_versions(&b.id, &a.id))
        .then_with(|| match (a.counter, b.counter) {
            (Some(ca), Some(cb)) => cb
                .left
                .cmp(&ca.left)
                .then(ca.done.unwrap_or(0).cmp(&cb.done.unwrap_or(0))),
            _ => Ordering::Equal,
        })
}

/// The entries of a directory in boot menu order; the first is the one
/// the boot loader starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BootMenu {
    pub entries: Vec<BootEntry>,
}

impl BootMenu {
    /// Orders `entries` as the boot loader does (see the module
    /// documentation). Entries equal in every compared key keep a
    /// deterministic order (by file name).
    pub fn from_entries(mut entries: Vec<BootEntry>) -> BootMenu {
        entries.sort_by(|a, b| compare_entries(a, b).then_with(|| a.file_name.cmp(&b.file_name)));
        BootMenu { entries }
    }

    /// Reads every `*.conf` regular file of `dir` (not hidden; a missing
    /// directory has none) and orders them.
    pub fn read_dir(dir: &Path) -> Result<BootMenu> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BootMenu::default()),
            Err(e) => return Err(io_err("reading", dir)(e)),
        };
        let mut entries = vec![];
        for e in rd {
            let e = e.map_err(io_err("reading", dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let conf = name.len() > ENTRY_SUFFIX.len()
                && name.as_bytes()[name.len() - ENTRY_SUFFIX.len()..]
                    .eq_ignore_ascii_case(ENTRY_SUFFIX.as_bytes());
            if !conf || name.starts_with('.') {
                continue;
            }
            let path = e.path();
            if !fs::symlink_metadata(&path)
                .map_err(io_err("reading", &path))?
                .is_file()
            {
                continue;
            }
            let text = fs::read(&path).map_err(io_err("reading", &path))?;
            entries.push(BootEntry::parse(&name, &String::from_utf8_lossy(&text)));
        }
        Ok(BootMenu::from_entries(entries))
    }

    /// The entry the boot loader starts: the first.
    pub fn default_entry(&self) -> Option<&BootEntry> {
        self.entries.first()
    }

    /// The entry that boots the deployment with `treectl=` value `target`.
    pub fn find_target(&self, target: &str) -> Option<&BootEntry> {
        self.entries
            .iter()
            .find(|e| e.treectl_target().as_deref() == Some(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_as_systemd_boot_reads_them() {
        let c = |left, done| Some(Counter { left, done });
        let cases: &[(&str, &str, Option<Counter>)] = &[
            ("a+3.conf", "a.conf", c(3, None)),
            ("a+2-1.conf", "a.conf", c(2, Some(1))),
            ("a+0-3.conf", "a.conf", c(0, Some(3))),
            ("a+3-0.conf", "a.conf", c(3, Some(0))),
            ("a+3.CONF", "a.CONF", c(3, None)),
            ("a.b+1+2-1.conf", "a.b+1.conf", c(2, Some(1))),
            ("a.conf", "a.conf", None),
            ("a+.conf", "a+.conf", None),
            ("a+x.conf", "a+x.conf", None),
            ("a+3-.conf", "a+3-.conf", None),
            ("a+3-1x.conf", "a+3-1x.conf", None),
            ("a+3.conf.bak", "a+3.conf.bak", None),
            ("a+2147483648.conf", "a+2147483648.conf", None),
            ("a+2147483647.conf", "a.conf", c(2147483647, None)),
        ];
        for (name, id, counter) in cases {
            assert_eq!(
                split_counter(name, ENTRY_SUFFIX),
                (id.to_string(), *counter),
                "{name}"
            );
        }
    }

    #[test]
    fn the_loader_counts_down_and_good_drops_the_counter() {
        let e = BootEntry::parse("x-2+3.conf", "");
        let mut names = vec![e.file_name.clone()];
        let mut e = e;
        while let Some(next) = e.next_try_name() {
            names.push(next.clone());
            e = BootEntry::parse(&next, "");
        }
        assert_eq!(
            names,
            ["x-2+3.conf", "x-2+2-1.conf", "x-2+1-2.conf", "x-2+0-3.conf"]
        );
        assert!(e.is_bad());
        assert_eq!(e.good_name(), "x-2.conf");
        assert_eq!(BootEntry::parse("x.conf", "").next_try_name(), None);
        assert_eq!(BootEntry::parse("x+3-0.conf", "").good_name(), "x.conf");
    }

    #[test]
    fn parses_the_keys_a_boot_needs() {
        let e = BootEntry::parse(
            "t+1.conf",
            "# comment\ntitle  A title \nversion 2\nsort-key os\nmachine-id\n\
             linux /k\ninitrd /i1\ninitrd /i2\noptions root=UUID=1 treectl=/a\noptions quiet\nfoo bar\n",
        );
        assert_eq!(e.title.as_deref(), Some("A title"));
        assert_eq!(e.version.as_deref(), Some("2"));
        assert_eq!(e.sort_key.as_deref(), Some("os"));
        assert_eq!(e.machine_id, None, "a key without a value is ignored");
        assert_eq!(e.initrd, ["/i1", "/i2"]);
        assert_eq!(e.cmdline(), "root=UUID=1 treectl=/a quiet");
        assert_eq!(e.treectl_target().as_deref(), Some("/a"));
        assert_eq!(e.id, "t.conf");
    }

    fn order(entries: &[(&str, &str)]) -> Vec<String> {
        BootMenu::from_entries(
            entries
                .iter()
                .map(|(n, t)| BootEntry::parse(n, &t.replace(';', "\n")))
                .collect(),
        )
        .entries
        .into_iter()
        .map(|e| e.file_name)
        .collect()
    }

    #[test]
    fn orders_like_systemd_boot() {
        // Each set in the order systemd-boot shows it.
        let sets: &[&[(&str, &str)]] = &[
            // Versions newest first within a sort-key; bad last.
            &[
                ("a-3+2-1.conf", "sort-key os;version 3"),
                ("a-2.conf", "sort-key os;version 2"),
                ("a-10+0-3.conf", "sort-key os;version 10"),
            ],
            // sort-key ascending, then machine-id (unset first), then version.
            &[
                ("u.conf", "sort-key a;version 1"),
                ("v.conf", "sort-key a;version 1~rc1"),
                ("w-10.conf", "sort-key b;version 1.10"),
                ("w-9.conf", "sort-key b;version 1.9"),
                ("m3.conf", "sort-key d;version 5"),
                ("m2.conf", "sort-key d;machine-id aaa;version 1"),
                ("m1.conf", "sort-key d;machine-id bbb;version 1"),
                ("z.conf", ""),
                ("y.conf", ""),
                ("x-2+3.conf", "version 1"),
                ("x-1.conf", "version 1"),
                ("x-3+0.conf", "version 9"),
            ],
            // Same id: more tries left first, then fewer done.
            &[
                ("s+3.conf", "sort-key c"),
                ("s+2-1.conf", "sort-key c"),
                ("s+1-2.conf", "sort-key c"),
            ],
            // Equal versions fall back to the file name, newest first.
            &[
                ("treectl-os-10-a.0.conf", "sort-key k;version 1"),
                ("treectl-os-9-b.0.conf", "sort-key k;version 1"),
            ],
        ];
        for set in sets {
            let want: Vec<String> = set.iter().map(|(n, _)| n.to_string()).collect();
            let mut shuffled: Vec<_> = set.to_vec();
            shuffled.reverse();
            assert_eq!(order(&shuffled), want);
            shuffled.rotate_left(1);
            assert_eq!(order(&shuffled), want);
        }
    }

    #[test]
    fn reads_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = dir.path();
        fs::write(e.join("a+1-2.conf"), "version 1\nsort-key s\n").unwrap();
        fs::write(e.join("b.conf"), "version 2\nsort-key s\n").unwrap();
        fs::write(e.join(".hidden.conf"), "version 9\nsort-key s\n").unwrap();
        fs::write(e.join("notes.txt"), "version 9\n").unwrap();
        fs::write(e.join("non-ascii-é"), "version 9\n").unwrap();
        fs::create_dir(e.join("d.conf")).unwrap();
        let menu = BootMenu::read_dir(e).unwrap();
        let names: Vec<_> = menu.entries.iter().map(|e| e.file_name.as_str()).collect();
        assert_eq!(names, ["b.conf", "a+1-2.conf"]);
        assert_eq!(
            BootMenu::read_dir(&e.join("missing")).unwrap(),
            BootMenu::default()
        );
    }
}

//! systemd's own parser agrees with treectl's boot order: `bootctl list`
//! (see `treectl_e2e::bootctl` for the invocation) over every entry set
//! these tests make gives the same order and the same default as
//! `treectl_sysroot::boot::BootMenu`. The sets: what treectl writes
//! through a machine's life (install, upgrades, boot counting played as
//! the boot loader does it, `boot-ok`, a kernel argument edit, rollback,
//! cleanup), hand-made sets with tries left (`+2-1`, `+3-0`), bad entries
//! (`+0-3`, `+0`), sort keys, machine ids and tricky versions, and many
//! generated mixtures. The version comparison is also checked against
//! `systemd-analyze compare-versions`.

mod deploy_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use deploy_support::*;
use treectl_e2e::bootctl::{self, require_bootctl};
use treectl_sysroot::boot::BootMenu;
use treectl_sysroot::verscmp::compare_versions;

/// bootctl and treectl agree on `dir` (holding `loader/entries`):
/// returns the order.
fn agree(dir: &Path, context: &str) -> Vec<String> {
    let listing = bootctl::list(dir);
    let ours = BootMenu::read_dir(&dir.join("loader/entries")).unwrap();
    let ours: Vec<String> = ours.entries.into_iter().map(|e| e.file_name).collect();
    let theirs: Vec<String> = listing
        .entries
        .iter()
        .map(|e| e.file_name.clone())
        .collect();
    assert_eq!(ours, theirs, "{context}: order");
    assert_eq!(ours.first(), listing.default.as_ref(), "{context}: default");
    ours
}

/// Writes a set of entries (file name, body with `;` for newlines) into a
/// fresh `loader/entries` under `dir`.
fn write_set(dir: &Path, set: &[(String, String)]) {
    let entries = dir.join("loader/entries");
    let _ = fs::remove_dir_all(&entries);
    fs::create_dir_all(&entries).unwrap();
    for (name, body) in set {
        let text = format!("title {name}\n{}\noptions quiet\n", body.replace(';', "\n"));
        fs::write(entries.join(name), text).unwrap();
    }
}

#[test]
fn bootctl_orders_treectl_entries_as_treectl_does() {
    if !require_bootctl("to compare treectl's boot order with systemd's") {
        return;
    }
    let w = World::new();
    let boot = w.sysroot().join("boot");
    w.release("1", 1_700_000_000);
    w.install();
    agree(&boot, "installed");
    w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    w.release("3", 1_700_200_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    let order = agree(&boot, "three fresh entries");
    assert_eq!(order.len(), 3);
    assert!(order.iter().all(|n| n.ends_with("+3-0.conf")), "{order:?}");

    // The default boots and is marked good.
    let default = w.listed()[0]["path"].as_str().unwrap().to_owned();
    let rel = &default[default.find("/treectl/deploy").unwrap()..];
    let cmdline = w.dir.path().join("cmdline");
    fs::write(&cmdline, format!("treectl={rel}\n")).unwrap();
    cmd(&["boot-ok", "--sysroot", &w.sr()])
        .env("TREECTL_CMDLINE", &cmdline)
        .ok();
    agree(&boot, "default marked good");

    // A kernel argument edit: a new entry with tries, then the boot loader
    // counts it down attempt by attempt until it is bad and the previous
    // default is started instead.
    cmd(&["kargs", "--sysroot", &w.sr(), "--append", "quiet"]).ok();
    let entries = boot.join("loader/entries");
    for attempt in 1..=3 {
        let menu = BootMenu::read_dir(&entries).unwrap();
        let first = menu.default_entry().unwrap();
        assert!(first.cmdline().ends_with(" quiet"), "attempt {attempt}");
        let next = first.next_try_name().unwrap();
        fs::rename(entries.join(&first.file_name), entries.join(&next)).unwrap();
        let order = agree(&boot, &format!("after attempt {attempt}"));
        if attempt < 3 {
            assert_eq!(order[0], next);
        } else {
            assert_eq!(order.last(), Some(&next), "bad sorts last");
            assert!(next.ends_with("+0-3.conf"));
        }
    }
    cmd(&["rollback", "--sysroot", &w.sr()]).ok();
    agree(&boot, "rolled back to the good one");
    cmd(&["cleanup", "--sysroot", &w.sr()]).ok();
    agree(&boot, "cleaned up");
}

/// Hand-made sets: counters in both forms, bad entries, sort keys,
/// machine ids, versions that only a careful comparison orders.
#[test]
fn bootctl_orders_hand_made_sets_as_treectl_does() {
    if !require_bootctl("to compare treectl's boot order with systemd's") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(n, b)| (n.to_string(), b.to_string()))
            .collect()
    };
    let sets = [
        s(&[
            ("os-3+3.conf", "sort-key os;version 3;linux /k"),
            ("os-2+3.conf", "sort-key os;version 2;linux /k"),
            ("os-1+3.conf", "sort-key os;version 1;linux /k"),
        ]),
        s(&[
            ("os-3+2-1.conf", "sort-key os;version 3"),
            ("os-2+3-0.conf", "sort-key os;version 2"),
            ("os-1+1-2.conf", "sort-key os;version 1"),
        ]),
        s(&[
            ("os-3+0-3.conf", "sort-key os;version 3"),
            ("os-2.conf", "sort-key os;version 2"),
            ("os-1+0.conf", "sort-key os;version 1"),
        ]),
        s(&[
            ("a+0-3.conf", "sort-key os;version 3"),
            ("b+0-1.conf", "sort-key os;version 2"),
        ]),
        s(&[
            ("fedora-6.1.conf", "sort-key fedora;version 6.1.0-1"),
            ("fedora-6.10.conf", "sort-key fedora;version 6.10.0-1"),
            ("fedora-rc.conf", "sort-key fedora;version 6.10.0~rc1"),
            ("debian.conf", "sort-key debian;version 12"),
            ("m-b.conf", "sort-key os;machine-id bbbb;version 1"),
            ("m-a.conf", "sort-key os;machine-id aaaa;version 1"),
            ("m-none.conf", "sort-key os;version 0.1"),
            ("old-9.conf", ""),
            ("old-10.conf", ""),
            ("old-10a.conf", "version 99"),
        ]),
        s(&[
            (
                "treectl-os-10-aaaaaaaaaaaa.0+3.conf",
                "sort-key treectl-os;version 10",
            ),
            (
                "treectl-os-9-bbbbbbbbbbbb.1.conf",
                "sort-key treectl-os;version 9",
            ),
            (
                "treectl-os-2-cccccccccccc.0+0-3.conf",
                "sort-key treectl-os;version 2",
            ),
            (
                "treectl-os-1-dddddddddddd.0+1-2.conf",
                "sort-key treectl-os;version 1",
            ),
        ]),
        s(&[
            ("v-pre.conf", "sort-key k;version 123~rc1-1"),
            ("v-base.conf", "sort-key k;version 123"),
            ("v-rel.conf", "sort-key k;version 123-1"),
            ("v-patch.conf", "sort-key k;version 123^post1"),
            ("v-point.conf", "sort-key k;version 123.1-1"),
            ("v-alpha.conf", "sort-key k;version 123a-1"),
            ("v-zeros.conf", "sort-key k;version 0124"),
        ]),
    ];
    for (i, set) in sets.iter().enumerate() {
        write_set(tmp.path(), set);
        agree(tmp.path(), &format!("hand-made set {i}: {set:?}"));
    }
}

/// A small deterministic generator (xorshift), so a failure names a
/// reproducible set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

const VERSIONS: &[&str] = &[
    "",
    "1",
    "2",
    "10",
    "1.2",
    "1.10",
    "1.2.3",
    "1.2~rc1",
    "1.2^p1",
    "1.2-1",
    "1.2a",
    "1.2.a",
    "01.2",
    "6.1.0-13-amd64",
    "6.1.0-9-amd64",
    "2024.05",
    "2024.5",
    "1_2",
    "v1",
    "V1",
];
const SORT_KEYS: &[&str] = &["", "", "os", "os", "debian", "treectl-os", "Treectl"];
const MACHINE_IDS: &[&str] = &["", "", "0a1b", "ffff"];
const COUNTERS: &[&str] = &["", "", "+3", "+2-1", "+1-2", "+0-3", "+0", "+3-0", "+10-0"];
const NAMES: &[&str] = &["os", "treectl-os", "linux", "a", "b-1", "b-10", "b-9", "z"];

#[test]
fn bootctl_orders_generated_mixtures_as_treectl_does() {
    if !require_bootctl("to compare treectl's boot order with systemd's") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        let n = 2 + (rng.next() % 7) as usize;
        let mut set = vec![];
        for i in 0..n {
            // Unique lowercase ids: bootctl leaves entries equal in every
            // key in no defined order, and compares names case-sensitively
            // where systemd-boot folds case.
            let name = format!("{}-{i}{}.conf", rng.pick(NAMES), rng.pick(COUNTERS));
            let mut body = vec![];
            for (key, pool) in [
                ("sort-key", SORT_KEYS),
                ("machine-id", MACHINE_IDS),
                ("version", VERSIONS),
            ] {
                let v = rng.pick(pool);
                if !v.is_empty() {
                    body.push(format!("{key} {v}"));
                }
            }
            set.push((name, body.join(";")));
        }
        write_set(tmp.path(), &set);
        agree(tmp.path(), &format!("round {round}: {set:?}"));
    }
}

#[test]
fn versions_compare_like_systemd_analyze() {
    if !treectl_e2e::require("systemd-analyze", "to compare versions as systemd does") {
        return;
    }
    let tool = treectl_e2e::skip::find_tool("systemd-analyze").unwrap();
    let extra = ["123~rc1", "~", "^", "1..2", "1.-2", "a1", "1a", "00", "1~~"];
    let all: Vec<&str> = VERSIONS.iter().copied().chain(extra).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let out = Command::new(&tool)
                .args(["compare-versions", a, b])
                .output()
                .unwrap();
            // Exit status 0: equal, 11: a > b, 12: a < b.
            let theirs = match out.status.code() {
                Some(0) => std::cmp::Ordering::Equal,
                Some(11) => std::cmp::Ordering::Greater,
                Some(12) => std::cmp::Ordering::Less,
                other => panic!("systemd-analyze compare-versions {a:?} {b:?}: {other:?}"),
            };
            assert_eq!(compare_versions(a, b), theirs, "{a:?} vs {b:?}");
        }
    }
}

//! The compose merge rules (docs/lockfile.md, "Compose") as a table.
//!
//! Each row builds small component trees in a fresh repository, composes
//! them and checks the whole resulting tree (or the error) and what the
//! compose reported. Every row is composed three ways, which must agree on
//! the tree id, the reports and the error: without a cache, with a fresh
//! cache, and with the cache that fresh run left behind (warm: nothing is
//! merged again).

use std::collections::BTreeMap;

use treectl_compose::cache::ComposeCache;
use treectl_compose::merge::{
    compose_tree, compose_tree_cached, ComposeInput, ComposeStats, MergeRules, Override,
};
use treectl_compose::ComposeError;
use treectl_store::commit::{MemDir, MemEntry};
use treectl_store::object::{DirMeta, EntryKind, FileHeader};
use treectl_store::store::Transaction;
use treectl_store::{ObjectId, Repo, RepoMode};

/// One entry of a component tree; missing parents are made 0755.
enum Item {
    File(&'static str, u32, &'static str),
    Link(&'static str, &'static str),
    Dir(&'static str, u32),
}

/// A 0644 file.
fn f(path: &'static str, content: &'static str) -> Item {
    Item::File(path, 0o644, content)
}

/// A 0755 file.
fn x(path: &'static str, content: &'static str) -> Item {
    Item::File(path, 0o755, content)
}

fn l(path: &'static str, target: &'static str) -> Item {
    Item::Link(path, target)
}

/// A directory with its permissions (`/` for the root).
fn d(path: &'static str, perm: u32) -> Item {
    Item::Dir(path, perm)
}

fn meta(perm: u32) -> DirMeta {
    DirMeta::new(perm, 0, 0, Vec::new())
}

/// The directory at `comps` below `root`, made if missing.
fn dir_at<'a>(root: &'a mut MemDir, comps: &[&str]) -> &'a mut MemDir {
    let mut dir = root;
    for c in comps {
        let e = dir
            .entries
            .entry(c.as_bytes().to_vec())
            .or_insert_with(|| MemEntry::Dir(MemDir::new(meta(0o755))));
        let MemEntry::Dir(next) = e else {
            panic!("{c} is not a directory in the row's tree")
        };
        dir = next;
    }
    dir
}

fn split(path: &str) -> (Vec<&str>, &str) {
    let mut comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let name = comps.pop().unwrap_or("");
    (comps, name)
}

fn build(txn: &Transaction<'_>, items: &[Item]) -> (ObjectId, ObjectId) {
    let mut root = MemDir::new(meta(0o755));
    for item in items {
        match item {
            Item::Dir("/", perm) => root.meta = meta(*perm),
            Item::Dir(path, perm) => {
                let (parent, name) = split(path);
                dir_at(dir_at(&mut root, &parent), &[name]).meta = meta(*perm);
            }
            Item::File(path, perm, content) => {
                let header = FileHeader::regular(*perm, 0, 0, Vec::new(), content.len() as u64);
                let id = txn.write_file(&header, content.as_bytes()).unwrap();
                let (parent, name) = split(path);
                let e = MemEntry::File { id, symlink: false };
                dir_at(&mut root, &parent).entries.insert(name.into(), e);
            }
            Item::Link(path, target) => {
                let header = FileHeader::symlink(target.as_bytes().to_vec(), 0, 0, Vec::new());
                let id = txn.write_file(&header, &[]).unwrap();
                let (parent, name) = split(path);
                let e = MemEntry::File { id, symlink: true };
                dir_at(&mut root, &parent).entries.insert(name.into(), e);
            }
        }
    }
    root.write(txn).unwrap()
}

/// Every path of a stored tree, one line each: `/p d755`, `/p f644
/// content`, `/p l target`.
fn listing(repo: &Repo, tree: &ObjectId, dirmeta: &ObjectId) -> Vec<String> {
    fn walk(repo: &Repo, tree: &ObjectId, dirmeta: &ObjectId, path: &str, out: &mut Vec<String>) {
        let m = repo.read_dirmeta(dirmeta).unwrap();
        out.push(format!(
            "{} d{:o}",
            if path.is_empty() { "/" } else { path },
            m.perm()
        ));
        for e in repo.read_tree(tree).unwrap().entries {
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            match e.kind {
                EntryKind::Dir { tree, meta } => walk(repo, &tree, &meta, &p, out),
                EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                    let (h, content) = repo.read_file(&file).unwrap();
                    out.push(if h.target.is_empty() {
                        format!("{p} f{:o} {}", h.perm(), String::from_utf8_lossy(&content))
                    } else {
                        format!("{p} l {}", String::from_utf8_lossy(&h.target))
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(repo, tree, dirmeta, "", &mut out);
    out
}

/// What a compose reported besides its tree, in report order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reports {
    duplicates: usize,
    overridden: Vec<String>,
    /// `path: was -> now`
    dirmeta: Vec<String>,
    removed: Vec<String>,
}

impl Reports {
    fn of(s: &ComposeStats) -> Reports {
        Reports {
            duplicates: s.identical_duplicates,
            overridden: s.overridden.clone(),
            dirmeta: s
                .dirmeta_differences
                .iter()
                .map(|d| format!("{}: {} -> {}", d.path, d.was, d.now))
                .collect(),
            removed: s.removed.clone(),
        }
    }
}

enum Want {
    /// The whole tree (see [`listing`]) and the reports.
    Tree(&'static [&'static str], Reports),
    /// The conflicts, as displayed, in order.
    Conflicts(&'static [&'static str]),
    /// An invalid-input error containing this.
    Invalid(&'static str),
}

struct Row {
    name: &'static str,
    components: Vec<(&'static str, Vec<Item>)>,
    rules: MergeRules,
    want: Want,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn reports(duplicates: usize, overridden: &[&str], dirmeta: &[&str], removed: &[&str]) -> Reports {
    Reports {
        duplicates,
        overridden: strs(overridden),
        dirmeta: strs(dirmeta),
        removed: strs(removed),
    }
}

fn rules(merged_usr: bool, remove: &[&str], overrides: &[(&str, &str)]) -> MergeRules {
    MergeRules {
        merged_usr,
        remove: strs(remove),
        overrides: overrides
            .iter()
            .map(|(path, component)| Override {
                path: path.to_string(),
                component: component.to_string(),
            })
            .collect(),
    }
}

fn plain() -> MergeRules {
    rules(false, &[], &[])
}

fn usr() -> MergeRules {
    rules(true, &[], &[])
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "identical files and symlinks in two components are fine",
            components: vec![
                ("a", vec![f("/etc/os-release", "debian"), f("/etc/a.conf", "a"), l("/etc/alt", "a.conf")]),
                ("b", vec![f("/etc/os-release", "debian"), f("/etc/b.conf", "b"), l("/etc/alt", "a.conf")]),
            ],
            rules: plain(),
            want: Want::Tree(
                &[
                    "/ d755",
                    "/etc d755",
                    "/etc/a.conf f644 a",
                    "/etc/alt l a.conf",
                    "/etc/b.conf f644 b",
                    "/etc/os-release f644 debian",
                ],
                reports(2, &[], &[], &[]),
            ),
        },
        Row {
            name: "an identical directory is spliced in unopened: its files are not duplicates",
            components: vec![
                ("a", vec![f("/usr/share/doc/x", "x"), f("/a", "a")]),
                ("b", vec![f("/usr/share/doc/x", "x"), f("/b", "b")]),
            ],
            rules: plain(),
            want: Want::Tree(
                &[
                    "/ d755",
                    "/a f644 a",
                    "/b f644 b",
                    "/usr d755",
                    "/usr/share d755",
                    "/usr/share/doc d755",
                    "/usr/share/doc/x f644 x",
                ],
                reports(0, &[], &[], &[]),
            ),
        },
        Row {
            name: "different files, modes, or a file and a directory conflict, all reported together",
            components: vec![
                ("a", vec![f("/etc/a", "one"), f("/etc/same", "s"), x("/etc/mode", "m"), f("/opt/tool", "bin")]),
                ("b", vec![f("/etc/a", "two"), f("/etc/same", "s"), f("/etc/mode", "m"), f("/opt/tool/x", "x")]),
            ],
            rules: plain(),
            want: Want::Conflicts(&[
                "/etc/a (content differs: a and b)",
                "/etc/mode (content differs: a and b)",
                "/opt/tool (type differs: a and b)",
            ]),
        },
        Row {
            name: "the first component's file is kept, so each later one conflicts with it",
            components: vec![
                ("a", vec![f("/etc/motd", "1")]),
                ("b", vec![f("/etc/motd", "2")]),
                ("c", vec![f("/etc/motd", "3")]),
            ],
            rules: plain(),
            want: Want::Conflicts(&[
                "/etc/motd (content differs: a and b)",
                "/etc/motd (content differs: a and c)",
            ]),
        },
        Row {
            name: "an override picks the named component, first or second",
            components: vec![
                ("a", vec![f("/etc/a", "a1"), f("/etc/c", "a3")]),
                ("b", vec![f("/etc/a", "b1"), f("/etc/c", "b3")]),
            ],
            rules: rules(false, &[], &[("/etc/a", "b"), ("/etc/c/", "a")]),
            want: Want::Tree(
                &["/ d755", "/etc d755", "/etc/a f644 b1", "/etc/c f644 a3"],
                reports(0, &["/etc/a", "/etc/c"], &[], &[]),
            ),
        },
        Row {
            name: "an override of a directory decides every conflict below it, files kept from both",
            components: vec![
                (
                    "a",
                    vec![f("/opt/app/bin/run", "a-run"), f("/opt/app/lib", "a-lib"), f("/opt/app/only-a", "a")],
                ),
                (
                    "b",
                    vec![f("/opt/app/bin/run", "b-run"), f("/opt/app/lib/x.so", "x"), f("/opt/app/only-b", "b")],
                ),
            ],
            rules: rules(false, &[], &[("/opt/app", "b")]),
            want: Want::Tree(
                &[
                    "/ d755",
                    "/opt d755",
                    "/opt/app d755",
                    "/opt/app/bin d755",
                    "/opt/app/bin/run f644 b-run",
                    "/opt/app/lib d755",
                    "/opt/app/lib/x.so f644 x",
                    "/opt/app/only-a f644 a",
                    "/opt/app/only-b f644 b",
                ],
                reports(0, &["/opt/app/bin/run", "/opt/app/lib"], &[], &[]),
            ),
        },
        Row {
            name: "an override elsewhere leaves a conflict standing",
            components: vec![("a", vec![f("/etc/a", "1")]), ("b", vec![f("/etc/a", "2")])],
            rules: rules(false, &[], &[("/etc/ab", "b"), ("/et", "b")]),
            want: Want::Conflicts(&["/etc/a (content differs: a and b)"]),
        },
        Row {
            name: "an override naming a component not in the lockfile is refused",
            components: vec![("a", vec![f("/etc/a", "1")])],
            rules: rules(false, &[], &[("/etc/a", "zz")]),
            want: Want::Invalid("override of \"/etc/a\" names component \"zz\", which is not in the lockfile"),
        },
        Row {
            name: "removals: /var/* empties /var, exact paths, a glob within one component",
            components: vec![
                (
                    "a",
                    vec![
                        f("/etc/machine-id", "123"),
                        f("/etc/hostname", "build"),
                        f("/etc/ssh/ssh_host_rsa_key", "k1"),
                        f("/etc/ssh/ssh_host_ed25519_key", "k2"),
                        f("/etc/ssh/sshd_config", "c"),
                        f("/var/lib/dpkg/status", "s"),
                        f("/var/log/x", "x"),
                    ],
                ),
                ("b", vec![f("/etc/b", "b"), f("/var/lib/b", "b"), f("/ssh_host_x", "not below /etc/ssh")]),
            ],
            rules: rules(
                false,
                &["/var/*", "/etc/machine-id", "/etc/ssh/ssh_host_*", "/no/such/*", "/etc/*/nothing"],
                &[],
            ),
            want: Want::Tree(
                &[
                    "/ d755",
                    "/etc d755",
                    "/etc/b f644 b",
                    "/etc/hostname f644 build",
                    "/etc/ssh d755",
                    "/etc/ssh/sshd_config f644 c",
                    "/ssh_host_x f644 not below /etc/ssh",
                    "/var d755",
                ],
                reports(
                    0,
                    &[],
                    &[],
                    &[
                        "/var/lib",
                        "/var/log",
                        "/etc/machine-id",
                        "/etc/ssh/ssh_host_ed25519_key",
                        "/etc/ssh/ssh_host_rsa_key",
                    ],
                ),
            ),
        },
        Row {
            name: "removals apply after merging, to conflict-free trees only",
            components: vec![("a", vec![f("/etc/a", "1")]), ("b", vec![f("/etc/a", "2")])],
            rules: rules(false, &["/etc/a"], &[]),
            want: Want::Conflicts(&["/etc/a (content differs: a and b)"]),
        },
        Row {
            name: "a directory takes the metadata of the last component, each difference reported",
            components: vec![
                ("a", vec![d("/etc", 0o755), f("/etc/a", "a")]),
                ("b", vec![d("/etc", 0o700), f("/etc/b", "b")]),
                ("c", vec![d("/", 0o700), d("/etc", 0o750), f("/etc/c", "c")]),
            ],
            rules: plain(),
            want: Want::Tree(
                &["/ d700", "/etc d750", "/etc/a f644 a", "/etc/b f644 b", "/etc/c f644 c"],
                reports(0, &[], &["/: a -> c", "/etc: a -> b", "/etc: b -> c"], &[]),
            ),
        },
        Row {
            name: "merged /usr moves /bin, /sbin and /lib* under /usr and leaves symlinks",
            components: vec![
                (
                    "a",
                    vec![
                        x("/bin/sh", "sh"),
                        x("/sbin/init", "init"),
                        f("/lib/x86_64-linux-gnu/libc.so.6", "libc"),
                        f("/lib64/ld.so", "ld"),
                        x("/usr/bin/env", "env"),
                    ],
                ),
                ("b", vec![x("/usr/bin/ls", "ls"), f("/lib/b.so", "b"), f("/etc/b", "b")]),
            ],
            rules: usr(),
            want: Want::Tree(
                &[
                    "/ d755",
                    "/bin l usr/bin",
                    "/etc d755",
                    "/etc/b f644 b",
                    "/lib l usr/lib",
                    "/lib64 l usr/lib64",
                    "/sbin l usr/sbin",
                    "/usr d755",
                    "/usr/bin d755",
                    "/usr/bin/env f755 env",
                    "/usr/bin/ls f755 ls",
                    "/usr/bin/sh f755 sh",
                    "/usr/lib d755",
                    "/usr/lib/b.so f644 b",
                    "/usr/lib/x86_64-linux-gnu d755",
                    "/usr/lib/x86_64-linux-gnu/libc.so.6 f644 libc",
                    "/usr/lib64 d755",
                    "/usr/lib64/ld.so f644 ld",
                    "/usr/sbin d755",
                    "/usr/sbin/init f755 init",
                ],
                reports(0, &[], &[], &[]),
            ),
        },
        Row {
            name: "merged /usr off: /bin stays a directory",
            components: vec![("a", vec![x("/bin/sh", "sh")]), ("b", vec![x("/usr/bin/ls", "ls")])],
            rules: plain(),
            want: Want::Tree(
                &["/ d755", "/bin d755", "/bin/sh f755 sh", "/usr d755", "/usr/bin d755", "/usr/bin/ls f755 ls"],
                reports(0, &[], &[], &[]),
            ),
        },
        Row {
            name: "merged /usr makes /usr 0755 when no component ships it",
            components: vec![("a", vec![d("/", 0o700), x("/bin/true", "t")])],
            rules: usr(),
            want: Want::Tree(
                &["/ d700", "/bin l usr/bin", "/usr d755", "/usr/bin d755", "/usr/bin/true f755 t"],
                reports(0, &[], &[], &[]),
            ),
        },
        Row {
            name: "merged /usr: the same file at /bin/x and /usr/bin/x is fine, different ones conflict",
            components: vec![
                ("a", vec![x("/bin/sh", "dash"), x("/bin/same", "s"), f("/etc/a", "1")]),
                ("b", vec![x("/usr/bin/sh", "bash"), x("/usr/bin/same", "s"), f("/etc/a", "2")]),
            ],
            rules: usr(),
            // /usr is merged before the other root entries.
            want: Want::Conflicts(&["/usr/bin/sh (content differs: b and a)", "/etc/a (content differs: a and b)"]),
        },
        Row {
            name: "merged /usr: an override of the /usr path decides /usr/bin/x against /bin/x",
            components: vec![
                ("a", vec![x("/bin/sh", "dash"), x("/bin/same", "s")]),
                ("b", vec![x("/usr/bin/sh", "bash"), x("/usr/bin/same", "s")]),
            ],
            rules: rules(true, &[], &[("/usr/bin/sh", "a")]),
            want: Want::Tree(
                &[
                    "/ d755",
                    "/bin l usr/bin",
                    "/usr d755",
                    "/usr/bin d755",
                    "/usr/bin/same f755 s",
                    "/usr/bin/sh f755 dash",
                ],
                reports(1, &["/usr/bin/sh"], &[], &[]),
            ),
        },
        Row {
            name: "merged /usr: the moved directory's metadata wins over /usr's",
            components: vec![
                ("a", vec![d("/usr/lib", 0o755), f("/usr/lib/a", "a")]),
                ("b", vec![d("/lib", 0o700), f("/lib/b", "b")]),
            ],
            rules: usr(),
            want: Want::Tree(
                &["/ d755", "/lib l usr/lib", "/usr d755", "/usr/lib d700", "/usr/lib/a f644 a", "/usr/lib/b f644 b"],
                reports(0, &[], &["/usr/lib: a -> b"], &[]),
            ),
        },
        Row {
            name: "merged /usr: a component's own /lib symlink stays, other moves happen",
            components: vec![
                ("a", vec![l("/lib", "usr/lib"), f("/usr/lib/a", "a")]),
                ("b", vec![f("/usr/lib/b", "b"), x("/bin/sh", "sh"), l("/lib", "usr/lib")]),
            ],
            rules: usr(),
            want: Want::Tree(
                &[
                    "/ d755",
                    "/bin l usr/bin",
                    "/lib l usr/lib",
                    "/usr d755",
                    "/usr/bin d755",
                    "/usr/bin/sh f755 sh",
                    "/usr/lib d755",
                    "/usr/lib/a f644 a",
                    "/usr/lib/b f644 b",
                ],
                reports(1, &[], &[], &[]),
            ),
        },
        Row {
            name: "merged /usr with a /lib symlink: moves are merged after the other root entries",
            components: vec![
                ("a", vec![l("/lib", "usr/lib"), f("/etc/a", "1"), f("/usr/bin/x", "1")]),
                ("b", vec![f("/etc/a", "2"), x("/bin/x", "2")]),
            ],
            rules: usr(),
            want: Want::Conflicts(&["/etc/a (content differs: a and b)", "/usr/bin/x (content differs: a and b)"]),
        },
        Row {
            name: "merged /usr: /bin a symlink in one component and a directory in another conflict",
            components: vec![("a", vec![l("/bin", "usr/bin")]), ("b", vec![x("/bin/sh", "sh")])],
            rules: usr(),
            want: Want::Conflicts(&["/bin (type differs: a and b)"]),
        },
        Row {
            name: "merged /usr: /usr shipped as a file conflicts with every move",
            components: vec![("a", vec![f("/usr", "not a directory")]), ("b", vec![x("/bin/sh", "sh"), f("/lib/x", "x")])],
            rules: usr(),
            want: Want::Conflicts(&[
                "/usr (type differs: a and merged /usr)",
                "/usr (type differs: a and merged /usr)",
            ]),
        },
        Row {
            name: "merged /usr, then removals on the merged paths",
            components: vec![
                ("a", vec![f("/lib/udev/rules.d/x", "r"), f("/lib/keep", "k")]),
                ("b", vec![f("/usr/lib/udev/hwdb", "h")]),
            ],
            rules: rules(true, &["/usr/lib/udev", "/lib/keep"], &[]),
            want: Want::Tree(
                &["/ d755", "/lib l usr/lib", "/usr d755", "/usr/lib d755", "/usr/lib/keep f644 k"],
                reports(0, &[], &[], &["/usr/lib/udev"]),
            ),
        },
    ]
}

/// One compose of a row, its objects committed so they can be read.
struct Run {
    result: Result<((ObjectId, ObjectId), Reports), String>,
    conflicts: Vec<String>,
    hits: usize,
    misses: usize,
}

fn compose_once(repo: &Repo, inputs: &[ComposeInput], rules: &MergeRules, cached: bool) -> Run {
    let txn = Transaction::begin(repo).unwrap();
    let mut cache = ComposeCache::load(repo);
    let r = if cached {
        compose_tree_cached(&txn, inputs, rules, &mut cache)
    } else {
        compose_tree(&txn, inputs, rules)
    };
    txn.commit(&[]).unwrap();
    let mut conflicts = Vec::new();
    let result = match r {
        Ok((ids, stats)) => {
            if cached {
                cache.save().unwrap();
            }
            Ok((ids, Reports::of(&stats)))
        }
        Err(e) => {
            if let ComposeError::Conflicts(c) = &e {
                conflicts = c.iter().map(|c| c.to_string()).collect();
            }
            Err(e.to_string())
        }
    };
    Run {
        result,
        conflicts,
        hits: cache.hits,
        misses: cache.misses,
    }
}

/// A repository that does not flush: these trees are thrown away.
fn scratch_repo(dir: &std::path::Path) -> Repo {
    let path = dir.join("repo");
    Repo::init(&path, RepoMode::BareUser).unwrap();
    let config = path.join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("fsync = true", "fsync = false")).unwrap();
    let repo = Repo::open(&path).unwrap();
    assert!(!repo.fsync());
    repo
}

fn check(row: &Row) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = scratch_repo(tmp.path());
    let txn = Transaction::begin(&repo).unwrap();
    let inputs: Vec<ComposeInput> = row
        .components
        .iter()
        .map(|(name, items)| {
            let (tree, meta) = build(&txn, items);
            ComposeInput {
                name: name.to_string(),
                tree,
                meta,
            }
        })
        .collect();
    txn.commit(&[]).unwrap();
    let name = row.name;

    let uncached = compose_once(&repo, &inputs, &row.rules, false);
    assert!(
        !ComposeCache::file(&repo).exists(),
        "{name}: the uncached run saved a cache"
    );
    let fresh = compose_once(&repo, &inputs, &row.rules, true);
    let warm = compose_once(&repo, &inputs, &row.rules, true);
    assert_eq!(fresh.hits, 0, "{name}: the fresh cache had entries");
    for (how, run) in [("fresh cache", &fresh), ("warm cache", &warm)] {
        assert_eq!(
            run.result, uncached.result,
            "{name}: {how} against no cache"
        );
        assert_eq!(
            run.conflicts, uncached.conflicts,
            "{name}: {how} against no cache"
        );
    }
    if uncached.result.is_ok() {
        assert_eq!(warm.misses, 0, "{name}: the warm cache merged again");
        assert_eq!(warm.hits > 0, fresh.misses > 0, "{name}: cache hits");
    }

    match (&row.want, uncached.result) {
        (Want::Tree(tree, want), Ok(((t, m), got))) => {
            assert_eq!(listing(&repo, &t, &m), strs(tree), "{name}: tree");
            assert_eq!(&got, want, "{name}: reports");
        }
        (Want::Conflicts(want), Err(e)) => {
            assert_eq!(uncached.conflicts, strs(want), "{name}: {e}");
            assert!(
                e.starts_with(&format!("{} conflicting path", want.len())),
                "{name}: {e}"
            );
        }
        (Want::Invalid(want), Err(e)) => {
            assert!(
                uncached.conflicts.is_empty() && e.contains(want),
                "{name}: {e}"
            );
        }
        (_, got) => panic!("{name}: unexpected outcome {got:?}"),
    }
}

#[test]
fn merge_rules_table() {
    let rows = rows();
    let mut names = BTreeMap::new();
    for row in &rows {
        assert!(
            names.insert(row.name, ()).is_none(),
            "duplicate row {}",
            row.name
        );
        check(row);
    }
}

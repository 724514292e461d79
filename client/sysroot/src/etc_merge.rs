//! The three-way `/etc` merge of an upgrade: the old commit's defaults, the
//! machine's current `/etc`, and the new commit's defaults.
//!
//! For each path, compared by type, permission bits, owner, content and
//! symlink target (never by timestamp):
//!
//! | local vs old | new vs old | result |
//! |---|---|---|
//! | unchanged | any | the new default (added, changed or removed upstream) |
//! | changed | unchanged | the local version (including a local removal) |
//! | changed | changed, same as local | the local version |
//! | changed | changed differently | the local version, reported as a conflict |
//!
//! Directories are merged entry by entry; a directory whose type changed
//! on one side is taken whole from the side the table picks.

#[cfg(test)]
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use treectl_store::fsutil::privileged;

/// One path as the merge compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        digest: [u8; 32],
    },
    Symlink {
        uid: u32,
        gid: u32,
        target: PathBuf,
    },
    Other,
}

/// What the merge did, for `treectl status` and the upgrade summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MergeReport {
    /// Paths changed on both sides differently: the local version was kept.
    pub conflicts: Vec<String>,
    /// Paths where a local change (or removal) was kept.
    pub kept_local: Vec<String>,
    /// Paths that follow the new default (added, changed or removed upstream).
    pub updated: Vec<String>,
}

fn read_entry(path: &Path) -> io::Result<Option<Entry>> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let ft = m.file_type();
    let (mode, uid, gid) = (m.mode() & 0o7777, m.uid(), m.gid());
    Ok(Some(if ft.is_dir() {
        Entry::Dir { mode, uid, gid }
    } else if ft.is_symlink() {
        Entry::Symlink {
            uid,
            gid,
            target: fs::read_link(path)?,
        }
    } else if ft.is_file() {
        Entry::File {
            mode,
            uid,
            gid,
            digest: Sha256::digest(fs::read(path)?).into(),
        }
    } else {
        Entry::Other
    }))
}

fn names(dir: &Path) -> io::Result<BTreeSet<std::ffi::OsString>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.map(|e| e.file_name())).collect(),
        // Absent, or not a directory on this side: no children here.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(BTreeSet::new())
        }
        Err(e) => Err(e),
    }
}

/// Which side a path's result comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    Local,
    New,
}

/// Merges into `out` (which must not exist). `old` or `new` may be missing
/// (a commit without `/etc`); `local` is the machine's current `/etc`.
pub fn merge_etc(old: &Path, local: &Path, new: &Path, out: &Path) -> io::Result<MergeReport> {
    let mut report = MergeReport::default();
    merge_path(old, local, new, out, Path::new(""), &mut report)?;
    Ok(report)
}

fn merge_path(
    old: &Path,
    local: &Path,
    new: &Path,
    out: &Path,
    rel: &Path,
    report: &mut MergeReport,
) -> io::Result<()> {
    let at = |root: &Path| {
        if rel.as_os_str().is_empty() {
            root.to_owned()
        } else {
            root.join(rel)
        }
    };
    let (o, l, n) = (
        read_entry(&at(old))?,
        read_entry(&at(local))?,
        read_entry(&at(new))?,
    );
    let shown = format!("/etc/{}", rel.display());
    let shown = shown.trim_end_matches('/').to_owned();
    let pick = if l == o {
        if n != o {
            report.updated.push(shown.clone());
        }
        Pick::New
    } else if n == o || l == n {
        report.kept_local.push(shown.clone());
        Pick::Local
    } else {
        report.conflicts.push(shown.clone());
        Pick::Local
    };
    let (chosen, from) = match pick {
        Pick::Local => (l.clone(), at(local)),
        Pick::New => (n.clone(), at(new)),
    };
    let dest = at(out);
    match chosen {
        None => Ok(()),
        // Both sides still directories: merge the children one by one.
        Some(Entry::Dir { mode, uid, gid })
            if matches!(l, Some(Entry::Dir { .. })) && matches!(n, Some(Entry::Dir { .. })) =>
        {
            fs::create_dir(&dest)?;
            let mut children: BTreeSet<std::ffi::OsString> = names(&at(local))?;
            children.extend(names(&at(new))?);
            children.extend(names(&at(old))?);
            for name in children {
                merge_path(old, local, new, out, &rel.join(&name), report)?;
            }
            set_meta(&dest, mode, uid, gid)
        }
        Some(_) => copy_tree(&from, &dest),
    }
}

fn set_meta(path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    if privileged() {
        lchown(path, Some(uid), Some(gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Copies a file, symlink or directory tree with modes and (as root) owners.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(from)?;
    let ft = m.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
        if privileged() {
            lchown(to, Some(m.uid()), Some(m.gid()))?;
        }
        return Ok(());
    }
    if ft.is_dir() {
        fs::create_dir(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
    } else if ft.is_file() {
        // A copy, never a hardlink: /etc is the machine's, the store is not.
        fs::copy(from, to)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: only files, symlinks and directories belong in /etc",
                from.display()
            ),
        ));
    }
    set_meta(to, m.mode() & 0o7777, m.uid(), m.gid())
}

/// Every path below `root` with its entry, for tests and status.
#[cfg(test)]
fn listing(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Entry>) {
        let p = root.join(rel);
        let e = read_entry(&p).unwrap().unwrap();
        let is_dir = matches!(e, Entry::Dir { .. });
        out.insert(rel.display().to_string(), e);
        if is_dir {
            for n in names(&p).unwrap() {
                walk(root, &rel.join(n), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a path looks in one of the three trees.
    #[derive(Clone, Copy)]
    enum S {
        Absent,
        File(&'static str, u32),
        Link(&'static str),
        Dir,
    }

    fn make(root: &Path, rel: &str, s: S) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match s {
            S::Absent => {}
            S::File(content, mode) => {
                fs::write(&p, content).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            S::Link(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
            S::Dir => {
                fs::create_dir(&p).unwrap();
                fs::write(p.join("inside"), "inside").unwrap();
            }
        }
    }

    #[test]
    fn three_way_table() {
        use S::*;
        // (name, old default, local, new default, expected result, expected class)
        let cases: &[(&str, S, S, S, S, &str)] = &[
            (
                "untouched",
                File("a", 0o644),
                File("a", 0o644),
                File("a", 0o644),
                File("a", 0o644),
                "",
            ),
            (
                "added-upstream",
                Absent,
                Absent,
                File("n", 0o644),
                File("n", 0o644),
                "updated",
            ),
            (
                "added-locally",
                Absent,
                File("l", 0o644),
                Absent,
                File("l", 0o644),
                "kept_local",
            ),
            (
                "removed-upstream",
                File("a", 0o644),
                File("a", 0o644),
                Absent,
                Absent,
                "updated",
            ),
            (
                "removed-locally",
                File("a", 0o644),
                Absent,
                File("a", 0o644),
                Absent,
                "kept_local",
            ),
            (
                "modified-upstream",
                File("a", 0o644),
                File("a", 0o644),
                File("b", 0o644),
                File("b", 0o644),
                "updated",
            ),
            (
                "modified-locally",
                File("a", 0o644),
                File("l", 0o644),
                File("a", 0o644),
                File("l", 0o644),
                "kept_local",
            ),
            (
                "modified-both-same",
                File("a", 0o644),
                File("x", 0o644),
                File("x", 0o644),
                File("x", 0o644),
                "kept_local",
            ),
            (
                "modified-both",
                File("a", 0o644),
                File("l", 0o644),
                File("u", 0o644),
                File("l", 0o644),
                "conflicts",
            ),
            (
                "removed-locally-changed-upstream",
                File("a", 0o644),
                Absent,
                File("u", 0o644),
                Absent,
                "conflicts",
            ),
            (
                "perm-upstream",
                File("a", 0o644),
                File("a", 0o644),
                File("a", 0o600),
                File("a", 0o600),
                "updated",
            ),
            (
                "perm-locally",
                File("a", 0o644),
                File("a", 0o640),
                File("a", 0o644),
                File("a", 0o640),
                "kept_local",
            ),
            (
                "perm-both",
                File("a", 0o644),
                File("a", 0o640),
                File("a", 0o600),
                File("a", 0o640),
                "conflicts",
            ),
            (
                "file-to-link-upstream",
                File("a", 0o644),
                File("a", 0o644),
                Link("target"),
                Link("target"),
                "updated",
            ),
            (
                "file-to-link-locally",
                File("a", 0o644),
                Link("mine"),
                File("a", 0o644),
                Link("mine"),
                "kept_local",
            ),
            (
                "file-to-dir-upstream",
                File("a", 0o644),
                File("a", 0o644),
                Dir,
                Dir,
                "updated",
            ),
            (
                "dir-to-file-locally",
                Dir,
                File("l", 0o644),
                Dir,
                File("l", 0o644),
                "kept_local",
            ),
            (
                "link-retargeted-upstream",
                Link("one"),
                Link("one"),
                Link("two"),
                Link("two"),
                "updated",
            ),
            (
                "link-retargeted-both",
                Link("one"),
                Link("mine"),
                Link("two"),
                Link("mine"),
                "conflicts",
            ),
        ];
        let tmp = tempfile::tempdir().unwrap();
        let (old, local, new, out, want) = (
            tmp.path().join("old"),
            tmp.path().join("local"),
            tmp.path().join("new"),
            tmp.path().join("out"),
            tmp.path().join("want"),
        );
        for root in [&old, &local, &new, &want] {
            fs::create_dir(root).unwrap();
            fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
        }
        for (name, o, l, n, w, _) in cases {
            make(&old, name, *o);
            make(&local, name, *l);
            make(&new, name, *n);
            make(&want, name, *w);
        }
        let report = merge_etc(&old, &local, &new, &out).unwrap();
        assert_eq!(listing(&out), listing(&want));
        for (name, .., class) in cases {
            let path = format!("/etc/{name}");
            let found = [
                ("conflicts", &report.conflicts),
                ("kept_local", &report.kept_local),
                ("updated", &report.updated),
            ]
            .iter()
            .filter(|(_, list)| list.contains(&path))
            .map(|(c, _)| *c)
            .collect::<Vec<_>>();
            let expected: Vec<&str> = if class.is_empty() {
                vec![]
            } else {
                vec![*class]
            };
            assert_eq!(found, expected, "{name}");
        }
    }

    #[test]
    fn nested_directories_merge_entry_by_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, local, new, out) = (
            tmp.path().join("old"),
            tmp.path().join("local"),
            tmp.path().join("new"),
            tmp.path().join("out"),
        );
        for root in [&old, &local, &new] {
            fs::create_dir_all(root.join("ssh/sshd_config.d")).unwrap();
            fs::write(root.join("ssh/sshd_config"), "default\n").unwrap();
        }
        fs::write(
            local.join("ssh/sshd_config.d/local.conf"),
            "PermitRootLogin no\n",
        )
        .unwrap();
        fs::write(new.join("ssh/moduli"), "new upstream file\n").unwrap();
        fs::write(new.join("ssh/sshd_config"), "new default\n").unwrap();
        let report = merge_etc(&old, &local, &new, &out).unwrap();
        assert_eq!(
            fs::read_to_string(out.join("ssh/sshd_config")).unwrap(),
            "new default\n"
        );
        assert_eq!(
            fs::read_to_string(out.join("ssh/moduli")).unwrap(),
            "new upstream file\n"
        );
        assert_eq!(
            fs::read_to_string(out.join("ssh/sshd_config.d/local.conf")).unwrap(),
            "PermitRootLogin no\n"
        );
        assert!(report.conflicts.is_empty());
        assert_eq!(report.kept_local, ["/etc/ssh/sshd_config.d/local.conf"]);
    }
}

//! The configure acceptance test on the Debian archive apt uses here: the
//! minbase set (Priority: required, plus apt) with systemd-sysv, udev,
//! dbus, openssh-server, iproute2, kmod and a kernel, locked with
//! `lock add --apt ... --with-deps` and composed, is a working system.
//!
//! Needs root, bwrap, apt's package lists and the network to the archive;
//! says why it skips, and does not skip under CI=true.

use std::path::{Path, PathBuf};
use std::process::Command;

use treectl_e2e::debian::{archive_uri, lock_minbase, minbase};
use treectl_e2e::{is_root, treectl_in};

const EXTRA: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "iproute2",
    "kmod",
    "linux-image-cloud-amd64",
];

/// Skips with the reason, or fails where skipping is refused (CI).
fn skip(needs: &str) {
    treectl_e2e::require_that(
        false,
        needs,
        "to compose the archive's packages into a system",
    );
}

fn ok(repo: &Path, args: &[&str]) -> String {
    treectl_in(repo, args).ok()
}

#[test]
fn minbase_with_ssh_and_a_kernel_is_a_working_system() {
    if !is_root() {
        return skip("needs root (scripts chown files; chroot checks)");
    }
    if !Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return skip("needs bwrap (Debian package bubblewrap)");
    }
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    let lock = t.path().join("os.lock");
    let lock_s = lock.to_str().unwrap();
    if let Err(needs) = lock_minbase(&repo, &lock, EXTRA) {
        return skip(&needs);
    }
    ok(&repo, &["compose", "--lockfile", lock_s, "--ref", "os/a"]);
    let co = t.path().join("co");
    ok(&repo, &["checkout", "os/a", co.to_str().unwrap()]);
    let chroot = |args: &[&str]| Command::new("chroot").arg(&co).args(args).output().unwrap();

    let o = chroot(&["getent", "passwd", "root", "sshd"]);
    assert!(o.status.success(), "{o:?}");
    // Exactly the lockfile's packages and versions.
    let text = std::fs::read_to_string(&lock).unwrap();
    // `[[component]]` tables start with name then version.
    let mut want: Vec<String> = Vec::new();
    for table in text.split("[[component]]").skip(1) {
        let value = |key: &str| {
            table
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap()
        };
        want.push(format!("{} {}", value("name"), value("version")));
    }
    want.sort();
    let o = chroot(&["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"]);
    let mut got: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    assert_eq!(got, want);
    let o = chroot(&["dpkg", "--audit"]);
    assert!(o.status.success() && o.stdout.is_empty(), "{o:?}");
    let o = Command::new("systemctl")
        .arg(format!("--root={}", co.display()))
        .args(["is-enabled", "ssh.service"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "enabled",
        "{o:?}"
    );
    let kernels: Vec<PathBuf> = std::fs::read_dir(co.join("usr/lib/modules"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!kernels.is_empty());
    for k in &kernels {
        assert!(
            k.join("modules.dep").exists(),
            "no modules.dep in {}",
            k.display()
        );
    }
    assert_eq!(std::fs::read(co.join("etc/machine-id")).unwrap(), b"");
}

/// One entry of a tree: type, mode, owner, and content or link target.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir(u32, u32, u32),
    File(u32, u32, u32, Vec<u8>),
    Link(PathBuf),
    Other(u32),
}

fn entries(root: &Path) -> std::collections::BTreeMap<String, Entry> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = p.symlink_metadata().unwrap();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            let (mode, uid, gid) = (m.mode() & 0o7777, m.uid(), m.gid());
            let entry = if m.file_type().is_symlink() {
                Entry::Link(std::fs::read_link(&p).unwrap())
            } else if m.is_dir() {
                stack.push(p.clone());
                Entry::Dir(mode, uid, gid)
            } else if m.is_file() {
                Entry::File(mode, uid, gid, std::fs::read(&p).unwrap())
            } else {
                Entry::Other(m.mode())
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// The documented differences between a configured compose and mmdebstrap
/// of the same packages (docs/lockfile.md, "Configure": "Compared with
/// mmdebstrap"): (path pattern, where it may be, why). `*` in a pattern
/// matches any characters, `/` included.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    ("/dev/*", "mmdebstrap", "device nodes: the store keeps none; /dev is devtmpfs at boot"),
    ("/var/*", "both", "/var content becomes tmpfiles.d entries; the dpkg database moves to /usr/lib/sysimage/dpkg"),
    ("/var/lib", "both", "/var/lib holds only the link to the dpkg database"),
    ("/var/lib/dpkg", "both", "a link to /usr/lib/sysimage/dpkg"),
    ("/usr/lib/sysimage*", "treectl", "the dpkg database of the image"),
    ("/usr/lib/tmpfiles.d/treectl-var.conf", "treectl", "recreates /var on each machine"),
    ("/usr/share/factory*", "treectl", "files under /var, copied by tmpfiles.d"),
    ("/run/*", "mmdebstrap", "the default remove pattern /run/*"),
    ("/etc/machine-id", "both", "empty: made at first boot"),
    ("/etc/shadow", "both", "password change dates: SOURCE_DATE_EPOCH, not today"),
    ("/etc/shadow-", "both", "password change dates: SOURCE_DATE_EPOCH, not today"),
    ("/etc/ssh/ssh_host_*", "mmdebstrap", "host keys: the default remove pattern"),
    ("/etc/hostname", "mmdebstrap", "the default remove pattern; mmdebstrap copies the host's"),
    ("/etc/.pwd.lock", "mmdebstrap", "the default remove pattern"),
    ("/etc/resolv.conf", "mmdebstrap", "mmdebstrap copies the host's"),
    ("/etc/fstab", "mmdebstrap", "mmdebstrap writes an unconfigured one"),
    ("/etc/apt/sources.list", "mmdebstrap", "mmdebstrap writes its mirror"),
    ("/boot/initrd.img-*", "both", "built with SOURCE_DATE_EPOCH and fixed mtimes"),
    ("/etc/shells", "both", "the same shells in another order (postinst order)"),
    ("/sysroot", "treectl", "where prepare-root mounts the physical root"),
    ("/usr/lib/systemd/system/treectl-ssh-host-keys.service", "treectl", "each machine makes its own SSH host keys at first boot"),
    ("/usr/lib/systemd/system/ssh.service.wants*", "treectl", "enables treectl-ssh-host-keys.service"),
    ("/usr/lib/modules/*/vmlinuz", "treectl", "the kernel where deployments take it from: /boot/vmlinuz-* linked"),
];

fn known(path: &str, side: &str) -> bool {
    KNOWN_DIFFERENCES.iter().any(|(pattern, where_, _)| {
        wildcard_match(pattern, path) && (*where_ == "both" || *where_ == side)
    })
}

fn wildcard_match(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return path == pattern;
    }
    let Some(mut rest) = path.strip_prefix(first) else {
        return false;
    };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[test]
fn differences_from_mmdebstrap_are_documented() {
    if !is_root() {
        return skip("needs root");
    }
    for tool in ["bwrap", "mmdebstrap"] {
        if !Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return skip(&format!(
                "needs {tool} (Debian packages bubblewrap, mmdebstrap)"
            ));
        }
    }
    let Some(uri) = archive_uri() else {
        return skip("no URIs: in /etc/apt/sources.list.d/*.sources");
    };
    let required = minbase();
    if required.len() < 10 {
        return skip("apt has no package lists (run apt-get update)");
    }
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let mm = t.path().join("mm");
    let o = Command::new("mmdebstrap")
        .args(["--quiet", "--variant=minbase"])
        .arg(format!("--include={}", EXTRA.join(",")))
        .arg("bookworm")
        .arg(&mm)
        .arg(&uri)
        .output()
        .unwrap();
    if !o.status.success() {
        return skip(&format!(
            "mmdebstrap failed (is the archive reachable?): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    // The same package set, locked from what mmdebstrap installed.
    let o = Command::new("chroot")
        .arg(&mm)
        .args(["dpkg-query", "-W", "-f", "${Package}=${Version}\\n"])
        .output()
        .unwrap();
    let pins: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    let lock = t.path().join("os.lock");
    let lock_s = lock.to_str().unwrap();
    let source = format!("{uri} bookworm main");
    let mut args = vec![
        "lock",
        "add",
        "--lockfile",
        lock_s,
        "--apt",
        &source,
        "--arch",
        "amd64",
    ];
    args.extend(pins.iter().map(String::as_str));
    ok(&repo, &args);
    ok(&repo, &["compose", "--lockfile", lock_s, "--ref", "os/a"]);
    let co = t.path().join("co");
    ok(&repo, &["checkout", "os/a", co.to_str().unwrap()]);

    let a = entries(&mm);
    let b = entries(&co);
    let mut unexplained = Vec::new();
    for path in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let side = match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(_), Some(_)) => "both",
            (Some(_), None) => "mmdebstrap",
            _ => "treectl",
        };
        if side == "both" && path == "/etc/shells" {
            // Allowed only when the set of lines is the same.
            let lines = |root: &Path| {
                let text = std::fs::read_to_string(root.join("etc/shells")).unwrap();
                text.lines()
                    .map(str::to_owned)
                    .collect::<std::collections::BTreeSet<_>>()
            };
            if lines(&mm) != lines(&co) {
                unexplained.push(format!("{path}: other shells"));
            }
            continue;
        }
        if !known(path, side) {
            unexplained.push(format!("{path} ({side})"));
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} differences are not documented: {}",
        unexplained.len(),
        unexplained
            .iter()
            .take(50)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
}

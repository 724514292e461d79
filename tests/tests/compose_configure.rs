//! Compose's configure step on real Debian packages: the corpus' small
//! server (minbase + systemd + openssh + python...) composed into a working
//! system, the same commit id with the caches cleared and in a fresh
//! repository of the other mode, a failing maintainer script that changes
//! nothing, and a hostile package whose scripts stay confined.
//!
//! Needs root, bwrap (bubblewrap), dpkg-deb and the benchmark corpus; each
//! test says why it skips, and none skips under CI=true.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use treectl_e2e::{corpus_dir, is_root, treectl_in};

/// Skips (printing why) when something is missing; refuses to under CI.
fn ready() -> Option<PathBuf> {
    let why = if !is_root() {
        Some("needs root (scripts chown files; chroot checks)".to_owned())
    } else if !Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some("needs bwrap (Debian package bubblewrap)".to_owned())
    } else if corpus_dir().is_none() {
        Some("the corpus is not built (shared/corpus/build.sh)".to_owned())
    } else {
        None
    };
    match why {
        Some(needs) => {
            treectl_e2e::require_that(false, &needs, "to configure a composed tree");
            None
        }
        None => corpus_dir(),
    }
}

/// `treectl --repo REPO ARGS`, whatever happens (the shared runner).
fn run(repo: &Path, args: &[&str]) -> Output {
    treectl_in(repo, args)
        .command()
        .output()
        .expect("run treectl")
}

fn ok(repo: &Path, args: &[&str]) -> String {
    treectl_in(repo, args).ok()
}

/// The corpus v1 `.deb` files, in the list's order.
fn corpus_debs(corpus: &Path) -> Vec<String> {
    let list = std::fs::read_to_string(corpus.join("lists/pkgs-v1.txt")).unwrap();
    list.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let file = format!("{}_{}_{}.deb", f[0], f[1].replace(':', "%3a"), f[2]);
            let p = corpus.join("debs").join(file);
            assert!(p.exists(), "{} is missing from the corpus", p.display());
            p.to_string_lossy().into_owned()
        })
        .collect()
}

/// A repository with the corpus locked in `os.lock` (local `.deb`s).
fn locked(dir: &Path, name: &str, mode: &str, corpus: &Path) -> (PathBuf, PathBuf) {
    let repo = dir.join(name);
    ok(&repo, &["init", "--mode", mode]);
    let lock = dir.join(format!("{name}.lock"));
    let debs = corpus_debs(corpus);
    let mut args = vec!["lock", "add", "--lockfile", lock.to_str().unwrap(), "--deb"];
    args.extend(debs.iter().map(String::as_str));
    ok(&repo, &args);
    (repo, lock)
}

fn chroot(root: &Path, args: &[&str]) -> Output {
    Command::new("chroot")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn refs(repo: &Path) -> String {
    ok(repo, &["refs"])
}

#[test]
fn corpus_composes_to_a_configured_system_reproducibly() {
    let Some(corpus) = ready() else { return };
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let (repo, lock) = locked(t.path(), "repo", "bare-user", &corpus);
    let lock_s = lock.to_str().unwrap();
    let c1 = ok(&repo, &["compose", "--lockfile", lock_s, "--ref", "os/a"])
        .trim()
        .to_owned();

    let co = t.path().join("co");
    ok(&repo, &["checkout", "os/a", co.to_str().unwrap()]);
    let o = chroot(&co, &["getent", "passwd", "root", "sshd"]);
    assert!(o.status.success(), "{o:?}");
    // dpkg knows exactly the lockfile's packages and versions.
    let o = chroot(&co, &["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"]);
    let mut got: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut want: Vec<String> = std::fs::read_to_string(corpus.join("lists/pkgs-v1.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", f[0], f[1])
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    let o = chroot(&co, &["dpkg", "--audit"]);
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
    assert_eq!(std::fs::read(co.join("etc/machine-id")).unwrap(), b"");
    // No host key is shared by every machine; each makes its own at first
    // boot, before ssh.service.
    let keys: Vec<_> = std::fs::read_dir(co.join("etc/ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert_eq!(keys, Vec::<String>::new());
    let unit =
        std::fs::read_to_string(co.join("usr/lib/systemd/system/treectl-ssh-host-keys.service"))
            .unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/ssh-keygen -A"), "{unit}");
    assert_eq!(
        std::fs::read_link(
            co.join("usr/lib/systemd/system/ssh.service.wants/treectl-ssh-host-keys.service")
        )
        .unwrap(),
        std::path::Path::new("../treectl-ssh-host-keys.service")
    );
    assert!(co.join("usr/lib/tmpfiles.d/treectl-var.conf").exists());
    assert_eq!(
        std::fs::read_link(co.join("var/lib/dpkg")).unwrap(),
        Path::new("../../usr/lib/sysimage/dpkg")
    );
    let shown = ok(&repo, &["show", "os/a"]);
    assert!(shown.contains("compose.configured: true"), "{shown}");
    assert!(shown.contains("\"dpkg_version\":\"1.21."), "{shown}");
    assert!(shown.contains("openssh-server postinst"), "{shown}");
    assert_eq!(
        ok(&repo, &["show", "--components", "os/a"]).lines().count(),
        want.len()
    );

    // Unchanged: the cached result, the same commit.
    let again = ok(&repo, &["compose", "--lockfile", lock_s, "--ref", "os/b"]);
    assert_eq!(again.trim(), c1);
    // Caches cleared: the scripts run again, the same commit.
    std::fs::remove_dir_all(repo.join("state/compose-cache")).unwrap();
    let cold = ok(&repo, &["compose", "--lockfile", lock_s, "--ref", "os/c"]);
    assert_eq!(cold.trim(), c1);
    // A fresh repository of the other mode: the same commit.
    let (other, other_lock) = locked(t.path(), "other", "archive", &corpus);
    assert_eq!(
        std::fs::read(&other_lock).unwrap(),
        std::fs::read(&lock).unwrap()
    );
    let fresh = ok(
        &other,
        &[
            "compose",
            "--lockfile",
            other_lock.to_str().unwrap(),
            "--ref",
            "os/a",
        ],
    );
    assert_eq!(fresh.trim(), c1);
}

/// A package of one file and maintainer scripts, built with dpkg-deb.
fn script_deb(dir: &Path, name: &str, scripts: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let build = dir.join(format!("build-{name}"));
    std::fs::create_dir_all(build.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(build.join("usr/share/doc").join(name)).unwrap();
    std::fs::write(build.join("usr/share/doc").join(name).join("README"), "x\n").unwrap();
    std::fs::write(
        build.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDepends: dash\nDescription: test package\n"),
    )
    .unwrap();
    for (script, body) in scripts {
        let p = build.join("DEBIAN").join(script);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deb = dir.join(format!("{name}_1.0_all.deb"));
    let o = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&build)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    deb
}

#[test]
fn failing_and_hostile_scripts() {
    let Some(corpus) = ready() else { return };
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let (repo, lock) = locked(t.path(), "repo", "bare-user", &corpus);
    let lock_s = lock.to_str().unwrap();
    ok(
        &repo,
        &["compose", "--lockfile", lock_s, "--ref", "os/base"],
    );

    // A postinst or a preinst that fails: one line naming it, its own
    // output before it; no ref moves, no scratch is left, fsck is clean.
    for (name, script, body, line) in [
        (
            "bad-postinst",
            "postinst",
            "#!/bin/sh\necho about to fail\nexit 3\n",
            "error: package bad-postinst: postinst failed with exit status 3",
        ),
        (
            "bad-preinst",
            "preinst",
            "#!/bin/sh\necho about to fail\nexit 4\n",
            "error: package bad-preinst: preinst failed with exit status 4",
        ),
    ] {
        let bad = script_deb(t.path(), name, &[(script, body)]);
        let bad_lock = t.path().join(format!("{name}.lock"));
        std::fs::copy(&lock, &bad_lock).unwrap();
        let bad_lock_s = bad_lock.to_str().unwrap();
        ok(
            &repo,
            &[
                "lock",
                "add",
                "--lockfile",
                bad_lock_s,
                "--deb",
                bad.to_str().unwrap(),
            ],
        );
        let before = refs(&repo);
        let o = run(
            &repo,
            &["compose", "--lockfile", bad_lock_s, "--ref", "os/bad"],
        );
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().last().unwrap_or_default(), line, "{err}");
        assert!(err.contains("  | about to fail"), "{err}");
        assert!(!err.contains("treectl preinst"), "{err}");
        assert!(refs(&repo) == before, "no ref may move");
        let scratch: Vec<_> = std::fs::read_dir(repo.join("tmp"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("configure-"))
            .collect();
        assert!(scratch.is_empty(), "the scratch checkout is removed");
        let fsck = run(&repo, &["fsck"]);
        assert!(fsck.status.success(), "{fsck:?}");
    }

    // A hostile package: its scripts try to write outside the tree, reach
    // the network, see host processes and keep a process running.
    let outside = t.path().join("outside-marker");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let postinst = format!(
        "#!/bin/bash\n\
         echo owned > {out} 2>/dev/null\n\
         echo owned > /../../escape\n\
         (echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo NET-REACHED > /net-result\n\
         ls /proc | grep -c '^[0-9]' > /proc-count\n\
         setsid sleep 4343 > /dev/null 2>&1 &\n\
         exit 0\n",
        out = outside.display()
    );
    let hostile = script_deb(t.path(), "hostile", &[("postinst", &postinst)]);
    let h_lock = t.path().join("hostile.lock");
    std::fs::copy(&lock, &h_lock).unwrap();
    let h_lock_s = h_lock.to_str().unwrap();
    ok(
        &repo,
        &[
            "lock",
            "add",
            "--lockfile",
            h_lock_s,
            "--deb",
            hostile.to_str().unwrap(),
        ],
    );
    ok(
        &repo,
        &[
            "compose",
            "--lockfile",
            h_lock_s,
            "--ref",
            "os/hostile",
            "--json",
        ],
    );
    assert!(!outside.exists(), "a script wrote outside the tree");
    assert_eq!(
        listener.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "a script reached the host's network"
    );
    let cat = |p: &str| run(&repo, &["cat", "os/hostile", p]);
    assert!(cat("/escape").status.success(), "/.. stays in the tree");
    assert!(!cat("/net-result").status.success(), "no network");
    let count: usize = String::from_utf8_lossy(&cat("/proc-count").stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(count < 10, "the script saw {count} processes");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("sleep\x004343"),
            "a script's process outlived configuring"
        );
    }
}

#[test]
fn kill_during_configure_leaves_the_repository_consistent() {
    let Some(corpus) = ready() else { return };
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let (repo, lock) = locked(t.path(), "repo", "bare-user", &corpus);
    let lock_s = lock.to_str().unwrap();
    // A postinst slow enough to be killed in.
    let slow = script_deb(
        t.path(),
        "slow-postinst",
        &[("postinst", "#!/bin/sh\ntouch /slow-started\nsleep 30\n")],
    );
    ok(
        &repo,
        &[
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--deb",
            slow.to_str().unwrap(),
        ],
    );
    let before = refs(&repo);
    let mut child = treectl_in(&repo, ["compose", "--lockfile", lock_s, "--ref", "os/a"])
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let in_script = loop {
        let found = std::fs::read_dir(repo.join("tmp"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().join("tree/slow-started").exists())
            })
            .unwrap_or(false);
        if found {
            break true;
        }
        if started.elapsed() > std::time::Duration::from_secs(300)
            || child.try_wait().unwrap().is_some()
        {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(in_script, "compose never reached the slow postinst");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(refs(&repo) == before, "no ref may move");
    let fsck = run(&repo, &["fsck"]);
    assert!(fsck.status.success(), "{fsck:?}");
    // Nothing of the killed run is still running.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
        assert!(
            !(cmdline.contains("bwrap") && cmdline.contains(repo.to_str().unwrap())),
            "the sandbox outlived its compose: {cmdline}"
        );
    }
    // The next compose succeeds, and removes the killed one's scratch tree.
    let id = ok(&repo, &["compose", "--lockfile", lock_s, "--ref", "os/a"]);
    assert_eq!(ok(&repo, &["rev-parse", "os/a"]).trim(), id.trim());
    let leftover: Vec<_> = std::fs::read_dir(repo.join("tmp"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("configure-"))
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
}

//! `treectl commit --tar/--deb/--git` and `checkout --union` journeys
//! through the real binary.

mod import_support;

use std::path::Path;
use std::process::Command;

use import_support::*;
use treectl_e2e::{require, treectl_in};

fn init(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    treectl_in(&repo, ["init"]).ok();
    // An existing ref, so "no new ref" is checked against something.
    let tree = dir.join("seed");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("x"), "x").unwrap();
    treectl_in(
        &repo,
        [
            "commit",
            "--ref",
            "seed",
            "--tree",
            tree.to_str().unwrap(),
            "--timestamp",
            "@0",
        ],
    )
    .ok();
    repo
}

/// Acceptance 2: refused with a one-line error naming the entry, a
/// non-zero exit status, no new ref and a clean fsck.
#[test]
fn hostile_archives_are_refused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let refs_before = treectl_in(&repo, ["refs"]).ok();
    let sym = RawEntry {
        kind: b'2',
        name: "lib",
        data: b"",
        link: "/etc",
        mode: 0o777,
    };
    let hard = RawEntry {
        kind: b'1',
        name: "h",
        data: b"",
        link: "../../etc/shadow",
        mode: 0o644,
    };
    let unseen = RawEntry {
        kind: b'1',
        name: "h2",
        data: b"",
        link: "later",
        mode: 0o644,
    };
    let chr = RawEntry {
        kind: b'3',
        name: "dev/null",
        data: b"",
        link: "",
        mode: 0o666,
    };
    let fifo = RawEntry {
        kind: b'6',
        name: "run/fifo",
        data: b"",
        link: "",
        mode: 0o600,
    };
    let good = raw_tar(&[f("a", &[b'a'; 2000])]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute",
            raw_tar(&[f("ok", b"1"), f("/etc/passwd", b"x")]),
            "/etc/passwd",
        ),
        (
            "dotdot",
            raw_tar(&[f("../../root/.ssh/authorized_keys", b"x")]),
            "../../root/.ssh/authorized_keys",
        ),
        (
            "through-symlink",
            raw_tar(&[sym, f("lib/evil", b"x")]),
            "lib/evil",
        ),
        (
            "hardlink-outside",
            raw_tar(&[f("a", b"1"), hard]),
            "../../etc/shadow",
        ),
        (
            "hardlink-unseen",
            raw_tar(&[unseen, f("later", b"1")]),
            "later",
        ),
        ("chardev", raw_tar(&[chr]), "dev/null"),
        ("fifo", raw_tar(&[fifo]), "run/fifo"),
        ("truncated", good[..1024].to_vec(), "truncated"),
    ];
    for (name, data, needle) in cases {
        let path = write(&dir.path().join(format!("{name}.tar")), &data);
        let out = treectl_in(
            &repo,
            [
                "commit",
                "--ref",
                &format!("bad/{name}"),
                "--tar",
                path.to_str().unwrap(),
            ],
        )
        .run();
        let stderr = &out.stderr;
        assert!(!out.status.success(), "{name}: accepted");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{name}: not one line: {stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{name}: error does not name {needle:?}: {stderr}"
        );
        assert_eq!(
            treectl_in(&repo, ["refs"]).ok(),
            refs_before,
            "{name}: refs changed"
        );
        let fsck = treectl_in(&repo, ["fsck"]).run();
        assert!(fsck.status.success(), "{name}: fsck: {}", fsck.stdout);
    }
    // The same hostile .deb through --deb.
    let out = treectl_in(
        &repo,
        [
            "commit",
            "--deb",
            dir.path().join("fifo.tar").to_str().unwrap(),
        ],
    )
    .run();
    assert!(!out.status.success());
    assert!(out.stderr.contains("not a Debian package"));
}

#[test]
fn allow_devices_skips_them_and_duplicates_warn() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let fifo = RawEntry {
        kind: b'6',
        name: "run/fifo",
        data: b"",
        link: "",
        mode: 0o600,
    };
    let data = raw_tar(&[f("a", b"first"), fifo, f("a", b"second")]);
    let path = write(&dir.path().join("d.tar"), &data);
    let p = path.to_str().unwrap();
    let out = treectl_in(&repo, ["commit", "--ref", "t", "--tar", p]).run();
    assert!(!out.status.success());
    let out = treectl_in(
        &repo,
        ["commit", "--ref", "t", "--tar", p, "--allow-devices"],
    )
    .run();
    let stderr = &out.stderr;
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped run/fifo"), "{stderr}");
    assert!(stderr.contains("duplicate entry \"a\""), "{stderr}");
    assert_eq!(treectl_in(&repo, ["cat", "t", "a"]).ok(), "second");
}

#[test]
fn setuid_files_listed_by_show() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut su = f("usr/bin/su", b"su");
    su.mode = 0o4755;
    let mut wall = f("usr/bin/wall", b"wall");
    wall.mode = 0o2755;
    let path = write(
        &dir.path().join("s.tar"),
        &raw_tar(&[su, wall, f("usr/bin/ls", b"ls")]),
    );
    treectl_in(
        &repo,
        ["commit", "--ref", "s", "--tar", path.to_str().unwrap()],
    )
    .ok();
    let show = treectl_in(&repo, ["show", "s"]).ok();
    assert!(show.contains("Setuid/setgid files:"), "{show}");
    assert!(
        show.contains("-rwsr-xr-x") && show.contains("/usr/bin/su"),
        "{show}"
    );
    assert!(
        show.contains("-rwxr-sr-x") && show.contains("/usr/bin/wall"),
        "{show}"
    );
    assert!(!show.contains("/usr/bin/ls"), "{show}");
    let json: serde_json::Value =
        serde_json::from_str(&treectl_in(&repo, ["show", "s", "--json"]).ok()).unwrap();
    let list = json["setuid_setgid"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["path"], "/usr/bin/su");
    assert_eq!(list[0]["mode"], "104755");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn git_commit_matches_git_archive() {
    if !require("git", "to make the repository to import") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("README"), "hello\n").unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(src.join("sub/deeper/data.txt"), "data").unwrap();
    std::os::unix::fs::symlink("sub/deeper/data.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("../README", src.join("sub/up")).unwrap();
    let mut perm = std::fs::metadata(src.join("run.sh")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(src.join("run.sh"), perm).unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "first import"]);
    let head = git(&src, &["rev-parse", "HEAD"]);
    // A later commit, so --rev really selects.
    std::fs::write(src.join("README"), "changed\n").unwrap();
    git(&src, &["commit", "-q", "-am", "second"]);

    let id = treectl_in(
        &repo,
        [
            "commit",
            "--ref",
            "g",
            "--git",
            src.to_str().unwrap(),
            "--rev",
            &head,
        ],
    )
    .ok();
    let id = id.trim();
    let show = treectl_in(&repo, ["show", "g", "--json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(json["metadata"]["git.commit"], head.as_str());
    assert_eq!(json["subject"], "first import");
    // A branch name resolves to its head.
    treectl_in(
        &repo,
        [
            "commit",
            "--ref",
            "g2",
            "--git",
            src.to_str().unwrap(),
            "--rev",
            "main",
        ],
    )
    .ok();
    let json: serde_json::Value =
        serde_json::from_str(&treectl_in(&repo, ["show", "g2", "--json"]).ok()).unwrap();
    assert_eq!(
        json["metadata"]["git.commit"],
        git(&src, &["rev-parse", "main"]).as_str()
    );
    assert_ne!(json["metadata"]["git.commit"], head.as_str());
    treectl_in(
        &repo,
        ["checkout", id, dir.path().join("co").to_str().unwrap()],
    )
    .ok();

    // git archive of the same commit, extracted with its modes.
    let tarball = dir.path().join("ga.tar");
    run(Command::new("git")
        .current_dir(&src)
        .args(["-c", "tar.umask=0022", "archive", "--format=tar", "-o"])
        .arg(&tarball)
        .arg(&head));
    let ga = dir.path().join("ga");
    std::fs::create_dir(&ga).unwrap();
    run(Command::new("tar")
        .arg("-xpf")
        .arg(&tarball)
        .arg("-C")
        .arg(&ga)
        .arg("--no-same-owner"));
    let mut a = snapshot(&dir.path().join("co"));
    let mut b = snapshot(&ga);
    // Compare modes, types, targets and content; owners differ by design
    // (treectl stores root, tar extracts as the current user) and the
    // extraction root's mode comes from tempdir.
    for m in [&mut a, &mut b] {
        m.remove(Path::new(""));
        for n in m.values_mut() {
            n.uid = 0;
            n.gid = 0;
        }
    }
    let diff = differences(&a, &b);
    assert!(diff.is_empty(), "{diff:#?}");
    assert_eq!(a[Path::new("run.sh")].mode, 0o755);
    assert_eq!(a[Path::new("README")].mode, 0o644);
    assert_eq!(
        std::fs::read(dir.path().join("co/README")).unwrap(),
        b"hello\n"
    );
    assert_eq!(a[Path::new("link")].kind, 'l');
}

#[test]
fn git_submodules_are_refused_by_name() {
    if !require("git", "to make the repository to import") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("a"), "a").unwrap();
    git(&src, &["add", "a"]);
    git(&src, &["commit", "-q", "-m", "a"]);
    let a = git(&src, &["rev-parse", "HEAD"]);
    // A gitlink entry is what a submodule is in a tree.
    git(
        &src,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{a},vendor/lib"),
        ],
    );
    git(&src, &["commit", "-q", "-m", "submodule"]);
    let refs_before = treectl_in(&repo, ["refs"]).ok();
    let out = treectl_in(
        &repo,
        [
            "commit",
            "--ref",
            "g",
            "--git",
            src.to_str().unwrap(),
            "--rev",
            "HEAD",
        ],
    )
    .run();
    let stderr = &out.stderr;
    assert!(!out.status.success());
    assert!(
        stderr.contains("submodule") && stderr.contains("vendor/lib"),
        "{stderr}"
    );
    assert_eq!(treectl_in(&repo, ["refs"]).ok(), refs_before);
    assert!(treectl_in(&repo, ["fsck"]).run().status.success());
}

#[test]
fn union_checkout_layers_commits() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let one = raw_tar(&[f("etc/a", b"1"), f("etc/shared", b"old"), f("bin/x", b"x")]);
    let two = raw_tar(&[f("etc/shared", b"new"), f("etc/b", b"2")]);
    let p1 = write(&dir.path().join("1.tar"), &one);
    let p2 = write(&dir.path().join("2.tar"), &two);
    treectl_in(
        &repo,
        ["commit", "--ref", "one", "--tar", p1.to_str().unwrap()],
    )
    .ok();
    treectl_in(
        &repo,
        ["commit", "--ref", "two", "--tar", p2.to_str().unwrap()],
    )
    .ok();
    let dest = dir.path().join("root");
    let d = dest.to_str().unwrap();
    treectl_in(&repo, ["checkout", "one", d]).ok();
    let out = treectl_in(&repo, ["checkout", "two", d]).run();
    assert!(
        !out.status.success(),
        "checkout over an existing directory without --union"
    );
    treectl_in(&repo, ["checkout", "two", d, "--union"]).ok();
    assert_eq!(std::fs::read(dest.join("etc/a")).unwrap(), b"1");
    assert_eq!(std::fs::read(dest.join("etc/b")).unwrap(), b"2");
    assert_eq!(std::fs::read(dest.join("etc/shared")).unwrap(), b"new");
    assert_eq!(std::fs::read(dest.join("bin/x")).unwrap(), b"x");
    // A hardlink checkout must not have written through into the store.
    treectl_in(
        &repo,
        [
            "checkout",
            "one",
            dir.path().join("again").to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read(dir.path().join("again/etc/shared")).unwrap(),
        b"old"
    );
    assert!(treectl_in(&repo, ["fsck"]).run().status.success());
}

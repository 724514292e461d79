//! Compose of directory components: merged directories are revisited by
//! the compose settings (removals) before the transaction commits.
//! Regression: two components sharing /etc, with the default removal of
//! /etc/hostname, failed with "tree object … is not in the repository".

mod common;

use std::fs;

use common::*;
use treectl_e2e::treectl_in;

#[test]
fn two_directory_components_sharing_etc_compose_with_default_removals() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir_all(a.join("etc")).unwrap();
    fs::create_dir_all(a.join("var/lib/seed")).unwrap();
    fs::write(a.join("etc/hostname"), "build-host\n").unwrap();
    fs::write(a.join("etc/a.conf"), "a\n").unwrap();
    fs::write(a.join("var/lib/seed/x"), "x\n").unwrap();
    fs::create_dir_all(b.join("etc")).unwrap();
    fs::write(b.join("etc/b.conf"), "b\n").unwrap();
    let repo = init(tmp.path(), "archive");
    let lock = tmp.path().join("os.lock");
    for (dir, name) in [(&a, "a"), (&b, "b")] {
        treectl_in(
            &repo,
            [
                "lock",
                "add",
                "--lockfile",
                lock.to_str().unwrap(),
                "--dir",
                dir.to_str().unwrap(),
                "--name",
                name,
            ],
        )
        .ok();
    }
    treectl_in(
        &repo,
        [
            "compose",
            "--lockfile",
            lock.to_str().unwrap(),
            "--ref",
            "os/x",
        ],
    )
    .ok();
    let co = tmp.path().join("co");
    treectl_in(&repo, ["checkout", "os/x", co.to_str().unwrap()]).ok();
    assert_eq!(fs::read_to_string(co.join("etc/a.conf")).unwrap(), "a\n");
    assert_eq!(fs::read_to_string(co.join("etc/b.conf")).unwrap(), "b\n");
    assert!(
        !co.join("etc/hostname").exists(),
        "/etc/hostname is removed by default"
    );
    assert_eq!(
        fs::read_dir(co.join("var")).unwrap().count(),
        0,
        "/var is emptied by default"
    );
    assert!(treectl_in(&repo, ["fsck"]).run().status.success());
}

/// Compose sets the commit's `version`: automatic (`<prefix>.<n>`, n
/// counting the ref's composes; `<prefix>.<n>.<m>` for a recompose of the
/// same tree), or `[compose] version`. `log` shows it.
#[test]
fn compose_sets_automatic_and_explicit_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    fs::create_dir_all(a.join("usr/bin")).unwrap();
    fs::write(a.join("usr/bin/tool"), "1\n").unwrap();
    let repo = init(tmp.path(), "archive");
    let lock = tmp.path().join("os.lock");
    let lock_s = lock.to_str().unwrap();
    treectl_in(
        &repo,
        [
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--dir",
            a.to_str().unwrap(),
            "--name",
            "a",
        ],
    )
    .ok();
    let base = fs::read_to_string(&lock).unwrap();
    let set_compose = |extra: &str| {
        let text = base.replacen(
            "\n[compose]\n",
            &format!("\n[compose]\ntimestamp = \"2024-06-01T12:00:00Z\"\n{extra}"),
            1,
        );
        assert_ne!(text, base, "the lockfile has a [compose] table");
        fs::write(&lock, text).unwrap();
    };
    let compose = || -> (String, String) {
        let out = treectl_in(
            &repo,
            ["compose", "--json", "--lockfile", lock_s, "--ref", "os/x"],
        )
        .ok();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let head = treectl_in(&repo, ["rev-parse", "os/x"]).ok();
        assert_eq!(v["commit"].as_str().unwrap(), head.trim());
        let shown: serde_json::Value =
            serde_json::from_str(&treectl_in(&repo, ["show", "--json", "os/x"]).ok()).unwrap();
        assert_eq!(shown["metadata"]["version"], v["version"], "{shown}");
        (
            v["version"].as_str().unwrap().to_owned(),
            head.trim().to_owned(),
        )
    };

    set_compose("");
    assert_eq!(compose().0, "20240601.1");
    // The same tree again: a recompose, one level down.
    assert_eq!(compose().0, "20240601.1.1");
    assert_eq!(compose().0, "20240601.1.2");
    // A new tree: the next n.
    fs::write(a.join("usr/bin/tool"), "2\n").unwrap();
    assert_eq!(compose().0, "20240601.2");
    let log = treectl_in(&repo, ["log", "os/x"]).ok();
    assert!(log.contains("Version: 20240601.2\n"), "{log}");
    assert!(log.contains("Version: 20240601.1.2\n"), "{log}");

    set_compose("version-prefix = \"os\"\n");
    fs::write(a.join("usr/bin/tool"), "3\n").unwrap();
    assert_eq!(compose().0, "os.1");
    fs::write(a.join("usr/bin/tool"), "4\n").unwrap();
    assert_eq!(compose().0, "os.2");

    set_compose("version = \"7.0\"\n");
    let (v, head) = compose();
    assert_eq!(v, "7.0");

    // A bad version is refused and moves nothing.
    set_compose("version = \"7 0\"\n");
    fs::write(a.join("usr/bin/tool"), "5\n").unwrap();
    let err = treectl_in(&repo, ["compose", "--lockfile", lock_s, "--ref", "os/x"]).fails();
    assert!(err.contains("version \"7 0\""), "{err}");
    assert_eq!(treectl_in(&repo, ["rev-parse", "os/x"]).ok().trim(), head);
}

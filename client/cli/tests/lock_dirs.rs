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

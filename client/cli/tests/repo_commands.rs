//! Journeys through the repository commands, run on the real binary.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use treectl_e2e::{compare_trees, is_root, treectl_in};

const TS: &str = "2024-01-01T00:00:00Z";

fn commit(repo: &Path, r: &str, tree: &Path) -> String {
    treectl_in(
        repo,
        [
            "commit",
            "--ref",
            r,
            "--tree",
            tree.to_str().unwrap(),
            "--timestamp",
            TS,
        ],
    )
    .ok()
    .trim()
    .to_owned()
}

#[test]
fn commit_checkout_round_trip_in_both_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    for mode in ["archive", "bare-user"] {
        let repo = init(tmp.path(), mode);
        commit(&repo, "os/a", &src);
        for copy in [false, true] {
            let dest = tmp.path().join(format!("co-{mode}-{copy}"));
            let mut args = vec!["checkout", "os/a", dest.to_str().unwrap()];
            if copy {
                args.push("--copy");
            }
            treectl_in(&repo, &args).ok();
            let diffs = compare_trees(&src, &dest, is_root());
            assert!(diffs.is_empty(), "{mode} copy={copy}: {diffs:#?}");
        }
        // A subpath checkout holds just that directory.
        let sub = tmp.path().join(format!("sub-{mode}"));
        treectl_in(
            &repo,
            [
                "checkout",
                "os/a",
                sub.to_str().unwrap(),
                "--subpath",
                "/usr/bin",
            ],
        )
        .ok();
        assert!(compare_trees(&src.join("usr/bin"), &sub, is_root()).is_empty());
    }
}

#[test]
fn bare_user_checkout_hardlinks_and_fixes_mtimes() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    fs::write(
        src.join("etc/motd-copy"),
        fs::read(src.join("etc/motd")).unwrap(),
    )
    .unwrap();
    let repo = init(tmp.path(), "bare-user");
    commit(&repo, "os/a", &src);
    let (d1, d2) = (tmp.path().join("d1"), tmp.path().join("d2"));
    treectl_in(&repo, ["checkout", "os/a", d1.to_str().unwrap()]).ok();
    treectl_in(&repo, ["checkout", "os/a", d2.to_str().unwrap()]).ok();
    let a = fs::metadata(d1.join("etc/motd")).unwrap();
    let b = fs::metadata(d2.join("etc/motd")).unwrap();
    let c = fs::metadata(d1.join("etc/motd-copy")).unwrap();
    assert_eq!(a.ino(), b.ino(), "checkouts share the object's inode");
    assert_eq!(a.ino(), c.ino(), "identical files are stored once");
    assert_eq!(a.mtime(), 0);
    assert_eq!(fs::metadata(d1.join("etc")).unwrap().mtime(), 0);
}

#[test]
fn tree_id_ignores_mtimes_order_and_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    sample_tree(&a);
    // The same content created in the opposite order, with other mtimes.
    let b = tmp.path().join("b");
    fs::create_dir_all(b.join("usr/bin")).unwrap();
    fs::write(b.join("usr/empty-file"), b"").unwrap();
    std::os::unix::fs::symlink("usr/bin", b.join("bin")).unwrap();
    fs::write(b.join("usr/bin/su"), b"setuid").unwrap();
    fs::set_permissions(b.join("usr/bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(b.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(b.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(b.join("etc/empty")).unwrap();
    fs::write(b.join("etc/motd"), "welcome\n".repeat(100)).unwrap();
    fs::write(b.join("etc/hostname"), "demo\n").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    fs::File::options()
        .write(true)
        .open(b.join("etc/hostname"))
        .unwrap()
        .set_modified(old)
        .unwrap();

    let archive = init(tmp.path(), "archive");
    let bare = init(tmp.path(), "bare-user");
    let ids: Vec<String> = [(&archive, &a), (&archive, &b), (&bare, &a), (&bare, &b)]
        .iter()
        .enumerate()
        .map(|(i, (repo, tree))| commit(repo, &format!("t/{i}"), tree))
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");

    // A different mode is a different tree.
    fs::set_permissions(b.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap();
    let changed = commit(&bare, "t/changed", &b);
    assert_ne!(
        show_json(&bare, &changed)["root_tree"],
        show_json(&bare, &ids[0])["root_tree"]
    );
}

#[test]
fn log_show_ls_cat_diff_and_rev_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let repo = init(tmp.path(), "archive");
    let first = commit(&repo, "os/a", &src);
    fs::write(src.join("etc/hostname"), "changed\n").unwrap();
    fs::remove_file(src.join("usr/empty-file")).unwrap();
    fs::create_dir(src.join("opt")).unwrap();
    fs::write(src.join("opt/new"), "n").unwrap();
    let second = treectl_in(
        &repo,
        [
            "commit",
            "--ref",
            "os/a",
            "--tree",
            src.to_str().unwrap(),
            "--timestamp",
            TS,
            "--subject",
            "second",
            "--metadata",
            "version=2.0",
        ],
    )
    .ok()
    .trim()
    .to_owned();

    assert_eq!(treectl_in(&repo, ["rev-parse", "os/a"]).ok().trim(), second);
    assert_eq!(treectl_in(&repo, ["rev-parse", "os/a^"]).ok().trim(), first);
    assert_eq!(
        treectl_in(&repo, ["rev-parse", "os/a~1"]).ok().trim(),
        first
    );
    assert_eq!(
        treectl_in(&repo, ["rev-parse", &second[..10]]).ok().trim(),
        second
    );
    let err = treectl_in(&repo, ["rev-parse", "os/a~2"]).fails();
    assert!(err.contains("has no parent"), "{err}");

    let log = treectl_in(&repo, ["log", "os/a"]).ok();
    assert!(log.find(&second).unwrap() < log.find(&first).unwrap());
    assert!(log.contains("Version: 2.0"));
    let log_json: serde_json::Value =
        serde_json::from_str(&treectl_in(&repo, ["log", "--json", "os/a"]).ok()).unwrap();
    assert_eq!(log_json.as_array().unwrap().len(), 2);

    let show = show_json(&repo, "os/a");
    assert_eq!(show["parent"], first.as_str());
    assert_eq!(show["metadata"]["version"], "2.0");
    assert_eq!(show["subject"], "second");

    assert_eq!(
        treectl_in(&repo, ["cat", "os/a", "/etc/hostname"]).ok(),
        "changed\n"
    );
    assert_eq!(
        treectl_in(&repo, ["cat", "os/a^", "etc/hostname"]).ok(),
        "demo\n"
    );
    let err = treectl_in(&repo, ["cat", "os/a", "/etc"]).fails();
    assert!(err.contains("is a directory"), "{err}");
    let err = treectl_in(&repo, ["cat", "os/a", "/nope"]).fails();
    assert!(err.contains("does not exist"), "{err}");

    let ls = treectl_in(&repo, ["ls", "os/a", "/usr/bin"]).ok();
    assert!(ls.contains("-rwsr-xr-x"), "{ls}");
    let ls_all: serde_json::Value =
        serde_json::from_str(&treectl_in(&repo, ["ls", "-R", "--json", "os/a"]).ok()).unwrap();
    let link = ls_all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/bin")
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "usr/bin");

    let diff = treectl_in(&repo, ["diff", "os/a^", "os/a"]).ok();
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(
        lines,
        [
            "M /etc/hostname",
            "A /opt",
            "A /opt/new",
            "D /usr/empty-file"
        ],
        "{diff}"
    );
}

#[test]
fn fsck_names_every_flipped_truncated_or_deleted_object() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    for mode in ["archive", "bare-user"] {
        let repo = init(tmp.path(), mode);
        commit(&repo, "os/a", &src);
        let clean = treectl_in(&repo, ["fsck"]).run();
        assert!(clean.status.success(), "fresh repository is clean");
        for obj in objects(&repo) {
            let name = obj.file_name().unwrap().to_string_lossy().into_owned();
            let dir = obj
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let id = format!("{dir}{}", name.split('.').next().unwrap());
            let original = fs::read(&obj).unwrap();
            let perms = fs::metadata(&obj).unwrap().permissions();
            fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
            let mut damages: Vec<(String, Option<Vec<u8>>)> = Vec::new();
            let mut positions = vec![0, original.len() / 2, original.len().saturating_sub(1)];
            positions.dedup();
            for &pos in positions.iter().filter(|_| !original.is_empty()) {
                let mut bad = original.clone();
                bad[pos] ^= 0x01;
                damages.push((format!("flip byte {pos}"), Some(bad)));
            }
            if !original.is_empty() {
                damages.push((
                    "truncate".into(),
                    Some(original[..original.len() - 1].to_vec()),
                ));
            }
            damages.push(("delete".into(), None));
            for (what, content) in damages {
                match &content {
                    // Rewriting in place keeps the inode and its attributes.
                    Some(bytes) => {
                        let mut f = fs::File::options()
                            .write(true)
                            .truncate(true)
                            .open(&obj)
                            .unwrap();
                        std::io::Write::write_all(&mut f, bytes).unwrap();
                    }
                    None => {
                        fs::rename(&obj, tmp.path().join("saved")).unwrap();
                    }
                }
                let out = treectl_in(&repo, ["fsck", "--json"]).run();
                assert_eq!(
                    out.status.code(),
                    Some(3),
                    "{mode} {name}: {what} not detected"
                );
                let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                let named = report["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["object"] == id.as_str());
                assert!(
                    named,
                    "{mode} {name}: {what}: findings do not name {id}: {report}"
                );
                match content {
                    Some(_) => {
                        let mut f = fs::File::options()
                            .write(true)
                            .truncate(true)
                            .open(&obj)
                            .unwrap();
                        std::io::Write::write_all(&mut f, &original).unwrap();
                    }
                    None => fs::rename(tmp.path().join("saved"), &obj).unwrap(),
                }
            }
            fs::set_permissions(&obj, perms).unwrap();
            assert!(
                treectl_in(&repo, ["fsck"]).run().status.success(),
                "{mode} {name} restored"
            );
        }
    }
}

#[test]
fn fsck_repair_removes_corrupt_objects_and_marks_commits_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let repo = init(tmp.path(), "archive");
    let id = commit(&repo, "os/a", &src);
    let victim = objects(&repo)
        .into_iter()
        .find(|p| p.extension().unwrap() == "filez")
        .unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&victim, bytes).unwrap();
    let out = treectl_in(&repo, ["fsck", "--repair", "--json"]).run();
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let repaired = report["repaired"].to_string();
    assert!(
        repaired.contains("removed corrupt file object"),
        "{repaired}"
    );
    assert!(
        repaired.contains(&format!("marked commit {id} partial")),
        "{repaired}"
    );
    assert!(!victim.exists());
    // The repaired repository is consistent: the commit is known partial.
    let out = treectl_in(&repo, ["fsck", "--json"]).run();
    assert!(out.status.success(), "{}", out.stdout);
    assert_eq!(show_json(&repo, "os/a")["partial"], true);
}

#[test]
fn prune_after_ref_moves_back_removes_exactly_the_unreachable_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    for mode in ["archive", "bare-user"] {
        let repo = init(tmp.path(), mode);
        let first = commit(&repo, "os/a", &src);
        let after_first = objects(&repo);
        fs::write(src.join("etc/hostname"), format!("second {mode}\n")).unwrap();
        fs::create_dir_all(src.join("var/new/deeper")).unwrap();
        fs::write(src.join("var/new/deeper/file"), mode).unwrap();
        commit(&repo, "os/a", &src);
        let after_second = objects(&repo);
        assert!(after_second.len() > after_first.len());

        // Nothing is unreachable while the ref holds the second commit.
        let dry: serde_json::Value =
            serde_json::from_str(&treectl_in(&repo, ["prune", "--dry-run", "--json"]).ok())
                .unwrap();
        assert_eq!(dry["objects_deleted"], 0);

        treectl_in(&repo, ["reset", "os/a", &first]).ok();
        let report: serde_json::Value =
            serde_json::from_str(&treectl_in(&repo, ["prune", "--json"]).ok()).unwrap();
        assert_eq!(
            objects(&repo),
            after_first,
            "{mode}: exactly the first commit's objects remain"
        );
        assert_eq!(
            report["objects_deleted"],
            after_second.len() - after_first.len()
        );
        assert!(treectl_in(&repo, ["fsck"]).run().status.success());
        let co = tmp.path().join(format!("after-prune-{mode}"));
        treectl_in(&repo, ["checkout", "os/a", co.to_str().unwrap()]).ok();
        fs::remove_dir_all(src.join("var")).unwrap();
        fs::write(src.join("etc/hostname"), "demo\n").unwrap();
    }
}

#[test]
fn prune_removes_the_deltas_to_commits_no_ref_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let repo = init(tmp.path(), "archive");
    let first = commit(&repo, "os/a", &src);
    fs::write(src.join("etc/hostname"), "second\n").unwrap();
    let second = commit(&repo, "os/a", &src);
    treectl_in(&repo, ["delta", "generate", &first, &second]).ok();
    treectl_in(&repo, ["delta", "generate", "--from-scratch", &first]).ok();
    let deltas = repo.join("deltas");
    // What an interrupted generation leaves is not a delta: left alone.
    let leftover = deltas.join(format!(".{first}.delta.tmp-1"));
    fs::write(&leftover, "partial").unwrap();
    let to_second = deltas.join(format!("{first}-{second}.delta"));
    let to_first = deltas.join(format!("{first}.delta"));
    assert!(to_second.exists() && to_first.exists());

    // Both commits are kept: every delta stays.
    let report: serde_json::Value =
        serde_json::from_str(&treectl_in(&repo, ["prune", "--json"]).ok()).unwrap();
    assert_eq!(report["deltas_deleted"], 0);

    treectl_in(&repo, ["reset", "os/a", &first]).ok();
    let dry: serde_json::Value =
        serde_json::from_str(&treectl_in(&repo, ["prune", "--dry-run", "--json"]).ok()).unwrap();
    assert_eq!(dry["deltas_deleted"], 1);
    assert!(to_second.exists(), "a dry run deletes nothing");

    let out = treectl_in(&repo, ["prune"]).ok();
    assert!(out.contains("1 static delta"), "{out}");
    assert!(
        !to_second.exists(),
        "the delta to the dropped commit is gone"
    );
    assert!(to_first.exists(), "the delta to the kept commit stays");
    assert!(leftover.exists());
    assert!(treectl_in(&repo, ["fsck"]).run().status.success());
}

#[test]
fn prune_depth_keeps_only_recent_history() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let repo = init(tmp.path(), "bare-user");
    let mut ids = Vec::new();
    for i in 0..4 {
        fs::write(src.join("f"), format!("{i}")).unwrap();
        ids.push(commit(&repo, "os/a", &src));
    }
    treectl_in(&repo, ["prune", "--depth", "1"]).ok();
    assert_eq!(
        treectl_in(&repo, ["rev-parse", "os/a^"]).ok().trim(),
        ids[2]
    );
    let err = treectl_in(&repo, ["rev-parse", "os/a~2"]).fails();
    assert!(err.contains("not in the repository"), "{err}");
    let log = treectl_in(&repo, ["log", "os/a"]).ok();
    assert!(log.contains("history truncated"), "{log}");
    assert!(treectl_in(&repo, ["fsck"]).run().status.success());
}

#[test]
fn bad_input_gets_one_line_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let repo = init(tmp.path(), "bare-user");
    let head = commit(&repo, "os/a", &src);
    let before_objects = objects(&repo);
    let before_refs = refs(&repo);
    let unchanged = || {
        assert_eq!(objects(&repo), before_objects);
        assert_eq!(refs(&repo), before_refs);
        let tmp_entries: Vec<_> = fs::read_dir(repo.join("tmp")).unwrap().collect();
        assert!(tmp_entries.is_empty(), "no staging left behind");
    };

    let err = treectl_in(
        &repo,
        ["commit", "--ref", "os/b", "--tree", "/nonexistent/dir"],
    )
    .fails();
    assert!(err.contains("/nonexistent/dir"), "{err}");
    unchanged();
    let err = treectl_in(
        &repo,
        [
            "commit",
            "--ref",
            "../escape",
            "--tree",
            src.to_str().unwrap(),
        ],
    )
    .fails();
    assert!(err.contains("invalid ref name"), "{err}");
    unchanged();
    let err = treectl_in(&repo, ["show", "os/unknown"]).fails();
    assert!(err.contains("os/unknown"), "{err}");
    let err = treectl_in(&repo, ["log", "nope"]).fails();
    assert!(err.contains("nope"), "{err}");

    let dest = tmp.path().join("exists");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("keep"), "mine").unwrap();
    let err = treectl_in(&repo, ["checkout", "os/a", dest.to_str().unwrap()]).fails();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);
    assert_eq!(fs::read_to_string(dest.join("keep")).unwrap(), "mine");

    let missing_parent = tmp.path().join("no/such/parent");
    treectl_in(
        &repo,
        ["checkout", "os/a", missing_parent.to_str().unwrap()],
    )
    .fails();
    assert!(!tmp.path().join("no").exists());

    // A fifo in the tree is refused before anything is stored.
    let fifo_tree = tmp.path().join("fifo-tree");
    fs::create_dir(&fifo_tree).unwrap();
    fs::write(fifo_tree.join("a"), "new content only here").unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(fifo_tree.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = treectl_in(
        &repo,
        [
            "commit",
            "--ref",
            "os/fifo",
            "--tree",
            fifo_tree.to_str().unwrap(),
        ],
    )
    .fails();
    assert!(err.contains("pipe") && err.contains("fifo"), "{err}");
    unchanged();

    // An ambiguous prefix lists the candidates.
    let repo_handle = treectl_store::Repo::open(&repo).unwrap();
    let base = repo_handle
        .read_commit(&treectl_store::refs::rev_parse(&repo_handle, &head).unwrap())
        .unwrap();
    let txn = treectl_store::store::Transaction::begin(&repo_handle).unwrap();
    let mut seen = std::collections::HashMap::new();
    let mut pair = None;
    for t in 0..100_000 {
        let mut c = base.clone();
        c.timestamp = t;
        let id = txn.write_commit(&c).unwrap().to_hex();
        if let Some(other) = seen.insert(id[..4].to_owned(), id.clone()) {
            pair = Some((other, id));
            break;
        }
    }
    txn.commit(&[]).unwrap();
    let (x, y) = pair.expect("two commits share a 4-digit prefix");
    let err = treectl_in(&repo, ["rev-parse", &x[..4]]).fails();
    assert!(
        err.contains("ambiguous") && err.contains(&x[..12]) && err.contains(&y[..12]),
        "{err}"
    );

    // A repository from a newer format version is refused by every command.
    let config = fs::read_to_string(repo.join("config")).unwrap();
    fs::write(
        repo.join("config"),
        config.replace("format-version = 1", "format-version = 99"),
    )
    .unwrap();
    for args in [
        &["refs"][..],
        &["commit", "--ref", "os/b", "--tree", src.to_str().unwrap()],
        &["fsck"],
    ] {
        let err = treectl_in(&repo, args).fails();
        assert!(
            err.contains("format version 99") && err.contains("upgrade treectl"),
            "{err}"
        );
    }
    fs::write(repo.join("config"), config).unwrap();
    assert_eq!(refs(&repo), before_refs);

    let err = treectl_in(tmp.path().join("not-a-repo"), ["refs"]).fails();
    assert!(err.contains("treectl init"), "{err}");
}

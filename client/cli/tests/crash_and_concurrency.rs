//! Kills during commits, and prune racing commits.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use treectl_e2e::{compare_trees, treectl_in};

/// A tree big enough that a commit takes a measurable while: `files` files of
/// a few KiB each, spread over directories, all content unique to `seed`.
fn make_tree(root: &Path, seed: usize, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 16));
        fs::create_dir_all(&dir).unwrap();
        let body = format!("seed {seed} file {i}\n").repeat(200 + i % 300);
        fs::write(dir.join(format!("f{i}")), body).unwrap();
    }
}

/// What is left in the repository's `tmp/`.
fn tmp_entries(repo: &Path) -> Vec<String> {
    fs::read_dir(repo.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn sigkill_during_commit_never_breaks_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init(tmp.path(), "bare-user");
    let src = tmp.path().join("src");

    // How long an uninterrupted commit of fresh content takes here (the
    // faster of two, so the cold first run does not stretch the moments).
    let mut full = Duration::MAX;
    for seed in [1000, 1001] {
        let _ = fs::remove_dir_all(&src);
        make_tree(&src, seed, 600);
        let started = Instant::now();
        treectl_in(
            &repo,
            ["commit", "--ref", "os/a", "--tree", src.to_str().unwrap()],
        )
        .ok();
        full = full.min(started.elapsed());
    }

    // Exact moments through failpoints (the process SIGKILLs itself there),
    // then moments picked by the clock.
    let mut moments: Vec<Option<String>> = Vec::new();
    for n in [1, 2, 10, 50, 100, 200, 300, 400, 500, 600, 610, 617] {
        moments.push(Some(format!("stage-object:{n}")));
    }
    for n in [1, 10, 100, 200, 400, 600, 610, 617] {
        moments.push(Some(format!("store-object:{n}")));
    }
    moments.push(Some("before-refs:1".into()));
    moments.push(Some("after-refs:1".into()));
    moments.extend((0..12).map(|_| None));

    let (mut killed, mut timed_killed) = (0, 0);
    for (attempt, failpoint) in moments.iter().enumerate() {
        // New content each round, so every commit has objects to write.
        fs::remove_dir_all(&src).unwrap();
        make_tree(&src, attempt + 1, 600);
        let before = refs(&repo);
        let mut cmd = treectl_in(&repo, ["commit", "--ref", "os/a", "--tree"])
            .arg(&src)
            .command();
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let status = match failpoint {
            Some(fp) => cmd.env("TREECTL_FAILPOINT", fp).status().unwrap(),
            None => {
                let mut child = cmd.spawn().unwrap();
                std::thread::sleep(full.mul_f64(0.05 + 0.08 * timed_killed as f64));
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap()
            }
        };
        if let Some(fp) = failpoint {
            assert_eq!(
                status.signal(),
                Some(9),
                "failpoint {fp} did not kill the commit"
            );
        }
        if status.signal() == Some(9) {
            killed += 1;
            timed_killed += usize::from(failpoint.is_none());
        }
        let after = refs(&repo);
        // The ref names a complete commit, whatever the moment of the kill.
        let out = treectl_in(&repo, ["fsck", "--json"]).run();
        assert!(
            out.status.success(),
            "attempt {attempt} ({failpoint:?}): fsck: {}",
            out.stdout
        );
        if after != before {
            // The commit got as far as moving the ref: it must be whole.
            let co = tmp.path().join(format!("killed-{attempt}"));
            treectl_in(&repo, ["checkout", "os/a", co.to_str().unwrap()]).ok();
            assert!(compare_trees(&src, &co, true).is_empty());
            fs::remove_dir_all(&co).unwrap();
        } else if failpoint.as_deref() == Some("after-refs:1") {
            panic!("after-refs kill left the ref unmoved");
        }
        // The next command succeeds and clears what the dead one left.
        let id = treectl_in(
            &repo,
            ["commit", "--ref", "os/a", "--tree", src.to_str().unwrap()],
        )
        .ok();
        assert_eq!(
            tmp_entries(&repo),
            Vec::<String>::new(),
            "stale staging removed"
        );
        assert_eq!(treectl_in(&repo, ["rev-parse", "os/a"]).ok(), id);
    }
    eprintln!("{killed} commits killed ({timed_killed} by the clock; full commit: {full:?})");
    assert!(killed >= 22);

    let co = tmp.path().join("final");
    treectl_in(&repo, ["checkout", "os/a", co.to_str().unwrap()]).ok();
    assert!(compare_trees(&src, &co, true).is_empty());
    assert!(treectl_in(&repo, ["fsck"]).run().status.success());
}

#[test]
fn prune_while_commits_run_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init(tmp.path(), "bare-user");
    // Garbage for prune to find: commits whose refs were deleted.
    for g in 0..3 {
        let dir = tmp.path().join(format!("garbage{g}"));
        make_tree(&dir, 1000 + g, 50);
        treectl_in(
            &repo,
            [
                "commit",
                "--ref",
                &format!("garbage/{g}"),
                "--tree",
                dir.to_str().unwrap(),
            ],
        )
        .ok();
        treectl_in(&repo, ["refs", "--delete", &format!("garbage/{g}")]).ok();
    }
    const WRITERS: usize = 3;
    const ROUNDS: usize = 4;
    let trees: Vec<Vec<std::path::PathBuf>> = (0..WRITERS)
        .map(|w| {
            (0..ROUNDS)
                .map(|r| {
                    let dir = tmp.path().join(format!("w{w}r{r}"));
                    make_tree(&dir, w * 100 + r, 80);
                    dir
                })
                .collect()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    std::thread::scope(|s| {
        for (w, rounds) in trees.iter().enumerate() {
            let repo = repo.clone();
            s.spawn(move || {
                for dir in rounds {
                    treectl_in(
                        &repo,
                        [
                            "commit",
                            "--ref",
                            &format!("w/{w}"),
                            "--tree",
                            dir.to_str().unwrap(),
                        ],
                    )
                    .ok();
                }
            });
        }
        // Prune over and over while the writers run.
        let mut prunes = 0;
        while prunes < 12 && Instant::now() < deadline {
            treectl_in(&repo, ["prune"]).ok();
            prunes += 1;
        }
    });
    treectl_in(&repo, ["prune"]).ok();
    let report = treectl_in(&repo, ["fsck", "--json"]).run();
    assert!(report.status.success(), "{}", report.stdout);
    for (w, rounds) in trees.iter().enumerate() {
        // Every commit of every writer's history is intact.
        for (back, dir) in rounds.iter().rev().enumerate() {
            let co = tmp.path().join(format!("co-{w}-{back}"));
            treectl_in(
                &repo,
                ["checkout", &format!("w/{w}~{back}"), co.to_str().unwrap()],
            )
            .ok();
            let diffs = compare_trees(dir, &co, true);
            assert!(diffs.is_empty(), "writer {w} commit ~{back}: {diffs:?}");
        }
    }
    assert_eq!(refs(&repo).len(), WRITERS, "garbage refs stay deleted");
}

//! Acceptance 3 of the client issue: a pull killed (SIGKILL, through
//! failpoints) at 10 varied moments, from the first metadata objects to
//! just before the ref moves, and restarted each time, completes; the
//! mirror served each object at most twice in total; the checkout equals
//! the published tree and fsck is clean.

mod pull_harness;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;

use pull_harness::{make_tree, object_paths, s, Mirror, Publisher};
use treectl_e2e::{compare_trees, treectl};

/// (failpoint, N): the N-th pass in that run. File kills come after the
/// run's first two batches (50 objects each) so objects lost in flight by
/// one run are stored by the next before it is killed.
const KILLS: &[(&str, u32)] = &[
    ("pull-object", 3),
    ("pull-object", 20),
    ("pull-object", 150),
    ("store-object", 120),
    ("pull-object", 200),
    ("stage-object", 170),
    ("pull-object", 400),
    ("store-object", 300),
    ("pull-object", 130),
    ("pull-before-ref", 1),
];

#[test]
fn pull_killed_ten_times_completes_fetching_each_object_at_most_twice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let publisher = Publisher::new(dir);
    let tree = dir.join("tree");
    make_tree(&tree, 40, 50, 1);
    let commit = publisher.publish(&tree, "os/stable", "1");
    let mirror = Mirror::start(&publisher.srv);
    let client = dir.join("client");
    publisher.client(&client, &mirror.url());
    let pull = |failpoint: Option<String>| {
        let mut pull = treectl(["--repo", s(&client), "pull", "origin:os/stable"]).args([
            "--commit-every",
            "50",
            "-j",
            "4",
        ]);
        if let Some(fp) = failpoint {
            pull = pull.env("TREECTL_FAILPOINT", fp);
        }
        pull.run()
    };
    for (point, n) in KILLS {
        let out = pull(Some(format!("{point}:{n}")));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}:{n} did not kill the pull: {}",
            out.stderr
        );
        assert!(
            !client.join("refs/remotes/origin/os/stable").exists(),
            "the ref moved before the pull finished ({point}:{n})"
        );
        let fsck = treectl(["--repo", s(&client), "fsck"]).ok();
        assert!(fsck.contains("no problems"), "after {point}:{n}: {fsck}");
    }
    let out = pull(None);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        treectl(["--repo", s(&client), "rev-parse", "origin:os/stable"])
            .ok()
            .trim(),
        commit
    );
    let co = dir.join("co");
    treectl(["--repo", s(&client), "checkout", "origin:os/stable", s(&co)]).ok();
    assert!(compare_trees(&tree, &co, false).is_empty());
    let fsck = treectl(["--repo", s(&client), "fsck"]).ok();
    assert!(fsck.contains("no problems"), "{fsck}");

    let hits = mirror.hits();
    let objects = object_paths(&publisher.srv);
    let mut over: HashMap<&String, usize> = HashMap::new();
    for p in &objects {
        let n = hits.get(p).copied().unwrap_or(0);
        assert!(n >= 1, "{p} was never fetched");
        if n > 2 {
            over.insert(p, n);
        }
    }
    assert!(over.is_empty(), "fetched more than twice: {over:?}");
    let total: usize = objects.iter().map(|p| hits[p]).sum();
    eprintln!(
        "{} objects, {total} object requests over {} runs",
        objects.len(),
        KILLS.len() + 1
    );
    // The staging of the interrupted pulls is gone.
    assert!(!client.join("tmp/pull-origin").exists());
}

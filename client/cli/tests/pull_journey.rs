//! Pull journeys through the real binary: remotes in the config, a pull
//! from `treectl serve` (batched fetch) and from a static mirror (plain
//! GETs) into both repository modes, checkouts equal to the published
//! tree, fsck clean; and acceptance 4: after a server-side revert the pull
//! follows with no flag, while replaying the pre-revert index is refused.

mod pull_harness;

use std::path::Path;

use pull_harness::{make_tree, s, Mirror, Publisher, Trick};
use treectl_e2e::server::{write_tokens, Server};
use treectl_e2e::{compare_trees, http, treectl, treectl_in};

fn checkout_equals(client: &Path, rev: &str, tree: &Path, dest: &Path) {
    treectl(["--repo", s(client), "checkout", rev, s(dest)]).ok();
    let diffs = compare_trees(tree, dest, false);
    assert!(diffs.is_empty(), "checkout of {rev} differs: {diffs:?}");
    let out = treectl(["--repo", s(client), "fsck"]).ok();
    assert!(out.contains("no problems"), "{out}");
}

#[test]
fn remote_add_list_remove() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("r");
    treectl(["--repo", s(&repo), "init"]).ok();
    treectl(["keygen", "--out", s(&tmp.path().join("k"))]).ok();
    let key = tmp.path().join("k.pub");
    treectl([
        "--repo",
        s(&repo),
        "remote",
        "add",
        "origin",
        "http://127.0.0.1:1/",
        "--trusted-key",
        s(&key),
        "--mirror",
        "http://127.0.0.1:2/repo",
    ])
    .ok();
    let out = treectl(["--repo", s(&repo), "remote", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["name"], "origin");
    assert_eq!(v[0]["url"], "http://127.0.0.1:1");
    assert_eq!(v[0]["mirrors"][0], "http://127.0.0.1:2/repo");
    assert_eq!(v[0]["trusted_keys"].as_array().map(Vec::len), Some(1));
    for (args, expect) in [
        (
            &["remote", "add", "origin", "http://x"][..],
            "already exists",
        ),
        (&["remote", "add", "a/b", "http://x"], "invalid remote name"),
        (
            &["remote", "add", "m", "ftp://x"],
            "only http:// and https://",
        ),
        (&["pull", "nope:os/stable"], "no remote named nope"),
        (&["pull", "os/stable"], "not REMOTE:REF"),
    ] {
        let out = treectl_in(&repo, args).run();
        let err = out.stderr;
        assert!(!out.status.success());
        assert!(err.contains(expect), "{expect:?} in {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    treectl(["--repo", s(&repo), "remote", "remove", "origin"]).ok();
    assert_eq!(
        treectl(["--repo", s(&repo), "remote", "list"]).ok().trim(),
        "",
        "removed"
    );
}

#[test]
fn pull_from_treectl_serve_and_static_mirror_then_follow_a_revert() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let publisher = Publisher::new(dir);
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    make_tree(&v1, 5, 8, 1);
    make_tree(&v2, 5, 8, 2);
    let c1 = publisher.publish(&v1, "os/stable", "1");
    let tokens = write_tokens(dir, "anonymous");
    let server = Server::start(
        &publisher.srv,
        &["--sign-key", s(&publisher.key), "--tokens", s(&tokens)],
        &[],
    );
    let mirror = Mirror::start(&publisher.srv);

    // From the server (batched) into bare-user, from the mirror (GETs)
    // into archive.
    let a = dir.join("client-a");
    let b = dir.join("client-b");
    treectl(["--repo", s(&a), "init", "--mode", "bare-user"]).ok();
    treectl(["--repo", s(&b), "init", "--mode", "archive"]).ok();
    for (repo, url) in [(&a, server.url()), (&b, mirror.url())] {
        treectl([
            "--repo",
            s(repo),
            "remote",
            "add",
            "origin",
            &url,
            "--trusted-key",
            s(&publisher.key_pub),
            "--mirror",
            &mirror.url(),
        ])
        .ok();
        let out = treectl(["--repo", s(repo), "pull", "origin:os/stable", "--json"]).ok();
        let done: serde_json::Value =
            serde_json::from_str(out.lines().last().expect("a line")).expect("json");
        assert_eq!(done["event"], "done");
        assert_eq!(done["commit"], c1.as_str());
    }
    assert!(
        mirror.hits().keys().any(|p| p.starts_with("/objects/")),
        "the static mirror served objects"
    );
    checkout_equals(&a, "origin:os/stable", &v1, &dir.join("co-a1"));
    checkout_equals(&b, "origin:os/stable", &v1, &dir.join("co-b1"));

    // v2, published on the server.
    let token = dir.join("publish.token");
    let c2 = treectl([
        "--repo",
        s(&publisher.srv),
        "commit",
        "--ref",
        "os/stable",
        "--tree",
        s(&v2),
        "--metadata",
        "version=2",
    ])
    .ok()
    .trim()
    .to_owned();
    treectl([
        "publish",
        &server.url(),
        "os/stable",
        &c2,
        "--token-file",
        s(&token),
    ])
    .ok();
    let pre_revert = http::get(&server.addr, "/summary.json").body;
    treectl(["--repo", s(&a), "pull", "origin:os/stable"]).ok();
    assert_eq!(
        treectl(["--repo", s(&a), "rev-parse", "origin:os/stable"])
            .ok()
            .trim(),
        c2
    );
    checkout_equals(&a, "origin:os/stable", &v2, &dir.join("co-a2"));

    // Server-side revert: a new head with a higher serial and v1's tree.
    treectl([
        "revert",
        &server.url(),
        "os/stable",
        "--reason",
        "v2 breaks boot",
        "--token-file",
        s(&token),
    ])
    .ok();
    let out = treectl(["--repo", s(&a), "pull", "origin:os/stable"]).ok();
    let head = treectl(["--repo", s(&a), "rev-parse", "origin:os/stable"])
        .ok()
        .trim()
        .to_owned();
    assert!(out.contains(&head), "{out}");
    assert_ne!(head, c2);
    assert_ne!(head, c1, "a revert is a new commit");
    checkout_equals(&a, "origin:os/stable", &v1, &dir.join("co-a3"));

    // Replaying the pre-revert index (validly signed) is refused, in a new
    // process (the trust state is persisted): the server is gone and the
    // mirror serves the old index.
    server.terminate();
    mirror.set("/summary.json", Trick::Bytes(pre_revert));
    let out = treectl_in(&a, ["pull", "origin:os/stable", "--retries", "0"]).run();
    let err = out.stderr;
    assert!(
        !out.status.success(),
        "the replayed pre-revert index was accepted"
    );
    assert!(err.contains("lower than serial"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(
        treectl(["--repo", s(&a), "rev-parse", "origin:os/stable"])
            .ok()
            .trim(),
        head
    );
}

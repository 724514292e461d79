//! Pull journeys through the real binary: remotes in the config, a pull
//! from `treectl serve` (batched fetch) and from a static mirror (plain
//! GETs) into both repository modes, checkouts equal to the published
//! tree, fsck clean; and acceptance 4: after a server-side revert the pull
//! follows with no flag, while replaying the pre-revert index is refused.

mod pull_harness;

use std::path::Path;

use pull_harness::{make_tree, run, s, treectl, Mirror, Publisher, Trick};
use treectl_e2e::compare_trees;
use treectl_e2e::server::{http, write_tokens, Server};

fn checkout_equals(client: &Path, rev: &str, tree: &Path, dest: &Path) {
    run(&["--repo", s(client), "checkout", rev, s(dest)]);
    let diffs = compare_trees(tree, dest, false);
    assert!(diffs.is_empty(), "checkout of {rev} differs: {diffs:?}");
    let out = run(&["--repo", s(client), "fsck"]);
    assert!(out.contains("no problems"), "{out}");
}

#[test]
fn remote_add_list_remove() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("r");
    run(&["--repo", s(&repo), "init"]);
    run(&["keygen", "--out", s(&tmp.path().join("k"))]);
    let key = tmp.path().join("k.pub");
    run(&[
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
    ]);
    let out = run(&["--repo", s(&repo), "remote", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["name"], "origin");
    assert_eq!(v[0]["url"], "http://127.0.0.1:1");
    assert_eq!(v[0]["mirrors"][0], "http://127.0.0.1:2/repo");
    assert_eq!(v[0]["trusted_keys"].as_array().map(Vec::len), Some(1));
    let os = |a: &[&str]| -> Vec<std::ffi::OsString> { a.iter().map(|x| x.into()).collect() };
    for (args, expect) in [
        (
            os(&["--repo", s(&repo), "remote", "add", "origin", "http://x"]),
            "already exists",
        ),
        (
            os(&["--repo", s(&repo), "remote", "add", "a/b", "http://x"]),
            "invalid remote name",
        ),
        (
            os(&["--repo", s(&repo), "remote", "add", "m", "ftp://x"]),
            "only http:// and https://",
        ),
        (
            os(&["--repo", s(&repo), "pull", "nope:os/stable"]),
            "no remote named nope",
        ),
        (
            os(&["--repo", s(&repo), "pull", "os/stable"]),
            "not REMOTE:REF",
        ),
    ] {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(|x| x.as_os_str()).collect();
        let (ok, _, err) = treectl(&a);
        assert!(!ok);
        assert!(err.contains(expect), "{expect:?} in {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    run(&["--repo", s(&repo), "remote", "remove", "origin"]);
    assert_eq!(
        run(&["--repo", s(&repo), "remote", "list"]).trim(),
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
    run(&["--repo", s(&a), "init", "--mode", "bare-user"]);
    run(&["--repo", s(&b), "init", "--mode", "archive"]);
    for (repo, url) in [(&a, server.url()), (&b, mirror.url())] {
        run(&[
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
        ]);
        let out = run(&["--repo", s(repo), "pull", "origin:os/stable", "--json"]);
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
    let c2 = run(&[
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
    .trim()
    .to_owned();
    run(&[
        "publish",
        &server.url(),
        "os/stable",
        &c2,
        "--token-file",
        s(&token),
    ]);
    let pre_revert = http(&server.addr, "GET", "/summary.json", &[], b"").body;
    run(&["--repo", s(&a), "pull", "origin:os/stable"]);
    assert_eq!(
        run(&["--repo", s(&a), "rev-parse", "origin:os/stable"]).trim(),
        c2
    );
    checkout_equals(&a, "origin:os/stable", &v2, &dir.join("co-a2"));

    // Server-side revert: a new head with a higher serial and v1's tree.
    run(&[
        "revert",
        &server.url(),
        "os/stable",
        "--reason",
        "v2 breaks boot",
        "--token-file",
        s(&token),
    ]);
    let out = run(&["--repo", s(&a), "pull", "origin:os/stable"]);
    let head = run(&["--repo", s(&a), "rev-parse", "origin:os/stable"])
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
    let (ok, _, err) = treectl(&[
        "--repo".as_ref(),
        a.as_os_str(),
        "pull".as_ref(),
        "origin:os/stable".as_ref(),
        "--retries".as_ref(),
        "0".as_ref(),
    ]);
    assert!(!ok, "the replayed pre-revert index was accepted");
    assert!(err.contains("lower than serial"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(
        run(&["--repo", s(&a), "rev-parse", "origin:os/stable"]).trim(),
        head
    );
}

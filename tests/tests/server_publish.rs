//! Acceptance 1 of the server issue: `treectl serve` on 127.0.0.1:0; push
//! v1 as os/stable and publish, push v2 and publish, revert. The index
//! serial increases at each step, the reverted head's tree is v1's, the
//! history lists the three events in order with the reason, and every index
//! and commit signature verifies. Runs on small synthetic trees always, and
//! on the real corpus when it is built (CI refuses to skip that).

use std::path::Path;

use treectl_e2e::http;
use treectl_e2e::server::{init_repo, synthetic_tree, write_tokens, Server, ServerFixture};
use treectl_e2e::{require_corpus, treectl, treectl_in, Scratch};
use treectl_release::sign::{CommitSignatures, PublicKey};
use treectl_release::summary::{RefIndex, SignedIndex};
use treectl_store::refs::RefName;
use treectl_store::{ObjectId, Repo};

/// GETs and verifies the index; returns it.
fn fetch_index(server: &Server, key: &PublicKey) -> RefIndex {
    let resp = http::get(&server.addr, "/summary.json");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let signed = SignedIndex::parse(&resp.body).expect("index parses");
    signed.verify(key).expect("index signature verifies")
}

fn verify_commit_signature(server: &Server, id: &ObjectId, key: &PublicKey) {
    let resp = http::get(&server.addr, &format!("/signatures/{}.json", id.to_hex()));
    assert_eq!(resp.status, 200, "signatures of {id}: {}", resp.text());
    let sigs = CommitSignatures::parse(id, &resp.body).expect("signature file parses");
    let stable = RefName::new("os/stable").expect("valid");
    sigs.verify(&stable, key)
        .expect("commit signature verifies for os/stable");
    let testing = RefName::new("os/testing").expect("valid");
    assert!(
        sigs.verify(&testing, key).is_err(),
        "a signature for os/stable must not verify for another ref"
    );
}

fn journey(work: &Path, v1: &Path, v2: &Path) {
    let src = work.join("src");
    let srv = work.join("srv");
    let key = work.join("signing.key");
    init_repo(&src, "archive");
    init_repo(&srv, "archive");
    treectl(["keygen", "--out"]).arg(&key).ok();
    let public = PublicKey::load(&work.join("signing.key.pub")).expect("public key");
    let tokens = write_tokens(work, "anonymous");
    let token_file = work.join("publish.token");
    let server = Server::start(
        &srv,
        &[
            "--sign-key",
            key.to_str().expect("utf-8"),
            "--tokens",
            tokens.to_str().expect("utf-8"),
        ],
        &[],
    );
    let url = server.url();
    let commit = |tree: &Path, version: &str| -> ObjectId {
        let out = treectl_in(&src, ["commit", "--ref", "os/stable", "--tree"])
            .arg(tree)
            .args(["--timestamp", "2024-01-01T00:00:00Z"])
            .args(["--metadata", &format!("version={version}")])
            .ok();
        out.trim().parse().expect("commit id")
    };
    let push = || {
        treectl_in(&src, ["push", &url, "os/stable", "--token-file"])
            .arg(&token_file)
            .ok()
    };

    let c1 = commit(v1, "1");
    push();
    let i1 = fetch_index(&server, &public);
    assert_eq!(i1.refs["os/stable"].commit, c1);
    assert_eq!(i1.refs["os/stable"].version.as_deref(), Some("1"));

    let c2 = commit(v2, "2");
    let out = push();
    assert!(out.contains(&c2.to_hex()), "{out}");
    let i2 = fetch_index(&server, &public);
    assert!(
        i2.serial > i1.serial,
        "serial {} then {}",
        i1.serial,
        i2.serial
    );
    assert_eq!(i2.refs["os/stable"].commit, c2);

    let reason = "v2 breaks the boot on some machines";
    let out = treectl([
        "revert",
        &url,
        "os/stable",
        "--reason",
        reason,
        "--token-file",
    ])
    .arg(&token_file)
    .ok();
    let i3 = fetch_index(&server, &public);
    assert!(
        i3.serial > i2.serial,
        "serial {} then {}",
        i2.serial,
        i3.serial
    );
    let head = i3.refs["os/stable"].commit;
    assert!(out.contains(&head.to_hex()), "{out}");
    assert_ne!(head, c1, "a revert is a new commit");
    assert_ne!(head, c2);

    let src_repo = Repo::open(&src).expect("open src");
    let srv_repo = Repo::open(&srv).expect("open srv");
    let reverted = srv_repo.read_commit(&head).expect("reverted head");
    let v1_commit = src_repo.read_commit(&c1).expect("v1 commit");
    assert_eq!(reverted.root_tree, v1_commit.root_tree, "tree of v1");
    assert_eq!(reverted.root_meta, v1_commit.root_meta);
    assert_eq!(reverted.parent, Some(c2), "parent is the superseded head");
    assert_eq!(reverted.metadata["reverts-to"], c1.to_hex());
    assert_eq!(reverted.metadata["supersedes"], c2.to_hex());
    assert_eq!(reverted.metadata["revert-reason"], reason);
    assert_eq!(reverted.metadata["revert-by"], "release-bot");

    for id in [c1, c2, head] {
        verify_commit_signature(&server, &id, &public);
    }

    let out = treectl(["history", &url, "os/stable", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).expect("history JSON");
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3, "{out}");
    let got: Vec<(String, String, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind").to_owned(),
                e["commit"].as_str().expect("commit").to_owned(),
                e["serial"].as_u64().expect("serial"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("publish".to_owned(), c1.to_hex(), i1.serial),
            ("publish".to_owned(), c2.to_hex(), i2.serial),
            ("revert".to_owned(), head.to_hex(), i3.serial),
        ]
    );
    assert_eq!(entries[2]["reason"], reason);
    assert_eq!(entries[2]["who"], "release-bot");
    assert_eq!(entries[2]["reverts_to"], c1.to_hex());
    let text = treectl(["history", &url, "os/stable"]).ok();
    assert!(text.contains(reason), "{text}");

    // Pushing the reverted release again is refused with the revert's
    // reason (issue 14: a revert holds) ...
    let err = treectl_in(&src, ["push", &url, "os/stable", "--token-file"])
        .arg(&token_file)
        .fails();
    assert!(err.contains(reason) && err.contains("--force"), "{err}");
    assert_eq!(fetch_index(&server, &public).serial, i3.serial);
    // ... and with --force it uploads nothing: every object is there.
    let err = treectl_in(&src, ["push", &url, "os/stable", "--force", "--token-file"])
        .arg(&token_file)
        .code(0)
        .stderr;
    assert!(err.contains("0 of "), "{err}");

    let fsck = treectl_in(&srv, ["fsck"]).ok();
    assert!(fsck.contains("no problems"), "{fsck}");
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown: {status:?}");
}

#[test]
fn push_publish_revert_history_on_a_small_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (v1, v2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    synthetic_tree(&v1, 1);
    synthetic_tree(&v2, 2);
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    journey(&work, &v1, &v2);
}

#[test]
fn push_publish_revert_history_on_the_corpus() {
    let Some(corpus) = require_corpus("to push, publish and revert a real system") else {
        return;
    };
    let scratch = Scratch::new("4G");
    journey(
        scratch.path(),
        &corpus.join("corpus-v1"),
        &corpus.join("corpus-v2"),
    );
}

#[test]
fn local_repository_targets_work_without_a_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    synthetic_tree(&t.join("v1"), 1);
    synthetic_tree(&t.join("v2"), 2);
    let (src, dst, key) = (t.join("src"), t.join("dst"), t.join("k"));
    treectl_in(&src, ["init"]).ok();
    init_repo(&dst, "archive");
    treectl(["keygen", "--out"]).arg(&key).ok();
    for v in ["v1", "v2"] {
        treectl_in(&src, ["commit", "--ref", "os/stable", "--tree"])
            .arg(t.join(v))
            .ok();
        treectl_in(&src, ["push"])
            .arg(&dst)
            .args(["os/stable", "--sign-key"])
            .arg(&key)
            .ok();
    }
    treectl(["revert"])
        .arg(&dst)
        .args(["os/stable", "--reason", "local revert", "--sign-key"])
        .arg(&key)
        .ok();
    let out = treectl(["history"]).arg(&dst).arg("os/stable").ok();
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("local revert"), "{out}");
    let public = PublicKey::load(&t.join("k.pub")).expect("pub");
    let bytes = std::fs::read(dst.join("summary.json")).expect("index");
    let index = SignedIndex::parse(&bytes)
        .expect("parse")
        .verify(&public)
        .expect("verifies");
    assert_eq!(index.serial, 3);
    let fsck = treectl_in(&dst, ["fsck"]).ok();
    assert!(fsck.contains("no problems"), "{fsck}");
}

#[test]
fn batched_fetch_and_missing_answer_for_many_objects_at_once() {
    use treectl_release::publish::commit_closure;
    use treectl_store::store::verify_wire_form;
    use treectl_wire::PackReader;
    let f = ServerFixture::new("anonymous");
    let commit: ObjectId = f.commit(1).parse().expect("id");
    let server = f.serve(&[], &[]);
    let src = &f.src;
    let objects: Vec<serde_json::Value> = commit_closure(&Repo::open(src).expect("open"), &commit)
        .expect("closure")
        .objects
        .iter()
        .map(|(id, kind)| serde_json::json!({"id": id, "kind": kind}))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "objects": objects })).expect("json");
    // Before the push the server lacks every object; fetching them is a 404.
    let resp = http::request(&server.addr, "POST", "/v1/objects/missing", &[], &body);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(v["missing"].as_array().expect("array").len(), objects.len());
    assert_eq!(
        http::request(&server.addr, "POST", "/v1/objects/fetch", &[], &body).status,
        404
    );
    f.push(&server).ok();
    let resp = http::request(&server.addr, "POST", "/v1/objects/missing", &[], &body);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(v["missing"].as_array().expect("array").len(), 0);
    // One request streams them all, in request order, each verifying.
    let resp = http::request(&server.addr, "POST", "/v1/objects/fetch", &[], &body);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/x-treectl-pack")
    );
    let mut reader = PackReader::new(&resp.body[..], 1 << 30);
    let mut n = 0;
    while let Some((kind, id, data)) = reader.next_record().expect("valid pack") {
        assert_eq!(objects[n]["id"], id.to_hex());
        verify_wire_form(&id, kind, &data).expect("object verifies");
        n += 1;
    }
    assert_eq!(n, objects.len());
}

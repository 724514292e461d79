//! Issue 7, acceptance 1 through the real server: a sysroot installed from
//! `treectl serve` (signed index, trusted key), `/etc` and `/var` kept
//! across a staged upgrade, a server-side revert followed with no flag,
//! and a rollback. Every deployment is compared with its commit.

mod deploy_support;

use std::fs;
use std::path::Path;

use deploy_support::*;
use treectl_e2e::server::{write_tokens, Server};

fn push(w: &World, url: &str, token: &Path) {
    cmd(&[
        "--repo",
        w.origin().to_str().unwrap(),
        "push",
        url,
        "os/stable",
        "--token-file",
        token.to_str().unwrap(),
    ])
    .ok();
}

#[test]
fn install_from_serve_upgrade_stage_follow_revert_and_roll_back() {
    let w = World::new();
    let dir = w.dir.path();
    // The server: its own archive repository, a signing key, tokens.
    let served = dir.join("served");
    cmd(&[
        "--repo",
        served.to_str().unwrap(),
        "init",
        "--mode",
        "archive",
    ])
    .ok();
    let key = dir.join("release.key");
    cmd(&["keygen", "--out", key.to_str().unwrap()]).ok();
    let tokens = write_tokens(dir, "anonymous");
    let publish_token = dir.join("publish.token");
    let server = Server::start(
        &served,
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
        ],
        &[],
    );
    let url = server.url();

    // Release 1, pushed and published; the machine installs it from the server.
    let v1 = w.release("1", 1_700_000_000);
    push(&w, &url, &publish_token);
    let pubkey = dir.join("release.key.pub");
    cmd(&[
        "install",
        "--sysroot",
        &w.sr(),
        "--url",
        &url,
        "--trusted-key",
        pubkey.to_str().unwrap(),
        "origin:os/stable",
    ])
    .ok();
    let listed = w.listed();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["commit"], v1.as_str());
    assert_eq!(listed[0]["origin"]["remote"], "origin", "{listed:?}");
    assert_eq!(
        listed[0]["order"]["serial"], 1,
        "the index serial orders releases"
    );
    let d1 = w.default_path();
    assert_eq!(
        deployment_differences(&w.sysroot_repo(), &v1, &d1),
        Vec::<String>::new()
    );

    // The admin changes /etc and keeps data in /var.
    fs::write(d1.join("etc/local.conf"), "changed on this machine\n").unwrap();
    fs::write(w.var().join("lib/data"), "machine data\n").unwrap();

    // Release 2: staged, then finalized at "shutdown".
    let v2 = w.release("2", 1_700_000_100);
    push(&w, &url, &publish_token);
    cmd(&["upgrade", "--sysroot", &w.sr(), "--stage"]).ok();
    assert_eq!(
        w.listed()[0]["commit"],
        v1.as_str(),
        "staging does not switch"
    );
    cmd(&["finalize-staged", "--sysroot", &w.sr()]).ok();
    let listed = w.listed();
    assert_eq!(listed[0]["commit"], v2.as_str());
    assert_eq!(listed[0]["default"], true);
    assert_eq!(listed[1]["commit"], v1.as_str());
    let d2 = w.default_path();
    assert_eq!(
        deployment_differences(&w.sysroot_repo(), &v2, &d2),
        Vec::<String>::new()
    );
    assert_eq!(
        fs::read_to_string(d2.join("etc/local.conf")).unwrap(),
        "changed on this machine\n"
    );
    assert_eq!(
        fs::read_to_string(d2.join("etc/upstream.conf")).unwrap(),
        "upstream 2\n"
    );
    assert_eq!(
        fs::read_to_string(w.var().join("lib/data")).unwrap(),
        "machine data\n"
    );

    // Release engineering reverts the server; the machine follows with no flag.
    cmd(&[
        "revert",
        &url,
        "os/stable",
        "--reason",
        "release 2 breaks boot",
        "--token-file",
        publish_token.to_str().unwrap(),
    ])
    .ok();
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    let listed = w.listed();
    let reverted = listed[0]["commit"].as_str().unwrap().to_owned();
    assert_ne!(
        reverted, v1,
        "a revert is a new release, not the old commit"
    );
    assert_ne!(reverted, v2);
    let repo = w.sysroot_repo();
    let tree_of = |id: &str| {
        let out = cmd(&["--repo", repo.to_str().unwrap(), "show", "--json", id]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["root_tree"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        tree_of(&reverted),
        tree_of(&v1),
        "the revert serves release 1's tree"
    );
    let d3 = w.default_path();
    assert_eq!(
        deployment_differences(&repo, &reverted, &d3),
        Vec::<String>::new()
    );
    assert_eq!(
        fs::read_to_string(d3.join("etc/local.conf")).unwrap(),
        "changed on this machine\n"
    );
    assert_eq!(
        fs::read_to_string(w.var().join("lib/data")).unwrap(),
        "machine data\n"
    );

    // A local rollback returns to release 2.
    cmd(&["rollback", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v2.as_str());
    let d = w.default_path();
    assert_eq!(deployment_differences(&repo, &v2, &d), Vec::<String>::new());
    drop(server);
}

//! A revert that holds, on the real corpus (the release-engineering
//! journey of docs/deployments.md, "Origins, versions and reverts"): the
//! corpus v1 and v2 package sets, locked from their `.deb` files and
//! composed (the plain merge), are published through `treectl serve`; a machine installed at v1 downloads
//! v2; v2 is reverted on the server. The revert commit carries v1's
//! components (`show --components`, `status`, `history --components`),
//! publishing v2 again is refused with the revert's reason until
//! `--force`, and the machine that had v2 downloaded never deploys it
//! while it is rejected. Skips, saying why, without the corpus (refused
//! under CI).

use std::path::Path;

use serde_json::Value;
use treectl_e2e::server::{write_tokens, Server};
use treectl_e2e::{http, require_corpus, treectl, treectl_in, Scratch};

/// The corpus `.deb` files of the package list `list`.
fn debs(corpus: &Path, list: &str) -> Vec<String> {
    std::fs::read_to_string(corpus.join("lists").join(list))
        .expect("package list")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let file = format!("{}_{}_{}.deb", f[0], f[1].replace(':', "%3a"), f[2]);
            corpus.join("debs").join(file).display().to_string()
        })
        .collect()
}

/// Locks `debs` into `lock` and composes `os/stable` in `repo` (the plain
/// merge); returns the composed commit.
fn compose(repo: &Path, lock: &Path, debs: &[String]) -> String {
    treectl_in(repo, ["lock", "add", "--lockfile"])
        .arg(lock)
        .arg("--deb")
        .args(debs)
        .ok();
    treectl_in(repo, ["compose", "--ref", "os/stable", "--lockfile"])
        .arg(lock)
        .ok()
        .trim()
        .to_owned()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_corpus_revert_keeps_v1s_components_and_holds_against_v2() {
    let Some(corpus) = require_corpus("to revert a real release") else {
        return;
    };
    let scratch = Scratch::new("6G");
    let work = scratch.path();
    let served = work.join("served");
    let key = work.join("release.key");
    treectl_in(&served, ["init", "--mode", "archive"]).ok();
    treectl(["keygen", "--out"]).arg(&key).ok();
    let tokens = write_tokens(work, "anonymous");
    let token = work.join("publish.token");
    let lock = work.join("os.lock");
    std::fs::write(&lock, "version = 1\n[compose]\nconfigure = false\n").unwrap();
    let publish_local = |id: &str| {
        treectl(["publish"])
            .arg(&served)
            .args(["os/stable", id, "--sign-key"])
            .arg(&key)
            .ok();
    };
    let v1 = compose(&served, &lock, &debs(&corpus, "pkgs-v1.txt"));
    publish_local(&v1);
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
    let sr = work.join("sysroot");
    let client = |args: &[&str]| {
        treectl(args)
            .arg("--sysroot")
            .arg(&sr)
            .env("TREECTL_MIN_FREE", "0")
    };
    treectl(["install", "--sysroot"])
        .arg(&sr)
        .args(["--url", &url, "--trusted-key"])
        .arg(work.join("release.key.pub"))
        .arg("origin:os/stable")
        .env("TREECTL_MIN_FREE", "0")
        .ok();

    // v2 is published (through the server) and downloaded by the machine.
    let v2 = compose(&served, &lock, &debs(&corpus, "pkgs-v2.txt"));
    let remote = |verb: &str, args: &[&str]| {
        treectl([verb, &url, "os/stable"])
            .args(args)
            .arg("--token-file")
            .arg(&token)
    };
    remote("publish", &[&v2]).ok();
    client(&["upgrade", "--download-only"]).ok();
    let status = json(&client(&["status", "--json"]).ok());
    assert_eq!(status["deployments"][0]["commit"], v1.as_str(), "{status}");

    // The revert.
    let reason = "v2 breaks the fleet";
    let revert = json(&remote("revert", &["--reason", reason, "--json"]).ok());
    let revert_id = revert["commit"].as_str().unwrap().to_owned();
    assert_ne!(revert_id, v1);

    // `show --components` of the revert lists v1's components.
    let shown = |id: &str| treectl_in(&served, ["show", "--components", id]).ok();
    let components = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.contains(&v1) && !l.contains(&revert_id))
            .map(str::to_owned)
            .collect()
    };
    let v1_components = components(&shown(&v1));
    assert!(v1_components.len() >= 173, "{v1_components:?}");
    assert_eq!(components(&shown(&revert_id)), v1_components);

    // `history --components`: the revert undoes exactly what v2 changed.
    let history = json(&treectl(["history", &url, "os/stable", "--components", "--json"]).ok());
    let entries = history["entries"].as_array().unwrap();
    let last = entries.last().unwrap();
    assert_eq!(last["kind"], "revert", "{history}");
    let v2_entry = entries
        .iter()
        .find(|e| e["commit"] == v2.as_str())
        .unwrap_or_else(|| panic!("{history}"));
    let v2_changes = v2_entry["components"].as_array().unwrap();
    assert!(!v2_changes.is_empty(), "v2 changes packages: {history}");
    let undone: Vec<Value> = v2_changes
        .iter()
        .map(|c| serde_json::json!({ "name": c["name"], "from": c["to"], "to": c["from"] }))
        .collect();
    assert_eq!(last["components"].as_array().unwrap(), &undone, "{history}");

    // Publishing v2 again is refused with the reason; the index is unchanged.
    let index = || http::get(&server.addr, "/summary.json").body;
    let before = index();
    let err = remote("publish", &[&v2]).fails();
    assert!(err.contains(reason), "{err}");
    assert_eq!(index(), before);

    // The machine had v2 downloaded: its upgrade takes the revert, not
    // v2, and v2 cannot be deployed by hand while it is rejected (the
    // machine knows of the revert from the index its upgrade accepted).
    client(&["upgrade"]).ok();
    let status = json(&client(&["status", "--json"]).ok());
    let default = &status["deployments"][0];
    assert_eq!(default["commit"], revert_id.as_str(), "{status}");
    let v1_components = json(&treectl_in(&served, ["show", "--components", "--json", &v1]).ok());
    let listed = v1_components.as_array().unwrap();
    assert!(listed.len() >= 173);
    for c in listed {
        let name = c["name"].as_str().unwrap();
        assert_eq!(default["components"][name], c["version"], "{name}");
    }
    let err = client(&["deploy", &v2]).fails();
    assert!(err.contains(reason), "{err}");
    client(&["upgrade", "--stage"]).ok();
    let status = json(&client(&["status", "--json"]).ok());
    let deployments = status["deployments"].as_array().unwrap();
    assert!(
        deployments.iter().all(|d| d["staged"] != true),
        "nothing staged: {status}"
    );
    assert_eq!(deployments[0]["commit"], revert_id.as_str(), "{status}");

    // --force publishes v2 again; the machine follows.
    remote("publish", &[&v2, "--force"]).ok();
    client(&["upgrade"]).ok();
    let status = json(&client(&["status", "--json"]).ok());
    assert_eq!(status["deployments"][0]["commit"], v2.as_str(), "{status}");
}

//! Acceptance 1 of the client issue on the real corpus: corpus v1 committed
//! into an archive repository and published signed; pulled from
//! `treectl serve` (batched fetch) and from nginx serving the same
//! directory (Range requests of the published packs) into fresh bare-user
//! repositories. Each checkout equals corpus v1 and fsck is clean; the pull
//! from nginx takes every object out of the packs in at most 100 requests
//! (counted in nginx's access log), where one GET per object would be
//! over 10,000. Skips, saying why, without the
//! corpus or nginx (refused under CI).

use std::path::Path;

use treectl_e2e::nginx::Nginx;
use treectl_e2e::server::Server;
use treectl_e2e::{compare_trees, is_root, require, require_corpus, treectl, treectl_in, Scratch};

fn pull_and_check(work: &Path, name: &str, url: &str, key_pub: &Path, corpus_v1: &Path) {
    let client = work.join(format!("client-{name}"));
    treectl_in(&client, ["init", "--mode", "bare-user"]).ok();
    treectl_in(&client, ["remote", "add", "origin", url, "--trusted-key"])
        .arg(key_pub)
        .ok();
    let out = treectl_in(&client, ["pull", "origin:os/stable"]).ok();
    eprintln!("{name}: {out}");
    let co = work.join(format!("co-{name}"));
    treectl_in(&client, ["checkout", "origin:os/stable"])
        .arg(&co)
        .ok();
    let diffs = compare_trees(corpus_v1, &co, is_root());
    assert!(
        diffs.is_empty(),
        "{name}: checkout differs from corpus v1: {:?}",
        &diffs[..diffs.len().min(10)]
    );
    let fsck = treectl_in(&client, ["fsck"]).ok();
    assert!(fsck.contains("no problems"), "{name}: {fsck}");
}

#[test]
fn corpus_v1_pulled_from_treectl_serve_and_nginx() {
    let Some(corpus) = require_corpus("to publish and pull a real system") else {
        return;
    };
    let scratch = Scratch::new("6G");
    let work = scratch.path();
    let v1 = corpus.join("corpus-v1");
    let srv = work.join("srv");
    let key = work.join("signing.key");
    treectl_in(&srv, ["init", "--mode", "archive"]).ok();
    treectl(["keygen", "--out"]).arg(&key).ok();
    let id = treectl_in(&srv, ["commit", "--ref", "os/stable", "--tree"])
        .arg(&v1)
        .args(["--metadata", "version=1"])
        .ok();
    treectl(["publish"])
        .arg(&srv)
        .args(["os/stable", id.trim(), "--sign-key"])
        .arg(&key)
        .ok();
    let key_pub = work.join("signing.key.pub");
    {
        let server = Server::start(&srv, &[], &[]);
        pull_and_check(work, "serve", &server.url(), &key_pub, &v1);
    }
    if require("nginx", "to serve the published corpus as a static mirror") {
        let nginx = Nginx::start(&work.join("nginx"), &srv);
        pull_and_check(work, "nginx", &nginx.url(), &key_pub, &v1);
        let log = std::fs::read_to_string(nginx.dir.join("access.log")).expect("access log");
        let requests: Vec<&str> = log.lines().collect();
        let ranges = requests
            .iter()
            .filter(|l| l.contains(".pack HTTP/") && l.contains("\" 206 "))
            .count();
        assert!(ranges > 0, "no pack range was read");
        assert!(
            !requests.iter().any(|l| l.contains(" /objects/")),
            "an object was fetched on its own"
        );
        assert!(
            requests.len() <= 100,
            "{} requests from nginx: {requests:#?}",
            requests.len()
        );
    }
}

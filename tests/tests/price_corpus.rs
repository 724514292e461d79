//! Issue 14, acceptance 5 on the real corpus: a machine installed with
//! corpus v1 from `treectl serve` prices the update to corpus v2 with
//! `upgrade --check --json` (no file object downloaded, counted at the
//! server), then `upgrade` downloads exactly the priced bytes and its new
//! objects take exactly the priced disk. Skips, saying why, without the
//! corpus (refused under CI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;
use treectl_e2e::server::Server;
use treectl_e2e::{http, require_corpus, treectl, treectl_in, Scratch};

fn metric(server: &Server, name: &str) -> u64 {
    let resp = http::get(&server.addr, "/v1/metrics");
    assert_eq!(resp.status, 200);
    let text = resp.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn object_sizes(repo: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    for dir in std::fs::read_dir(repo.join("objects")).expect("objects") {
        for f in std::fs::read_dir(dir.expect("entry").path()).expect("dir") {
            let p = f.expect("entry").path();
            let len = std::fs::symlink_metadata(&p).expect("stat").len();
            out.insert(p, len);
        }
    }
    out
}

fn publish(srv: &Path, key: &Path, tree: &Path, version: &str) -> String {
    let id = treectl_in(srv, ["commit", "--ref", "os/stable", "--tree"])
        .arg(tree)
        .args(["--metadata", &format!("version={version}")])
        .ok();
    treectl(["publish"])
        .arg(srv)
        .args(["os/stable", id.trim(), "--sign-key"])
        .arg(key)
        .ok();
    id.trim().to_owned()
}

#[test]
fn corpus_v1_to_v2_is_priced_before_download() {
    let Some(corpus) = require_corpus("to price a real update") else {
        return;
    };
    let scratch = Scratch::new("6G");
    let work = scratch.path();
    let srv = work.join("srv");
    let key = work.join("signing.key");
    treectl_in(&srv, ["init", "--mode", "archive"]).ok();
    // No static deltas: the price `upgrade --check` gives is the price by
    // objects, and this test holds the upgrade to exactly that.
    let config = srv.join("config");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text + "\n[deltas]\nfrom-releases = 0\n").expect("config");
    treectl(["keygen", "--out"]).arg(&key).ok();
    publish(&srv, &key, &corpus.join("corpus-v1"), "1");
    let server = Server::start(&srv, &[], &[]);
    let sr = work.join("sysroot");
    treectl(["install", "--sysroot"])
        .arg(&sr)
        .args(["--url", &server.url(), "--trusted-key"])
        .arg(work.join("signing.key.pub"))
        .arg("origin:os/stable")
        .env("TREECTL_MIN_FREE", "0")
        .ok();
    let v2 = publish(&srv, &key, &corpus.join("corpus-v2"), "2");

    let names = [
        r#"treectl_objects_sent_total{kind="file"}"#,
        r#"treectl_objects_sent_total{kind="meta"}"#,
        r#"treectl_object_bytes_sent_total{kind="file"}"#,
        r#"treectl_object_bytes_sent_total{kind="meta"}"#,
    ];
    let read = |s: &Server| names.map(|n| metric(s, n));
    let before = read(&server);
    let started = Instant::now();
    let out = treectl(["upgrade", "--check", "--json", "--sysroot"])
        .arg(&sr)
        .env("TREECTL_MIN_FREE", "0")
        .code(10)
        .stdout;
    let check_time = started.elapsed();
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["head"], v2.as_str());
    let price = &v["price"];
    let download = price["download_bytes"].as_u64().expect("download_bytes");
    let objects = price["download_objects"].as_u64().expect("objects");
    let disk = price["disk_bytes"].as_u64().expect("disk_bytes");
    let after_check = read(&server);
    assert_eq!(
        after_check[0], before[0],
        "--check downloads no file object"
    );
    assert_eq!(
        after_check[3] - before[3],
        price["metadata_bytes"].as_u64().expect("metadata_bytes")
    );

    let repo = sr.join("treectl/repo");
    let stored = object_sizes(&repo);
    let started = Instant::now();
    treectl(["upgrade", "--sysroot"])
        .arg(&sr)
        .env("TREECTL_MIN_FREE", "0")
        .ok();
    let upgrade_time = started.elapsed();
    let after = read(&server);
    assert_eq!(after[0] - after_check[0], objects, "file objects moved");
    assert_eq!(
        after[2] - after_check[2],
        download,
        "exactly the priced bytes"
    );
    assert_eq!(after[1] - after_check[1], 0, "metadata came from the check");
    let new: u64 = object_sizes(&repo)
        .iter()
        .filter(|(p, _)| !stored.contains_key(*p))
        .map(|(_, l)| l)
        .sum();
    assert_eq!(new, disk, "the new objects take the priced disk");
    eprintln!(
        "corpus v1 -> v2: --check {check_time:?} fetched {} metadata objects ({} bytes); \
         priced {download} bytes in {objects} file objects, disk {disk} bytes; \
         upgrade {upgrade_time:?} moved {} bytes",
        after_check[1] - before[1],
        after_check[3] - before[3],
        after[2] - after_check[2]
    );
}

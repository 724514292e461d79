//! Issue 14 through the real server over loopback: a revert that holds
//! (the reverted-away commit is `rejected` in the signed index: pushing it
//! again is refused with the reason unless `--force`, and a machine that
//! already had it staged or downloaded never deploys it), and holds
//! (`hold` pauses every publish of a ref until `release`; both are in the
//! history).

mod deploy_support;

use std::path::{Path, PathBuf};

use deploy_support::*;
use serde_json::Value;
use treectl_e2e::http;
use treectl_e2e::server::{write_tokens, Server};

/// A server with a signing key and a publish token, and a machine
/// installed from it at release 1.
struct Setup {
    w: World,
    server: Server,
    url: String,
    token: PathBuf,
}

fn setup() -> (Setup, String) {
    setup_with(serve(&[]))
}

fn setup_with(s: Setup) -> (Setup, String) {
    let v1 = s.w.release("1", 1_700_000_000);
    s.push(&[]).ok();
    let pubkey = s.w.dir.path().join("release.key.pub");
    cmd(&[
        "install",
        "--sysroot",
        &s.w.sr(),
        "--url",
        &s.url,
        "--trusted-key",
        pubkey.to_str().unwrap(),
        "origin:os/stable",
    ])
    .ok();
    (s, v1)
}

/// A server with a signing key and a publish token, nothing published.
fn serve(env: &[(&str, &str)]) -> Setup {
    serve_inner(env, false)
}

fn serve_inner(env: &[(&str, &str)], deltas: bool) -> Setup {
    let w = World::new();
    let dir = w.dir.path().to_owned();
    let dir = dir.as_path();
    let served = dir.join("served");
    cmd(&[
        "--repo",
        served.to_str().unwrap(),
        "init",
        "--mode",
        "archive",
    ])
    .ok();
    // No static deltas unless asked: most journeys count the objects and
    // bytes an upgrade downloads by objects; pulls through deltas have
    // their own tests (pull_delta.rs).
    if !deltas {
        let config = served.join("config");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("\n[deltas]\nfrom-releases = 0\n");
        std::fs::write(&config, text).unwrap();
    }
    let key = dir.join("release.key");
    cmd(&["keygen", "--out", key.to_str().unwrap()]).ok();
    let tokens = write_tokens(dir, "anonymous");
    let server = Server::start(
        &served,
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
        ],
        env,
    );
    let url = server.url();
    Setup {
        token: dir.join("publish.token"),
        w,
        server,
        url,
    }
}

impl Setup {
    fn push(&self, extra: &[&str]) -> treectl_e2e::Treectl {
        self.push_ref("os/stable", extra)
    }

    fn push_ref(&self, name: &str, extra: &[&str]) -> treectl_e2e::Treectl {
        let origin = self.w.origin();
        let mut args = vec![
            "--repo",
            origin.to_str().unwrap(),
            "push",
            &self.url,
            name,
            "--token-file",
            self.token.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cmd(&args)
    }

    /// `treectl VERB URL os/stable ARGS… --token-file …`.
    fn remote(&self, verb: &str, args: &[&str]) -> treectl_e2e::Treectl {
        let mut all = vec![verb, &self.url, "os/stable"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--token-file", self.token.to_str().unwrap()]);
        cmd(&all)
    }

    fn index_bytes(&self) -> Vec<u8> {
        let resp = http::get(&self.server.addr, "/summary.json");
        assert_eq!(resp.status, 200);
        resp.body
    }

    fn index(&self) -> Value {
        let outer: Value = serde_json::from_slice(&self.index_bytes()).unwrap();
        serde_json::from_str(outer["payload"].as_str().unwrap()).unwrap()
    }

    fn history(&self) -> Vec<Value> {
        self.history_of("os/stable", &[])
    }

    fn history_of(&self, name: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["history", &self.url, name, "--json"];
        args.extend_from_slice(extra);
        let out = cmd(&args).ok();
        let v: Value = serde_json::from_str(&out).unwrap();
        v["entries"].as_array().unwrap().clone()
    }

    /// Sets `name` in the origin repository to `rev`.
    fn reset(&self, name: &str, rev: &str) {
        let origin = self.w.origin();
        cmd(&["--repo", origin.to_str().unwrap(), "reset", name, rev]).ok();
    }

    fn sr(&self) -> String {
        self.w.sr()
    }
}

fn metadata(repo: &Path, id: &str) -> serde_json::Map<String, Value> {
    let out = cmd(&["--repo", repo.to_str().unwrap(), "show", "--json", id]).ok();
    let v: Value = serde_json::from_str(&out).unwrap();
    v["metadata"].as_object().unwrap().clone()
}

#[test]
fn a_revert_holds_against_pushes_and_clients() {
    let (s, v1) = setup();
    let reason = "release 2 corrupts /var on upgrade";

    // Release 2 is staged on the machine, then reverted on the server.
    let v2 = s.w.release("2", 1_700_000_100);
    s.push(&[]).ok();
    cmd(&["upgrade", "--stage", "--sysroot", &s.sr()]).ok();
    let out = s.remote("revert", &["--reason", reason, "--json"]).ok();
    let revert: Value = serde_json::from_str(&out).unwrap();
    let revert_id = revert["commit"].as_str().unwrap().to_owned();

    // The index rejects release 2, with the reason.
    let index = s.index();
    let entry = &index["refs"]["os/stable"];
    assert_eq!(entry["commit"], revert_id.as_str());
    assert_eq!(
        entry["rejected"],
        serde_json::json!([{ "commit": v2, "reason": reason, "serial": revert["serial"] }])
    );
    assert_eq!(index["format"], 1, "older clients can read it");

    // The revert commit carries release 1's metadata (its components).
    let origin = s.w.origin();
    let served = s.w.dir.path().join("served");
    let reverted = metadata(&served, &revert_id);
    for (k, v) in metadata(&origin, &v1) {
        assert_eq!(reverted.get(&k), Some(&v), "{k}");
    }

    // Pushing release 2 again is refused with the reason; nothing changes.
    let before = s.index_bytes();
    let history = s.history();
    let err = s.push(&[]).fails();
    assert!(err.contains(reason) && err.contains("--force"), "{err}");
    let err = s.remote("publish", &[&v2]).fails();
    assert!(err.contains(reason), "{err}");
    assert_eq!(s.index_bytes(), before);
    assert_eq!(s.history(), history);

    // The machine learns of the revert; the staged release 2 is not
    // swapped in at shutdown, and release 2 cannot be deployed by hand.
    let check = cmd(&["upgrade", "--check", "--sysroot", &s.sr()]).run();
    assert_eq!(check.status.code(), Some(10), "the revert is an update");
    let err = cmd(&["finalize-staged", "--sysroot", &s.sr()]).fails();
    assert!(err.contains(reason), "{err}");
    assert_eq!(s.w.listed()[0]["commit"], v1.as_str());
    assert!(s.w.status()["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["staged"] != true));
    let err = cmd(&["deploy", &v2, "--sysroot", &s.sr()]).fails();
    assert!(err.contains(reason), "{err}");
    let err = cmd(&["deploy", "2", "--sysroot", &s.sr()]).fails();
    assert!(err.contains(reason), "deploy by version: {err}");
    assert_eq!(s.w.listed()[0]["commit"], v1.as_str());
    cmd(&["upgrade", "--sysroot", &s.sr()]).ok();
    let listed = s.w.listed();
    assert_eq!(listed[0]["commit"], revert_id.as_str());
    assert_eq!(listed[0]["components"]["tool"], "1", "{listed:?}");

    // --force publishes it again and lifts the rejection.
    s.push(&["--force"]).ok();
    let index = s.index();
    assert_eq!(index["refs"]["os/stable"]["commit"], v2.as_str());
    assert!(index["refs"]["os/stable"].get("rejected").is_none());
    cmd(&["upgrade", "--sysroot", &s.sr()]).ok();
    assert_eq!(s.w.listed()[0]["commit"], v2.as_str());
}

#[test]
fn a_hold_pauses_publishing_until_released() {
    let (s, _v1) = setup();
    let reason = "freeze: launch on Monday";
    let err = s.remote("hold", &["--reason", " "]).fails();
    assert!(err.contains("reason"), "{err}");
    s.remote("hold", &["--reason", reason]).ok();
    let err = s.remote("hold", &["--reason", "again"]).fails();
    assert!(err.contains("already on hold"), "{err}");

    let before = s.index_bytes();
    let history = s.history();
    let served = s.w.dir.path().join("served");
    let objects = object_sizes(&served);
    let v2 = s.w.release("2", 1_700_000_100);
    let err = s.push(&[]).fails();
    assert!(err.contains(reason), "{err}");
    assert_eq!(
        object_sizes(&served),
        objects,
        "a refused push uploads nothing"
    );
    let err = s.push(&["--force"]).fails();
    assert!(err.contains(reason), "--force does not lift a hold: {err}");
    let err = s.remote("publish", &[&v2]).fails();
    assert!(err.contains(reason), "{err}");
    assert_eq!(s.index_bytes(), before, "the index did not change");
    assert_eq!(s.history(), history, "the history did not change");

    s.remote("release", &[]).ok();
    let err = s.remote("release", &[]).fails();
    assert!(err.contains("not on hold"), "{err}");
    s.push(&[]).ok();
    assert_eq!(s.index()["refs"]["os/stable"]["commit"], v2.as_str());

    let kinds: Vec<(String, Option<String>)> = s
        .history()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("publish".to_owned(), None),
            ("hold".to_owned(), Some(reason.to_owned())),
            ("release".to_owned(), None),
            ("publish".to_owned(), None),
        ]
    );
    let text = s.remote("history", &[]).ok();
    assert!(text.contains("hold") && text.contains(reason), "{text}");
}

#[test]
fn promote_publishes_the_same_commit_and_never_goes_backwards() {
    let s = serve(&[]);
    let v1 = s.w.release("1", 1_700_000_000);
    s.push(&[]).ok();
    let v2 = s.w.release("2", 1_700_000_100);
    s.reset("os/testing", &v2);
    s.push_ref("os/testing", &[]).ok();
    let promote = |args: &[&str]| {
        let mut all = vec!["promote", &s.url, "os/testing", "os/stable"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--token-file", s.token.to_str().unwrap()]);
        cmd(&all)
    };
    let out = promote(&["--json"]).ok();
    let resp: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resp["kind"], "promote");
    let index = s.index();
    assert_eq!(index["refs"]["os/stable"]["commit"], v2.as_str());
    assert_eq!(index["refs"]["os/testing"]["commit"], v2.as_str());

    // A history entry on both refs; the package diff it carried.
    let stable = s.history_of("os/stable", &["--components"]);
    let last = stable.last().unwrap();
    assert_eq!(last["kind"], "promote");
    assert_eq!(last["from_ref"], "os/testing");
    assert_eq!(last["previous"], v1.as_str());
    assert_eq!(last["version"], "2", "history shows the version");
    assert_eq!(
        last["components"],
        serde_json::json!([{ "name": "tool", "from": "1", "to": "2" }])
    );
    let testing = s.history_of("os/testing", &[]);
    let last = testing.last().unwrap();
    assert_eq!(last["kind"], "promote");
    assert_eq!(last["to_ref"], "os/stable");
    assert_eq!(last["commit"], v2.as_str());
    assert_eq!(last["serial"], resp["serial"]);
    let text = cmd(&["history", &s.url, "os/stable", "--components"]).ok();
    assert!(
        text.contains("from os/testing") && text.contains("tool 1 -> 2"),
        "{text}"
    );

    // Already there: nothing to do, an error.
    let err = promote(&[]).fails();
    assert!(err.contains("already points at"), "{err}");

    // Stable moves on to release 3; promoting testing (release 2, which
    // stable already had and descends from) would go backwards.
    s.w.release("3", 1_700_000_200);
    s.push(&[]).ok();
    let before = s.index_bytes();
    let (hs, ht) = (s.history(), s.history_of("os/testing", &[]));
    let err = promote(&[]).fails();
    assert!(err.contains("backwards"), "{err}");
    let err = promote(&["--force"]).fails();
    assert!(err.contains("backwards"), "--force does not: {err}");
    assert_eq!(s.index_bytes(), before, "nothing changed");
    assert_eq!(s.history(), hs);
    assert_eq!(s.history_of("os/testing", &[]), ht);
    let err = cmd(&["promote", &s.url, "os/stable", "os/stable"]).fails();
    assert!(err.contains("two different refs"), "{err}");
}

/// Issue 14, acceptance 6: `history --components`, `history --contains`
/// and `log --contains` on a 20-release history read commit objects only
/// (counted at the server: no file object, no batched fetch) and answer in
/// under a second over loopback.
#[test]
fn history_by_component_reads_only_commit_objects() {
    let s = serve(&[("TREECTL_DEBUG", "1")]);
    let mut ids = Vec::new();
    for n in 1..=20 {
        ids.push(s.w.release(&n.to_string(), 1_700_000_000 + n));
        s.push(&[]).ok();
    }
    let log_before = s.server.log_text().len();
    let started = std::time::Instant::now();
    let entries = s.history_of("os/stable", &["--components"]);
    let elapsed = started.elapsed();
    eprintln!("history --components, 20 releases: {elapsed:?}");
    assert!(
        elapsed.as_secs_f64() < 1.0,
        "history --components took {elapsed:?}"
    );
    assert_eq!(entries.len(), 20);
    assert_eq!(
        entries[6]["components"],
        serde_json::json!([{ "name": "tool", "from": "6", "to": "7" }])
    );
    assert_eq!(
        entries[0]["components"],
        serde_json::json!([
            { "name": "base", "from": null, "to": "1" },
            { "name": "tool", "from": null, "to": "1" }
        ])
    );
    let started = std::time::Instant::now();
    let found = s.history_of("os/stable", &["--contains", "tool=7"]);
    let elapsed = started.elapsed();
    eprintln!("history --contains, 20 releases: {elapsed:?}");
    assert!(
        elapsed.as_secs_f64() < 1.0,
        "history --contains took {elapsed:?}"
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["commit"], ids[6].as_str());
    assert_eq!(s.history_of("os/stable", &["--contains", "base"]).len(), 20);
    assert!(s
        .history_of("os/stable", &["--contains", "tool=99"])
        .is_empty());
    let err = cmd(&["history", &s.url, "os/stable", "--contains", "=1"]).fails();
    assert!(err.contains("NAME or NAME=VERSION"), "{err}");

    let log = &s.server.log_text()[log_before..];
    let commits = log.matches(".commit").count();
    assert!(commits >= 20, "the server log counts requests: {log}");
    assert_eq!(log.matches(".filez").count(), 0, "{log}");
    assert_eq!(log.matches("/v1/objects/fetch").count(), 0, "{log}");

    // diff --components against the server, from two commit objects.
    let out = cmd(&["diff", "--components", &s.url, &ids[0], &ids[19]]).ok();
    assert_eq!(out.trim(), "tool 1 -> 20", "{out}");

    // log --contains in a repository: the releases that shipped tool 7.
    let origin = s.w.origin();
    let started = std::time::Instant::now();
    let out = cmd(&[
        "--repo",
        origin.to_str().unwrap(),
        "log",
        "os/stable",
        "--json",
        "--contains",
        "tool=7",
    ])
    .ok();
    let elapsed = started.elapsed();
    eprintln!("log --contains, 20 releases: {elapsed:?}; server requests: {commits} commit objects, 0 file objects");
    assert!(
        elapsed.as_secs_f64() < 1.0,
        "log --contains took {elapsed:?}"
    );
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["commit"], ids[6].as_str());
}

/// A counter of the server's `/v1/metrics`.
fn metric(s: &Setup, name: &str) -> u64 {
    let resp = http::get(&s.server.addr, "/v1/metrics");
    assert_eq!(resp.status, 200);
    let text = resp.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Every object file under `repo/objects`, with its size.
fn object_sizes(repo: &Path) -> std::collections::BTreeMap<PathBuf, u64> {
    let mut out = std::collections::BTreeMap::new();
    for dir in std::fs::read_dir(repo.join("objects")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let len = std::fs::symlink_metadata(&p).unwrap().len();
            out.insert(p, len);
        }
    }
    out
}

/// With a static delta from the machine's release in the signed index,
/// `upgrade --check` prices the delta (and the objects it falls back to),
/// and the upgrade downloads the delta and no file object.
#[test]
fn a_static_delta_is_priced_and_is_what_the_upgrade_downloads() {
    let (s, v1) = setup_with(serve_inner(&[], true));
    let v2 = s.w.release("2", 1_700_000_100);
    s.push(&[]).ok();
    let index = s.index();
    let delta = index["deltas"]
        .as_array()
        .expect("deltas listed")
        .iter()
        .find(|d| d["from"] == v1.as_str() && d["to"] == v2.as_str())
        .unwrap_or_else(|| panic!("no delta {v1} -> {v2}: {index}"));
    let size = delta["size"].as_u64().expect("size");

    let out = cmd(&["upgrade", "--check", "--json", "--sysroot", &s.sr()])
        .code(10)
        .stdout;
    let v: Value = serde_json::from_str(&out).unwrap();
    let price = &v["price"];
    assert_eq!(price["delta_bytes"].as_u64(), Some(size), "{price}");
    let (download, objects) = (
        price["download_bytes"].as_u64().unwrap(),
        price["download_objects"].as_u64().unwrap(),
    );
    assert!(download > 0 && objects > 0, "{price}");
    let text = cmd(&["upgrade", "--preview", "--sysroot", &s.sr()])
        .code(10)
        .stdout;
    assert!(
        text.contains(&format!(
            "download: a static delta of {size} bytes (by objects: {download} bytes in {objects} objects)"
        )),
        "{text}"
    );
    // Without deltas, the objects' price alone.
    let out = cmd(&[
        "upgrade",
        "--check",
        "--json",
        "--no-delta",
        "--sysroot",
        &s.sr(),
    ])
    .code(10)
    .stdout;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["price"]["delta_bytes"], Value::Null, "{v}");

    let file_objects = r#"treectl_objects_sent_total{kind="file"}"#;
    let before = metric(&s, file_objects);
    cmd(&["upgrade", "--sysroot", &s.sr()]).ok();
    assert_eq!(s.w.listed()[0]["commit"], v2.as_str());
    assert_eq!(
        metric(&s, file_objects),
        before,
        "the delta brought every file object"
    );
}

/// Issue 14, acceptance 5: `upgrade --check --json` prices the update
/// (bytes to download, disk needed) without downloading a file object;
/// the real upgrade then downloads exactly those bytes, counted at the
/// server, and its new objects take exactly the disk reported.
#[test]
fn updates_are_priced_before_download() {
    let (s, _v1) = setup();
    let v2 = s.w.release("2", 1_700_000_100);
    s.push(&[]).ok();

    let file_objects = r#"treectl_objects_sent_total{kind="file"}"#;
    let meta_objects = r#"treectl_objects_sent_total{kind="meta"}"#;
    let file_bytes = r#"treectl_object_bytes_sent_total{kind="file"}"#;
    let meta_bytes = r#"treectl_object_bytes_sent_total{kind="meta"}"#;
    let before = [file_objects, meta_objects, file_bytes, meta_bytes].map(|m| metric(&s, m));
    let out = cmd(&["upgrade", "--check", "--json", "--sysroot", &s.sr()])
        .code(10)
        .stdout;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["head"], v2.as_str());
    let price = &v["price"];
    let download = price["download_bytes"].as_u64().expect("download_bytes");
    let objects = price["download_objects"].as_u64().unwrap();
    let disk = price["disk_bytes"].as_u64().expect("disk_bytes");
    assert!(download > 0 && objects > 0 && disk > 0, "{price}");
    let after_check = [file_objects, meta_objects, file_bytes, meta_bytes].map(|m| metric(&s, m));
    assert_eq!(
        after_check[0], before[0],
        "--check downloads no file object"
    );
    assert!(
        after_check[1] > before[1],
        "--check reads the commit and trees"
    );
    assert_eq!(
        after_check[3] - before[3],
        price["metadata_bytes"].as_u64().unwrap(),
        "the metadata bytes the check reports are those it fetched"
    );
    assert_eq!(s.w.listed()[0]["version"], "1", "--check deploys nothing");
    let text = cmd(&["upgrade", "--preview", "--sysroot", &s.sr()])
        .code(10)
        .stdout;
    assert!(
        text.contains(&format!(
            "download: {download} bytes in {objects} objects; disk: {disk} bytes"
        )),
        "{text}"
    );

    let repo = s.w.sysroot_repo();
    let stored_before = object_sizes(&repo);
    let before = [file_objects, meta_objects, file_bytes, meta_bytes].map(|m| metric(&s, m));
    cmd(&["upgrade", "--sysroot", &s.sr()]).ok();
    assert_eq!(s.w.listed()[0]["commit"], v2.as_str());
    let after = [file_objects, meta_objects, file_bytes, meta_bytes].map(|m| metric(&s, m));
    assert_eq!(after[0] - before[0], objects, "file objects downloaded");
    assert_eq!(after[1] - before[1], 0, "the metadata came from the check");
    assert_eq!(after[2] - before[2], download, "exactly the priced bytes");
    assert_eq!(after[3] - before[3], 0);
    let new: u64 = object_sizes(&repo)
        .iter()
        .filter(|(p, _)| !stored_before.contains_key(*p))
        .map(|(_, len)| len)
        .sum();
    assert_eq!(new, disk, "the new objects take the disk reported");
    eprintln!("priced: {download} bytes in {objects} file objects, disk {disk} bytes");
}

/// Machine ids inside and outside a `percent` wave of `commit`.
fn ids_around(commit: &str, percent: u8) -> (String, String) {
    use treectl_sysroot::rollout::{bucket, in_wave};
    let c = treectl_store::ObjectId::from_hex(commit).unwrap();
    let id = |i: u32| format!("{i:032x}");
    let inside = (0..)
        .map(id)
        .find(|m| in_wave(bucket(m, &c), percent))
        .unwrap();
    let outside = (0..).map(id).find(|m| bucket(m, &c) >= 5000).unwrap();
    (inside, outside)
}

/// Issue 14, acceptance 4 through the server: a release published with
/// `--rollout 10` reaches the machines inside the wave only (the bucket
/// function itself is checked over 1,000 ids in
/// `treectl_sysroot::rollout`); `pause` stops it, `resume` and `complete`
/// let it go on; `--ignore-rollout` takes it now; a barrier release is
/// deployed before any later one.
#[test]
fn phased_rollouts_and_barrier_releases() {
    let (s, _v1) = setup();
    let sr = s.w.sr();
    let as_machine = |id: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--sysroot", &sr]);
        cmd(&all).env("TREECTL_MACHINE_ID", id)
    };
    let check = |id: &str| -> (i32, Value) {
        let out = as_machine(id, &["upgrade", "--check", "--json"]).run();
        (
            out.status.code().unwrap(),
            serde_json::from_str(&out.stdout).unwrap(),
        )
    };
    let v2 = s.w.release("2", 1_700_000_100);
    s.push(&["--rollout", "10"]).ok();
    let index = s.index();
    assert_eq!(index["format"], 2, "older clients must refuse it");
    assert_eq!(
        index["refs"]["os/stable"]["rollout"],
        serde_json::json!({ "percent": 10 })
    );
    let (inside, outside) = ids_around(&v2, 10);

    // Outside the wave: no update yet, and when it would come.
    let files_before = metric(&s, r#"treectl_objects_sent_total{kind="file"}"#);
    let (code, v) = check(&outside);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["decision"]["decision"], "not-in-wave");
    assert_eq!(v["rollout"]["percent"], 10);
    assert!(v["rollout"]["from_percent"].as_u64().unwrap() > 10, "{v}");
    let text = as_machine(&outside, &["upgrade"]).ok();
    assert!(text.contains("when the rollout reaches"), "{text}");
    assert_eq!(s.w.listed()[0]["version"], "1");
    assert_eq!(
        metric(&s, r#"treectl_objects_sent_total{kind="file"}"#),
        files_before,
        "a machine outside the wave downloads no file object"
    );
    // Inside the wave: an update.
    let (code, v) = check(&inside);
    assert_eq!(code, 10, "{v}");
    assert_eq!(v["rollout"]["in_wave"], true);

    // pause stops new upgrades; resume lets them go on.
    s.remote("rollout", &["pause"]).ok();
    assert_eq!(check(&inside).0, 0, "paused");
    s.remote("rollout", &["resume"]).ok();
    assert_eq!(check(&inside).0, 10, "resumed");
    let err = s.remote("rollout", &["101"]).fails();
    assert!(err.contains("0 to 100"), "{err}");

    // complete lets every machine take it; the index is format 1 again.
    s.remote("rollout", &["complete"]).ok();
    let index = s.index();
    assert_eq!(index["format"], 1);
    assert!(index["refs"]["os/stable"].get("rollout").is_none());
    as_machine(&outside, &["upgrade"]).ok();
    assert_eq!(s.w.listed()[0]["commit"], v2.as_str());
    let err = s.remote("rollout", &["pause"]).fails();
    assert!(err.contains("not being rolled out"), "{err}");

    // A person who wants it now.
    let v3 = s.w.release("3", 1_700_000_200);
    s.push(&["--rollout", "0"]).ok();
    assert_eq!(check(&outside).0, 0);
    as_machine(&outside, &["upgrade", "--ignore-rollout"]).ok();
    assert_eq!(s.w.listed()[0]["commit"], v3.as_str());

    // A barrier release, then a later one: the barrier comes first.
    let v4 = s.w.release("4", 1_700_000_300);
    s.push(&["--barrier"]).ok();
    let v5 = s.w.release("5", 1_700_000_400);
    s.push(&[]).ok();
    let (code, v) = check(&outside);
    assert_eq!(code, 10);
    assert_eq!(v["head"], v4.as_str(), "{v}");
    assert_eq!(v["barrier"], v4.as_str());
    as_machine(&outside, &["upgrade"]).ok();
    assert_eq!(s.w.listed()[0]["commit"], v4.as_str());
    as_machine(&outside, &["upgrade"]).ok();
    assert_eq!(s.w.listed()[0]["commit"], v5.as_str());

    let kinds: Vec<String> = s
        .history()
        .iter()
        .filter(|e| e["kind"] == "rollout")
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["pause", "resume", "complete"]);
}

/// Issue 14, acceptance 1 on composed releases: the revert commit carries
/// release 1's components (`show --components`, `history --components`,
/// `log --contains`); the bug was that a revert kept only `version`.
#[test]
fn a_revert_of_composed_releases_keeps_their_components() {
    let s = serve(&[]);
    let dir = s.w.dir.path().to_owned();
    let origin = s.w.origin();
    let o = origin.to_str().unwrap().to_owned();
    let lock = dir.join("os.lock");
    let l = lock.to_str().unwrap().to_owned();
    let base = dir.join("base");
    std::fs::create_dir_all(base.join("etc")).unwrap();
    std::fs::write(base.join("etc/os-release"), "ID=test\n").unwrap();
    cmd(&["--repo", &o, "lock", "add", "--lockfile", &l, "--dir"])
        .arg(&base)
        .args(["--name", "base"])
        .ok();
    let mut composed = Vec::new();
    for v in ["1", "2"] {
        // The app component: a tarball exported from a commit (one URL,
        // whose content changes between releases).
        let src = dir.join(format!("app-{v}"));
        std::fs::create_dir_all(src.join("usr/bin")).unwrap();
        std::fs::write(src.join("usr/bin/app"), format!("app {v}\n")).unwrap();
        let r = format!("src/app-{v}");
        cmd(&["--repo", &o, "commit", "--ref", &r, "--tree"])
            .arg(&src)
            .ok();
        let tar = dir.join("app.tar");
        cmd(&["--repo", &o, "export", &r, "--format", "tar", "-o"])
            .arg(&tar)
            .ok();
        let sha = treectl_store::ObjectId::of(&std::fs::read(&tar).unwrap()).to_hex();
        let url = format!("file://{}", tar.display());
        cmd(&[
            "--repo",
            &o,
            "lock",
            "add",
            "--lockfile",
            &l,
            "--tar",
            &url,
            "--sha256",
            &sha,
            "--name",
            "app",
            "--version",
            v,
        ])
        .ok();
        let out = cmd(&[
            "--repo",
            &o,
            "compose",
            "--json",
            "--lockfile",
            &l,
            "--ref",
            "os/stable",
        ])
        .ok();
        let report: Value = serde_json::from_str(&out).unwrap();
        composed.push(report["commit"].as_str().unwrap().to_owned());
        s.push(&[]).ok();
    }
    let out = s
        .remote("revert", &["--reason", "app 2 crashes", "--json"])
        .ok();
    let revert: Value = serde_json::from_str(&out).unwrap();
    let revert_id = revert["commit"].as_str().unwrap().to_owned();

    let served = dir.join("served");
    let sv = served.to_str().unwrap();
    let show = |rev: &str| -> Value {
        let out = cmd(&["--repo", sv, "show", "--components", "--json", rev]).ok();
        serde_json::from_str(&out).unwrap()
    };
    let v1 = show(&composed[0]);
    assert_eq!(v1.as_array().unwrap().len(), 2, "{v1}");
    assert_eq!(
        show(&revert_id),
        v1,
        "the revert ships release 1's components"
    );
    assert_ne!(show(&composed[1]), v1);

    let history = s.history_of("os/stable", &["--components"]);
    let last = history.last().unwrap();
    assert_eq!(last["kind"], "revert");
    assert_eq!(
        last["components"],
        serde_json::json!([{ "name": "app", "from": "2", "to": "1" }])
    );
    let shipped: Vec<String> = s
        .history_of("os/stable", &["--contains", "app=1"])
        .iter()
        .map(|e| e["commit"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shipped, [composed[0].clone(), revert_id.clone()]);
    let out = cmd(&[
        "--repo",
        sv,
        "log",
        "os/stable",
        "--json",
        "--contains",
        "app=1",
    ])
    .ok();
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = list.iter().map(|c| c["commit"].as_str().unwrap()).collect();
    assert_eq!(ids, [revert_id.as_str(), composed[0].as_str()]);
}

/// A machine still running the reverted release may change its kernel
/// arguments (no move to another commit), but not deploy the rejected
/// commit anew over another default.
#[test]
fn a_machine_on_the_rejected_release_can_still_edit_its_kargs() {
    let (s, _v1) = setup();
    let v2 = s.w.release("2", 1_700_000_100);
    s.push(&[]).ok();
    cmd(&["upgrade", "--sysroot", &s.sr()]).ok();
    s.remote("revert", &["--reason", "v2 is bad"]).ok();
    cmd(&["upgrade", "--check", "--sysroot", &s.sr()]).code(10);
    cmd(&["kargs", "--append", "quiet", "--sysroot", &s.sr()]).ok();
    let listed = s.w.listed();
    assert_eq!(listed[0]["commit"], v2.as_str());
    assert!(
        listed[0]["kargs"]
            .as_array()
            .unwrap()
            .contains(&"quiet".into()),
        "{listed:?}"
    );
    cmd(&["upgrade", "--sysroot", &s.sr()]).ok();
    assert_ne!(s.w.listed()[0]["commit"], v2.as_str(), "the revert");
    let err = cmd(&["deploy", &v2, "--sysroot", &s.sr()]).fails();
    assert!(err.contains("v2 is bad"), "{err}");
}

/// Issue 14, acceptance 4 with the real client and server: 1,000
/// simulated machine ids ask `upgrade --check` about a release published
/// with `--rollout 10`; between 7% and 13% are told to upgrade, and each
/// answer agrees with the documented bucket function.
#[test]
fn a_ten_percent_rollout_reaches_about_a_tenth_of_a_simulated_fleet() {
    let (s, _v1) = setup();
    let v2 = s.w.release("2", 1_700_000_100);
    s.push(&["--rollout", "10"]).ok();
    let c = treectl_store::ObjectId::from_hex(&v2).unwrap();
    let sr = s.w.sr();
    let started = std::time::Instant::now();
    let mut upgrading = 0;
    for i in 0..1000u32 {
        let id = format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let out = cmd(&["upgrade", "--check", "--sysroot", &sr])
            .env("TREECTL_MACHINE_ID", &id)
            .run();
        let code = out.status.code();
        let expected =
            treectl_sysroot::rollout::in_wave(treectl_sysroot::rollout::bucket(&id, &c), 10);
        assert_eq!(
            code,
            Some(if expected { 10 } else { 0 }),
            "{id}: {}",
            out.stderr
        );
        if code == Some(10) {
            upgrading += 1;
        }
    }
    eprintln!(
        "{upgrading} of 1000 simulated machines in a 10% wave ({:?} for 1000 checks)",
        started.elapsed()
    );
    assert!((70..=130).contains(&upgrading), "{upgrading} of 1000");
}

/// Pricing against a static mirror (nginx serving the repository): no
/// sizes API, so the check asks `HEAD` for each missing file object. The
/// download bytes are still exact (the `.filez` files the machine then
/// stored), the disk is unknown (`null`).
#[test]
fn updates_are_priced_against_a_static_mirror_too() {
    if !treectl_e2e::require("nginx", "to price an update from a static mirror") {
        return;
    }
    let s = serve(&[]);
    s.w.release("1", 1_700_000_000);
    s.push(&[]).ok();
    let dir = s.w.dir.path().to_owned();
    let served = dir.join("served");
    let nginx = treectl_e2e::nginx::Nginx::start(&dir.join("nginx"), &served);
    cmd(&[
        "install",
        "--sysroot",
        &s.w.sr(),
        "--url",
        &nginx.url(),
        "--trusted-key",
    ])
    .arg(dir.join("release.key.pub"))
    .arg("origin:os/stable")
    .ok();
    let v2 = s.w.release("2", 1_700_000_100);
    s.push(&[]).ok();
    let out = cmd(&["upgrade", "--check", "--json", "--sysroot", &s.w.sr()])
        .code(10)
        .stdout;
    let v: Value = serde_json::from_str(&out).unwrap();
    let price = &v["price"];
    let download = price["download_bytes"].as_u64().expect("download_bytes");
    assert!(download > 0, "{price}");
    assert!(price["disk_bytes"].is_null(), "{price}");
    let text = cmd(&["upgrade", "--preview", "--sysroot", &s.w.sr()])
        .code(10)
        .stdout;
    assert!(text.contains("disk: an unknown amount of bytes"), "{text}");

    let repo = s.w.sysroot_repo();
    let before = object_sizes(&repo);
    cmd(&["upgrade", "--sysroot", &s.w.sr()]).ok();
    assert_eq!(s.w.listed()[0]["commit"], v2.as_str());
    let moved: u64 = object_sizes(&repo)
        .keys()
        .filter(|p| !before.contains_key(*p))
        .filter(|p| p.extension().is_some_and(|e| e == "file"))
        .map(|p| {
            let rel = p.strip_prefix(&repo).unwrap().with_extension("filez");
            std::fs::metadata(served.join(rel)).unwrap().len()
        })
        .sum();
    assert_eq!(moved, download, "the .filez the mirror served");
}

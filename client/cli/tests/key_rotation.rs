//! Issue 16, acceptance 3: in-band key rotation. Keys A -> B -> C are
//! rotated on `treectl serve` while one machine stays offline; it then
//! upgrades, trusting only A, and reaches C. An index signed by A after
//! the rotation, and a replayed old key set, are refused with one clear
//! line and change nothing on the machine. Run against `treectl serve`
//! itself and against nginx serving the same directory as a static
//! mirror; plus rotation of a local repository path and the refusals of
//! bad rotations.

mod deploy_support;

use std::fs;
use std::path::{Path, PathBuf};

use deploy_support::*;
use serde_json::Value;
use treectl_e2e::nginx::Nginx;
use treectl_e2e::require;
use treectl_e2e::server::{write_tokens, Server};
use treectl_release::sign::SecretKey;
use treectl_release::summary::SignedIndex;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

struct Keys {
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
}

fn keygen(dir: &Path) -> Keys {
    let k = |name: &str| {
        let path = dir.join(name);
        cmd(&["keygen", "--out", s(&path)]).ok();
        path
    };
    Keys {
        a: k("a.key"),
        b: k("b.key"),
        c: k("c.key"),
    }
}

fn pubf(key: &Path) -> String {
    format!("{}.pub", key.display())
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).expect("--json is JSON")
}

/// A machine: a sysroot installed from `url`, trusting only `key`.
fn install(sysroot: &Path, url: &str, key: &Path) {
    cmd(&[
        "install",
        "--sysroot",
        s(sysroot),
        "--url",
        url,
        "--trusted-key",
        &pubf(key),
        "origin:os/stable",
    ])
    .ok();
}

fn default_commit(sysroot: &Path) -> String {
    let out = cmd(&["status", "--sysroot", s(sysroot), "--json"]).ok();
    let v = json(&out);
    v["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .find(|d| d["default"] == true)
        .expect("a default deployment")["commit"]
        .as_str()
        .expect("commit")
        .to_owned()
}

/// The key set the machine follows (`key list --remote origin`).
fn followed(sysroot: &Path) -> Value {
    let repo = sysroot.join("treectl/repo");
    json(
        &cmd(&[
            "--repo",
            s(&repo),
            "key",
            "list",
            "--remote",
            "origin",
            "--json",
        ])
        .ok(),
    )["key_set"]
        .clone()
}

fn upgrade(sysroot: &Path) {
    cmd(&["upgrade", "--sysroot", s(sysroot)]).ok();
}

/// `upgrade` is refused with one line containing `expect`, and nothing on
/// the machine changes: same default deployment, same trust state.
fn refused(sysroot: &Path, expect: &str) {
    let before = (default_commit(sysroot), followed(sysroot));
    let trust = sysroot.join("treectl/repo/state/remotes/origin.json");
    let trust_bytes = fs::read(&trust).expect("trust state");
    let err = cmd(&["upgrade", "--sysroot", s(sysroot)]).fails();
    assert!(err.contains(expect), "{err}");
    assert_eq!((default_commit(sysroot), followed(sysroot)), before);
    assert_eq!(fs::read(&trust).expect("trust state"), trust_bytes);
}

/// Rewrites the served index with `serial` raised to `serial`, naming
/// `keys` (the key set field as JSON, `null` for none) and signed by
/// `by`: what a holder of a dropped key could serve.
fn forge_index(served: &Path, serial: u64, keys: Value, by: &Path) {
    let path = served.join("summary.json");
    let signed = SignedIndex::parse(&fs::read(&path).expect("index")).expect("parses");
    let mut payload: Value = serde_json::from_str(&signed.payload).expect("payload");
    payload["serial"] = serial.into();
    if keys.is_null() {
        payload.as_object_mut().expect("object").remove("keys");
        payload["format"] = 1.into();
    } else {
        payload["keys"] = keys;
    }
    let index = serde_json::from_value(payload).expect("an index");
    let key = SecretKey::load(by).expect("secret key");
    fs::write(&path, SignedIndex::sign(&index, Some(&key)).to_bytes()).expect("write index");
}

/// The journey; `mirror`: machines pull from nginx serving the server's
/// directory instead of from the server.
fn rotation_journey(mirror: bool) {
    let w = World::new();
    let dir = w.dir.path();
    let served = dir.join("served");
    cmd(&["--repo", s(&served), "init", "--mode", "archive"]).ok();
    let keys = keygen(dir);
    let tokens = write_tokens(dir, "anonymous");
    let token = dir.join("publish.token");
    // The server holds all three keys; it signs with A until the first
    // rotation, then with the current set's keys.
    let server = Server::start(
        &served,
        &[
            "--sign-key",
            s(&keys.a),
            "--sign-key",
            s(&keys.b),
            "--sign-key",
            s(&keys.c),
            "--tokens",
            s(&tokens),
        ],
        &[],
    );
    let nginx = mirror.then(|| Nginx::start(&dir.join("nginx"), &served));
    let url = match &nginx {
        Some(n) => n.url(),
        None => server.url(),
    };
    let push = |version: &str, ts: i64| {
        let id = w.release(version, ts);
        cmd(&[
            "--repo",
            s(&w.origin()),
            "push",
            &server.url(),
            "os/stable",
            "--token-file",
            s(&token),
        ])
        .ok();
        id
    };
    let rotate = |to: &Path| {
        json(
            &cmd(&[
                "key",
                "rotate",
                &server.url(),
                "--new-key",
                &pubf(to),
                "--token-file",
                s(&token),
                "--json",
            ])
            .ok(),
        )
    };

    let v1 = push("1", 1_700_000_000);
    let (offline, online) = (dir.join("offline"), dir.join("online"));
    install(&offline, &url, &keys.a);
    install(&online, &url, &keys.a);
    assert_eq!(default_commit(&offline), v1);
    assert_eq!(followed(&offline), Value::Null, "no rotation yet");

    // A -> B; release 2 is signed by B; the online machine follows.
    let r = rotate(&keys.b);
    assert_eq!(r["version"], 2);
    let v2 = push("2", 1_700_000_100);
    upgrade(&online);
    assert_eq!(default_commit(&online), v2);
    assert_eq!(followed(&online)["version"], 2);
    let listed = json(&cmd(&["key", "list", &url, "--json"]).ok());
    assert_eq!(listed["current"], 2);
    assert_eq!(listed["sets"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed["index"]["signed_by"], listed["sets"][1]["key_ids"]);
    let old_index = fs::read(served.join("summary.json")).expect("index");
    let old_chain = fs::read(served.join("keys.json")).expect("chain");
    let set_b = json(&String::from_utf8_lossy(&old_chain))["sets"][1]["payload"].clone();
    let set_b: Value = serde_json::from_str(set_b.as_str().expect("payload")).expect("set");

    // B -> C; release 3. The offline machine, which trusts only A and
    // never saw B, upgrades across both rotations.
    assert_eq!(rotate(&keys.c)["version"], 3);
    let v3 = push("3", 1_700_000_200);
    upgrade(&offline);
    assert_eq!(default_commit(&offline), v3);
    let set_c = followed(&offline);
    assert_eq!(set_c["version"], 3);
    upgrade(&online);
    assert_eq!(followed(&online), set_c);
    let good_index = fs::read(served.join("summary.json")).expect("index");
    let good_chain = fs::read(served.join("keys.json")).expect("chain");
    let serial = SignedIndex::parse(&good_index)
        .expect("parses")
        .index_unverified()
        .expect("index")
        .serial;

    // An index signed by A after the rotation: naming the current set, or
    // naming none as before the first rotation. Refused either way.
    let mut set_c_field = set_c.clone();
    set_c_field
        .as_object_mut()
        .expect("object")
        .remove("key_ids");
    forge_index(&served, serial + 10, set_c_field, &keys.a);
    refused(
        &offline,
        "has 0 valid signatures by keys of key set version 3, it needs 1",
    );
    fs::write(served.join("summary.json"), &good_index).expect("restore");
    forge_index(&served, serial + 10, Value::Null, &keys.a);
    refused(
        &offline,
        "key set version 1 is older than version 3, which this client already trusts: a replayed old key set is refused",
    );

    // A replayed old key set: key set 2 with its chain, signed by B (a key
    // dropped since), even with a higher serial.
    fs::write(served.join("keys.json"), &old_chain).expect("old chain");
    fs::write(served.join("summary.json"), &good_index).expect("restore");
    let mut set_b_field = set_b.clone();
    set_b_field.as_object_mut().expect("object").remove("type");
    forge_index(&served, serial + 20, set_b_field, &keys.b);
    refused(
        &online,
        "key set version 2 is older than version 3, which this client already trusts: a replayed old key set is refused",
    );
    // And the old files exactly as they were served then.
    fs::write(served.join("summary.json"), &old_index).expect("old index");
    refused(&online, "a replayed old key set is refused");

    // The real files again: the machines stay on 3 and follow key set 3.
    fs::write(served.join("keys.json"), &good_chain).expect("restore");
    fs::write(served.join("summary.json"), &good_index).expect("restore");
    upgrade(&online);
    assert_eq!(default_commit(&online), v3);
    assert_eq!(followed(&online), set_c);
    drop(nginx);
}

#[test]
fn rotation_followed_offline_through_treectl_serve() {
    rotation_journey(false);
}

#[test]
fn rotation_followed_offline_through_an_nginx_mirror() {
    if !require("nginx", "to serve the repository as a static mirror") {
        return;
    }
    rotation_journey(true);
}

#[test]
fn rotate_a_local_repository_and_refuse_bad_rotations() {
    let w = World::new();
    let dir = w.dir.path();
    let keys = keygen(dir);
    let repo = w.origin();
    let publish = |key: &Path| {
        cmd(&[
            "publish",
            s(&repo),
            "os/stable",
            "os/stable",
            "--sign-key",
            s(key),
        ])
    };
    w.release("1", 1_700_000_000);
    publish(&keys.a).ok();
    let index = repo.join("summary.json");
    let before = fs::read(&index).expect("index");
    let rotate = |args: &[&str]| {
        let mut all = vec!["key", "rotate", s(&repo)];
        all.extend_from_slice(args);
        cmd(&all)
    };
    let b_pub = pubf(&keys.b);
    let not_a_key = dir.join("not-a-key");
    fs::write(&not_a_key, "hello\n").expect("write");
    for (args, expect) in [
        (
            vec!["--sign-key", s(&keys.a), "--new-key", &b_pub],
            "key set version 2 has 0 valid signatures by keys of key set version 2, it needs 1",
        ),
        (
            vec!["--sign-key", s(&keys.c), "--new-key", s(&keys.b)],
            "the current index is not signed by",
        ),
        (
            vec![
                "--sign-key",
                s(&keys.a),
                "--new-key",
                s(&keys.b),
                "--threshold",
                "2",
            ],
            "threshold 2 with 1 keys",
        ),
        (
            vec!["--sign-key", s(&keys.a), "--new-key", s(&not_a_key)],
            "is not a treectl key file",
        ),
    ] {
        let err = rotate(&args).fails();
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(fs::read(&index).expect("index"), before, "{args:?}");
        assert!(!repo.join("keys.json").exists(), "{args:?}");
    }
    let listed = cmd(&["key", "list", s(&repo)]).ok();
    assert!(listed.starts_with("no key rotation yet"), "{listed}");

    let r = json(&rotate(&["--sign-key", s(&keys.a), "--new-key", s(&keys.b), "--json"]).ok());
    assert_eq!(r["version"], 2);
    let b_id = r["key_ids"][0].as_str().expect("key id").to_owned();
    let listed = cmd(&["key", "list", s(&repo)]).ok();
    assert!(
        listed.contains(&format!("key set 2 (current): threshold 1, keys {b_id}\n")),
        "{listed}"
    );
    assert!(listed.contains(&format!("signed by {b_id}\n")), "{listed}");

    // After the rotation A alone may not publish; B may.
    w.release("2", 1_700_000_100);
    let before = fs::read(&index).expect("index");
    let err = publish(&keys.a).fails();
    assert!(
        err.contains("are not a threshold (1) of the repository's key set version 2"),
        "{err}"
    );
    assert_eq!(fs::read(&index).expect("index"), before);
    publish(&keys.b).ok();
    let listed = json(&cmd(&["key", "list", s(&repo), "--json"]).ok());
    assert_eq!(listed["index"]["signed_by"][0], b_id.as_str());

    // A server holding only the retired key A does not start.
    treectl_e2e::cli::ensure_server_beside_treectl();
    let mut child = cmd(&[
        "serve",
        "--repo",
        s(&repo),
        "--listen",
        "127.0.0.1:0",
        "--sign-key",
        s(&keys.a),
    ])
    .command()
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start treectl serve");
    let mut status = None;
    for _ in 0..200 {
        status = child.try_wait().expect("wait");
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("treectl serve started with a key outside the current key set");
    }
    assert!(!status.expect("exited").success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert!(
        err.contains("are not a threshold (1) of the repository's key set version 2"),
        "{err}"
    );
}

#[test]
fn a_server_without_the_new_key_refuses_the_rotation() {
    let w = World::new();
    let dir = w.dir.path();
    let served = dir.join("served");
    cmd(&["--repo", s(&served), "init", "--mode", "archive"]).ok();
    let keys = keygen(dir);
    let tokens = write_tokens(dir, "anonymous");
    let token = dir.join("publish.token");
    let server = Server::start(
        &served,
        &["--sign-key", s(&keys.a), "--tokens", s(&tokens)],
        &[],
    );
    w.release("1", 1_700_000_000);
    cmd(&[
        "--repo",
        s(&w.origin()),
        "push",
        &server.url(),
        "os/stable",
        "--token-file",
        s(&token),
    ])
    .ok();
    let before = fs::read(served.join("summary.json")).expect("index");
    let url = server.url();
    let b_pub = pubf(&keys.b);
    let rotate = |token_args: &[&str]| {
        let mut all = vec!["key", "rotate", url.as_str(), "--new-key", b_pub.as_str()];
        all.extend_from_slice(token_args);
        cmd(&all).fails()
    };
    // Without a publish token, then without B's secret on the server.
    let err = rotate(&[]);
    assert!(err.contains("401"), "{err}");
    let err = rotate(&["--token-file", s(&token)]);
    assert!(
        err.contains("409") && err.contains("key set version 2 has 0 valid signatures"),
        "{err}"
    );
    assert_eq!(
        fs::read(served.join("summary.json")).expect("index"),
        before
    );
    assert!(!served.join("keys.json").exists());
}

//! A running `treectl serve` re-signs its index (new serial, later expiry,
//! same refs) once half its validity has passed: while it runs, and when
//! it starts on an index left to age (docs/security.md, row 17). Clients
//! accept the re-signed index after the first one has expired. Short
//! validities and sleeps stand in for days; nothing asserts how long
//! anything took.

use std::path::Path;
use std::time::Duration;

use treectl_e2e::http;
use treectl_e2e::server::{Server, ServerFixture};
use treectl_e2e::{treectl, treectl_in};
use treectl_release::sign::PublicKey;
use treectl_release::summary::{RefIndex, SignedIndex};
use treectl_store::time::now;

/// GETs `summary.json` from the server and verifies it with `key`.
fn served_index(server: &Server, key: &PublicKey) -> RefIndex {
    let resp = http::get(&server.addr, "/summary.json");
    assert_eq!(resp.status, 200, "{}", resp.text());
    SignedIndex::parse(&resp.body)
        .expect("index parses")
        .verify(key)
        .expect("index signature verifies")
}

/// Sleeps until the clock is past `t`.
fn sleep_past(t: i64) {
    while now() <= t {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pull(client: &Path, remote: &str) -> serde_json::Value {
    let target = format!("{remote}:os/stable");
    let out = treectl_in(client, ["pull", "--json", &target]).ok();
    serde_json::from_str(out.lines().last().expect("report")).expect("JSON")
}

#[test]
fn a_running_or_starting_server_re_signs_an_aging_index() {
    let fx = ServerFixture::new("anonymous");
    let key = fx.dir().join("signing.key");
    treectl(["keygen", "--out"]).arg(&key).ok();
    let public = PublicKey::load(&fx.dir().join("signing.key.pub")).expect("public key");
    let key_s = key.to_str().expect("utf-8");
    let v1 = fx.commit(1);

    // While it runs: an index valid for 6 s is re-signed before it expires.
    let server = fx.serve(&["--sign-key", key_s, "--index-validity", "6s"], &[]);
    fx.push(&server).ok();
    let first = served_index(&server, &public);
    assert_eq!(first.refs["os/stable"].commit.to_hex(), v1);
    sleep_past(first.expires);
    assert!(first.check_fresh(now()).is_err(), "the first index expired");
    let running = served_index(&server, &public);
    assert!(running.serial > first.serial, "{running:?}");
    assert!(running.expires > first.expires, "{running:?}");
    assert_eq!(running.refs, first.refs, "re-signing changes no ref");
    assert!(
        server
            .log_text()
            .contains("re-signed the ref index before it expires"),
        "{}",
        server.log_text()
    );

    // A client accepts what the server re-signed.
    let client = fx.dir().join("client");
    treectl_in(&client, ["init", "--mode", "bare-user"]).ok();
    treectl_in(&client, ["remote", "add", "origin", &server.url()])
        .arg("--trusted-key")
        .arg(fx.dir().join("signing.key.pub"))
        .ok();
    let report = pull(&client, "origin");
    assert_eq!(report["commit"], v1.as_str());
    assert!(report["serial"].as_u64().expect("serial") >= running.serial);
    server.terminate();

    // At start: the index left behind is past its whole validity; a server
    // started on it re-signs it before it answers anyone.
    let left = SignedIndex::parse(&std::fs::read(fx.srv.join("summary.json")).expect("index"))
        .expect("parses")
        .verify(&public)
        .expect("verifies");
    sleep_past(left.expires);
    let server = fx.serve(&["--sign-key", key_s, "--index-validity", "1h"], &[]);
    let started = served_index(&server, &public);
    assert_eq!(started.serial, left.serial + 1, "{started:?}");
    assert!(started.expires >= now() + 3600 - 60, "{started:?}");
    assert_eq!(started.refs, left.refs, "re-signing changes no ref");
    // A client accepts it (a new remote: the server listens on a new port).
    treectl_in(&client, ["remote", "add", "restarted", &server.url()])
        .arg("--trusted-key")
        .arg(fx.dir().join("signing.key.pub"))
        .ok();
    let report = pull(&client, "restarted");
    assert_eq!(report["commit"], v1.as_str());
    assert_eq!(report["serial"], started.serial);
    server.terminate();
}

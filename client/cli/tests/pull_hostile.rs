//! Acceptance 2 of the client issue: a hostile mirror (flipped bytes, cut
//! bodies, the wrong object, endless and trickling bodies, replayed,
//! expired, unsigned or forged indexes, a commit signed for another ref).
//! Every case fails with one clear line, within a bounded time, stores no
//! object that fails its hash (fsck stays clean and the bad object is
//! absent), and leaves the remote ref and the trust state as they were.
//! With a second, honest mirror behind the hostile one, the pull takes the
//! second's answer instead, and says which answer it refused and why.

mod pull_harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pull_harness::{make_tree, object_paths, s, Mirror, Publisher, Trick};
use treectl_e2e::{treectl, treectl_in};
use treectl_release::sign::SecretKey;
use treectl_release::summary::{SignedIndex, DEFAULT_VALIDITY_SECS};

/// Fast limits so the slow cases end quickly. By objects: these cases
/// are about the object fetch (hostile static deltas: pull_delta.rs).
const FAST: &[&str] = &[
    "--no-delta",
    "--retries",
    "1",
    "--retry-delay",
    "50ms",
    "--timeout",
    "8s",
    "--connect-timeout",
    "2s",
    "--low-speed-time",
    "2s",
    "--low-speed-limit",
    "200",
    "--max-object-size",
    "1M",
    "--max-index-size",
    "256K",
    "-j",
    "4",
];

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    publisher: Publisher,
    client: PathBuf,
    mirror: Mirror,
    v1: String,
}

impl Fixture {
    /// v1 published and pulled once.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let publisher = Publisher::new(&dir);
        make_tree(&dir.join("v1"), 4, 6, 1);
        let v1 = publisher.publish(&dir.join("v1"), "os/stable", "1");
        let client = dir.join("client");
        let mirror = Mirror::start(&publisher.srv);
        publisher.client(&client, &mirror.url());
        let f = Fixture {
            _tmp: tmp,
            dir,
            publisher,
            client,
            mirror,
            v1,
        };
        f.pull().expect("first pull");
        assert_eq!(f.remote_ref().as_deref(), Some(f.v1.as_str()));
        f
    }

    /// Publishes v2; returns the request paths of the objects it added.
    fn publish_v2(&self) -> (String, Vec<String>) {
        let before = object_paths(&self.publisher.srv);
        make_tree(&self.dir.join("v2"), 4, 6, 2);
        let id = self
            .publisher
            .publish(&self.dir.join("v2"), "os/stable", "2");
        let added = object_paths(&self.publisher.srv)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        (id, added)
    }

    fn pull(&self) -> Result<String, String> {
        let mut args = vec!["--repo", s(&self.client), "pull", "origin:os/stable"];
        args.extend_from_slice(FAST);
        let out = treectl(&args).run();
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(out.stderr)
        }
    }

    fn remote_ref(&self) -> Option<String> {
        std::fs::read_to_string(self.client.join("refs/remotes/origin/os/stable"))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    fn trust_state(&self) -> Vec<u8> {
        std::fs::read(self.client.join("state/remotes/origin.json")).expect("trust state")
    }

    /// Runs a pull that must fail; checks every promise of acceptance 2 and
    /// returns the error line.
    fn must_fail(&self, expect: &[&str], bad_objects: &[String]) -> String {
        let ref_before = self.remote_ref();
        let trust_before = self.trust_state();
        let start = Instant::now();
        let err = self.pull().expect_err("the hostile pull must fail");
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}: {err}");
        let line = err.trim_end();
        assert_eq!(line.lines().count(), 1, "one line, got: {err}");
        assert!(line.starts_with("error: "), "{line}");
        for e in expect {
            assert!(line.contains(e), "expected {e:?} in: {line}");
        }
        assert_eq!(self.remote_ref(), ref_before, "the remote ref moved");
        assert_eq!(self.trust_state(), trust_before, "the trust state changed");
        let fsck = treectl_in(&self.client, ["fsck"]).run();
        assert!(
            fsck.status.success(),
            "fsck after a hostile pull: {}{}",
            fsck.stdout,
            fsck.stderr
        );
        for p in bad_objects {
            // The client stores files as .file (bare-user).
            let local = self
                .client
                .join(p.trim_start_matches('/').replace(".filez", ".file"));
            assert!(!local.exists(), "{} was stored", local.display());
        }
        eprintln!("refused as expected: {line}");
        line.to_owned()
    }

    /// The current index, re-signed after `edit` with `key`.
    fn resigned(
        &self,
        key: Option<&SecretKey>,
        edit: impl Fn(&mut treectl_release::summary::RefIndex),
    ) -> Vec<u8> {
        let signed = SignedIndex::parse(&self.publisher.index_bytes()).expect("index");
        let mut index = signed.index_unverified().expect("payload");
        edit(&mut index);
        SignedIndex::sign(&index, key).to_bytes()
    }

    fn key(&self) -> SecretKey {
        SecretKey::load(&self.publisher.key).expect("signing key")
    }
}

fn first_file(paths: &[String]) -> String {
    paths
        .iter()
        .find(|p| p.ends_with(".filez"))
        .expect("a new file object")
        .clone()
}

use treectl_store::time::now;

#[test]
fn flipped_byte_is_refused_and_not_stored() {
    let f = Fixture::new();
    let (_, added) = f.publish_v2();
    let bad = first_file(&added);
    f.mirror.set(&bad, Trick::FlipByte);
    f.must_fail(&["file object"], std::slice::from_ref(&bad));
    // Once the mirror is fixed, the same pull completes.
    f.mirror.clear();
    f.pull().expect("pull after the mirror is fixed");
}

#[test]
fn truncated_body_is_retried_then_refused() {
    let f = Fixture::new();
    let (_, added) = f.publish_v2();
    let bad = first_file(&added);
    f.mirror.set(&bad, Trick::Truncate);
    f.must_fail(&["cut short"], std::slice::from_ref(&bad));
    assert!(f.mirror.hits()[&bad] >= 2, "retried");
}

#[test]
fn wrong_object_is_refused() {
    let f = Fixture::new();
    let (_, added) = f.publish_v2();
    let files: Vec<&String> = added.iter().filter(|p| p.ends_with(".filez")).collect();
    assert!(files.len() >= 2);
    f.mirror.set(files[0], Trick::OtherFile(files[1].clone()));
    f.must_fail(&["corrupt"], &[files[0].clone()]);
}

#[test]
fn endless_bodies_hit_the_size_caps() {
    let f = Fixture::new();
    let (_, added) = f.publish_v2();
    let bad = first_file(&added);
    f.mirror.set(&bad, Trick::Endless);
    f.must_fail(&["longer than the limit"], std::slice::from_ref(&bad));
    f.mirror.clear();
    f.mirror.set("/summary.json", Trick::Endless);
    f.must_fail(&["longer than the limit"], &[]);
}

#[test]
fn trickle_hits_the_low_speed_limit() {
    let f = Fixture::new();
    let (_, added) = f.publish_v2();
    let bad = first_file(&added);
    f.mirror.set(&bad, Trick::Trickle);
    f.must_fail(&["low-speed limit"], std::slice::from_ref(&bad));
    f.mirror.clear();
    f.mirror.set("/summary.json", Trick::Trickle);
    f.must_fail(&["low-speed limit"], &[]);
}

#[test]
fn server_errors_are_retried() {
    let f = Fixture::new();
    let (v2, added) = f.publish_v2();
    f.mirror.set(&first_file(&added), Trick::Fail(1));
    f.pull().expect("one 500 is retried");
    assert_eq!(f.remote_ref().as_deref(), Some(v2.as_str()));
}

#[test]
fn replayed_older_index_is_refused() {
    let f = Fixture::new();
    let old = f.publisher.index_bytes();
    let (v2, _) = f.publish_v2();
    f.pull().expect("pull v2");
    assert_eq!(f.remote_ref().as_deref(), Some(v2.as_str()));
    f.mirror.set("/summary.json", Trick::Bytes(old));
    f.must_fail(&["lower than serial", "replayed"], &[]);
}

#[test]
fn expired_index_is_refused() {
    let f = Fixture::new();
    f.publish_v2();
    let key = f.key();
    let expired = f.resigned(Some(&key), |i| {
        i.generated = now() - DEFAULT_VALIDITY_SECS - 100;
        i.expires = now() - 100;
    });
    f.mirror.set("/summary.json", Trick::Bytes(expired));
    f.must_fail(&["expired"], &[]);
}

#[test]
fn stripped_or_forged_signatures_are_refused() {
    let f = Fixture::new();
    f.publish_v2();
    let key = f.key();
    // No signature at all.
    let stripped = f.resigned(None, |_| {});
    f.mirror.set("/summary.json", Trick::Bytes(stripped));
    f.must_fail(&["no signature by key"], &[]);
    // Signed by a key the client does not trust.
    let other = SecretKey::from_seed([42; 32]);
    let forged = f.resigned(Some(&other), |_| {});
    f.mirror.set("/summary.json", Trick::Bytes(forged));
    f.must_fail(&["no signature by key"], &[]);
    // The trusted key's signature over a different payload.
    let good = SignedIndex::parse(&f.resigned(Some(&key), |_| {})).expect("index");
    let mut tampered = good.clone();
    tampered.payload = good.payload.replacen("\"serial\":", "\"serial\":1", 1);
    assert_ne!(tampered.payload, good.payload);
    f.mirror
        .set("/summary.json", Trick::Bytes(tampered.to_bytes()));
    f.must_fail(&["does not verify"], &[]);
    // A commit whose detached signature was stripped.
    f.mirror.clear();
    let signed = SignedIndex::parse(&f.publisher.index_bytes()).expect("index");
    let head = signed.index_unverified().expect("payload").refs["os/stable"].commit;
    let empty = format!("{{\"commit\":\"{head}\",\"signatures\":[]}}");
    f.mirror.set(
        &format!("/signatures/{}.json", head.to_hex()),
        Trick::Bytes(empty.into_bytes()),
    );
    f.must_fail(&["no signature by key"], &[]);
}

#[test]
fn commit_signed_for_another_ref_is_refused() {
    let f = Fixture::new();
    make_tree(&f.dir.join("t"), 2, 2, 9);
    let testing = f.publisher.publish(&f.dir.join("t"), "os/testing", "9");
    let key = f.key();
    // A validly signed index that offers the os/testing commit as os/stable.
    let crafted = f.resigned(Some(&key), |i| {
        let t = i.refs["os/testing"].clone();
        i.serial += 1;
        let stable = i.refs.get_mut("os/stable").expect("stable");
        stable.commit = t.commit;
        stable.serial = i.serial;
    });
    f.mirror.set("/summary.json", Trick::Bytes(crafted));
    f.must_fail(&["as os/stable", &testing[..12]], &[]);
}

#[test]
fn prune_keeps_a_pulled_remote_ref() {
    let f = Fixture::new();
    treectl(["--repo", s(&f.client), "prune"]).ok();
    let out = treectl(["--repo", s(&f.client), "fsck"]).ok();
    assert!(out.contains("no problems"), "{out}");
    let co = f.dir.join("co");
    treectl([
        "--repo",
        s(&f.client),
        "checkout",
        "origin:os/stable",
        s(&co),
    ])
    .ok();
    assert_eq!(
        treectl(["--repo", s(&f.client), "rev-parse", "origin:os/stable"])
            .ok()
            .trim(),
        f.v1
    );
    assert!(co.join("usr/lib/pkg0/share/f0").exists());
}

/// A second remote, `two`, whose URL is the fixture's (hostile) mirror and
/// whose mirror is a second, honest one serving the same repository.
fn second_mirror(f: &Fixture) -> Mirror {
    let second = Mirror::start(&f.publisher.srv);
    treectl([
        "--repo",
        s(&f.client),
        "remote",
        "add",
        "two",
        &f.mirror.url(),
        "--mirror",
        &second.url(),
        "--trusted-key",
        s(&f.publisher.key_pub),
    ])
    .ok();
    second
}

/// `pull --json two:os/stable`, which must succeed: the JSON report and
/// the stderr lines.
fn pull_two(f: &Fixture) -> (serde_json::Value, Vec<String>) {
    let mut args = vec!["--repo", s(&f.client), "pull", "--json", "two:os/stable"];
    args.extend_from_slice(FAST);
    let out = treectl(&args).run();
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    let done = out.stdout.lines().last().expect("a report");
    let report = serde_json::from_str(done).expect("JSON report");
    (report, out.stderr.lines().map(str::to_owned).collect())
}

/// Checks that `report` names exactly one fallback, from the first mirror
/// to the second for `path`, with `reason`, and that stderr warns of it.
fn assert_one_fallback(
    f: &Fixture,
    second: &Mirror,
    (report, stderr): &(serde_json::Value, Vec<String>),
    path: &str,
    reason: &str,
) {
    let fallbacks = report["fallbacks"].as_array().expect("fallbacks");
    assert_eq!(fallbacks.len(), 1, "{report}");
    let line = fallbacks[0].as_str().expect("text");
    let start = format!("{}{path} was refused (", f.mirror.url());
    let end = format!("); used {} instead", second.url());
    assert!(
        line.starts_with(&start) && line.ends_with(&end) && line.contains(reason),
        "{line}"
    );
    let warnings: Vec<&String> = stderr
        .iter()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings, [&format!("warning: {line}")], "{stderr:?}");
}

fn assert_fsck_clean(f: &Fixture) {
    let fsck = treectl_in(&f.client, ["fsck"]).run();
    assert!(fsck.status.success(), "{}{}", fsck.stdout, fsck.stderr);
}

fn remote_ref_of_two(f: &Fixture) -> String {
    std::fs::read_to_string(f.client.join("refs/remotes/two/os/stable"))
        .expect("remote ref")
        .trim()
        .to_owned()
}

#[test]
fn a_flipped_object_from_the_first_mirror_is_taken_from_the_second() {
    let f = Fixture::new();
    let second = second_mirror(&f);
    let (v2, added) = f.publish_v2();
    let bad = first_file(&added);
    f.mirror.set(&bad, Trick::FlipByte);
    let pulled = pull_two(&f);
    assert_eq!(pulled.0["commit"], v2.as_str());
    assert_eq!(remote_ref_of_two(&f), v2);
    assert_one_fallback(&f, &second, &pulled, &bad, "file object");
    // Both mirrors were asked for it; what is stored is the second's good
    // copy (fsck re-hashes every object).
    assert!(f.mirror.hits()[&bad] >= 1);
    assert_eq!(second.hits()[&bad], 1);
    let local = f
        .client
        .join(bad.trim_start_matches('/').replace(".filez", ".file"));
    assert!(local.exists(), "{} is stored", local.display());
    assert_fsck_clean(&f);
}

#[test]
fn a_bad_index_from_the_first_mirror_is_taken_from_the_second() {
    let f = Fixture::new();
    let second = second_mirror(&f);

    // The trusted key's signature over another payload.
    let (v2, _) = f.publish_v2();
    let good = SignedIndex::parse(&f.publisher.index_bytes()).expect("index");
    let serial = good.index_unverified().expect("payload").serial;
    let mut tampered = good.clone();
    tampered.payload = good.payload.replacen("\"serial\":", "\"serial\":1", 1);
    assert_ne!(tampered.payload, good.payload);
    f.mirror
        .set("/summary.json", Trick::Bytes(tampered.to_bytes()));
    let pulled = pull_two(&f);
    assert_eq!(pulled.0["commit"], v2.as_str());
    assert_eq!(pulled.0["serial"], serial, "the second mirror's index");
    assert_eq!(remote_ref_of_two(&f), v2);
    assert_one_fallback(&f, &second, &pulled, "/summary.json", "does not verify");
    assert_fsck_clean(&f);

    // Bytes that are not an index at all.
    make_tree(&f.dir.join("v3"), 4, 6, 3);
    let v3 = f.publisher.publish(&f.dir.join("v3"), "os/stable", "3");
    f.mirror
        .set("/summary.json", Trick::Bytes(b"{\"payload\": 42".to_vec()));
    let pulled = pull_two(&f);
    assert_eq!(pulled.0["commit"], v3.as_str());
    assert_eq!(remote_ref_of_two(&f), v3);
    assert_one_fallback(&f, &second, &pulled, "/summary.json", "malformed");
    assert_fsck_clean(&f);
}

//! Static deltas through the real binary: a publish lists the delta from
//! the last release in the signed index, a client that has that release
//! pulls the next one through it (no object requests at all) and ends
//! with the same tree and a clean fsck; hostile deltas (flipped,
//! truncated, endless, objects that do not hash to their ids) each give
//! one warning line, store nothing bad, and the pull completes by
//! objects; a pull killed while downloading the delta resumes with a
//! Range request for exactly the bytes it lacks.

mod pull_harness;

use std::path::{Path, PathBuf};

use pull_harness::{make_tree, s, Mirror, Publisher, Trick};
use treectl_e2e::{compare_trees, treectl, treectl_in};
use treectl_release::sign::SecretKey;
use treectl_release::summary::{RefIndex, SignedIndex};
use treectl_store::ObjectId;

/// Fast limits so the hostile cases end quickly.
const FAST: &[&str] = &[
    "--retries",
    "1",
    "--retry-delay",
    "50ms",
    "--timeout",
    "8s",
    "--low-speed-time",
    "2s",
    "--low-speed-limit",
    "200",
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
    v2: String,
}

/// Bytes zstd cannot shrink on their own (xorshift), `n` of them.
fn noise(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A release: the small tree of `make_tree`, a large binary that changes
/// a little between releases (what a patch is for) and, in v2, a new
/// incompressible file (what makes the delta large enough to interrupt).
fn release_tree(dir: &Path, variant: u32) {
    make_tree(dir, 3, 5, variant);
    let mut bin = noise(11, 600_000);
    bin[4000..4000 + 8].copy_from_slice(&u64::from(variant).to_le_bytes());
    std::fs::create_dir_all(dir.join("usr/bin")).expect("mkdir");
    std::fs::write(dir.join("usr/bin/tool"), bin).expect("write");
    if variant == 2 {
        std::fs::write(dir.join("usr/lib/new.so"), noise(99, 1_500_000)).expect("write");
    }
}

impl Fixture {
    /// v1 published and pulled by the client; v2 published after it.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let publisher = Publisher::new(&dir);
        release_tree(&dir.join("v1"), 1);
        let v1 = publisher.publish(&dir.join("v1"), "os/stable", "1");
        let client = dir.join("client");
        let mirror = Mirror::start(&publisher.srv);
        publisher.client(&client, &mirror.url());
        let mut args = vec!["--repo", s(&client), "pull", "origin:os/stable"];
        args.extend_from_slice(FAST);
        treectl(&args).ok();
        release_tree(&dir.join("v2"), 2);
        let v2 = publisher.publish(&dir.join("v2"), "os/stable", "2");
        mirror.reset_hits();
        Fixture {
            _tmp: tmp,
            dir,
            publisher,
            client,
            mirror,
            v1,
            v2,
        }
    }

    fn index(&self) -> RefIndex {
        SignedIndex::parse(&self.publisher.index_bytes())
            .expect("index")
            .index_unverified()
            .expect("payload")
    }

    fn delta_path(&self) -> String {
        format!("/deltas/{}-{}.delta", self.v1, self.v2)
    }

    fn pull(&self) -> treectl_e2e::cli::Outcome {
        let mut args = vec![
            "--repo",
            s(&self.client),
            "pull",
            "origin:os/stable",
            "--json",
        ];
        args.extend_from_slice(FAST);
        treectl(&args).run()
    }

    /// The pull went through, to v2, with the right tree and a clean fsck.
    fn check_v2(&self) {
        let r = std::fs::read_to_string(self.client.join("refs/remotes/origin/os/stable"))
            .expect("remote ref");
        assert_eq!(r.trim(), self.v2);
        let fsck = treectl_in(&self.client, ["fsck"]).run();
        assert!(fsck.status.success(), "{}{}", fsck.stdout, fsck.stderr);
        let co = self.dir.join(format!("co-{}", rand_suffix()));
        treectl_in(&self.client, ["checkout", "origin:os/stable", s(&co)]).ok();
        assert_eq!(
            compare_trees(&self.dir.join("v2"), &co, false),
            Vec::<String>::new()
        );
    }

    /// File objects fetched one by one in the last pull.
    fn object_requests(&self) -> usize {
        self.mirror
            .log()
            .iter()
            .filter(|(p, _, _)| p.starts_with("/objects/"))
            .count()
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn done_line(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("a done line");
    serde_json::from_str(line).expect("json")
}

#[test]
fn publish_lists_the_delta_and_a_pull_uses_it_alone() {
    let f = Fixture::new();
    let index = f.index();
    assert_eq!(
        index.format, 1,
        "deltas need no newer format: older clients ignore them"
    );
    assert_eq!(index.deltas.len(), 1);
    let d = &index.deltas[0];
    assert_eq!(
        (d.from.to_hex(), d.to.to_hex()),
        (f.v1.clone(), f.v2.clone())
    );
    let file = std::fs::read(f.publisher.srv.join(f.delta_path().trim_start_matches('/')))
        .expect("the delta file");
    assert_eq!(d.size, file.len() as u64);
    assert_eq!(d.sha256, ObjectId::of(&file).to_hex());
    // The changed binary travels as a patch: the delta is far smaller than
    // the new file alone plus the binary.
    assert!(d.size < 1_500_000 + 300_000, "{} bytes", d.size);

    let out = f.pull();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let done = done_line(&out.stdout);
    assert_eq!(done["delta"]["from"], f.v1.as_str());
    assert!(done["delta"].get("error").is_none(), "{done}");
    assert_eq!(f.mirror.hits()[&f.delta_path()], 1);
    assert_eq!(f.object_requests(), 0, "{:?}", f.mirror.log());
    f.check_v2();
    // The staging is gone with the downloaded delta.
    assert!(!f.client.join("tmp/pull-origin").exists());

    // `treectl delta list` on the server names it; generating it again
    // reports the same immutable file.
    let list = treectl_in(&f.publisher.srv, ["delta", "list", "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(listed[0]["sha256"], d.sha256.as_str());
    let again = treectl_in(
        &f.publisher.srv,
        ["delta", "generate", &f.v1, &f.v2, "--json"],
    )
    .ok();
    let again: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(again["sha256"], d.sha256.as_str());
}

/// A hostile delta: the pull warns once, stores nothing bad, and completes
/// by objects.
fn falls_back(f: &Fixture, expect: &str) {
    let out = f.pull();
    assert!(out.status.success(), "{}", out.stderr);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(warnings[0].contains("static delta"), "{}", warnings[0]);
    assert!(
        warnings[0].contains(expect),
        "{expect:?} in {}",
        warnings[0]
    );
    let done = done_line(&out.stdout);
    assert!(done["delta"]["error"].is_string(), "{done}");
    assert!(f.object_requests() > 0, "the pull went on by objects");
    f.check_v2();
}

#[test]
fn a_flipped_delta_falls_back_to_objects() {
    let f = Fixture::new();
    f.mirror.set(&f.delta_path(), Trick::FlipByte);
    falls_back(&f, "SHA-256");
}

#[test]
fn a_truncated_delta_falls_back_to_objects() {
    let f = Fixture::new();
    f.mirror.set(&f.delta_path(), Trick::Truncate);
    falls_back(&f, "cut short");
}

#[test]
fn an_endless_delta_falls_back_to_objects() {
    let f = Fixture::new();
    f.mirror.set(&f.delta_path(), Trick::Endless);
    falls_back(&f, "longer than");
}

/// A zstd frame of `data` in one raw block (no compression), written by
/// hand so the test depends on nothing but the format.
fn raw_zstd_frame(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 128 << 10);
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0xa0];
    f.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let block = ((data.len() as u32) << 3) | 1;
    f.extend_from_slice(&block.to_le_bytes()[..3]);
    f.extend_from_slice(data);
    f
}

/// Signed by the publisher's own key, so only the objects are wrong: a
/// file that claims the id of one of v2's files and holds other bytes.
#[test]
fn a_signed_delta_whose_object_does_not_hash_falls_back_and_stores_nothing_bad() {
    let f = Fixture::new();
    let claimed = {
        let out = treectl_in(&f.publisher.srv, ["ls", &f.v2, "/etc/os-release", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        ObjectId::from_hex(v[0]["id"].as_str().expect("object id")).expect("id")
    };
    let content = b"VERSION_ID=evil\n";
    let mut header = vec![1u8, 1];
    header.extend_from_slice(&0o100644u32.to_le_bytes());
    header.extend_from_slice(&[0; 8]); // uid, gid
    header.extend_from_slice(&[0; 4]); // no xattrs
    header.extend_from_slice(&[0; 4]); // no target
    header.extend_from_slice(&(content.len() as u64).to_le_bytes());
    let mut record = vec![1u8];
    record.extend_from_slice(&claimed.0);
    record.extend_from_slice(&((header.len() + content.len()) as u64).to_le_bytes());
    record.extend_from_slice(&header);
    record.extend_from_slice(content);
    let frame = raw_zstd_frame(&record);
    let v1 = ObjectId::from_hex(&f.v1).expect("id");
    let v2 = ObjectId::from_hex(&f.v2).expect("id");
    let mut delta = b"TCDELTA\n".to_vec();
    delta.extend_from_slice(&1u32.to_le_bytes());
    delta.push(1);
    delta.extend_from_slice(&v1.0);
    delta.extend_from_slice(&v2.0);
    delta.push(1);
    delta.extend_from_slice(&1u32.to_le_bytes());
    delta.extend_from_slice(&(record.len() as u64).to_le_bytes());
    delta.extend_from_slice(&(frame.len() as u64).to_le_bytes());
    delta.extend_from_slice(&frame);
    delta.push(0);
    delta.extend_from_slice(&1u32.to_le_bytes());
    delta.extend_from_slice(&[0; 16]);
    let key = SecretKey::load(&f.publisher.key).expect("key");
    let mut index = f.index();
    index.serial += 1;
    index.deltas[0].size = delta.len() as u64;
    index.deltas[0].sha256 = ObjectId::of(&delta).to_hex();
    f.mirror.set(
        "/summary.json",
        Trick::Bytes(SignedIndex::sign(&index, Some(&key)).to_bytes()),
    );
    f.mirror.set(&f.delta_path(), Trick::Bytes(delta));
    falls_back(&f, "hashes to");
}

#[test]
fn a_pull_killed_during_the_delta_resumes_by_range() {
    let f = Fixture::new();
    let size = f.index().deltas[0].size;
    let mut args = vec!["--repo", s(&f.client), "pull", "origin:os/stable"];
    args.extend_from_slice(FAST);
    let killed = treectl(&args)
        .env("TREECTL_FAILPOINT", "pull-delta-bytes:3")
        .run();
    assert!(!killed.status.success(), "the failpoint kills the pull");
    // Wait (bounded) until the mirror has finished the killed request, so
    // the count below holds only the resumed pull's requests.
    for _ in 0..200 {
        if f.mirror.log().iter().any(|(p, _, _)| *p == f.delta_path()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let part = f
        .client
        .join(format!("tmp/pull-origin/{}-{}.delta.part", f.v1, f.v2));
    let have = std::fs::metadata(&part).expect("the partial delta").len();
    assert!(have > 0 && have < size, "{have} of {size}");
    f.mirror.reset_hits();
    let out = f.pull();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(done_line(&out.stdout)["delta"].get("error").is_none());
    let delta_requests: Vec<_> = f
        .mirror
        .log()
        .into_iter()
        .filter(|(p, _, _)| *p == f.delta_path())
        .collect();
    assert_eq!(
        delta_requests,
        vec![(f.delta_path(), Some(format!("bytes={have}-")), size - have)],
        "only the missing bytes are fetched again"
    );
    assert_eq!(f.object_requests(), 0);
    f.check_v2();
}

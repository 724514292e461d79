//! Packs for static mirrors, end to end: a repository published with
//! `treectl publish` and served by nginx over loopback. A full pull takes
//! the objects out of the packs in a few Range requests (counted in
//! nginx's access log, no per-object GET) and stores exactly what a pull
//! from `treectl serve` stores; an incremental pull uses the new release's
//! pack; a corrupted byte inside a pack and a pack index that does not
//! match the signed index each fall back to plain GETs of the objects
//! concerned, and nothing bad is stored. Skips, saying why, when nginx is
//! not installed (refused under CI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use treectl_e2e::nginx::Nginx;
use treectl_e2e::server::Server;
use treectl_e2e::{compare_trees, require, treectl, treectl_in};
use treectl_release::packs::{PackIndex, PackRef};
use treectl_release::summary::SignedIndex;
use treectl_store::ObjectKind;

/// Release `variant` of a tree big enough that one GET per object would
/// be hundreds of requests: 8 directories of 50 files, a symlink, and one
/// 3 MiB file (a range of its own). A later variant changes a few files.
fn release_tree(dir: &Path, variant: u32) {
    for d in 0..8 {
        let sub = dir.join(format!("usr/lib/pkg{d}/data"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..50 {
            let changed = if d == 0 && f < 5 { variant } else { 1 };
            let body = format!("package {d} file {f} release {changed}\n").repeat(20 + f);
            std::fs::write(sub.join(format!("f{f}")), body).expect("write");
        }
    }
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("usr/lib/big.bin"), big).expect("write");
    std::fs::write(dir.join("os-release"), format!("VERSION_ID={variant}\n")).expect("write");
    let link = dir.join("usr/lib/current");
    if !link.exists() {
        std::os::unix::fs::symlink("pkg0", &link).expect("symlink");
    }
}

/// A published archive repository with its signing key.
struct Published {
    tmp: tempfile::TempDir,
    srv: PathBuf,
    key: PathBuf,
}

impl Published {
    fn new() -> Published {
        let tmp = tempfile::tempdir().expect("tempdir");
        let srv = tmp.path().join("srv");
        let key = tmp.path().join("signing.key");
        treectl_in(&srv, ["init", "--mode", "archive"]).ok();
        treectl(["keygen", "--out"]).arg(&key).ok();
        let p = Published { tmp, srv, key };
        p.publish(1);
        p
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn key_pub(&self) -> PathBuf {
        self.dir().join("signing.key.pub")
    }

    fn tree(&self, variant: u32) -> PathBuf {
        self.dir().join(format!("v{variant}"))
    }

    fn publish(&self, variant: u32) {
        let tree = self.tree(variant);
        release_tree(&tree, variant);
        let id = treectl_in(&self.srv, ["commit", "--ref", "os/stable", "--tree"])
            .arg(&tree)
            .args(["--timestamp", "2024-01-01T00:00:00Z"])
            .ok();
        treectl(["publish"])
            .arg(&self.srv)
            .args(["os/stable", id.trim(), "--sign-key"])
            .arg(&self.key)
            .ok();
    }

    /// A client repository with `url` as its remote `origin`.
    fn client(&self, name: &str, url: &str) -> PathBuf {
        let client = self.dir().join(name);
        treectl_in(&client, ["init", "--mode", "bare-user"]).ok();
        treectl_in(&client, ["remote", "add", "origin", url, "--trusted-key"])
            .arg(self.key_pub())
            .ok();
        client
    }

    /// The packs the signed index of `repo` lists.
    fn packs(repo: &Path) -> Vec<PackRef> {
        let bytes = std::fs::read(repo.join("summary.json")).expect("index");
        SignedIndex::parse(&bytes)
            .expect("parses")
            .index_unverified()
            .expect("index")
            .packs
    }
}

/// The requests nginx logged from line `from` on: (path, status).
fn requests(nginx: &Nginx, from: usize) -> Vec<(String, u16)> {
    let log = std::fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
    log.lines()
        .skip(from)
        .map(|l| {
            // `… "GET /path HTTP/1.1" 206 1234 …`
            let mut quoted = l.split('"');
            let request = quoted.nth(1).expect("request line");
            let path = request.split(' ').nth(1).expect("path").to_owned();
            let status = quoted
                .next()
                .and_then(|r| r.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .expect("status");
            (path, status)
        })
        .collect()
}

fn count(reqs: &[(String, u16)], prefix: &str) -> usize {
    reqs.iter().filter(|(p, _)| p.starts_with(prefix)).count()
}

/// Pulls, checks the checkout against `tree` and fsck; returns the
/// requests the pull made to `nginx`.
fn pull(client: &Path, nginx: &Nginx, tree: &Path, args: &[&str]) -> Vec<(String, u16)> {
    let before = requests(nginx, 0).len();
    treectl_in(client, ["pull", "origin:os/stable"])
        .args(args)
        .ok();
    let reqs = requests(nginx, before);
    check(client, tree);
    reqs
}

fn check(client: &Path, tree: &Path) {
    let co = client.with_extension("co");
    let _ = std::fs::remove_dir_all(&co);
    treectl_in(client, ["checkout", "origin:os/stable"])
        .arg(&co)
        .ok();
    let diffs = compare_trees(tree, &co, false);
    assert!(diffs.is_empty(), "checkout differs: {diffs:?}");
    let fsck = treectl_in(client, ["fsck"]).ok();
    assert!(fsck.contains("no problems"), "{fsck}");
}

/// Every object file of a repository (relative paths).
fn objects(repo: &Path) -> BTreeSet<String> {
    let out = Command::new("find")
        .arg(repo.join("objects"))
        .args(["-type", "f", "-printf", "%P\\n"])
        .output()
        .expect("find");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn full_and_incremental_pulls_from_nginx_take_the_packs() {
    if !require(
        "nginx",
        "to serve the published repository as a static mirror",
    ) {
        return;
    }
    let p = Published::new();
    let packs = Published::packs(&p.srv);
    assert_eq!(packs.len(), 1, "one pack for a small release");
    let loose = objects(&p.srv).len();
    assert!(loose > 400, "only {loose} objects");
    let nginx = Nginx::start(&p.dir().join("nginx"), &p.srv);

    // Full pull: the objects come out of the pack, none by its own GET.
    let a = p.client("a", &nginx.url());
    let reqs = pull(&a, &nginx, &p.tree(1), &[]);
    assert_eq!(count(&reqs, "/objects/"), 0, "{reqs:?}");
    let ranges: Vec<_> = reqs
        .iter()
        .filter(|(path, _)| path.starts_with("/packs/") && path.ends_with(".pack"))
        .collect();
    assert!(!ranges.is_empty(), "{reqs:?}");
    assert!(ranges.iter().all(|(_, s)| *s == 206), "{ranges:?}");
    assert_eq!(count(&reqs, "/packs/") - ranges.len(), 1, "one pack index");
    assert!(
        reqs.len() <= 20,
        "{} requests for {loose} objects: {reqs:?}",
        reqs.len()
    );

    // The same objects as a pull from `treectl serve` (batched fetch).
    let server = Server::start(&p.srv, &[], &[]);
    let b = p.client("b", &server.url());
    treectl_in(&b, ["pull", "origin:os/stable"]).ok();
    check(&b, &p.tree(1));
    assert_eq!(objects(&a), objects(&b));
    drop(server);

    // `--no-packs`: one GET per object, as before packs.
    let c = p.client("c", &nginx.url());
    let reqs = pull(&c, &nginx, &p.tree(1), &["--no-packs"]);
    assert_eq!(count(&reqs, "/packs/"), 0, "{reqs:?}");
    assert_eq!(count(&reqs, "/objects/"), loose, "{reqs:?}");
    assert_eq!(objects(&c), objects(&a));

    // Incremental: release 2's pack holds only what release 1's lacks,
    // and the pull takes it from there (by objects: the publish also made
    // a static delta, which pull_delta.rs tests).
    p.publish(2);
    let packs2 = Published::packs(&p.srv);
    assert_eq!(packs2.len(), 2);
    assert_eq!(packs2[0], packs[0], "release 1's pack stays as it was");
    let reqs = pull(&a, &nginx, &p.tree(2), &["--no-delta"]);
    assert_eq!(count(&reqs, "/objects/"), 0, "{reqs:?}");
    let new_pack = format!("/{}", packs2[1].pack_path());
    assert!(
        reqs.iter().any(|(path, s)| *path == new_pack && *s == 206),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|(path, _)| *path == format!("/{}", packs[0].pack_path())),
        "nothing of release 1's pack is needed: {reqs:?}"
    );
    assert!(reqs.len() <= 20, "{} requests: {reqs:?}", reqs.len());

    // Through the static delta the publish made, a client that has
    // release 1 reads no pack at all, not even an index: the delta holds
    // every object release 2 adds.
    let reqs = pull(&c, &nginx, &p.tree(2), &[]);
    assert_eq!(count(&reqs, "/deltas/"), 1, "{reqs:?}");
    assert_eq!(count(&reqs, "/packs/"), 0, "{reqs:?}");
    assert_eq!(count(&reqs, "/objects/"), 0, "{reqs:?}");

    // A client that already has the release reads only the signed index.
    let reqs = pull(&c, &nginx, &p.tree(2), &[]);
    assert_eq!(count(&reqs, "/packs/"), 0, "{reqs:?}");
    assert_eq!(count(&reqs, "/objects/"), 0, "{reqs:?}");
    assert_eq!(count(&reqs, "/deltas/"), 0, "{reqs:?}");
}

/// A copy of the published repository that a test may damage, served by
/// its own nginx.
fn damaged_mirror(p: &Published, name: &str) -> (PathBuf, Nginx) {
    let mirror = p.dir().join(name);
    let st = Command::new("cp")
        .arg("-a")
        .arg(&p.srv)
        .arg(&mirror)
        .status()
        .expect("cp");
    assert!(st.success());
    let nginx = Nginx::start(&p.dir().join(format!("{name}-nginx")), &mirror);
    (mirror, nginx)
}

#[test]
fn a_corrupted_pack_range_falls_back_to_that_objects_get() {
    if !require(
        "nginx",
        "to serve the published repository as a static mirror",
    ) {
        return;
    }
    let p = Published::new();
    let (mirror, nginx) = damaged_mirror(&p, "mirror");
    let pack = &Published::packs(&mirror)[0];
    let index = PackIndex::decode(&std::fs::read(mirror.join(pack.index_path())).expect("idx"))
        .expect("index");
    // One byte in the middle of a file object and one in a tree.
    let mut damaged = BTreeSet::new();
    let mut data = std::fs::read(mirror.join(pack.pack_path())).expect("pack");
    for kind in [ObjectKind::File, ObjectKind::Tree] {
        let e = index
            .entries
            .iter()
            .filter(|e| e.kind == kind && e.length > 64)
            .nth(3)
            .expect("an object to damage");
        data[(e.offset + e.length / 2) as usize] ^= 0x40;
        damaged.insert(format!(
            "/objects/{}/{}.{}",
            &e.id.to_hex()[..2],
            &e.id.to_hex()[2..],
            if kind == ObjectKind::File {
                "filez"
            } else {
                "tree"
            }
        ));
    }
    std::fs::write(mirror.join(pack.pack_path()), data).expect("damage");

    let a = p.client("a", &nginx.url());
    let reqs = pull(&a, &nginx, &p.tree(1), &[]);
    // Exactly the two damaged objects came by their own GETs; every other
    // object out of the pack, each verified.
    let gets: BTreeSet<String> = reqs
        .iter()
        .filter(|(path, _)| path.starts_with("/objects/"))
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(gets, damaged, "{reqs:?}");
    assert!(count(&reqs, "/packs/") >= 2, "{reqs:?}");
    assert_eq!(objects(&a), objects(&p.client_pulled_from_serve("b")));
}

#[test]
fn a_pack_index_not_matching_the_signed_index_is_not_used() {
    if !require(
        "nginx",
        "to serve the published repository as a static mirror",
    ) {
        return;
    }
    let p = Published::new();
    let (mirror, nginx) = damaged_mirror(&p, "mirror");
    let pack = &Published::packs(&mirror)[0];
    // A well-formed index that swaps two objects' ranges: its SHA-256 is
    // not the signed one, so it must not be used at all.
    let idx_path = mirror.join(pack.index_path());
    let mut index = PackIndex::decode(&std::fs::read(&idx_path).expect("idx")).expect("index");
    let (one, two) = (index.entries[1], index.entries[2]);
    (index.entries[1].id, index.entries[1].kind) = (two.id, two.kind);
    (index.entries[2].id, index.entries[2].kind) = (one.id, one.kind);
    PackIndex::decode(&index.encode()).expect("still well formed");
    std::fs::write(&idx_path, index.encode()).expect("replace");

    let a = p.client("a", &nginx.url());
    let reqs = pull(&a, &nginx, &p.tree(1), &[]);
    assert_eq!(
        count(&reqs, "/packs/"),
        1,
        "only the index was asked: {reqs:?}"
    );
    assert!(
        reqs.iter().all(|(path, _)| !path.ends_with(".pack")),
        "{reqs:?}"
    );
    assert_eq!(count(&reqs, "/objects/"), objects(&p.srv).len());
    assert_eq!(objects(&a), objects(&p.client_pulled_from_serve("b")));
}

impl Published {
    /// A client that pulled release 1 from `treectl serve`: the reference.
    fn client_pulled_from_serve(&self, name: &str) -> PathBuf {
        let server = Server::start(&self.srv, &[], &[]);
        let b = self.client(name, &server.url());
        treectl_in(&b, ["pull", "origin:os/stable"]).ok();
        check(&b, &self.tree(1));
        b
    }
}

#[test]
fn a_pull_killed_while_reading_packs_keeps_what_it_stored() {
    if !require(
        "nginx",
        "to serve the published repository as a static mirror",
    ) {
        return;
    }
    let p = Published::new();
    let nginx = Nginx::start(&p.dir().join("nginx"), &p.srv);
    let pack = Published::packs(&p.srv).remove(0);
    let total = objects(&p.srv).len();
    let a = p.client("a", &nginx.url());
    // Killed (SIGKILL) at the 300th object stored, after the walk's
    // metadata and a few batches of 50 files.
    let killed = treectl_in(&a, ["pull", "origin:os/stable", "--commit-every", "50"])
        .env("TREECTL_FAILPOINT", "pull-object:300")
        .run();
    assert!(
        !killed.status.success(),
        "the failpoint did not kill the pull"
    );
    let before = requests(&nginx, 0).len();
    let out = treectl_in(&a, ["pull", "origin:os/stable", "--json"]).ok();
    let done: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("done line")).expect("json");
    let fetched = done["objects_fetched"].as_u64().expect("objects_fetched") as usize;
    assert!(
        fetched < total - 100,
        "the second pull fetched {fetched} of {total} objects"
    );
    check(&a, &p.tree(1));
    // The rest came out of the pack, in fewer bytes than the whole pack.
    let log = std::fs::read_to_string(nginx.dir.join("access.log")).expect("log");
    let pack_bytes: u64 = log
        .lines()
        .skip(before)
        .filter(|l| l.contains(&pack.pack_path()))
        .map(|l| {
            let after = l.split('"').nth(2).expect("status and bytes");
            after
                .split_whitespace()
                .nth(1)
                .expect("bytes")
                .parse::<u64>()
                .expect("number")
        })
        .sum();
    assert!(pack_bytes > 0, "the second pull read no range");
    assert!(
        pack_bytes < pack.size,
        "{pack_bytes} bytes of a {}-byte pack read again",
        pack.size
    );
    assert_eq!(count(&requests(&nginx, before), "/objects/"), 0);
}

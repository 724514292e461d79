//! Acceptance 2 of the server issue: the repository directory is the wire
//! format. nginx (Debian's package) serving the same directory answers every
//! GET the read side needs byte for byte like `treectl serve`: `config`,
//! `summary.json`, every object, every commit signature file and every
//! pack and pack index, plus Range requests. Skips, saying why, when nginx is not installed (refused
//! under CI).

use std::path::Path;

use treectl_e2e::http;
use treectl_e2e::nginx::Nginx;
use treectl_e2e::server::ServerFixture;
use treectl_e2e::{require, treectl};

/// Every path under `dir` (relative, with a leading `/`).
fn files_under(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files_under(base, &p, out);
        } else {
            out.push(format!(
                "/{}",
                p.strip_prefix(base).expect("under base").display()
            ));
        }
    }
}

#[test]
fn nginx_serves_the_same_bytes_as_treectl_serve() {
    if !require("nginx", "to serve the repository as a static mirror") {
        return;
    }
    let f = ServerFixture::new("anonymous");
    let (t, srv) = (f.dir(), &f.srv);
    let key = t.join("key");
    treectl(["keygen", "--out"]).arg(&key).ok();
    let server = f.serve(&["--sign-key", key.to_str().expect("utf-8")], &[]);
    for v in [1, 2] {
        if v == 2 {
            // A file object larger than the server's read-whole limit, so
            // it is sent in chunks (and ranges cross chunk boundaries).
            let big = t.join("v2/usr/lib/big.bin");
            std::fs::create_dir_all(big.parent().expect("parent")).expect("mkdir");
            std::fs::write(&big, pseudo_random(1_500_000)).expect("write");
        }
        f.commit(v);
        f.push(&server).ok();
    }
    let nginx = Nginx::start(&t.join("nginx"), srv);

    let mut paths = vec!["/config".to_owned(), "/summary.json".to_owned()];
    files_under(srv, &srv.join("objects"), &mut paths);
    files_under(srv, &srv.join("signatures"), &mut paths);
    files_under(srv, &srv.join("packs"), &mut paths);
    let objects = paths.iter().filter(|p| p.starts_with("/objects/")).count();
    assert!(objects > 20, "only {objects} objects");
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.starts_with("/signatures/"))
            .count(),
        2,
        "one signature file per published commit"
    );
    assert_eq!(
        paths.iter().filter(|p| p.starts_with("/packs/")).count(),
        4,
        "a pack and its index per published release"
    );
    // Twice each: the first answer is read from the file, the second may
    // come from the server's memory; both must be the file's bytes.
    for path in paths.iter().chain(&paths) {
        let a = http::get(&server.addr, path);
        let b = http::get(&nginx.addr, path);
        assert_eq!((a.status, b.status), (200, 200), "{path}");
        assert_eq!(a.body, b.body, "{path}: treectl serve and nginx differ");
        assert_eq!(
            a.body,
            std::fs::read(srv.join(&path[1..])).expect("read"),
            "{path}"
        );
    }
    // Range requests give the same partial content, for a small object
    // (served from memory by now) and for the large one (read in chunks).
    let obj = paths
        .iter()
        .find(|p| p.ends_with(".filez"))
        .expect("a file object");
    let large = paths
        .iter()
        .filter(|p| p.starts_with("/objects/"))
        .max_by_key(|p| std::fs::metadata(srv.join(&p[1..])).expect("stat").len())
        .expect("a file");
    assert!(
        std::fs::metadata(srv.join(&large[1..]))
            .expect("stat")
            .len()
            > 1_000_000,
        "{large} is the big file's object"
    );
    for (path, range) in [
        (obj, "bytes=4-20"),
        (obj, "bytes=-5"),
        (obj, "bytes=10-"),
        (large, "bytes=100-1200000"),
        (large, "bytes=-5"),
        (large, "bytes=600000-"),
    ] {
        let a = http::request(&server.addr, "GET", path, &[("Range", range)], b"");
        let b = http::request(&nginx.addr, "GET", path, &[("Range", range)], b"");
        assert_eq!((a.status, b.status), (206, 206), "{path} {range}");
        assert_eq!(a.body, b.body, "{path} {range}");
        assert_eq!(
            a.header("content-range"),
            b.header("content-range"),
            "{range}"
        );
    }
    // Neither serves the repository's private files.
    for path in ["/state/history.jsonl", "/lock", "/tmp"] {
        assert_eq!(http::get(&server.addr, path).status, 404, "{path}");
        assert_eq!(http::get(&nginx.addr, path).status, 404, "{path}");
    }
    // Conditional requests against treectl serve: an object's ETag is its id.
    let a = http::get(&server.addr, obj);
    let etag = a.header("etag").expect("etag").to_owned();
    assert_eq!(
        a.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let c = http::request(&server.addr, "GET", obj, &[("If-None-Match", &etag)], b"");
    assert_eq!(c.status, 304);
    // Packs never change either; a client reads them by ranges.
    let pack = paths.iter().find(|p| p.ends_with(".pack")).expect("a pack");
    let a = http::request(&server.addr, "GET", pack, &[("Range", "bytes=3-9")], b"");
    let b = http::request(&nginx.addr, "GET", pack, &[("Range", "bytes=3-9")], b"");
    assert_eq!((a.status, b.status), (206, 206));
    assert_eq!(a.body, b.body);
    assert_eq!(a.body.len(), 7);
    assert_eq!(
        a.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
}

/// `len` bytes that zstd cannot shrink much (a xorshift stream), so the
/// stored object stays about as large.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

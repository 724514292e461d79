//! Acceptance 2 of the server issue: the repository directory is the wire
//! format. nginx (Debian's package) serving the same directory answers every
//! GET the read side needs byte for byte like `treectl serve`: `config`,
//! `summary.json`, every object and every commit signature file, plus a
//! Range request. Skips, saying why, when nginx is not installed.

use std::ffi::OsStr;
use std::path::Path;

use treectl_e2e::nginx::Nginx;
use treectl_e2e::server::{http, synthetic_tree, treectl, write_tokens, Server, PUBLISH_TOKEN};

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
    if Nginx::binary().is_none() {
        eprintln!("SKIP: nginx is not installed (apt-get install nginx; .ci/run installs it)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let os = OsStr::new;
    let (src, srv, key) = (t.join("src"), t.join("srv"), t.join("key"));
    for (repo, mode) in [(&src, "bare-user"), (&srv, "archive")] {
        let (ok, _, err) = treectl(
            &[
                os("--repo"),
                repo.as_os_str(),
                os("init"),
                os("--mode"),
                os(mode),
            ],
            &[],
        );
        assert!(ok, "{err}");
    }
    let (ok, _, err) = treectl(&[os("keygen"), os("--out"), key.as_os_str()], &[]);
    assert!(ok, "{err}");
    let tokens = write_tokens(t, "anonymous");
    let server = Server::start(
        &srv,
        &[
            "--tokens",
            tokens.to_str().expect("utf-8"),
            "--sign-key",
            key.to_str().expect("utf-8"),
        ],
        &[],
    );
    for v in [1, 2] {
        let tree = t.join(format!("v{v}"));
        synthetic_tree(&tree, v);
        let (ok, _, err) = treectl(
            &[
                os("--repo"),
                src.as_os_str(),
                os("commit"),
                os("--ref"),
                os("os/stable"),
                os("--tree"),
                tree.as_os_str(),
            ],
            &[],
        );
        assert!(ok, "{err}");
        let (ok, _, err) = treectl(
            &[
                os("--repo"),
                src.as_os_str(),
                os("push"),
                os(&server.url()),
                os("os/stable"),
            ],
            &[("TREECTL_TOKEN", PUBLISH_TOKEN)],
        );
        assert!(ok, "{err}");
    }
    let nginx = Nginx::start(&t.join("nginx"), &srv).expect("nginx is installed");

    let mut paths = vec!["/config".to_owned(), "/summary.json".to_owned()];
    files_under(&srv, &srv.join("objects"), &mut paths);
    files_under(&srv, &srv.join("signatures"), &mut paths);
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
    for path in &paths {
        let a = http(&server.addr, "GET", path, &[], b"");
        let b = http(&nginx.addr, "GET", path, &[], b"");
        assert_eq!((a.status, b.status), (200, 200), "{path}");
        assert_eq!(a.body, b.body, "{path}: treectl serve and nginx differ");
        assert_eq!(
            a.body,
            std::fs::read(srv.join(&path[1..])).expect("read"),
            "{path}"
        );
    }
    // Range requests give the same partial content.
    let obj = paths
        .iter()
        .find(|p| p.ends_with(".filez"))
        .expect("a file object");
    for range in ["bytes=4-20", "bytes=-5", "bytes=10-"] {
        let a = http(&server.addr, "GET", obj, &[("Range", range)], b"");
        let b = http(&nginx.addr, "GET", obj, &[("Range", range)], b"");
        assert_eq!((a.status, b.status), (206, 206), "{obj} {range}");
        assert_eq!(a.body, b.body, "{obj} {range}");
        assert_eq!(
            a.header("content-range"),
            b.header("content-range"),
            "{range}"
        );
    }
    // Neither serves the repository's private files.
    for path in ["/state/history.jsonl", "/lock", "/tmp"] {
        assert_eq!(
            http(&server.addr, "GET", path, &[], b"").status,
            404,
            "{path}"
        );
        assert_eq!(
            http(&nginx.addr, "GET", path, &[], b"").status,
            404,
            "{path}"
        );
    }
    // Conditional requests against treectl serve: an object's ETag is its id.
    let a = http(&server.addr, "GET", obj, &[], b"");
    let etag = a.header("etag").expect("etag").to_owned();
    assert_eq!(
        a.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let c = http(&server.addr, "GET", obj, &[("If-None-Match", &etag)], b"");
    assert_eq!(c.status, 304);
}

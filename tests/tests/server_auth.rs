//! Acceptance 3 of the server issue: without a token, with a wrong token or
//! with a read-only token every write endpoint refuses (401/403) and
//! nothing changes; `..` in ref names and object paths, paths outside the
//! repository, symlinks, a mismatched object upload and an oversized body
//! are refused with a clear JSON error.

use std::collections::BTreeMap;
use std::path::Path;

use treectl_e2e::http::{self, Response};
use treectl_e2e::server::{Server, ServerFixture, PUBLISH_TOKEN, READ_TOKEN};
use treectl_e2e::treectl;
use treectl_store::object::FileHeader;
use treectl_store::object::ObjectKind;
use treectl_store::store::encode_file_wire_form;
use treectl_store::ObjectId;

/// Every file under the repository with its content (refs, index,
/// history, objects), for "nothing changed" checks. `tmp/` is skipped:
/// transactions create and remove staging directories there.
fn snapshot(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .into_owned();
            if rel == "tmp" || rel == "lock" || rel == "state/publish.lock" {
                continue;
            }
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                walk(base, &p, out);
            } else if ft.is_symlink() {
                out.insert(
                    rel,
                    std::fs::read_link(&p)
                        .expect("link")
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(repo, repo, &mut out);
    out
}

fn pack(records: &[(ObjectKind, ObjectId, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    treectl_wire::write_pack_start(&mut out).expect("vec");
    for (kind, id, data) in records {
        treectl_wire::write_pack_record(&mut out, *kind, id, data).expect("vec");
    }
    treectl_wire::write_pack_end(&mut out).expect("vec");
    out
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn assert_json_error(resp: &Response, status: u16, needle: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    let msg = resp.json_error();
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "error {msg:?} should mention {needle:?}"
    );
}

struct Setup {
    fixture: ServerFixture,
    server: Server,
    commit: ObjectId,
}

/// A server with one published commit (v1) and a second commit (v2)
/// uploaded but unpublished.
fn setup(extra_args: &[&str], reads: &str) -> Setup {
    let fixture = ServerFixture::new(reads);
    let commit: ObjectId = fixture.commit(1).parse().expect("id");
    let server = fixture.serve(extra_args, &[]);
    fixture.push(&server).ok();
    Setup {
        fixture,
        server,
        commit,
    }
}

#[test]
fn writes_without_the_publish_scope_are_refused_and_change_nothing() {
    let s = setup(&[], "anonymous");
    let before = snapshot(&s.fixture.srv);
    let header = FileHeader::regular(0o644, 0, 0, Vec::new(), 4);
    let new_id = header.id_with_content(b"new\n");
    let upload = pack(&[(
        ObjectKind::File,
        new_id,
        encode_file_wire_form(&header, b"new\n").expect("encode"),
    )]);
    let publish = serde_json::to_vec(&serde_json::json!({"ref": "os/other", "commit": s.commit}))
        .expect("json");
    let revert =
        serde_json::to_vec(&serde_json::json!({"ref": "os/stable", "reason": "no"})).expect("json");
    let endpoints: [(&str, &[u8]); 3] = [
        ("/v1/objects", &upload),
        ("/v1/publish", &publish),
        ("/v1/revert", &revert),
    ];
    let wrong = bearer("not-a-token");
    let read_only = bearer(READ_TOKEN);
    for (path, body) in endpoints {
        for (auth, status) in [(None, 401), (Some(&wrong), 401), (Some(&read_only), 403)] {
            let mut headers = vec![("Content-Type", "application/json")];
            if let Some(a) = auth {
                headers.push(("Authorization", a.as_str()));
            }
            let resp = http::request(&s.server.addr, "POST", path, &headers, body);
            assert_eq!(resp.status, status, "{path} with {auth:?}: {}", resp.text());
            assert!(!resp.json_error().is_empty());
            if status == 401 {
                assert_eq!(
                    resp.header("www-authenticate"),
                    Some("Bearer realm=\"treectl\"")
                );
            }
        }
    }
    // The client commands say the same, in one line.
    let out = treectl(["revert", &s.server.url(), "os/stable", "--reason", "x"])
        .env("TREECTL_TOKEN", READ_TOKEN)
        .run();
    let err = out.stderr;
    assert!(!out.status.success());
    assert!(err.contains("403") && err.contains("read scope"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        snapshot(&s.fixture.srv),
        before,
        "a refused write changed the repository"
    );
    // The publish token does work (the refusals above were not for another reason).
    let resp = http::request(
        &s.server.addr,
        "POST",
        "/v1/objects",
        &[("Authorization", &bearer(PUBLISH_TOKEN))],
        &upload,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_ne!(snapshot(&s.fixture.srv), before);
}

#[test]
fn hostile_paths_names_and_uploads_get_clear_json_errors() {
    let s = setup(&["--max-upload-bytes", "4096"], "anonymous");
    let addr = &s.server.addr;
    let auth = bearer(PUBLISH_TOKEN);
    // Reads: only the repository's own files.
    assert_eq!(http::get(addr, "/config").status, 200);
    std::fs::write(s.fixture.srv.join("state/secret"), "x").expect("write");
    for path in [
        "/objects/../config",
        "/objects/00/../../config",
        "/../config",
        "/objects/%2e%2e/config",
        "/state/history.jsonl",
        "/state/secret",
        "/tmp",
        "/lock",
        "/refs/heads/os/stable",
        "/etc/passwd",
        "/signatures/../summary.json",
    ] {
        let resp = http::get(addr, path);
        assert_json_error(&resp, 404, "no such file");
    }
    // A symlink in objects/ that escapes the repository is not followed.
    let fake = format!("{}.filez", "c".repeat(62));
    std::os::unix::fs::symlink("/etc/passwd", s.fixture.srv.join("objects/ab").join(&fake))
        .expect("symlink");
    let resp = http::get(addr, &format!("/objects/ab/{fake}"));
    assert_json_error(&resp, 404, "no such file");
    std::fs::remove_file(s.fixture.srv.join("objects/ab").join(&fake)).expect("rm");
    // Nor a symlinked fan-out directory, even to a real object file (no
    // object was read before, so none is in the server's memory).
    let objects = s.fixture.srv.join("objects");
    let (dir, name) = std::fs::read_dir(&objects)
        .expect("objects")
        .filter_map(|d| {
            let d = d.expect("entry");
            let f = std::fs::read_dir(d.path()).expect("fan-out").next()?;
            Some((d.file_name(), f.expect("entry").file_name()))
        })
        .next()
        .expect("an object");
    let (dir, name) = (dir.to_str().expect("utf-8"), name.to_str().expect("utf-8"));
    let path = format!("/objects/{dir}/{name}");
    let moved = s.fixture.dir().join("moved-fan-out");
    std::fs::rename(objects.join(dir), &moved).expect("move");
    std::os::unix::fs::symlink(&moved, objects.join(dir)).expect("symlink");
    let resp = http::get(addr, &path);
    assert_json_error(&resp, 404, "no such file");
    std::fs::remove_file(objects.join(dir)).expect("rm");
    std::fs::rename(&moved, objects.join(dir)).expect("move back");
    assert_eq!(http::get(addr, &path).status, 200, "{path}");
    std::fs::remove_file(s.fixture.srv.join("state/secret")).expect("rm");

    let before = snapshot(&s.fixture.srv);
    let post = |path: &str, body: &[u8]| {
        http::request(
            addr,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    // `..` in ref names.
    for name in ["../x", "os/../../etc", "os/.."] {
        let body = serde_json::to_vec(&serde_json::json!({"ref": name, "commit": s.commit}))
            .expect("json");
        assert_json_error(&post("/v1/publish", &body), 400, "invalid ref name");
        let body =
            serde_json::to_vec(&serde_json::json!({"ref": name, "reason": "x"})).expect("json");
        assert_json_error(&post("/v1/revert", &body), 400, "invalid ref name");
        let resp = http::get(addr, &format!("/v1/history?ref={name}"));
        assert_json_error(&resp, 400, "invalid ref name");
    }
    // Object ids are hex: `..` cannot name an object.
    let body = br#"{"objects":[{"id":"../../config","kind":"file"}]}"#;
    assert_json_error(&post("/v1/objects/missing", body), 400, "invalid JSON");
    // A mismatched upload: the bytes of one object under another's id. The
    // valid object before it in the same pack is not stored either.
    let header = FileHeader::regular(0o644, 0, 0, Vec::new(), 5);
    let good = header.id_with_content(b"good\n");
    let good_wire = encode_file_wire_form(&header, b"good\n").expect("encode");
    let evil = ObjectId::of(b"something else");
    let body = pack(&[
        (ObjectKind::File, good, good_wire.clone()),
        (ObjectKind::File, evil, good_wire.clone()),
    ]);
    let resp = http::request(
        addr,
        "POST",
        "/v1/objects",
        &[("Authorization", &auth)],
        &body,
    );
    assert_json_error(&resp, 400, "does not match its id");
    // A truncated pack and garbage.
    let resp = http::request(
        addr,
        "POST",
        "/v1/objects",
        &[("Authorization", &auth)],
        &body[..body.len() - 3],
    );
    assert_json_error(&resp, 400, "truncated");
    let resp = http::request(
        addr,
        "POST",
        "/v1/objects",
        &[("Authorization", &auth)],
        b"hello world",
    );
    assert_json_error(&resp, 400, "not a treectl pack");
    // Oversized bodies: over --max-upload-bytes (4096), and JSON with a lie
    // in Content-Length is refused before it is read.
    let big = pack(&[(ObjectKind::File, good, vec![0u8; 8192])]);
    let resp = http::request(
        addr,
        "POST",
        "/v1/objects",
        &[("Authorization", &auth)],
        &big,
    );
    assert_json_error(&resp, 413, "larger than the limit");
    let resp = http::request(
        addr,
        "POST",
        "/v1/publish",
        &[("Authorization", &auth), ("Content-Length", "99999999999")],
        b"",
    );
    assert!(resp.status == 413 || resp.status == 400, "{}", resp.text());
    // Publishing a commit whose objects are not all there is refused.
    let body =
        serde_json::to_vec(&serde_json::json!({"ref": "os/stable", "commit": evil})).expect("json");
    assert_json_error(&post("/v1/publish", &body), 409, "incomplete");
    // Unknown API paths and bad JSON.
    assert_json_error(&http::get(addr, "/v1/nope"), 404, "no such API endpoint");
    assert_json_error(&post("/v1/publish", b"{not json"), 400, "invalid JSON");
    assert_eq!(
        snapshot(&s.fixture.srv),
        before,
        "a refused request changed the repository"
    );
    assert!(!s
        .fixture
        .srv
        .join(format!("objects/{}", &good.to_hex()[..2]))
        .join(format!("{}.filez", &good.to_hex()[2..]))
        .exists());
}

#[test]
fn reads_can_require_a_token() {
    let s = setup(&[], "token");
    let addr = &s.server.addr;
    assert_json_error(&http::get(addr, "/summary.json"), 401, "bearer token");
    assert_json_error(
        &http::get(addr, "/v1/history?ref=os/stable"),
        401,
        "bearer token",
    );
    let resp = http::request(
        addr,
        "GET",
        "/summary.json",
        &[("Authorization", &bearer(READ_TOKEN))],
        b"",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Health stays open for load balancers.
    assert_eq!(http::get(addr, "/v1/health").status, 200);
}

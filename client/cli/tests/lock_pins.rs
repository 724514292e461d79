//! What a lockfile pins is what gets used: a tarball whose bytes do not
//! match its pinned sha256 is refused before it is read, at `lock add` and
//! at compose, and moves nothing (docs/security.md, row 6); `lock verify`
//! reports a component commit that records another digest than the pin,
//! and a dependency nothing in the set satisfies (row 7).

mod common;

use std::fs;
use std::path::Path;

use common::objects;
use treectl_e2e::apt::{build_deb_with, HttpServer};
use treectl_e2e::{require_tools, treectl_in};
use treectl_store::ObjectId;

fn refs(repo: &Path) -> String {
    treectl_in(repo, ["refs"]).ok()
}

/// A field of the `[[component]]` named `name` in a lockfile's text.
fn pinned(lock: &Path, name: &str, field: &str) -> String {
    let text = fs::read_to_string(lock).unwrap();
    let block = text
        .split("[[component]]")
        .skip(1) // what comes before the components (sources share names)
        .find(|b| b.contains(&format!("\nname = \"{name}\"\n")))
        .unwrap_or_else(|| panic!("no component {name} in {text}"));
    let prefix = format!("{field} = \"");
    block
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {field} for {name} in {block}"))
        .to_owned()
}

/// Exports a small tree as a tar archive (treectl's own reproducible
/// export) to `out`; returns its sha256.
fn make_tarball(work: &Path, content: &str, out: &Path) -> String {
    let tree = work.join(format!("tree-{content}"));
    fs::create_dir_all(tree.join("usr/share/base")).unwrap();
    fs::write(tree.join("usr/share/base/file"), content.repeat(200)).unwrap();
    let scratch = work.join(format!("scratch-{content}"));
    treectl_in(&scratch, ["init"]).ok();
    treectl_in(&scratch, ["commit", "--ref", "t", "--tree"])
        .arg(&tree)
        .ok();
    treectl_in(&scratch, ["export", "t", "--format", "tar", "-o"])
        .arg(out)
        .ok();
    ObjectId::of(&fs::read(out).unwrap()).to_hex()
}

#[test]
fn tarball_not_matching_its_pin_is_refused_and_moves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let served = t.join("served");
    fs::create_dir_all(&served).unwrap();
    let tarball = served.join("base.tar");
    let sha = make_tarball(t, "base", &tarball);
    let server = HttpServer::serve(&served);
    let url = format!("{}/base.tar", server.url);
    let repo = t.join("repo");
    treectl_in(&repo, ["init"]).ok();
    let lock = t.join("os.lock");
    let lock_s = lock.to_str().unwrap();
    let add = |pin: &str| {
        treectl_in(
            &repo,
            [
                "lock",
                "add",
                "--lockfile",
                lock_s,
                "--tar",
                &url,
                "--sha256",
                pin,
                "--name",
                "base",
                "--version",
                "1",
            ],
        )
    };

    // lock add with a pin the served bytes do not have: one line, no
    // lockfile, no ref, no object.
    let wrong = ObjectId::of(b"another tarball").to_hex();
    let err = add(&wrong).code(1).stderr;
    assert_eq!(
        err.trim_end(),
        format!(
            "error: {url}: checksum mismatch: expected {wrong}, got {sha}; the artifact was not used"
        )
    );
    assert!(!lock.exists(), "a refused add writes no lockfile");
    assert_eq!(refs(&repo), "");
    assert!(objects(&repo).is_empty(), "nothing was imported");

    // The right pin is added, and composes.
    add(&sha).ok();
    assert_eq!(pinned(&lock, "base", "sha256"), sha);
    treectl_in(&repo, ["compose", "--lockfile", lock_s, "--ref", "os/a"]).ok();
    let pinned_lock = fs::read(&lock).unwrap();

    // The mirror now serves other bytes under the pinned name: a byte
    // flipped (same size), then one byte more. A fresh repository must
    // download the tarball, and refuses it before reading it.
    let good = fs::read(&tarball).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    let mut longer = good.clone();
    longer.push(0);
    let cases = [
        (
            flipped.clone(),
            format!("expected {sha}, got {}", ObjectId::of(&flipped).to_hex()),
        ),
        (
            longer.clone(),
            format!("expected {} bytes, got {} bytes", good.len(), longer.len()),
        ),
    ];
    for (i, (bytes, expected)) in cases.iter().enumerate() {
        fs::write(&tarball, bytes).unwrap();
        let fresh = t.join(format!("fresh-{i}"));
        treectl_in(&fresh, ["init"]).ok();
        let err = treectl_in(&fresh, ["compose", "--lockfile", lock_s, "--ref", "os/a"])
            .code(1)
            .stderr;
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ")
                && err.contains(&format!(
                    "{url}: checksum mismatch: {expected}; the artifact was not used"
                )),
            "{err}"
        );
        assert_eq!(refs(&fresh), "", "no ref may move");
        assert!(objects(&fresh).is_empty(), "nothing was imported");
    }
    assert_eq!(
        fs::read(&lock).unwrap(),
        pinned_lock,
        "the pin is unchanged"
    );
    drop(server);
}

#[test]
fn lock_verify_reports_other_digests_than_the_pins_and_unsatisfied_dependencies() {
    if !require_tools(&["dpkg-deb"], "to build the .deb components") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let build = t.join("build");
    fs::create_dir_all(&build).unwrap();
    // app needs libgood (present), libmissing (absent) and, before it is
    // unpacked, prelib (absent).
    let app = build_deb_with(
        &build,
        "app",
        "1.0",
        "all",
        &[
            ("Pre-Depends", "prelib"),
            ("Depends", "libgood (>= 1), libmissing (>= 2)"),
        ],
        &[("usr/share/app/x", b"app\n")],
    );
    let libgood = build_deb_with(
        &build,
        "libgood",
        "1.0",
        "all",
        &[],
        &[("usr/share/libgood/x", b"libgood\n")],
    );
    let served = t.join("served");
    fs::create_dir_all(&served).unwrap();
    let base_sha = make_tarball(t, "base", &served.join("base.tar"));
    let server = HttpServer::serve(&served);
    let repo = t.join("repo");
    treectl_in(&repo, ["init"]).ok();
    let lock = t.join("os.lock");
    let lock_s = lock.to_str().unwrap();
    treectl_in(&repo, ["lock", "add", "--lockfile", lock_s, "--deb"])
        .arg(&app)
        .arg(&libgood)
        .ok();
    treectl_in(
        &repo,
        [
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--tar",
            &format!("{}/base.tar", server.url),
            "--sha256",
            &base_sha,
            "--name",
            "base",
            "--version",
            "1",
        ],
    )
    .ok();
    drop(server);

    // Only the dependencies are wrong so far; the report names each group
    // nothing satisfies (Pre-Depends first), not the satisfied libgood.
    let deps = [
        "app 1.0 depends on prelib, which no component satisfies".to_owned(),
        "app 1.0 depends on libmissing (>= 2), which no component satisfies".to_owned(),
    ];
    let o = treectl_in(&repo, ["lock", "verify", "--lockfile", lock_s]).code(3);
    assert_eq!(o.stdout, format!("{}\n", deps.join("\n")));
    assert_eq!(o.stderr, format!("{lock_s}: 2 problem(s) found\n"));

    // A hand-edited lockfile pins other digests than the commits record.
    let libgood_sha = pinned(&lock, "libgood", "sha256");
    let libgood_commit = pinned(&lock, "libgood", "commit");
    let base_commit = pinned(&lock, "base", "commit");
    let other_deb = ObjectId::of(b"another .deb").to_hex();
    let other_tar = ObjectId::of(b"another tarball").to_hex();
    let text = fs::read_to_string(&lock).unwrap();
    assert_eq!(text.matches(&libgood_sha).count(), 1);
    assert_eq!(text.matches(&base_sha).count(), 1);
    fs::write(
        &lock,
        text.replace(&libgood_sha, &other_deb)
            .replace(&base_sha, &other_tar),
    )
    .unwrap();
    let mut problems = vec![
        format!(
            "libgood: commit {libgood_commit} records deb.sha256 {libgood_sha}, the lockfile pins {other_deb}"
        ),
        format!(
            "base: commit {base_commit} records tar.sha256 {base_sha}, the lockfile pins {other_tar}"
        ),
    ];
    problems.extend(deps.iter().cloned());
    let o = treectl_in(&repo, ["lock", "verify", "--lockfile", lock_s]).code(3);
    assert_eq!(o.stdout, format!("{}\n", problems.join("\n")));
    assert_eq!(o.stderr, format!("{lock_s}: 4 problem(s) found\n"));
    let o = treectl_in(&repo, ["lock", "verify", "--json", "--lockfile", lock_s]).code(3);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({ "components": 3, "problems": problems, "trust-notes": [] })
    );
}

//! Signed apt indexes, through the binary: `lock add --apt` and `lock
//! update` verify `InRelease` (or `Release` + `Release.gpg`) against the
//! source's `signed-by` keys before reading any index it lists, against
//! the real archive this machine's apt uses and against loopback
//! repositories signed by keys `gpg` makes here. Every refusal is one line
//! and leaves the lockfile and the repository's refs as they were.

use std::path::{Path, PathBuf};

use treectl_e2e::apt::{self, build_deb, AptRepo, GpgKey, HttpServer};
use treectl_e2e::debian::archive_uri;
use treectl_e2e::{require_that, require_tools, treectl_in, Outcome};

fn add(repo: &Path, lock: &Path, source: &str, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "lock",
        "add",
        "--lockfile",
        lock.to_str().unwrap(),
        "--apt",
        source,
        "--arch",
        "amd64",
    ];
    args.extend(extra);
    treectl_in(repo, &args).run()
}

fn update(repo: &Path, lock: &Path) -> Outcome {
    treectl_in(
        repo,
        ["lock", "update", "--lockfile", lock.to_str().unwrap()],
    )
    .run()
}

/// Asserts `out` failed with exactly one line on stderr holding `needle`.
fn refused(out: &Outcome, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

/// A loopback repository of two small packages, signed by `key`.
struct Fixture {
    _tmp: tempfile::TempDir,
    t: PathBuf,
    apt: AptRepo,
    server: HttpServer,
    key: GpgKey,
    key_file: PathBuf,
    repo: PathBuf,
}

fn fixture() -> Option<Fixture> {
    let why = "to build and sign an apt repository";
    if !require_tools(apt::TOOLS, why) || !require_tools(apt::GPG_TOOLS, why) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_owned();
    let apt = AptRepo::new(&t.join("apt"), "amd64");
    let build = t.join("build");
    std::fs::create_dir_all(&build).unwrap();
    for name in ["pkg-a", "pkg-b"] {
        let file = format!("usr/share/{name}/x");
        apt.add(&build_deb(
            &build,
            name,
            "1.0",
            "all",
            None,
            &[(&file, b"x\n")],
        ));
    }
    apt.index();
    let key = GpgKey::new(&t.join("gpg-archive"), "archive");
    apt.sign(&key);
    let key_file = key.export(&t.join("archive.asc"), true);
    let server = HttpServer::serve(&apt.root);
    let repo = t.join("repo");
    treectl_in(&repo, ["init"]).ok();
    Some(Fixture {
        _tmp: tmp,
        t,
        apt,
        server,
        key,
        key_file,
        repo,
    })
}

impl Fixture {
    fn source(&self) -> String {
        format!("{} stable main", self.server.url)
    }

    fn refs(&self) -> String {
        treectl_in(&self.repo, ["refs"]).ok()
    }
}

#[test]
fn signed_repository_verifies_by_inrelease_by_release_gpg_and_by_embedded_key() {
    let Some(f) = fixture() else { return };
    let lock = f.t.join("os.lock");
    let key = f.key_file.to_str().unwrap();
    let out = add(&f.repo, &lock, &f.source(), &["--signed-by", key, "pkg-a"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("added pkg-a 1.0"), "{}", out.stdout);
    assert_eq!(out.stderr, "", "a signed source needs no note");
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(text.contains(&format!("signed-by = \"{key}\"\n")), "{text}");
    assert!(!text.contains("allow-unsigned"), "{text}");

    // Without InRelease, Release + Release.gpg is checked instead.
    std::fs::remove_file(f.apt.dist().join("InRelease")).unwrap();
    let out = update(&f.repo, &lock);
    assert_eq!(out.status.code(), Some(77), "{}", out.stderr);
    let verify = treectl_in(
        &f.repo,
        ["lock", "verify", "--lockfile", lock.to_str().unwrap()],
    )
    .run();
    assert!(verify.status.success(), "{}", verify.stderr);
    assert_eq!(verify.stderr, "");

    // The key embedded in the lockfile, as apt's deb822 Signed-By allows.
    let armored = std::fs::read_to_string(&f.key_file).unwrap();
    let lock2 = f.t.join("embedded.lock");
    let out = add(
        &f.repo,
        &lock2,
        &f.source(),
        &["--signed-by", &armored, "pkg-b"],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let text = std::fs::read_to_string(&lock2).unwrap();
    assert!(
        text.contains("signed-by = \"\"\"\n-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{text}"
    );
    let out = update(&f.repo, &lock2);
    assert_eq!(out.status.code(), Some(77), "{}", out.stderr);
}

#[test]
fn tampered_untrusted_expired_or_unsigned_release_is_refused_and_changes_nothing() {
    let Some(f) = fixture() else { return };
    let lock = f.t.join("os.lock");
    let key = f.key_file.to_str().unwrap().to_owned();
    let out = add(&f.repo, &lock, &f.source(), &["--signed-by", &key, "pkg-a"]);
    assert!(out.status.success(), "{}", out.stderr);
    let locked = std::fs::read(&lock).unwrap();
    let refs = f.refs();
    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read(&lock).unwrap(),
            locked,
            "{what}: the lockfile changed"
        );
        assert_eq!(f.refs(), refs, "{what}: the repository's refs changed");
    };
    // Each refusal through both paths: adding a package and updating.
    let both = |needle: &str, what: &str| {
        refused(&add(&f.repo, &lock, "stable", &["pkg-b"]), needle);
        refused(&update(&f.repo, &lock), needle);
        unchanged(what);
    };
    let dist = f.apt.dist();
    let inrelease = std::fs::read_to_string(dist.join("InRelease")).unwrap();

    // One byte of the signed text flipped.
    assert!(inrelease.contains("Origin: treectl-test\n"));
    std::fs::write(
        dist.join("InRelease"),
        inrelease.replace("Origin: treectl-test\n", "Origin: treectl-tesu\n"),
    )
    .unwrap();
    both("does not verify", "a flipped byte in InRelease");
    // The same through Release + Release.gpg.
    std::fs::remove_file(dist.join("InRelease")).unwrap();
    let release = std::fs::read_to_string(dist.join("Release")).unwrap();
    std::fs::write(
        dist.join("Release"),
        release.replace("Origin: treectl-test\n", "Origin: treectl-tesu\n"),
    )
    .unwrap();
    both("does not verify", "a flipped byte in Release");
    std::fs::write(dist.join("Release"), &release).unwrap();
    std::fs::write(dist.join("InRelease"), &inrelease).unwrap();

    // A Packages file that is not the one the signed Release lists.
    let packages = dist.join("main/binary-amd64/Packages.gz");
    let good_packages = std::fs::read(&packages).unwrap();
    let mut other = good_packages.clone();
    let last = other.len() - 5;
    other[last] ^= 1;
    std::fs::write(&packages, &other).unwrap();
    both(
        "checksum mismatch",
        "a Packages not matching the signed digest",
    );
    std::fs::write(&packages, &good_packages).unwrap();

    // A good signature by a key the source does not trust.
    let stranger = GpgKey::new(&f.t.join("gpg-stranger"), "stranger");
    f.apt.sign(&stranger);
    both(&stranger.fingerprint, "a signature by an untrusted key");
    refused(
        &add(&f.repo, &lock, "stable", &["pkg-b"]),
        "none of which is in the source's keyring",
    );

    // A signature by the trusted key, but over a SHA-1 digest.
    let dist_release = dist.join("Release").to_str().unwrap().to_owned();
    f.key.gpg(&[
        "--digest-algo",
        "SHA1",
        "--clearsign",
        "-o",
        dist.join("InRelease").to_str().unwrap(),
        &dist_release,
    ]);
    both("weak digest SHA1", "a SHA-1 signature");
    std::fs::write(dist.join("InRelease"), &inrelease).unwrap();

    // A Release past its Valid-Until, properly signed.
    f.apt.index_with(
        "Date: Sat, 01 Jan 2022 00:00:00 UTC\nValid-Until: Sat, 08 Jan 2022 00:00:00 UTC\n",
    );
    f.apt.sign(&f.key);
    both(
        "expired at Sat, 08 Jan 2022 00:00:00 UTC",
        "an expired Valid-Until",
    );
    // A snapshot archive is accepted with the override, which the
    // lockfile records and every update then mentions.
    let snap = f.t.join("snapshot.lock");
    let out = add(
        &f.repo,
        &snap,
        &f.source(),
        &["--signed-by", &key, "--no-check-valid-until", "pkg-a"],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(std::fs::read_to_string(&snap)
        .unwrap()
        .contains("check-valid-until = false\n"));
    let out = update(&f.repo, &snap);
    assert_eq!(out.status.code(), Some(77), "{}", out.stderr);
    assert!(
        out.stderr.contains("does not check Valid-Until"),
        "{}",
        out.stderr
    );

    // No signature at all: refused without --allow-unsigned.
    std::fs::remove_file(dist.join("InRelease")).unwrap();
    std::fs::remove_file(dist.join("Release.gpg")).unwrap();
    f.apt.index();
    both("is not signed", "an unsigned repository");
    let fresh = f.t.join("fresh.lock");
    refused(
        &add(
            &f.repo,
            &fresh,
            &f.source(),
            &["--signed-by", &key, "pkg-a"],
        ),
        "is not signed",
    );
    assert!(!fresh.exists(), "a refused add wrote a lockfile");
    assert_eq!(f.refs(), refs);
}

#[test]
fn unsigned_repository_needs_allow_unsigned_which_verify_and_update_report() {
    let Some(f) = fixture() else { return };
    let dist = f.apt.dist();
    std::fs::remove_file(dist.join("InRelease")).unwrap();
    std::fs::remove_file(dist.join("Release.gpg")).unwrap();
    let lock = f.t.join("os.lock");
    // No --signed-by, and apt here has no source for a loopback URL.
    let out = add(&f.repo, &lock, &f.source(), &["pkg-a"]);
    refused(&out, "--allow-unsigned");
    assert!(!lock.exists());

    let out = add(&f.repo, &lock, &f.source(), &["--allow-unsigned", "pkg-a"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("is unsigned"), "{}", out.stderr);
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(text.contains("allow-unsigned = true\n"), "{text}");
    assert!(!text.contains("signed-by"), "{text}");

    let lock_s = lock.to_str().unwrap();
    let verify = treectl_in(&f.repo, ["lock", "verify", "--lockfile", lock_s]).run();
    assert!(verify.status.success(), "{}", verify.stderr);
    assert!(
        verify
            .stderr
            .contains("apt source stable is unsigned (allow-unsigned = true)"),
        "{}",
        verify.stderr
    );
    let json = treectl_in(&f.repo, ["lock", "verify", "--json", "--lockfile", lock_s]).ok();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v["trust-notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("unsigned")),
        "{json}"
    );
    let out = update(&f.repo, &lock);
    assert_eq!(out.status.code(), Some(77), "{}", out.stderr);
    assert!(out.stderr.contains("is unsigned"), "{}", out.stderr);
}

/// The archive apt uses here, through `lock add --apt` with no
/// `--signed-by`: apt's own Signed-By for that URL (Debian's archive
/// keyring) verifies its `InRelease`; a keyring without those keys is
/// refused naming them, and no lockfile is written.
#[test]
fn real_archive_inrelease_verifies_with_apts_keyring_and_not_with_another() {
    let why = "to verify the real archive's InRelease";
    let Some(uri) = archive_uri() else {
        require_that(false, "URIs: in /etc/apt/sources.list.d/*.sources", why);
        return;
    };
    if !require_tools(apt::GPG_TOOLS, why) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let repo = t.join("repo");
    treectl_in(&repo, ["init"]).ok();
    let source = format!("{uri} bookworm main");

    let other = GpgKey::new(&t.join("gpg"), "other");
    let other_key = other.export(&t.join("other.gpg"), false);
    let wrong = t.join("wrong.lock");
    let out = add(
        &repo,
        &wrong,
        &source,
        &["--signed-by", other_key.to_str().unwrap(), "base-files"],
    );
    if out.stderr.contains("fetching") {
        require_that(
            false,
            &format!("the archive reachable ({})", out.stderr.trim()),
            why,
        );
        return;
    }
    refused(&out, "none of which is in the source's keyring");
    // The archive's signing keys are named (their fingerprints).
    let keys = out.stderr.split("signed only by key(s) ").nth(1).unwrap();
    assert!(
        keys.split(", ").next().unwrap().len() >= 40,
        "{}",
        out.stderr
    );
    assert!(!wrong.exists(), "a refused add wrote a lockfile");
    assert_eq!(treectl_in(&repo, ["refs"]).ok(), "");

    let lock = t.join("os.lock");
    let out = add(&repo, &lock, &source, &["base-files"]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = std::fs::read_to_string(&lock).unwrap();
    let signed_by = text
        .lines()
        .find_map(|l| l.strip_prefix("signed-by = "))
        .unwrap_or_else(|| panic!("no signed-by recorded: {text}"));
    assert!(signed_by.contains("/"), "{text}");
    assert!(text.contains("name = \"base-files\""), "{text}");
}

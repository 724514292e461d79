//! `treectl lock add/update/verify/diff` and `treectl compose` end to end
//! against a real apt repository (real Debian packages indexed by
//! dpkg-scanpackages, served on loopback HTTP), through the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use treectl_e2e::apt::{self, build_deb, AptRepo, HttpServer};
use treectl_e2e::{corpus_dir, require_that, require_tools, treectl_in};

/// The closure of zlib1g in bookworm: real packages with real Depends.
const PACKAGES: &[&str] = &["zlib1g", "libc6", "libgcc-s1", "gcc-12-base"];

/// Sets `[compose] configure = false`: these package sets are not whole
/// systems (no dpkg), so they are composed as a plain merge.
fn plain_merge(lock: &Path) {
    let text = std::fs::read_to_string(lock).unwrap();
    assert!(text.contains("\n[compose]\n"), "{text}");
    std::fs::write(
        lock,
        text.replace("\n[compose]\n", "\n[compose]\nconfigure = false\n"),
    )
    .unwrap();
}

/// Real .debs of PACKAGES: from the corpus when built, else `apt-get download`.
fn real_debs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if let Some(corpus) = corpus_dir() {
        let list =
            std::fs::read_to_string(corpus.join("lists/pkgs-v1.txt")).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for p in PACKAGES {
            let line = list
                .lines()
                .find(|l| l.split_whitespace().next() == Some(p))
                .ok_or(format!("{p} not in the corpus"))?;
            let f: Vec<&str> = line.split_whitespace().collect();
            out.push(corpus.join("debs").join(format!(
                "{}_{}_{}.deb",
                f[0],
                f[1].replace(':', "%3a"),
                f[2]
            )));
        }
        return Ok(out);
    }
    let st = Command::new("apt-get")
        .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
        .args(PACKAGES)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("apt-get: {e}"))?;
    if !st.status.success() {
        return Err(format!(
            "apt-get download failed (offline?): {}",
            String::from_utf8_lossy(&st.stderr).trim()
        ));
    }
    let mut out = Vec::new();
    for p in PACKAGES {
        let found = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{p}_"))
            })
            .ok_or(format!("apt-get download gave no {p}"))?;
        out.push(found);
    }
    Ok(out)
}

fn refs(repo: &Path) -> String {
    treectl_in(repo, ["refs"]).ok()
}

/// Rebuilds a real .deb with a higher version (and one more file): the
/// "newer version" the index gains.
fn bump(deb: &Path, out: &Path) -> (PathBuf, String) {
    let dir = out.join("bump");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb)
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    let control = std::fs::read_to_string(dir.join("DEBIAN/control")).unwrap();
    let version = control
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_owned();
    let newer = format!("{version}+treectl1");
    std::fs::write(
        dir.join("DEBIAN/control"),
        control.replace(
            &format!("Version: {version}\n"),
            &format!("Version: {newer}\n"),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("usr/share/doc/zlib1g/treectl-bump"), "bumped\n").unwrap();
    let new_deb = out.join(format!("zlib1g_{newer}_amd64.deb"));
    assert!(Command::new("dpkg-deb")
        .args(["-Zxz", "--build"])
        .arg(&dir)
        .arg(&new_deb)
        .output()
        .unwrap()
        .status
        .success());
    (new_deb, newer)
}

#[test]
fn apt_add_update_verify_diff_compose() {
    let why = "to serve real packages from an apt repository";
    if !require_tools(apt::TOOLS, why) {
        return;
    }
    if !require_that(
        std::env::consts::ARCH == "x86_64",
        "an x86_64 machine",
        "because the test packages are amd64",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let debs = match real_debs(t) {
        Ok(d) => d,
        Err(failed) => {
            let needs = format!(
                "{} from the corpus or `apt-get download` ({failed})",
                PACKAGES.join(", ")
            );
            require_that(false, &needs, why);
            return;
        }
    };
    let apt = AptRepo::new(&t.join("apt"), "amd64");
    for d in &debs {
        apt.add(d);
    }
    // A package whose dependency nothing provides, and two packages that
    // ship one path with different content.
    let build = t.join("build");
    std::fs::create_dir_all(&build).unwrap();
    apt.add(&build_deb(
        &build,
        "needs-missing",
        "1.0",
        "amd64",
        Some("libc6, no-such-lib (>= 2)"),
        &[("usr/share/needs-missing/x", b"x")],
    ));
    apt.add(&build_deb(
        &build,
        "conf-a",
        "1.0",
        "all",
        None,
        &[
            ("usr/share/conflict/file", b"a\n"),
            ("usr/share/same", b"same\n"),
        ],
    ));
    apt.add(&build_deb(
        &build,
        "conf-b",
        "1.0",
        "all",
        None,
        &[
            ("usr/share/conflict/file", b"b\n"),
            ("usr/share/same", b"same\n"),
        ],
    ));
    apt.index();
    let server = HttpServer::serve(&apt.root);
    let source = format!("{} stable main", server.url);

    let repo = t.join("repo");
    treectl_in(&repo, ["init"]).ok();
    let lock = t.join("os.lock");
    let lock_s = lock.to_str().unwrap();
    let out = treectl_in(
        &repo,
        [
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--apt",
            &source,
            "--allow-unsigned",
            "zlib1g",
            "--with-deps",
            "--arch",
            "amd64",
        ],
    )
    .ok();
    for p in PACKAGES {
        assert!(out.contains(&format!("added {p} ")), "{out}");
    }
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(text.starts_with("# This file is @generated"));
    assert_eq!(
        text.matches("[[component]]").count(),
        PACKAGES.len(),
        "{text}"
    );
    assert_eq!(
        treectl_in(&repo, ["lock", "verify", "--lockfile", lock_s])
            .ok()
            .lines()
            .count(),
        1
    );

    // Adding again changes no byte.
    treectl_in(
        &repo,
        [
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--apt",
            "stable",
            "zlib1g",
        ],
    )
    .ok();
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), text);

    // A partial package set (no dpkg): the plain merge, not configured.
    plain_merge(&lock);
    let c1 = treectl_in(&repo, ["compose", "--lockfile", lock_s, "--ref", "os/a"])
        .ok()
        .trim()
        .to_owned();
    assert!(
        treectl_in(&repo, ["ls", "os/a", "/usr/lib/x86_64-linux-gnu"])
            .ok()
            .contains("libz.so.1")
    );
    // merged /usr: /lib is a symlink into /usr.
    let ls = treectl_in(&repo, ["ls", "os/a", "/"]).ok();
    assert!(ls.contains("/lib -> usr/lib"), "{ls}");
    assert!(ls.contains("/lib64 -> usr/lib64"), "{ls}");
    let shown = treectl_in(&repo, ["show", "--components", "os/a"]).ok();
    assert_eq!(shown.lines().count(), PACKAGES.len(), "{shown}");

    // The same lockfile in fresh repositories of both modes: same commit.
    for mode in ["archive", "bare-user"] {
        let r = t.join(format!("fresh-{mode}"));
        treectl_in(&r, ["init", "--mode", mode]).ok();
        let id = treectl_in(&r, ["compose", "--lockfile", lock_s, "--ref", "os/a"])
            .ok()
            .trim()
            .to_owned();
        assert_eq!(id, c1, "mode {mode}");
    }

    // The index gains a newer zlib1g: update bumps exactly that.
    let zlib = debs
        .iter()
        .find(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("zlib1g_")
        })
        .unwrap();
    let (new_deb, newer) = bump(zlib, &build);
    apt.add(&new_deb);
    apt.index();
    let old_lock = t.join("old.lock");
    std::fs::copy(&lock, &old_lock).unwrap();
    let o = treectl_in(&repo, ["lock", "update", "--lockfile", lock_s, "--json"]).code(0);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{v}");
    assert_eq!(changes[0]["name"], "zlib1g");
    assert_eq!(changes[0]["new_version"], newer.as_str());
    assert_ne!(changes[0]["old_digest"], changes[0]["new_digest"]);
    // Nothing more to do: exit 77, lockfile untouched.
    let after = std::fs::read(&lock).unwrap();
    treectl_in(&repo, ["lock", "update", "--lockfile", lock_s]).code(77);
    assert_eq!(std::fs::read(&lock).unwrap(), after);
    let md = treectl_in(&repo, ["lock", "diff", old_lock.to_str().unwrap(), lock_s]).ok();
    assert!(md.contains("zlib1g") && md.contains(&newer), "{md}");
    let d: serde_json::Value = serde_json::from_str(
        &treectl_in(
            &repo,
            ["lock", "diff", old_lock.to_str().unwrap(), lock_s, "--json"],
        )
        .ok(),
    )
    .unwrap();
    assert_eq!(d["changes"].as_array().unwrap().len(), 1);

    let c2 = treectl_in(&repo, ["compose", "--lockfile", lock_s, "--ref", "os/b"])
        .ok()
        .trim()
        .to_owned();
    assert_ne!(c1, c2);
    assert_eq!(
        treectl_in(&repo, ["cat", "os/b", "/usr/share/doc/zlib1g/treectl-bump"]).ok(),
        "bumped\n"
    );
    let dc = treectl_in(&repo, ["diff", "--components", "os/a", "os/b"]).ok();
    assert_eq!(
        dc.trim(),
        format!(
            "zlib1g {} -> {newer}",
            changes[0]["old_version"].as_str().unwrap()
        )
    );
    treectl_in(&repo, ["lock", "verify", "--lockfile", lock_s]).ok();

    // --- errors: each is clear and moves no ref --------------------------
    // (adding imports the two conflicting packages into their own refs)
    let clock = t.join("conflict.lock");
    let clock_s = clock.to_str().unwrap();
    treectl_in(
        &repo,
        [
            "lock",
            "add",
            "--lockfile",
            clock_s,
            "--apt",
            &source,
            "--allow-unsigned",
            "conf-a",
            "conf-b",
            "--arch",
            "amd64",
        ],
    )
    .ok();
    let before = refs(&repo);
    // missing package
    let e = treectl_in(
        &repo,
        [
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--apt",
            "stable",
            "no-such-package",
        ],
    )
    .code(1)
    .stderr;
    assert!(
        e.contains("no-such-package") && e.contains("not in apt source"),
        "{e}"
    );
    // unsatisfiable dependency
    let e = treectl_in(
        &repo,
        [
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--apt",
            "stable",
            "needs-missing",
            "--with-deps",
        ],
    )
    .code(1)
    .stderr;
    assert!(e.contains("no-such-lib (>= 2)"), "{e}");
    assert_eq!(
        std::fs::read(&lock).unwrap(),
        after,
        "a failed add must not touch the lockfile"
    );
    // conflicting path
    let e = treectl_in(
        &repo,
        ["compose", "--lockfile", clock_s, "--ref", "os/conflict"],
    )
    .code(1)
    .stderr;
    assert!(
        e.contains("/usr/share/conflict/file") && e.contains("conf-a") && e.contains("conf-b"),
        "{e}"
    );
    assert!(
        !e.contains("/usr/share/same"),
        "identical duplicates are fine: {e}"
    );
    // version 99
    let v99 = t.join("v99.lock");
    std::fs::write(&v99, text.replace("version = 1\n", "version = 99\n")).unwrap();
    let e = treectl_in(
        &repo,
        [
            "compose",
            "--lockfile",
            v99.to_str().unwrap(),
            "--ref",
            "os/a",
        ],
    )
    .code(1)
    .stderr;
    assert!(
        e.contains("version 99") && e.contains("upgrade treectl"),
        "{e}"
    );
    assert_eq!(refs(&repo), before);
    // tampered artifact: a fresh repository must download, and refuses it.
    let pool_zlib = apt.root.join("pool").join(new_deb.file_name().unwrap());
    let mut bytes = std::fs::read(&pool_zlib).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&pool_zlib, bytes).unwrap();
    let fresh = t.join("fresh-tampered");
    treectl_in(&fresh, ["init"]).ok();
    let e = treectl_in(&fresh, ["compose", "--lockfile", lock_s, "--ref", "os/a"])
        .code(1)
        .stderr;
    assert!(
        e.contains("checksum mismatch") && e.contains("zlib1g"),
        "{e}"
    );
    assert_eq!(refs(&fresh), "", "no ref may move");

    // An override resolves the conflict (a table header after the
    // components is still part of [compose]).
    let mut ctext = std::fs::read_to_string(&clock).unwrap();
    ctext = ctext.replace("\n[compose]\n", "\n[compose]\nconfigure = false\n");
    ctext.push_str(
        "\n[[compose.override]]\npath = \"/usr/share/conflict\"\ncomponent = \"conf-b\"\n",
    );
    std::fs::write(&clock, ctext).unwrap();
    treectl_in(
        &repo,
        ["compose", "--lockfile", clock_s, "--ref", "os/conflict"],
    )
    .ok();
    assert_eq!(
        treectl_in(&repo, ["cat", "os/conflict", "/usr/share/conflict/file"]).ok(),
        "b\n"
    );
    drop(server);
}

//! Helpers for tests that run the real `treectl` binary.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_treectl")
}

/// Runs `treectl --repo REPO ARGS…`.
pub fn run(repo: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()
        .expect("run treectl")
}

/// Runs and requires success; returns stdout.
pub fn ok(repo: &Path, args: &[&str]) -> String {
    let out = run(repo, args);
    assert!(
        out.status.success(),
        "treectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs and requires failure with exactly one line on stderr; returns it.
pub fn fails(repo: &Path, args: &[&str]) -> String {
    let out = run(repo, args);
    assert!(
        !out.status.success(),
        "treectl {args:?} unexpectedly succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err:?}"
    );
    assert!(err.starts_with("error: "), "{err:?}");
    err
}

pub fn init(dir: &Path, mode: &str) -> PathBuf {
    let repo = dir.join(format!("repo-{mode}"));
    ok(&repo, &["init", "--mode", mode]);
    repo
}

/// A small tree with a file, an executable, a setuid file, a symlink, an
/// empty directory and a nested directory.
pub fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/empty")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("etc/hostname"), "demo\n").unwrap();
    fs::write(root.join("etc/motd"), "welcome\n".repeat(100)).unwrap();
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("usr/bin/su"), b"setuid").unwrap();
    fs::set_permissions(root.join("usr/bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    fs::write(root.join("usr/empty-file"), b"").unwrap();
}

/// Every object file under `repo/objects`, sorted.
pub fn objects(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(repo.join("objects")).unwrap() {
        for e in fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(e.unwrap().path());
        }
    }
    out.sort();
    out
}

/// Ref name -> commit, from `treectl refs --json`.
pub fn refs(repo: &Path) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&ok(repo, &["refs", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ref"].as_str().unwrap().to_owned(),
                r["commit"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub fn show_json(repo: &Path, rev: &str) -> serde_json::Value {
    serde_json::from_str(&ok(repo, &["show", "--json", rev])).unwrap()
}

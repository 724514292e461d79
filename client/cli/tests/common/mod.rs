//! Fixtures for the repository journeys: repositories, a sample tree, and
//! reading objects and refs back. The binary runs through
//! `treectl_e2e::treectl_in`.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use treectl_e2e::treectl_in;

pub fn init(dir: &Path, mode: &str) -> PathBuf {
    let repo = dir.join(format!("repo-{mode}"));
    treectl_in(&repo, ["init", "--mode", mode]).ok();
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
    let v: serde_json::Value =
        serde_json::from_str(&treectl_in(repo, ["refs", "--json"]).ok()).unwrap();
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
    serde_json::from_str(&treectl_in(repo, ["show", "--json", rev]).ok()).unwrap()
}

//! A sysroot whose origin is a local repository copies each commit into
//! its own repository re-hashing every object, so a damaged object in the
//! origin is refused: `upgrade`, `upgrade --stage` and `upgrade
//! --download-only` fail with one line naming the object, and nothing is
//! deployed, staged or stored (docs/security.md, row 30). (`deploy REV`
//! takes commits from the sysroot's own repository only.)

mod deploy_support;

use std::fs;
use std::path::{Path, PathBuf};

use deploy_support::*;

/// Every object file of a repository, relative to it, sorted.
fn object_files(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(repo.join("objects")).unwrap() {
        for e in fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(e.unwrap().path().strip_prefix(repo).unwrap().to_owned());
        }
    }
    out.sort();
    out
}

/// Every file below `dir` (objects, refs, staging in `tmp/` …), relative
/// to it, sorted.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// The object id a path `objects/ab/cdef….ext` names.
fn object_id(rel: &Path) -> String {
    let fanout = rel.parent().unwrap().file_name().unwrap().to_string_lossy();
    let rest = rel.file_stem().unwrap().to_string_lossy();
    format!("{fanout}{rest}")
}

#[test]
fn a_damaged_local_origin_is_refused_and_nothing_is_deployed_or_stored() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    w.install();
    let before_v2 = object_files(&w.origin());
    let v2 = w.release("2", 1_700_100_000);
    // A file object only release 2 has: the sysroot must copy it.
    let added: Vec<PathBuf> = object_files(&w.origin())
        .into_iter()
        .filter(|p| !before_v2.contains(p))
        .collect();
    let damaged = added
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "filez"))
        .expect("release 2 adds a file object")
        .clone();
    let id = object_id(&damaged);
    let path = w.origin().join(&damaged);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, bytes).unwrap();

    let status = w.status();
    let stored = all_files(&w.sysroot_repo());
    let sr = w.sr();
    for args in [
        vec!["upgrade", "--sysroot", &sr],
        vec!["upgrade", "--stage", "--sysroot", &sr],
        vec!["upgrade", "--download-only", "--sysroot", &sr],
    ] {
        let err = cmd(&args).fails();
        let line = err.trim_end();
        eprintln!("refused as expected: {line}");
        assert_eq!(line.lines().count(), 1, "{args:?}: {err}");
        assert!(
            line.starts_with("error: ") && line.contains(&id),
            "{args:?} must name the damaged object {id}: {line}"
        );
        assert_eq!(w.status(), status, "{args:?} changed the deployments");
        assert_eq!(
            all_files(&w.sysroot_repo()),
            stored,
            "{args:?} left something in the sysroot's repository"
        );
    }
    assert_eq!(w.listed()[0]["commit"], v1.as_str());
    assert!(w.listed().iter().all(|d| d["commit"] != v2.as_str()));
    assert!(w.listed().iter().all(|d| d["staged"] == false));
    let fsck = cmd(&["--repo", w.sysroot_repo().to_str().unwrap(), "fsck"]).run();
    assert!(fsck.status.success(), "{}{}", fsck.stdout, fsck.stderr);
}

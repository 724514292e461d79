//! Corpus v1 (a real Debian system, ~9,200 files) committed and checked out
//! in both repository modes reproduces every file, mode, owner, symlink and
//! directory. Skips, saying why, when the corpus has not been built
//! (`shared/corpus/build.sh`; CI builds it).

use std::ffi::OsStr;

use treectl_e2e::{compare_trees, corpus_dir, is_root, treectl_ok, Scratch};

#[test]
fn corpus_v1_commit_and_checkout_reproduce_the_tree() {
    let Some(corpus) = corpus_dir() else {
        eprintln!("SKIP: corpus not built (run shared/corpus/build.sh)");
        return;
    };
    if !is_root() {
        eprintln!(
            "SKIP: the corpus has files owned by several users; reproducing owners needs root"
        );
        return;
    }
    let v1 = corpus.join("corpus-v1");
    let scratch = Scratch::new("4G");
    let s = scratch.path();
    let mut ids = Vec::new();
    for mode in ["bare-user", "archive"] {
        let repo = s.join(mode);
        let r = |args: &[&str]| {
            let mut all: Vec<&OsStr> = vec![OsStr::new("--repo"), repo.as_os_str()];
            all.extend(args.iter().map(OsStr::new));
            treectl_ok(&all)
        };
        r(&["init", "--mode", mode]);
        let id = r(&[
            "commit",
            "--ref",
            "os/v1",
            "--tree",
            v1.to_str().unwrap(),
            "--timestamp",
            "2024-01-01T00:00:00Z",
        ]);
        ids.push(id.trim().to_owned());
        let dest = s.join(format!("checkout-{mode}"));
        r(&["checkout", "os/v1", dest.to_str().unwrap()]);
        let diffs = compare_trees(&v1, &dest, true);
        assert!(
            diffs.is_empty(),
            "{mode}: {} differences, first: {:#?}",
            diffs.len(),
            &diffs[..diffs.len().min(10)]
        );
        let fsck = r(&["fsck"]);
        assert!(fsck.contains("no problems"), "{fsck}");
    }
    assert_eq!(
        ids[0], ids[1],
        "same tree and timestamp give the same commit in both modes"
    );
}

//! Corpus v1 (a real Debian system, ~9,200 files) committed and checked out
//! in both repository modes reproduces every file, mode, owner, symlink and
//! directory. Skips, saying why, when the corpus has not been built
//! (`shared/corpus/build.sh`; CI builds it, and refuses the skip).

use treectl_e2e::{compare_trees, require_corpus, require_root, treectl_in, Scratch};

#[test]
fn corpus_v1_commit_and_checkout_reproduce_the_tree() {
    let Some(corpus) = require_corpus("to commit and check out a real system") else {
        return;
    };
    if !require_root("to reproduce the owners of the corpus's files (it has several users)") {
        return;
    }
    let v1 = corpus.join("corpus-v1");
    let scratch = Scratch::new("4G");
    let s = scratch.path();
    let mut ids = Vec::new();
    for mode in ["bare-user", "archive"] {
        let repo = s.join(mode);
        let r = |args: &[&str]| treectl_in(&repo, args).ok();
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

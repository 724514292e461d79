//! `cargo bench -p treectl-store`: commit and checkout through the library,
//! medians of several runs. Uses corpus v1 when it is built
//! (`shared/corpus/build.sh`, or `$TREECTL_CORPUS`), a generated tree of
//! 5,000 files otherwise. The side-by-side comparison with ostree, on a
//! fresh journaled filesystem, is `bench/repo.sh`; this bench is for quick
//! before/after measurements of library changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use treectl_store::checkout::{checkout, CheckoutOptions};
use treectl_store::commit::{commit_dir, CommitOptions};
use treectl_store::refs::RefName;
use treectl_store::{Repo, RepoMode};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn source_tree(scratch: &Path) -> PathBuf {
    let corpus = std::env::var_os("TREECTL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treectl-corpus"));
    if corpus.join("corpus-v1.done").exists() {
        return corpus.join("corpus-v1");
    }
    let dir = scratch.join("generated");
    for i in 0..5000 {
        let sub = dir.join(format!("d{}", i % 50));
        fs::create_dir_all(&sub).expect("create dir");
        fs::write(
            sub.join(format!("f{i}")),
            format!("file {i}\n").repeat(1 + i % 2000),
        )
        .expect("write");
    }
    dir
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("treectl-bench")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    let src = source_tree(scratch.path());
    println!("tree: {}", src.display());
    let opts = CommitOptions {
        subject: "bench".into(),
        timestamp: 0,
        ..Default::default()
    };
    let name = RefName::new("bench").expect("valid ref");
    for mode in [RepoMode::Archive, RepoMode::BareUser] {
        let mut commits = Vec::new();
        let mut checkouts = Vec::new();
        for run in 0..RUNS {
            let repo_path = scratch.path().join(format!("{mode}-{run}"));
            let repo = Repo::init(&repo_path, mode).expect("init");
            let t = Instant::now();
            commit_dir(&repo, &src, &name, &opts).expect("commit");
            commits.push(t.elapsed());
            let head = treectl_store::refs::read_ref(&repo, &name).expect("ref");
            let dest = scratch.path().join(format!("co-{mode}-{run}"));
            let t = Instant::now();
            checkout(&repo, &head, &dest, &CheckoutOptions::default()).expect("checkout");
            checkouts.push(t.elapsed());
            if mode == RepoMode::BareUser && run == 0 {
                // Re-committing an unchanged hardlink checkout: the inode path.
                let mut again = Vec::new();
                for _ in 0..RUNS {
                    let t = Instant::now();
                    commit_dir(&repo, &dest, &RefName::new("again").expect("valid"), &opts)
                        .expect("recommit");
                    again.push(t.elapsed());
                }
                println!(
                    "{mode:>9} re-commit of a hardlink checkout: median {:?}",
                    median(again)
                );
            }
            fs::remove_dir_all(&repo_path).expect("cleanup");
        }
        println!("{mode:>9} commit:   median {:?} of {RUNS}", median(commits));
        println!(
            "{mode:>9} checkout: median {:?} of {RUNS}",
            median(checkouts)
        );
    }
}

//! Issue 3, acceptance 1: every package of corpus v1 imports, and checking
//! their commits out one by one over each other (`checkout --union`, in
//! list order) gives the same tree as `dpkg-deb -x` of the same files in the
//! same order into one directory (the corpus's extraction before its /usr
//! merge; it is rebuilt here, since the corpus keeps only the merged one).
//!
//! Skipped, with the reason printed (refused under CI), when the corpus is
//! absent (`../shared/corpus/build.sh` makes it) or when not root.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use treectl_e2e::{compare_trees, require_corpus, require_root, require_that, treectl_in, Scratch};

/// The packages of corpus v1, in list order.
fn corpus_debs(corpus: &Path) -> Result<Vec<PathBuf>, String> {
    let list = corpus.join("lists/pkgs-v1.txt");
    let text = fs::read_to_string(&list).map_err(|e| {
        format!(
            "corpus list {} not readable ({e}); build it with ../shared/corpus/build.sh",
            list.display()
        )
    })?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, version, arch] = f[..] else {
            return Err(format!("bad corpus list line {line:?}"));
        };
        let p = corpus
            .join("debs")
            .join(format!("{name}_{}_{arch}.deb", version.replace(':', "%3a")));
        if !p.exists() {
            return Err(format!("{} is missing from the corpus", p.display()));
        }
        out.push(p);
    }
    Ok(out)
}

#[test]
fn corpus_v1_imports_and_union_checkout_equals_dpkg_deb_x() {
    let why = "to import every package of corpus v1";
    let Some(corpus) = require_corpus(why) else {
        return;
    };
    let debs = match corpus_debs(&corpus) {
        Ok(d) => d,
        Err(broken) => {
            require_that(false, &format!("a complete corpus ({broken})"), why);
            return;
        }
    };
    if !require_root("to compare owners: dpkg-deb -x and checkout restore them only as root") {
        return;
    }
    let tmp = Scratch::new("4G");
    let repo = tmp.path().join("repo");
    treectl_in(&repo, ["init"]).ok();
    let mut args = vec!["commit".to_string(), "--json".into()];
    for d in &debs {
        args.push("--deb".into());
        args.push(d.to_string_lossy().into_owned());
    }
    let reports: serde_json::Value = serde_json::from_str(&treectl_in(&repo, &args).ok()).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), debs.len(), "every package imports");
    let by_path: BTreeMap<PathBuf, String> = reports
        .iter()
        .map(|r| {
            (
                PathBuf::from(r["path"].as_str().unwrap()),
                r["commit"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    let layered = tmp.path().join("layered");
    let extracted = tmp.path().join("extracted");
    for d in &debs {
        let commit = &by_path[d];
        treectl_in(&repo, ["checkout", commit])
            .arg(&layered)
            .arg("--union")
            .ok();
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(d)
            .arg(&extracted)
            .status()
            .unwrap();
        assert!(st.success(), "dpkg-deb -x {}", d.display());
    }

    let diffs = compare_trees(&layered, &extracted, true);
    assert!(
        diffs.is_empty(),
        "{} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(20)]
    );
    let entries = fs::read_dir(layered.join("usr/share/doc")).unwrap().count();
    assert!(
        entries > 100,
        "only {entries} package docs in the layered tree"
    );
}

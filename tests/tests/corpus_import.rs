//! Issue 3, acceptance 1: every package of corpus v1 imports, and checking
//! their commits out one by one over each other (`checkout --union`, in
//! list order) gives the same tree as `dpkg-deb -x` of the same files in the
//! same order into one directory (the corpus's extraction before its /usr
//! merge; it is rebuilt here, since the corpus keeps only the merged one).
//!
//! Skipped, with the reason printed, when the corpus is absent
//! (`../shared/corpus/build.sh` makes it) or when not root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const CORPUS: &str = "/var/tmp/treectl-corpus";

/// target/<profile>/treectl, next to the directory of this test executable.
fn treectl_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps")
        .join("treectl");
    assert!(
        bin.exists(),
        "{} not found; run `cargo build -p treectl`",
        bin.display()
    );
    bin
}

fn treectl(repo: &Path, args: &[String]) -> String {
    let out = Command::new(treectl_bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()
        .expect("running treectl");
    assert!(
        out.status.success(),
        "treectl {:?} failed: {}",
        &args[..args.len().min(3)],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn corpus_debs() -> Result<Vec<PathBuf>, String> {
    let list = Path::new(CORPUS).join("lists/pkgs-v1.txt");
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
        let p = Path::new(CORPUS)
            .join("debs")
            .join(format!("{name}_{}_{arch}.deb", version.replace(':', "%3a")));
        if !p.exists() {
            return Err(format!("{} is missing from the corpus", p.display()));
        }
        out.push(p);
    }
    Ok(out)
}

#[derive(Debug, PartialEq, Eq)]
struct Meta {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    target: Option<PathBuf>,
}

fn scan(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Meta>) {
    let p = root.join(rel);
    let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_file() {
        'f'
    } else {
        '?'
    };
    out.insert(
        rel.to_owned(),
        Meta {
            kind,
            mode: if kind == 'l' {
                0o777
            } else {
                m.mode() & 0o7777
            },
            uid: m.uid(),
            gid: m.gid(),
            size: if kind == 'f' { m.size() } else { 0 },
            target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
        },
    );
    if ft.is_dir() {
        for e in fs::read_dir(&p).unwrap() {
            scan(root, &rel.join(e.unwrap().file_name()), out);
        }
    }
}

#[test]
fn corpus_v1_imports_and_union_checkout_equals_dpkg_deb_x() {
    let debs = match corpus_debs() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        eprintln!("skipped: not root (dpkg-deb -x and checkout cannot restore owners)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    treectl(&repo, &["init".into()]);
    let mut args = vec!["commit".to_string(), "--json".into()];
    for d in &debs {
        args.push("--deb".into());
        args.push(d.to_string_lossy().into_owned());
    }
    let reports: serde_json::Value = serde_json::from_str(&treectl(&repo, &args)).unwrap();
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
        treectl(
            &repo,
            &[
                "checkout".into(),
                commit.clone(),
                layered.to_string_lossy().into_owned(),
                "--union".into(),
            ],
        );
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(d)
            .arg(&extracted)
            .status()
            .unwrap();
        assert!(st.success(), "dpkg-deb -x {}", d.display());
    }

    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    scan(&layered, Path::new(""), &mut a);
    scan(&extracted, Path::new(""), &mut b);
    let mut diffs = Vec::new();
    for (p, ma) in &a {
        match b.get(p) {
            None => diffs.push(format!("only in checkout: {}", p.display())),
            Some(mb) if ma != mb => diffs.push(format!("{}: {ma:?} vs {mb:?}", p.display())),
            Some(_) if ma.kind == 'f' => {
                if fs::read(layered.join(p)).unwrap() != fs::read(extracted.join(p)).unwrap() {
                    diffs.push(format!("{}: content differs", p.display()));
                }
            }
            Some(_) => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("only in dpkg-deb -x: {}", p.display()));
    }
    assert!(
        diffs.is_empty(),
        "{} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(20)]
    );
    assert!(a.len() > 5000, "only {} entries", a.len());
}

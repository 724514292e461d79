//! `treectl lock update --git-commit` (issue 4, acceptance 3): the bumped
//! lockfile is committed through gix as exactly one commit that plain git
//! shows, with the change list as message, the author from git's
//! configuration (or the documented default), and a clean `git status`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use treectl_e2e::{require, treectl_in, Treectl};

/// Variables through which git would find an identity, a repository or a
/// user configuration.
const GIT_ENV: &[&str] = &[
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "XDG_CONFIG_HOME",
];

/// Runs `cmd` in an environment where git reads no user or system
/// configuration and no identity variables.
fn isolated(mut cmd: Command, home: &Path) -> Output {
    for v in GIT_ENV {
        cmd.env_remove(v);
    }
    cmd.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap()
}

fn git(dir: &Path, home: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    let o = isolated(cmd, home);
    assert!(
        o.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `treectl --repo REPO ARGS…` in the same isolated environment as git
/// (it commits through gix, which reads git's configuration).
fn isolated_treectl(repo: &Path, home: &Path, args: &[&str]) -> Treectl {
    let mut t = treectl_in(repo, args);
    for v in GIT_ENV {
        t = t.env_remove(v);
    }
    t.env("HOME", home).env("GIT_CONFIG_NOSYSTEM", "1")
}

/// A git source with one commit on `main`; returns a function that adds
/// another commit and returns its id.
fn source_repo(dir: PathBuf, home: PathBuf) -> impl Fn(&str) -> String {
    git(
        dir.parent().unwrap(),
        &home,
        &["init", "-q", "-b", "main", dir.to_str().unwrap()],
    );
    move |content: &str| {
        std::fs::write(dir.join("app.txt"), content).unwrap();
        git(&dir, &home, &["add", "app.txt"]);
        git(
            &dir,
            &home,
            &[
                "-c",
                "user.name=Src",
                "-c",
                "user.email=src@example.org",
                "commit",
                "-qm",
                content,
            ],
        );
        git(&dir, &home, &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

fn count(dir: &Path, home: &Path) -> usize {
    git(dir, home, &["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn git_commit_uses_configured_identity_and_leaves_status_clean() {
    if !require("git", "to make the source and CI repositories") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let home = t.join("home");
    std::fs::create_dir(&home).unwrap();
    let repo = t.join("repo");
    isolated_treectl(&repo, &home, &["init"]).ok();
    let commit = source_repo(t.join("src"), home.clone());
    let first = commit("one");

    // The CI repository: configured identity, the lockfile committed by git.
    let ci = t.join("ci");
    git(
        t,
        &home,
        &["init", "-q", "-b", "main", ci.to_str().unwrap()],
    );
    git(&ci, &home, &["config", "user.name", "CI Bot"]);
    git(&ci, &home, &["config", "user.email", "ci@example.org"]);
    std::fs::create_dir(ci.join("os")).unwrap();
    let lock = ci.join("os").join("os.lock");
    let lock_s = lock.to_str().unwrap();
    let src = t.join("src");
    isolated_treectl(
        &repo,
        &home,
        &[
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--git",
            src.to_str().unwrap(),
            "--follow",
            "main",
            "--name",
            "app",
        ],
    )
    .ok();
    assert!(std::fs::read_to_string(&lock).unwrap().contains(&first));
    git(&ci, &home, &["add", "os/os.lock"]);
    git(&ci, &home, &["commit", "-qm", "initial lockfile"]);
    let before = count(&ci, &home);

    let second = commit("two");
    let summary = isolated_treectl(
        &repo,
        &home,
        &["lock", "update", "--lockfile", lock_s, "--git-commit"],
    )
    .code(0)
    .stdout;
    assert_eq!(count(&ci, &home), before + 1, "exactly one new commit");

    let log = git(&ci, &home, &["log", "-p", "-1"]);
    assert!(
        log.contains("diff --git a/os/os.lock b/os/os.lock"),
        "{log}"
    );
    assert!(log.contains(&format!("-git-commit = \"{first}\"")), "{log}");
    assert!(
        log.contains(&format!("+git-commit = \"{second}\"")),
        "{log}"
    );
    // The message lists the changes as the human summary does.
    assert!(log.contains("os.lock: update 1 component"), "{log}");
    for line in summary.lines() {
        assert!(log.contains(line.trim()), "{line:?} missing from {log}");
    }
    let who = git(&ci, &home, &["log", "-1", "--format=%an <%ae>|%cn <%ce>"]);
    assert_eq!(
        who.trim(),
        "CI Bot <ci@example.org>|CI Bot <ci@example.org>"
    );
    // The commit's tree holds the new lockfile byte for byte.
    assert_eq!(
        git(&ci, &home, &["show", "HEAD:os/os.lock"]),
        std::fs::read_to_string(&lock).unwrap()
    );
    assert_eq!(git(&ci, &home, &["status", "--porcelain"]), "");
    git(&ci, &home, &["fsck", "--strict"]);

    // Nothing new: exit 77 and no commit.
    isolated_treectl(
        &repo,
        &home,
        &["lock", "update", "--lockfile", lock_s, "--git-commit"],
    )
    .code(77);
    assert_eq!(count(&ci, &home), before + 1);
}

#[test]
fn git_commit_defaults_identity_and_keeps_other_staged_changes() {
    if !require("git", "to make the source and CI repositories") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let home = t.join("home");
    std::fs::create_dir(&home).unwrap();
    let repo = t.join("repo");
    isolated_treectl(&repo, &home, &["init"]).ok();
    let commit = source_repo(t.join("src"), home.clone());
    commit("one");

    // No identity configured anywhere, an unborn branch, an untracked
    // lockfile and an unrelated staged file that must stay out of the commit.
    let ci = t.join("ci");
    git(
        t,
        &home,
        &["init", "-q", "-b", "main", ci.to_str().unwrap()],
    );
    let lock = ci.join("os.lock");
    let lock_s = lock.to_str().unwrap();
    let src = t.join("src");
    isolated_treectl(
        &repo,
        &home,
        &[
            "lock",
            "add",
            "--lockfile",
            lock_s,
            "--git",
            src.to_str().unwrap(),
            "--follow",
            "main",
            "--name",
            "app",
        ],
    )
    .ok();
    std::fs::write(ci.join("other"), "staged\n").unwrap();
    git(&ci, &home, &["add", "other"]);

    commit("two");
    isolated_treectl(
        &repo,
        &home,
        &["lock", "update", "--lockfile", lock_s, "--git-commit"],
    )
    .ok();
    assert_eq!(count(&ci, &home), 1);
    let who = git(&ci, &home, &["log", "-1", "--format=%an <%ae>|%cn <%ce>"]);
    assert_eq!(
        who.trim(),
        "treectl <treectl@localhost>|treectl <treectl@localhost>"
    );
    let files = git(&ci, &home, &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(files.trim(), "os.lock");
    assert_eq!(git(&ci, &home, &["status", "--porcelain"]), "A  other\n");
}

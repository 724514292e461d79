//! Helpers for the deployment tests: small synthetic OS trees committed
//! into a local "origin" repository, and the `treectl` sysroot commands.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use treectl_e2e::{treectl, Treectl};

/// `treectl ARGS…` for the deployment tests: no space reserve
/// (`TREECTL_MIN_FREE=0`; the binary's runner already clears the booted
/// deployment, cmdline, failpoint and repository variables).
pub fn cmd(args: &[&str]) -> Treectl {
    treectl(args).env("TREECTL_MIN_FREE", "0")
}

/// A test world: an origin repository and a sysroot directory.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let w = World {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        cmd(&[
            "--repo",
            w.origin().to_str().unwrap(),
            "init",
            "--mode",
            "archive",
        ])
        .ok();
        w
    }

    pub fn origin(&self) -> PathBuf {
        self.dir.path().join("origin")
    }

    pub fn sysroot(&self) -> PathBuf {
        self.dir.path().join("sysroot")
    }

    pub fn sr(&self) -> String {
        self.sysroot().to_str().unwrap().to_owned()
    }

    /// Commits the release `version` of the synthetic OS to `os/stable`
    /// at `timestamp` (seconds), returns the commit id. Releases differ in
    /// `usr/bin/tool`, `etc/upstream.conf` and `etc/both.conf`; the kernel
    /// and `usr/share/doc/README` are the same in all of them.
    pub fn release(&self, version: &str, timestamp: i64) -> String {
        self.release_tree(version, version, timestamp)
    }

    /// Like `release`, with the tree of release `tree` and the metadata
    /// version `version` (a revert: an old tree as a new release).
    pub fn release_tree(&self, version: &str, tree: &str, timestamp: i64) -> String {
        self.release_edited(version, tree, timestamp, |_| {})
    }

    /// Like `release_tree`, with `edit` applied to the tree before the
    /// commit.
    pub fn release_edited(
        &self,
        version: &str,
        tree: &str,
        timestamp: i64,
        edit: impl FnOnce(&Path),
    ) -> String {
        let t = self.dir.path().join(format!("tree-{version}-{timestamp}"));
        write_os_tree(&t, tree);
        edit(&t);
        let ts = humantime_rfc3339(timestamp);
        let out = cmd(&[
            "--repo",
            self.origin().to_str().unwrap(),
            "commit",
            "--ref",
            "os/stable",
            "--tree",
            t.to_str().unwrap(),
            "--timestamp",
            &ts,
            "--metadata",
            &format!("version={version}"),
            "--metadata",
            &format!("component.tool={tree}"),
            "--metadata",
            "component.base=1",
        ])
        .ok();
        out.trim().to_owned()
    }

    pub fn install(&self) {
        cmd(&[
            "install",
            "--sysroot",
            &self.sr(),
            "--from-repo",
            self.origin().to_str().unwrap(),
            "os/stable",
        ])
        .ok();
    }

    pub fn status(&self) -> Value {
        let out = cmd(&["status", "--sysroot", &self.sr(), "--json"]).ok();
        serde_json::from_str(&out).expect("status --json is JSON")
    }

    /// The deployments of the live list, in order (index 0 first).
    pub fn listed(&self) -> Vec<Value> {
        self.status()["deployments"]
            .as_array()
            .expect("deployments array")
            .iter()
            .filter(|d| !d["index"].is_null())
            .cloned()
            .collect()
    }

    pub fn default_path(&self) -> PathBuf {
        PathBuf::from(self.listed()[0]["path"].as_str().expect("path"))
    }

    pub fn var(&self) -> PathBuf {
        self.sysroot().join("treectl/deploy/os/var")
    }

    pub fn sysroot_repo(&self) -> PathBuf {
        self.sysroot().join("treectl/repo")
    }
}

fn humantime_rfc3339(secs: i64) -> String {
    // Days from the epoch to a civil date (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The synthetic OS tree of release `v`.
pub fn write_os_tree(root: &Path, v: &str) {
    let w = |rel: &str, content: &str, mode: u32| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    w("etc/hostname", "machine\n", 0o644);
    w("etc/local.conf", "default\n", 0o644);
    w("etc/upstream.conf", &format!("upstream {v}\n"), 0o644);
    w("etc/both.conf", &format!("both {v}\n"), 0o644);
    w("etc/ssh/sshd_config", "Port 22\n", 0o600);
    w(
        "usr/bin/tool",
        &format!("#!/bin/sh\necho tool {v}\n"),
        0o755,
    );
    w("usr/share/doc/README", "the same in every release\n", 0o644);
    w(
        "usr/lib/modules/6.1.0/vmlinuz",
        "not really a kernel\n",
        0o644,
    );
    w(
        "usr/lib/modules/6.1.0/initramfs.img",
        "not really an initramfs\n",
        0o644,
    );
    w("var/lib/seed", "seeded at install\n", 0o644);
    std::os::unix::fs::symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
}

/// Checks a deployment against its commit: outside `/etc` it equals a
/// fresh checkout of the commit; returns the differences.
pub fn deployment_differences(repo: &Path, commit: &str, deployment: &Path) -> Vec<String> {
    let fresh = deployment.with_extension("fresh-checkout");
    let _ = fs::remove_dir_all(&fresh);
    cmd(&[
        "--repo",
        repo.to_str().unwrap(),
        "checkout",
        "--copy",
        commit,
        fresh.to_str().unwrap(),
    ])
    .ok();
    let strip = |mut m: std::collections::BTreeMap<PathBuf, treectl_e2e::Node>| {
        m.retain(|p, _| !p.starts_with("etc") || p == Path::new("etc"));
        m.remove(Path::new("etc"));
        m
    };
    let a = strip(treectl_e2e::snapshot(&fresh));
    let b = strip(treectl_e2e::snapshot(deployment));
    let d = treectl_e2e::differences(&a, &b);
    fs::remove_dir_all(&fresh).unwrap();
    d
}

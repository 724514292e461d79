//! Deployment journeys through the real binary with a local-repository
//! origin (docs/deployments.md): install, /etc and /var across upgrades,
//! staging and finalize, following a revert, rollback, downgrade refusal,
//! pin/cleanup, boot counting and the sysroot lock.

mod deploy_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use deploy_support::*;

/// The live boot entries (file name, content) in the order the boot
/// loader shows them: the one it starts first.
fn entries(w: &World) -> Vec<(String, String)> {
    let dir = w.sysroot().join("boot/loader/entries");
    treectl_sysroot::boot::BootMenu::read_dir(&dir)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| {
            let text = fs::read_to_string(dir.join(&e.file_name)).unwrap();
            (e.file_name, text)
        })
        .collect()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[test]
fn install_stage_finalize_follow_revert_and_roll_back() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    w.install();
    let listed = w.listed();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["commit"], v1.as_str());
    assert_eq!(listed[0]["default"], true);
    let d1 = w.default_path();
    assert_eq!(
        deployment_differences(&w.sysroot_repo(), &v1, &d1),
        Vec::<String>::new()
    );
    // /etc starts as the defaults, as copies (not hardlinks into the store).
    assert_eq!(read(&d1.join("etc/upstream.conf")), "upstream 1\n");
    assert_eq!(
        fs::metadata(d1.join("etc/upstream.conf")).unwrap().nlink(),
        1
    );
    // /usr is hardlinked to the store.
    assert!(
        fs::metadata(d1.join("usr/share/doc/README"))
            .unwrap()
            .nlink()
            >= 2
    );
    assert_eq!(read(&w.var().join("lib/seed")), "seeded at install\n");

    // The machine's changes.
    fs::write(d1.join("etc/local.conf"), "changed here\n").unwrap();
    fs::write(d1.join("etc/both.conf"), "both, local\n").unwrap();
    fs::write(w.var().join("lib/mydata"), "precious\n").unwrap();

    let v2 = w.release("2", 1_700_100_000);
    let check = cmd(&["upgrade", "--check", "--sysroot", &w.sr()]).run();
    assert_eq!(
        check.status.code(),
        Some(10),
        "--check says: update available"
    );
    let preview = cmd(&["upgrade", "--preview", "--sysroot", &w.sr()])
        .code(10)
        .stdout;
    assert!(preview.contains("tool: 1 -> 2"), "{preview}");
    cmd(&["upgrade", "--stage", "--sysroot", &w.sr()]).ok();
    let st = w.status();
    let staged = &st["deployments"][0];
    assert_eq!(staged["staged"], true);
    assert_eq!(staged["commit"], v2.as_str());
    assert_eq!(
        w.listed()[0]["commit"],
        v1.as_str(),
        "staging does not switch"
    );
    assert_eq!(
        entries(&w).len(),
        1,
        "no boot entry for a staged deployment"
    );
    // Changed after staging, before shutdown: finalize merges it too.
    fs::write(d1.join("etc/hostname"), "renamed\n").unwrap();

    cmd(&["finalize-staged", "--sysroot", &w.sr()]).ok();
    let listed = w.listed();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["commit"], v2.as_str());
    assert_eq!(listed[1]["commit"], v1.as_str());
    assert_eq!(listed[1]["rollback"], true);
    assert!(w.status()["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["staged"] == false));
    let d2 = w.default_path();
    assert_eq!(read(&d2.join("etc/local.conf")), "changed here\n");
    assert_eq!(read(&d2.join("etc/hostname")), "renamed\n");
    assert_eq!(read(&d2.join("etc/upstream.conf")), "upstream 2\n");
    assert_eq!(read(&d2.join("etc/both.conf")), "both, local\n");
    assert_eq!(
        listed[0]["etc_conflicts"],
        serde_json::json!(["/etc/both.conf"])
    );
    assert_eq!(read(&d2.join("usr/bin/tool")), "#!/bin/sh\necho tool 2\n");
    assert_eq!(read(&w.var().join("lib/mydata")), "precious\n");
    // Identical files across deployments share one inode.
    assert_eq!(
        fs::metadata(d1.join("usr/share/doc/README")).unwrap().ino(),
        fs::metadata(d2.join("usr/share/doc/README")).unwrap().ino()
    );
    // Boot entries: one per deployment, the default first; its version is
    // in its name too, so ordering by name alone also puts it first.
    let e = entries(&w);
    assert_eq!(e.len(), 2);
    assert!(
        e[0].0.starts_with("treectl-os-2-") && e[0].0.ends_with("+3-0.conf"),
        "{e:?}"
    );
    assert!(e[1].0.starts_with("treectl-os-1-"), "{e:?}");
    assert!(e[0].1.contains("version 2\n") && e[1].1.contains("version 1\n"));
    assert!(e[0]
        .1
        .contains(&format!("treectl=/treectl/deploy/os/{v2}.0")));
    let linux = e[0]
        .1
        .lines()
        .find(|l| l.starts_with("linux "))
        .expect("a linux line");
    let kernel = w.sysroot().join("boot").join(&linux["linux /".len()..]);
    assert_eq!(read(&kernel), "not really a kernel\n");

    // A server-side revert: v1's tree as a new, later release.
    let v3 = w.release_tree("3", "1", 1_700_200_000);
    let out = cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert!(out.contains("deployed"), "{out}");
    let listed = w.listed();
    assert_eq!(listed[0]["commit"], v3.as_str());
    let d3 = w.default_path();
    assert_eq!(read(&d3.join("usr/bin/tool")), "#!/bin/sh\necho tool 1\n");
    assert_eq!(read(&d3.join("etc/local.conf")), "changed here\n");
    assert_eq!(read(&w.var().join("lib/mydata")), "precious\n");

    // Roll back to v2; upgrade does not re-apply the revert.
    cmd(&["rollback", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v2.as_str());
    let out = cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert!(out.contains("no update"), "{out}");
    assert_eq!(w.listed()[0]["commit"], v2.as_str());
    let check = cmd(&["upgrade", "--check", "--sysroot", &w.sr()]).run();
    assert_eq!(
        check.status.code(),
        Some(0),
        "--check: no update after rollback"
    );

    for d in w.listed() {
        let path = Path::new(d["path"].as_str().unwrap());
        let commit = d["commit"].as_str().unwrap();
        assert_eq!(
            deployment_differences(&w.sysroot_repo(), commit, path),
            Vec::<String>::new()
        );
    }
    // A second rollback swaps back.
    cmd(&["rollback", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v3.as_str());
    assert_eq!(w.listed()[1]["commit"], v2.as_str());
}

#[test]
fn older_heads_are_refused_and_rollback_is_sticky() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    w.install();
    let v2 = w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v2.as_str());

    // A replay: the origin's ref moved back to the older release.
    cmd(&[
        "--repo",
        w.origin().to_str().unwrap(),
        "reset",
        "os/stable",
        &v1,
    ])
    .ok();
    let err = cmd(&["upgrade", "--sysroot", &w.sr()]).fails();
    assert!(err.contains("--allow-downgrade"), "{err}");
    cmd(&["upgrade", "--check", "--sysroot", &w.sr()]).fails();
    assert_eq!(w.listed()[0]["commit"], v2.as_str());
    assert_eq!(w.listed().len(), 2);

    // A plain older commit (an earlier timestamp) that does not descend
    // from the default: the ref reset to v1 and a new commit on top of it.
    // (One that descends from the default is newer whatever its clock
    // says: see same_second_and_skewed_releases_are_newer.)
    cmd(&[
        "--repo",
        w.origin().to_str().unwrap(),
        "reset",
        "os/stable",
        &v1,
    ])
    .ok();
    let old = w.release("0.9", 1_600_000_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).fails();
    assert_eq!(w.listed()[0]["commit"], v2.as_str());
    cmd(&["upgrade", "--allow-downgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], old.as_str());

    // Forward again, then roll back: upgrade stays put until a newer release.
    let v3 = w.release("3", 1_700_300_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v3.as_str());
    cmd(&["rollback", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], old.as_str());
    let out = cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert!(out.contains("rolled back from"), "{out}");
    assert_eq!(w.listed()[0]["commit"], old.as_str());
    let v4 = w.release("4", 1_700_400_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v4.as_str());
}

/// Regression: without a release serial (a local-repository origin),
/// releases were ordered by commit time alone and a tie was "not newer",
/// so v2 committed in the same second as v1 was refused as a downgrade.
/// The order is serial, then ancestry, then time.
#[test]
fn same_second_and_skewed_releases_are_newer() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    w.install();
    let v2 = w.release("2", 1_700_000_000);
    let check = cmd(&["upgrade", "--check", "--sysroot", &w.sr()]).run();
    assert_eq!(check.status.code(), Some(10), "same second: an update");
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v2.as_str());
    assert_eq!(w.listed()[1]["commit"], v1.as_str());

    // A builder with a clock behind: an earlier timestamp on top of v2.
    let v3 = w.release("3", 1_600_000_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v3.as_str());

    // The ref moved back to v2, which v3 descends from: older, although
    // its clock is later than v3's.
    cmd(&[
        "--repo",
        w.origin().to_str().unwrap(),
        "reset",
        "os/stable",
        &v2,
    ])
    .ok();
    let err = cmd(&["upgrade", "--sysroot", &w.sr()]).fails();
    assert!(err.contains("--allow-downgrade"), "{err}");
    assert_eq!(w.listed()[0]["commit"], v3.as_str());
}

#[test]
fn pin_cleanup_boot_ok_deploy_by_version() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    w.install();
    let _v2 = w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    let v3 = w.release("3", 1_700_200_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    let listed = w.listed();
    assert_eq!(listed.len(), 3);
    let oldest = listed[2]["path"].as_str().unwrap().to_owned();
    assert_eq!(listed[2]["commit"], v1.as_str());

    cmd(&["pin", "--sysroot", &w.sr(), "2"]).ok();
    assert_eq!(w.listed()[2]["pinned"], true);
    cmd(&["pin", "--sysroot", &w.sr(), "7"]).fails();
    cmd(&["cleanup", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed().len(), 3, "a pinned deployment survives cleanup");
    cmd(&["unpin", "--sysroot", &w.sr(), "2"]).ok();
    cmd(&["cleanup", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed().len(), 2);
    assert!(!Path::new(&oldest).exists());
    assert_eq!(entries(&w).len(), 2);
    cmd(&["--repo", w.sysroot_repo().to_str().unwrap(), "fsck"]).ok();

    // deploy by version: v1 comes back from the origin's history.
    cmd(&["deploy", "--sysroot", &w.sr(), "1"]).ok();
    assert_eq!(w.listed()[0]["commit"], v1.as_str());
    // deploy by commit.
    cmd(&["deploy", "--sysroot", &w.sr(), &v3]).ok();
    assert_eq!(w.listed()[0]["commit"], v3.as_str());
    assert_eq!(
        w.listed()[0]["serial"],
        1,
        "a second deployment of one commit"
    );
    cmd(&["deploy", "--sysroot", &w.sr(), "no-such-version"]).fails();

    // Boot counting: booted as the default, `boot-ok` drops the counter.
    let rel = format!("/treectl/deploy/os/{v3}.1");
    let st = cmd(&["status", "--sysroot", &w.sr(), "--json"])
        .env("TREECTL_BOOTED", &rel)
        .run();
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["deployments"][0]["booted"], true);
    assert_eq!(st["deployments"][1]["booted"], false);
    let cmdline = w.dir.path().join("cmdline");
    fs::write(&cmdline, format!("quiet treectl={rel} rw\n")).unwrap();
    let out = cmd(&["boot-ok", "--sysroot", &w.sr()])
        .env("TREECTL_CMDLINE", &cmdline)
        .run();
    assert!(out.status.success());
    let e = entries(&w);
    assert!(!e[0].0.contains('+'), "marked good: {e:?}");
    assert!(e[1].0.ends_with("+3-0.conf"), "{e:?}");
    // Rewriting the entries keeps the good mark.
    cmd(&["rollback", "--sysroot", &w.sr()]).ok();
    let e = entries(&w);
    let good: Vec<_> = e.iter().filter(|(n, _)| !n.contains('+')).collect();
    assert_eq!(good.len(), 1, "{e:?}");
    assert!(good[0].1.contains(&rel));
}

#[test]
fn free_space_reserve_and_the_lock() {
    let w = World::new();
    w.release("1", 1_700_000_000);
    w.install();
    let v2 = w.release("2", 1_700_100_000);
    let out = cmd(&["upgrade", "--sysroot", &w.sr()])
        .env("TREECTL_MIN_FREE", u64::MAX.to_string())
        .run();
    assert!(!out.status.success());
    assert!(out.stderr.contains("not enough free space"));
    assert_eq!(w.listed().len(), 1);
    cmd(&["upgrade", "--download-only", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed().len(), 1, "--download-only deploys nothing");
    cmd(&["--repo", w.sysroot_repo().to_str().unwrap(), "show", &v2]).ok();

    // Concurrent deploys serialise on the sysroot lock: all land.
    let children: Vec<_> = (0..4)
        .map(|_| {
            cmd(&["deploy", "--sysroot", &w.sr(), &v2])
                .command()
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let listed = w.listed();
    assert_eq!(listed.len(), 5);
    let mut serials: Vec<i64> = listed[..4]
        .iter()
        .map(|d| d["serial"].as_i64().unwrap())
        .collect();
    serials.sort();
    assert_eq!(serials, vec![0, 1, 2, 3]);

    // A second install is refused.
    let err = cmd(&[
        "install",
        "--sysroot",
        &w.sr(),
        "--from-repo",
        w.origin().to_str().unwrap(),
        "os/stable",
    ])
    .fails();
    assert!(err.contains("already holds"), "{err}");
}

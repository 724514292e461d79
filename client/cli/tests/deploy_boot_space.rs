//! A `/boot` too small for the next kernel: `upgrade --stage` fails at
//! stage time, says why, and changes nothing (docs/deployments.md,
//! "Staging").

mod deploy_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use deploy_support::*;

/// Every file and directory under `dir` (relative paths, sorted).
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Unmounts the small `/boot` even when an assertion fails.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
}

#[test]
fn a_full_boot_fails_the_stage_and_changes_nothing() {
    if !treectl_e2e::require_root("to mount a small filesystem as the sysroot's /boot") {
        return;
    }
    let w = World::new();
    w.release("1", 1_700_000_000);
    w.install();

    // Release 2 brings a new 3 MiB kernel.
    let v2 = w.release_edited("2", "2", 1_700_100_000, |tree| {
        let kernel: Vec<u8> = (0..3u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(tree.join("usr/lib/modules/6.1.0/vmlinuz"), kernel).unwrap();
    });
    let v2 = v2.as_str();

    // /boot becomes a 2 MiB filesystem holding what it held.
    let boot = w.sysroot().join("boot");
    let saved = w.dir.path().join("boot-saved");
    fs::rename(&boot, &saved).unwrap();
    fs::create_dir(&boot).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "treectl-test-boot"])
        .arg(&boot));
    let _mounted = Mounted(&boot);
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", saved.display()))
        .arg(&boot));

    let status = w.status();
    let boot_before = listing(&boot);
    let deploy_before = listing(&w.sysroot().join("treectl/deploy"));
    let deploy_refs = || {
        let refs = cmd(&["--repo", w.sysroot_repo().to_str().unwrap(), "refs"]).ok();
        refs.lines()
            .filter(|l| l.contains(" deploy/"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let refs_before = deploy_refs();

    let err = cmd(&["upgrade", "--stage", "--sysroot", &w.sr()]).fails();
    assert!(
        err.contains("not enough space in")
            && err.contains("for the kernel 6.1.0")
            && err.contains(&v2[..12])
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(w.status(), status, "status changed");
    assert_eq!(listing(&boot), boot_before, "/boot changed");
    assert_eq!(
        listing(&w.sysroot().join("treectl/deploy")),
        deploy_before,
        "a deployment was left behind"
    );
    assert_eq!(
        deploy_refs(),
        refs_before,
        "a deployment ref was left behind"
    );
    // The download is kept (as `origin/os/stable`) for the next try.
    let origin_ref = cmd(&[
        "--repo",
        w.sysroot_repo().to_str().unwrap(),
        "rev-parse",
        "origin/os/stable",
    ])
    .ok();
    assert_eq!(origin_ref.trim(), v2);

    // With room for the kernel, the same stage goes through.
    run(Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&boot));
    cmd(&["upgrade", "--stage", "--sysroot", &w.sr()]).ok();
    let st = w.status();
    assert_eq!(st["deployments"][0]["staged"], true, "{st}");
    assert_eq!(st["deployments"][0]["commit"], v2, "{st}");
}

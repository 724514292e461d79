//! Kernel arguments through the real binary (docs/deployments.md,
//! "Kernel arguments"): `install --root-arg/--karg`, the entries' `options`
//! line, `treectl kargs` viewing and editing (a new deployment of the same
//! commit; staged when one is staged), inheritance by upgrades, rollback
//! to the previous arguments, refused edits that change nothing, the boot
//! loader's fallback, and `root=` found from a mounted filesystem.

mod deploy_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use deploy_support::*;
use serde_json::Value;
use treectl_sysroot::boot::BootMenu;

/// The live entries in the boot loader's order: (file name, cmdline).
fn entries(w: &World) -> Vec<(String, String)> {
    BootMenu::read_dir(&w.sysroot().join("boot/loader/entries"))
        .unwrap()
        .entries
        .into_iter()
        .map(|e| {
            let cmdline = e.cmdline();
            (e.file_name, cmdline)
        })
        .collect()
}

fn kargs_json(w: &World) -> Value {
    let out = cmd(&["kargs", "--sysroot", &w.sr(), "--json"]).ok();
    serde_json::from_str(&out).unwrap()
}

fn install_with(w: &World, extra: &[&str]) {
    let (sysroot, origin) = (w.sr(), w.origin());
    let mut args = vec![
        "install",
        "--sysroot",
        &sysroot,
        "--from-repo",
        origin.to_str().unwrap(),
        "os/stable",
    ];
    args.extend_from_slice(extra);
    cmd(&args).ok();
}

/// Everything a refused edit must leave alone.
fn snapshot(w: &World) -> (Value, Vec<(String, String)>, Vec<String>) {
    let mut dirs: Vec<String> = fs::read_dir(w.sysroot().join("treectl/deploy/os"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    (w.status(), entries(w), dirs)
}

#[test]
fn kernel_arguments_from_install_to_rollback() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    install_with(
        &w,
        &["--root-arg", "UUID=1234-abcd", "--karg", "console=ttyS0"],
    );
    let d1 = format!("/treectl/deploy/os/{v1}.0");
    assert_eq!(
        entries(&w),
        [(
            format!("treectl-os-1-{}.0+3-0.conf", &v1[..12]),
            format!("root=UUID=1234-abcd treectl={d1} console=ttyS0")
        )]
    );
    assert_eq!(
        w.listed()[0]["kargs"],
        serde_json::json!(["root=UUID=1234-abcd", "console=ttyS0"])
    );
    assert_eq!(
        cmd(&["kargs", "--sysroot", &w.sr()]).ok(),
        "root=UUID=1234-abcd console=ttyS0\n"
    );
    let j = kargs_json(&w);
    assert_eq!(j["deployment"], format!("{v1}.0"));
    assert_eq!(j["path"], d1.as_str());
    assert_eq!(j["staged"], false);
    assert_eq!(j["changed"], false);
    assert_eq!(
        j["options"],
        format!("root=UUID=1234-abcd treectl={d1} console=ttyS0")
    );

    // An edit deploys the same commit again with the new arguments; the
    // old deployment, with the old ones, is the rollback.
    let out = cmd(&["kargs", "--sysroot", &w.sr(), "--append", "quiet"]).ok();
    assert!(out.starts_with("deployed os 1 ("), "{out}");
    assert!(
        out.contains("kernel arguments: root=UUID=1234-abcd console=ttyS0 quiet"),
        "{out}"
    );
    let listed = w.listed();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["commit"], v1.as_str());
    assert_eq!(listed[0]["serial"], 1);
    assert_eq!(
        listed[0]["kargs"],
        serde_json::json!(["root=UUID=1234-abcd", "console=ttyS0", "quiet"])
    );
    assert_eq!(listed[1]["serial"], 0);
    assert_eq!(
        listed[1]["kargs"],
        serde_json::json!(["root=UUID=1234-abcd", "console=ttyS0"])
    );
    let e = entries(&w);
    assert_eq!(e[0].0, format!("treectl-os-2-{}.1+3-0.conf", &v1[..12]));
    assert_eq!(
        e[0].1,
        format!("root=UUID=1234-abcd treectl=/treectl/deploy/os/{v1}.1 console=ttyS0 quiet")
    );
    // Already there: nothing to do, nothing made.
    let out = cmd(&[
        "kargs",
        "--sysroot",
        &w.sr(),
        "--append-if-missing",
        "quiet",
    ])
    .ok();
    assert!(out.starts_with("kernel arguments unchanged"), "{out}");
    assert_eq!(w.listed().len(), 2);

    // Refused edits: one line, nothing changed.
    let before = snapshot(&w);
    for bad in [
        &["--delete", "nosuch"][..],
        &["--append", "treectl=/elsewhere"],
        &["--replace", "console=tty9=ttyS1"],
        &["--replace", "quiet"],
        &["--append", "two words"],
        &["--append", "fine", "--delete", "missing"],
    ] {
        let sysroot = w.sr();
        let mut args = vec!["kargs", "--sysroot", &sysroot];
        args.extend_from_slice(bad);
        cmd(&args).fails();
        assert_eq!(snapshot(&w), before, "{bad:?} changed something");
    }
    let err = cmd(&["kargs", "--sysroot", &w.sr(), "--delete", "nosuch"]).fails();
    assert!(
        err.contains("no kernel argument nosuch to delete: `treectl kargs` lists them"),
        "{err}"
    );

    // An upgrade inherits the arguments of the next boot.
    let v2 = w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v2.as_str());
    assert_eq!(
        w.listed()[0]["kargs"],
        serde_json::json!(["root=UUID=1234-abcd", "console=ttyS0", "quiet"])
    );

    // With an upgrade staged, an edit replaces the staged deployment.
    let v3 = w.release("3", 1_700_200_000);
    cmd(&["upgrade", "--sysroot", &w.sr(), "--stage"]).ok();
    let out = cmd(&[
        "kargs",
        "--sysroot",
        &w.sr(),
        "--replace",
        "console=ttyS0=ttyS1",
        "--delete",
        "quiet",
    ])
    .ok();
    assert!(out.starts_with("staged os 3"), "{out}");
    let j = kargs_json(&w);
    assert_eq!(j["staged"], true);
    assert_eq!(
        j["deployment"],
        format!("{v3}.1"),
        "a new staged deployment"
    );
    assert_eq!(
        j["kargs"],
        serde_json::json!(["root=UUID=1234-abcd", "console=ttyS1"])
    );
    let dirs: Vec<_> = fs::read_dir(w.sysroot().join("treectl/deploy/os"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&v3))
        .collect();
    assert_eq!(dirs, [format!("{v3}.1")], "the old staged one is gone");
    cmd(&["finalize-staged", "--sysroot", &w.sr()]).ok();
    assert_eq!(
        entries(&w)[0].1,
        format!("root=UUID=1234-abcd treectl=/treectl/deploy/os/{v3}.1 console=ttyS1")
    );

    // Rollback: the previous deployment boots with its own arguments.
    cmd(&["rollback", "--sysroot", &w.sr()]).ok();
    assert_eq!(
        entries(&w)[0].1,
        format!("root=UUID=1234-abcd treectl=/treectl/deploy/os/{v2}.0 console=ttyS0 quiet")
    );
    assert_eq!(
        cmd(&["kargs", "--sysroot", &w.sr()]).ok(),
        "root=UUID=1234-abcd console=ttyS0 quiet\n"
    );
}

#[test]
fn the_next_boot_is_the_boot_loaders_choice() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    install_with(&w, &["--karg", "good"]);
    let v2 = w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    cmd(&["kargs", "--sysroot", &w.sr(), "--append", "breaks-boot"]).ok();
    assert_eq!(
        w.listed()[0]["kargs"],
        serde_json::json!(["good", "breaks-boot"])
    );
    // Play the boot loader: the new entry fails three times.
    let dir = w.sysroot().join("boot/loader/entries");
    for _ in 0..3 {
        let menu = BootMenu::read_dir(&dir).unwrap();
        let first = menu.default_entry().unwrap();
        assert!(first.cmdline().contains("breaks-boot"));
        let next = first.next_try_name().unwrap();
        fs::rename(dir.join(&first.file_name), dir.join(next)).unwrap();
    }
    let menu = BootMenu::read_dir(&dir).unwrap();
    assert!(menu.entries.last().unwrap().is_bad());
    let fallback = menu.default_entry().unwrap();
    assert_eq!(
        fallback.treectl_target(),
        Some(format!("/treectl/deploy/os/{v2}.0"))
    );
    let st = w.status();
    assert_eq!(st["deployments"][0]["boot_entry"]["state"], "bad");
    assert_eq!(st["deployments"][0]["loader_default"], false);
    assert_eq!(st["deployments"][1]["loader_default"], true);
    let text = cmd(&["status", "--sysroot", &w.sr()]).ok();
    assert!(text.contains("[default bad]"), "{text}");
    assert!(text.contains("[rollback fallback]"), "{text}");
    assert!(
        text.contains("boot entry: bad after 3 failed tries"),
        "{text}"
    );

    // The next boot is the fallback: kargs show and edit its arguments,
    // and an upgrade inherits them, not the bad ones.
    assert_eq!(cmd(&["kargs", "--sysroot", &w.sr()]).ok(), "good\n");
    let v3 = w.release("3", 1_700_200_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v3.as_str());
    assert_eq!(w.listed()[0]["kargs"], serde_json::json!(["good"]));
    // Rewriting keeps the bad mark of the deployment nobody chose again.
    let bad: Vec<_> = entries(&w)
        .into_iter()
        .filter(|(n, _)| n.ends_with("+0-3.conf"))
        .collect();
    assert_eq!(bad.len(), 1, "{:?}", entries(&w));
    assert!(bad[0].1.contains("breaks-boot"));
    let _ = v1;
}

#[test]
fn without_a_root_argument_entries_are_as_before() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    // A directory inside another filesystem (an image being built): no
    // root= is guessed.
    w.install();
    assert_eq!(w.listed()[0]["kargs"], serde_json::json!([]));
    assert_eq!(
        entries(&w)[0].1,
        format!("treectl=/treectl/deploy/os/{v1}.0")
    );
    assert_eq!(cmd(&["kargs", "--sysroot", &w.sr()]).ok(), "\n");
}

/// `root=UUID=` of the filesystem the sysroot is the root of: an ext4
/// image mounted (in a private mount namespace) on the sysroot directory.
#[test]
fn root_is_found_from_the_mounted_filesystem() {
    if !treectl_e2e::require_root("to mount a filesystem image on the sysroot")
        || !treectl_e2e::require_tools(
            &["mkfs.ext4", "unshare", "mount", "blkid", "findmnt"],
            "to make, mount and identify the sysroot's filesystem",
        )
        || !treectl_e2e::require_that(
            Path::new("/dev/loop-control").exists(),
            "loop devices (/dev/loop-control)",
            "to mount a filesystem image on the sysroot",
        )
    {
        return;
    }
    let w = World::new();
    w.release("1", 1_700_000_000);
    let img = w.dir.path().join("root.img");
    fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let mkfs = Command::new(treectl_e2e::skip::find_tool("mkfs.ext4").unwrap())
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let uuid = Command::new(treectl_e2e::skip::find_tool("blkid").unwrap())
        .args(["-s", "UUID", "-o", "value"])
        .arg(&img)
        .output()
        .unwrap();
    let uuid = String::from_utf8(uuid.stdout).unwrap().trim().to_owned();
    assert!(!uuid.is_empty());
    fs::create_dir(w.sysroot()).unwrap();
    let script = r#"mount -o loop "$1" "$2" || exit 90
"$3" install --sysroot "$2" --from-repo "$4" os/stable >/dev/null || exit 91
exec "$3" kargs --sysroot "$2" --json"#;
    let out = Command::new(treectl_e2e::skip::find_tool("unshare").unwrap())
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&img)
        .arg(w.sysroot())
        .arg(treectl_e2e::treectl_bin())
        .arg(w.origin())
        .env("TREECTL_MIN_FREE", "0")
        .env_remove("TREECTL_BOOTED")
        .env_remove("TREECTL_CMDLINE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["kargs"], serde_json::json!([format!("root=UUID={uuid}")]));
}

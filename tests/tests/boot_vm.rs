//! A composed Debian system boots: minbase + systemd-sysv, udev, dbus,
//! openssh-server, kmod and linux-image-cloud-amd64 from the archive apt
//! uses here, with an initramfs composed from busybox-static and treectl's
//! `/init` and prepare-root (`[initramfs]`), installed with `treectl
//! install` into a sysroot that becomes an ext4 disk image, boots under
//! qemu to multi-user.target. A unit in the image prints `treectl status
//! --json` and what it sees of `/usr`, `/etc` and `/var` to the console
//! and powers off.
//!
//! Needs root, bwrap, qemu-system-x86_64, mkfs.ext4, apt's package lists
//! and the archive; says why it skips, and does not skip under CI=true.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use treectl_e2e::debian::lock_minbase;
use treectl_e2e::{require_root, require_that, require_tools, treectl_bin, treectl_in, vm};

const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "kmod",
    "linux-image-cloud-amd64",
    "busybox-static",
];

const INITRAMFS: &str = r#"
[initramfs]
components = ["busybox-static", "treectl-initramfs"]
modules = ["virtio_pci", "virtio_blk", "ext4"]
"#;

const UUID: &str = "5e1f7a52-6b0e-4c7e-9a43-0c2f6d1b9e11";

/// The unit that reports to the console once multi-user.target is reached.
const REPORT_UNIT: &str = "\
[Unit]
Description=Report treectl status to the console
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
ExecStart=/usr/lib/treectl-vm/report
ExecStartPost=/usr/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
";

const REPORT_SCRIPT: &str = r#"#!/bin/sh
echo TREECTL-VM-BEGIN
echo "multi-user: $(systemctl is-active multi-user.target)"
echo "status: $(treectl status --json | tr -d '\n')"
if touch /usr/.treectl-probe 2>/dev/null; then echo "usr: rw"; rm -f /usr/.treectl-probe; else echo "usr: ro"; fi
if touch /etc/.treectl-probe 2>/dev/null; then echo "etc: rw"; rm -f /etc/.treectl-probe; else echo "etc: ro"; fi
if touch /var/.treectl-probe 2>/dev/null; then echo "var: rw"; rm -f /var/.treectl-probe; else echo "var: ro"; fi
echo "var-marker: $(cat /var/treectl-vm-marker)"
echo "cmdline: $(cat /proc/cmdline)"
echo TREECTL-VM-END
"#;

/// The report component: the treectl binary (stripped) and the unit.
fn report_component(dir: &Path) {
    let bin = dir.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let out = std::process::Command::new("strip")
        .arg("-o")
        .arg(bin.join("treectl"))
        .arg(treectl_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "strip: {out:?}");
    let units = dir.join("usr/lib/systemd/system");
    std::fs::create_dir_all(units.join("multi-user.target.wants")).unwrap();
    std::fs::write(units.join("treectl-vm-report.service"), REPORT_UNIT).unwrap();
    std::os::unix::fs::symlink(
        "../treectl-vm-report.service",
        units.join("multi-user.target.wants/treectl-vm-report.service"),
    )
    .unwrap();
    let script = dir.join("usr/lib/treectl-vm/report");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, REPORT_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn composed_system_boots_to_multi_user_in_qemu() {
    let why = "to boot a composed system in a VM";
    if !require_root(why) || !require_tools(&["bwrap", vm::QEMU, "mkfs.ext4", "strip"], why) {
        return;
    }
    let started = Instant::now();
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let repo = t.path().join("repo");
    treectl_in(&repo, ["init"]).ok();
    let lock = t.path().join("os.lock");
    let lock_s = lock.to_str().unwrap();
    if let Err(needs) = lock_minbase(&repo, &lock, PACKAGES) {
        require_that(false, &needs, why);
        return;
    }
    let add_dir = |dir: &Path, name: &str| {
        let dir = dir.to_str().unwrap();
        treectl_in(
            &repo,
            [
                "lock",
                "add",
                "--lockfile",
                lock_s,
                "--dir",
                dir,
                "--name",
                name,
            ],
        )
        .ok();
    };
    add_dir(
        &workspace().join("client/initramfs/tree"),
        "treectl-initramfs",
    );
    let report = t.path().join("report");
    report_component(&report);
    add_dir(&report, "treectl-vm-report");
    let mut text = std::fs::read_to_string(&lock).unwrap();
    text.push_str(INITRAMFS);
    std::fs::write(&lock, text).unwrap();
    treectl_in(
        &repo,
        ["compose", "--lockfile", lock_s, "--ref", "os/stable"],
    )
    .ok();
    let composed = started.elapsed();

    let sysroot = t.path().join("sysroot");
    let root_arg = format!("root=UUID={UUID}");
    treectl_in(
        &repo,
        [
            "install",
            "--sysroot",
            sysroot.to_str().unwrap(),
            "--from-repo",
            repo.to_str().unwrap(),
            "--root-arg",
            &root_arg,
            // The physical root is mounted read-only without it, as the
            // kernel does, and the image has no fstab to remount it.
            "--karg",
            "rw",
            "os/stable",
        ],
    )
    .ok();
    // A file only the stateroot's /var has.
    std::fs::write(
        sysroot.join("treectl/deploy/os/var/treectl-vm-marker"),
        "the stateroot's var\n",
    )
    .unwrap();
    let disk = t.path().join("disk.img");
    vm::make_disk(&sysroot, &disk, UUID, "4G");
    let entry = vm::default_entry(&sysroot);
    assert!(entry.cmdline().contains(&root_arg), "{entry:?}");
    let boot = vm::boot(
        &sysroot.join("boot"),
        &entry,
        &disk,
        "",
        &t.path().join("console.log"),
        Duration::from_secs(600),
    );
    let tail: String = {
        let lines: Vec<&str> = boot.console.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    let lines = boot
        .between("TREECTL-VM-BEGIN", "TREECTL-VM-END")
        .unwrap_or_else(|| panic!("no report on the console after {:?}:\n{tail}", boot.elapsed));
    let field = |k: &str| vm::Boot::field(&lines, k).unwrap_or_else(|| panic!("no {k}: {lines:?}"));
    assert_eq!(field("multi-user"), "active");
    let status: serde_json::Value = serde_json::from_str(&field("status")).unwrap();
    let booted = status["booted"].as_str().expect("a booted deployment");
    let default = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["default"] == true)
        .expect("a default deployment");
    assert_eq!(default["booted"], true, "{status}");
    assert!(
        entry.cmdline().contains(&format!("treectl={booted}")),
        "{entry:?} {status}"
    );
    assert_eq!(field("usr"), "ro");
    assert_eq!(field("etc"), "rw");
    assert_eq!(field("var"), "rw");
    assert_eq!(field("var-marker"), "the stateroot's var");
    assert!(boot.exited.is_some(), "the VM did not power off:\n{tail}");
    eprintln!(
        "compose {:.1?}, boot to poweroff {:.1?} (multi-user reached; whole test {:.1?})",
        composed,
        boot.elapsed,
        started.elapsed()
    );
}

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

use std::time::{Duration, Instant};

use treectl_e2e::{require_root, require_that, require_tools, vm};

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
echo "ssh: $(systemctl is-active ssh.service)"
echo "host-keys: $(ls /etc/ssh/ssh_host_*_key 2>/dev/null | wc -l)"
echo "status: $(treectl status --json | tr -d '\n')"
if touch /usr/.treectl-probe 2>/dev/null; then echo "usr: rw"; rm -f /usr/.treectl-probe; else echo "usr: ro"; fi
if touch /etc/.treectl-probe 2>/dev/null; then echo "etc: rw"; rm -f /etc/.treectl-probe; else echo "etc: ro"; fi
if touch /var/.treectl-probe 2>/dev/null; then echo "var: rw"; rm -f /var/.treectl-probe; else echo "var: ro"; fi
echo "var-marker: $(cat /var/treectl-vm-marker)"
echo "cmdline: $(cat /proc/cmdline)"
echo TREECTL-VM-END
"#;

#[test]
fn composed_system_boots_to_multi_user_in_qemu() {
    let why = "to boot a composed system in a VM";
    if !require_root(why) || !require_tools(&["bwrap", vm::QEMU, "mkfs.ext4", "strip"], why) {
        return;
    }
    let started = Instant::now();
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let os = match vm::Os::lock(&t.path().join("repo"), &t.path().join("os.lock")) {
        Ok(os) => os,
        Err(needs) => {
            require_that(false, &needs, why);
            return;
        }
    };
    let report = t.path().join("report");
    vm::guest_component(
        &report,
        &[("treectl-vm-report.service", REPORT_UNIT)],
        &[("report", REPORT_SCRIPT)],
    );
    os.add_dir(&report, "treectl-vm-report");
    os.compose("os/stable");
    let composed = started.elapsed();

    let sysroot = t.path().join("sysroot");
    let root_arg = os.install(&sysroot, "os/stable", UUID);
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
        // No getty on the console: its hangup of ttyS0, racing the report
        // unit, once cut the report short and the machine never powered off.
        "systemd.getty_auto=0",
        &t.path().join("console.log"),
        Duration::from_secs(600),
    );
    let tail = boot.tail(60);
    let lines = boot.report();
    let field = |k: &str| vm::Boot::field(&lines, k).unwrap_or_else(|| panic!("no {k}: {lines:?}"));
    assert_eq!(field("multi-user"), "active");
    // The machine made its own SSH host keys at first boot; sshd runs.
    assert_eq!(field("ssh"), "active");
    assert!(field("host-keys").parse::<u32>().unwrap() >= 3, "{lines:?}");
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

//! Booting a sysroot in a VM: qemu-system-x86_64 from Debian (package
//! `qemu-system-x86`), software emulation (`-accel tcg`: KVM on these
//! machines cannot run a stock kernel), direct kernel boot.
//!
//! The harness plays the boot loader: it reads the sysroot's Boot Loader
//! Specification entries, picks the default with the same function treectl
//! uses ([`treectl_sysroot::boot::BootMenu`]), and starts that entry's `linux`,
//! `initrd` and `options`. The sysroot becomes the VM's disk with
//! `mkfs.ext4 -d` (no loop device). The serial console goes to a file, the
//! VM has no network and `-no-reboot`, and every boot is bounded by a
//! timeout.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use treectl_sysroot::boot::{BootEntry, BootMenu};

/// The program that runs the VM.
pub const QEMU: &str = "qemu-system-x86_64";

/// The default entry of the sysroot's `boot/loader/entries`, chosen as a
/// boot loader would.
pub fn default_entry(sysroot: &Path) -> BootEntry {
    let menu =
        BootMenu::read_dir(&sysroot.join("boot/loader/entries")).expect("read the boot entries");
    menu.default_entry()
        .cloned()
        .expect("the sysroot has a boot entry")
}

/// Makes an ext4 image of `dir` (hardlinks, owners and modes kept) with
/// the given UUID: the VM's disk.
pub fn make_disk(dir: &Path, image: &Path, uuid: &str, size: &str) {
    let _ = std::fs::remove_file(image);
    let status = Command::new("truncate")
        .args(["-s", size])
        .arg(image)
        .status()
        .expect("run truncate");
    assert!(status.success(), "truncate {}", image.display());
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", uuid, "-L", "treectl-root", "-d"])
        .arg(dir)
        .arg(image)
        .output()
        .expect("run mkfs.ext4 (Debian package e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4 -d {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How a boot ended.
#[derive(Debug)]
pub struct Boot {
    /// What the guest printed on its serial console.
    pub console: String,
    /// qemu's exit status; `None` when the timeout killed it.
    pub exited: Option<std::process::ExitStatus>,
    pub elapsed: Duration,
}

impl Boot {
    /// The lines between `begin` and `end` markers the guest printed.
    pub fn between(&self, begin: &str, end: &str) -> Option<Vec<String>> {
        let text = self.console.replace('\r', "");
        let start = text.find(begin)? + begin.len();
        let stop = text[start..].find(end)? + start;
        Some(
            text[start..stop]
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// The value of the first `key: value` line between the markers.
    pub fn field(lines: &[String], key: &str) -> Option<String> {
        lines.iter().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
    }
}

/// Boots `entry` (paths relative to the sysroot's `boot/`) with `disk` as
/// the virtio disk, the console logged to `console_log`; kills the VM after
/// `timeout`.
pub fn boot(
    boot_dir: &Path,
    entry: &BootEntry,
    disk: &Path,
    extra_options: &str,
    console_log: &Path,
    timeout: Duration,
) -> Boot {
    let linux = entry.linux.as_deref().expect("the entry has a linux line");
    let rel = |p: &str| -> PathBuf { boot_dir.join(p.trim_start_matches('/')) };
    let mut append = format!("{} console=ttyS0 panic=-1", entry.cmdline());
    if !extra_options.is_empty() {
        append.push(' ');
        append.push_str(extra_options);
    }
    let _ = std::fs::remove_file(console_log);
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", "tcg", "-smp", "2", "-m", "1024"])
        .args(["-display", "none", "-no-reboot", "-nodefaults"])
        .args(["-net", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .arg("-kernel")
        .arg(rel(linux));
    // qemu takes one initrd; the entries treectl writes have at most one.
    assert!(entry.initrd.len() <= 1, "{entry:?}");
    if let Some(initrd) = entry.initrd.first() {
        cmd.arg("-initrd").arg(rel(initrd));
    }
    cmd.arg("-append").arg(&append).arg("-drive").arg(format!(
        "file={},format=raw,if=virtio,cache=unsafe",
        disk.display()
    ));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("run qemu-system-x86_64");
    let exited = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = std::fs::read(console_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Boot {
        console,
        exited,
        elapsed: started.elapsed(),
    }
}

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
//!
//! Across reboots the sysroot lives only in the disk image: [`read_boot`]
//! copies its `/boot` back out with `debugfs rdump` (no mount, no loop
//! device) and [`boot_image`] picks the default entry there and boots it,
//! so a guest reboot (which ends qemu, `-no-reboot`) is followed by the
//! harness playing the boot loader again. [`Os`] is the composed Debian
//! system the VM tests share, [`guest_component`] the test's own files in
//! it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use treectl_sysroot::boot::{BootEntry, BootMenu};

use crate::{debian::lock_minbase, treectl_bin, treectl_in};

/// The program that runs the VM.
pub const QEMU: &str = "qemu-system-x86_64";

/// The default entry of the sysroot's `boot/loader/entries`, chosen as a
/// boot loader would.
pub fn default_entry(sysroot: &Path) -> BootEntry {
    default_entry_in(&sysroot.join("boot"))
}

/// The default entry of `boot_dir/loader/entries` (`loader` may be the
/// symlink to the live `loader.N`).
pub fn default_entry_in(boot_dir: &Path) -> BootEntry {
    let menu = BootMenu::read_dir(&boot_dir.join("loader/entries")).expect("read the boot entries");
    menu.default_entry()
        .cloned()
        .expect("the sysroot has a boot entry")
}

/// The names of the entries in `boot_dir/loader/entries`, sorted.
pub fn entry_names(boot_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(boot_dir.join("loader/entries"))
        .expect("read the boot entries")
        .map(|e| {
            e.expect("read the boot entries")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Copies `/boot` of the ext4 image (entries, kernels, initramfs images,
/// the `loader` symlink) into `dest/boot` with `debugfs rdump`, replacing
/// what an earlier call left there, and returns `dest/boot`.
pub fn read_boot(image: &Path, dest: &Path) -> PathBuf {
    let boot = dest.join("boot");
    if boot.exists() {
        std::fs::remove_dir_all(&boot).expect("remove the previous copy of /boot");
    }
    std::fs::create_dir_all(dest).expect("create the directory for /boot");
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump /boot {}", dest.display()))
        .arg(image)
        .output()
        .expect("run debugfs (Debian package e2fsprogs)");
    assert!(
        out.status.success() && boot.join("loader/entries").is_dir(),
        "debugfs rdump /boot from {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    boot
}

/// A virtio disk of the VM: the first is `/dev/vda`, the next `/dev/vdb`...
#[derive(Clone, Debug)]
pub struct Disk {
    pub image: PathBuf,
    pub read_only: bool,
}

/// Boots the default entry of `disks[0]`'s `/boot`, as a boot loader
/// would: reads `/boot` out of the image into `scratch` ([`read_boot`]),
/// picks the default entry ([`default_entry_in`]) and boots it with the
/// disks attached. Returns the entry it started, the names of all entries
/// before the boot, and how the boot ended.
pub fn boot_image(
    disks: &[Disk],
    scratch: &Path,
    extra_options: &str,
    console_log: &Path,
    timeout: Duration,
) -> (BootEntry, Vec<String>, Boot) {
    boot_image_until(disks, scratch, extra_options, console_log, timeout, None)
}

/// [`boot_image`], and when `power_off_at` is given, kills qemu (the
/// power cut) as soon as the console shows that text.
pub fn boot_image_until(
    disks: &[Disk],
    scratch: &Path,
    extra_options: &str,
    console_log: &Path,
    timeout: Duration,
    power_off_at: Option<&str>,
) -> (BootEntry, Vec<String>, Boot) {
    let boot_dir = read_boot(&disks[0].image, scratch);
    let entry = default_entry_in(&boot_dir);
    let names = entry_names(&boot_dir);
    let boot = run_qemu(
        &boot_dir,
        &entry,
        disks,
        extra_options,
        console_log,
        timeout,
        power_off_at,
    );
    (entry, names, boot)
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
    /// qemu's exit status; `None` when the timeout or a power cut killed it.
    pub exited: Option<std::process::ExitStatus>,
    /// qemu was killed because the console showed the `power_off_at` text.
    pub powered_off: bool,
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
    let disk = Disk {
        image: disk.to_owned(),
        read_only: false,
    };
    boot_disks(
        boot_dir,
        entry,
        &[disk],
        extra_options,
        console_log,
        timeout,
    )
}

/// [`boot`] with several virtio disks.
pub fn boot_disks(
    boot_dir: &Path,
    entry: &BootEntry,
    disks: &[Disk],
    extra_options: &str,
    console_log: &Path,
    timeout: Duration,
) -> Boot {
    run_qemu(
        boot_dir,
        entry,
        disks,
        extra_options,
        console_log,
        timeout,
        None,
    )
}

fn run_qemu(
    boot_dir: &Path,
    entry: &BootEntry,
    disks: &[Disk],
    extra_options: &str,
    console_log: &Path,
    timeout: Duration,
    power_off_at: Option<&str>,
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
    cmd.arg("-append").arg(&append);
    for disk in disks {
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe{}",
            disk.image.display(),
            if disk.read_only { ",readonly=on" } else { "" }
        ));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("run qemu-system-x86_64");
    let read_console = || {
        std::fs::read(console_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let mut powered_off = false;
    let exited = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break Some(status);
        }
        if let Some(text) = power_off_at {
            if read_console().contains(text) {
                // SIGKILL: whatever the guest had not yet written to the
                // disk is lost, as in a power cut.
                let _ = child.kill();
                let _ = child.wait();
                powered_off = true;
                break None;
            }
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Boot {
        console: read_console(),
        exited,
        powered_off,
        elapsed: started.elapsed(),
    }
}

impl Boot {
    /// The report between `TREECTL-VM-BEGIN` and `TREECTL-VM-END`; panics
    /// with the console's last lines when there is none.
    pub fn report(&self) -> Vec<String> {
        self.between("TREECTL-VM-BEGIN", "TREECTL-VM-END")
            .unwrap_or_else(|| {
                panic!(
                    "no report on the console after {:?}:\n{}",
                    self.elapsed,
                    self.tail(60)
                )
            })
    }

    /// The last `n` lines of the console.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The Debian packages of the VM tests' system, besides minbase.
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "kmod",
    "linux-image-cloud-amd64",
    "busybox-static",
];

/// The initramfs of the VM tests' system (docs/booting.md, "The recipe").
pub const INITRAMFS: &str = r#"
[initramfs]
components = ["busybox-static", "treectl-initramfs"]
modules = ["virtio_pci", "virtio_blk", "ext4"]
"#;

/// A composed Debian system for a VM: a repository and a lockfile holding
/// minbase plus [`PACKAGES`] from the archive apt uses, treectl's
/// initramfs programs and [`INITRAMFS`].
pub struct Os {
    pub repo: PathBuf,
    pub lock: PathBuf,
}

impl Os {
    /// Creates the repository and locks the system. `Err` says what is
    /// missing here (see [`lock_minbase`]).
    pub fn lock(repo: &Path, lock: &Path) -> Result<Os, String> {
        treectl_in(repo, ["init"]).ok();
        lock_minbase(repo, lock, PACKAGES)?;
        let os = Os {
            repo: repo.to_owned(),
            lock: lock.to_owned(),
        };
        os.add_dir(
            &workspace().join("client/initramfs/tree"),
            "treectl-initramfs",
        );
        let mut text = std::fs::read_to_string(lock).expect("read the lockfile");
        text.push_str(INITRAMFS);
        std::fs::write(lock, text).expect("write the lockfile");
        Ok(os)
    }

    /// Adds (or replaces) the directory component `name`.
    pub fn add_dir(&self, dir: &Path, name: &str) {
        let (lock, dir) = (self.lock.to_str(), dir.to_str());
        let (lock, dir) = (lock.expect("a UTF-8 path"), dir.expect("a UTF-8 path"));
        treectl_in(
            &self.repo,
            [
                "lock",
                "add",
                "--lockfile",
                lock,
                "--dir",
                dir,
                "--name",
                name,
            ],
        )
        .ok();
    }

    /// Sets the composed commit's time (`[compose] timestamp`, RFC 3339).
    /// Without it the time is the newest component commit's, which
    /// directory components do not move (their commits have time 0).
    pub fn set_timestamp(&self, rfc3339: &str) {
        let text = std::fs::read_to_string(&self.lock).expect("read the lockfile");
        let line = format!("timestamp = \"{rfc3339}\"\n");
        let mut out = String::new();
        let mut table = String::new();
        let mut done = false;
        for l in text.split_inclusive('\n') {
            if l.starts_with('[') {
                table = l.trim().to_owned();
            }
            if table == "[compose]" && l.starts_with("timestamp") {
                continue;
            }
            out.push_str(l);
            if l.trim() == "[compose]" {
                out.push_str(&line);
                done = true;
            }
        }
        if !done {
            out.push_str("\n[compose]\n");
            out.push_str(&line);
        }
        std::fs::write(&self.lock, out).expect("write the lockfile");
    }

    /// Composes the lockfile into `refname`.
    pub fn compose(&self, refname: &str) {
        let lock = self.lock.to_str().expect("a UTF-8 path");
        treectl_in(
            &self.repo,
            ["compose", "--lockfile", lock, "--ref", refname],
        )
        .ok();
    }

    /// Installs `refname` into a new sysroot for a disk with filesystem
    /// UUID `uuid` (`--root-arg root=UUID=... --karg rw`); the origin is
    /// this repository. Returns the root argument.
    pub fn install(&self, sysroot: &Path, refname: &str, uuid: &str) -> String {
        let root_arg = format!("root=UUID={uuid}");
        treectl_in(
            &self.repo,
            [
                "install",
                "--sysroot",
                sysroot.to_str().expect("a UTF-8 path"),
                "--from-repo",
                self.repo.to_str().expect("a UTF-8 path"),
                "--root-arg",
                &root_arg,
                // The physical root is mounted read-only without it, as the
                // kernel does, and the image has no fstab to remount it.
                "--karg",
                "rw",
                refname,
            ],
        )
        // The sysroot is a directory on the host, later copied into the
        // guest's disk image: the host filesystem's reserve is not the
        // guest's, and a nearly full build machine must not fail the boot.
        .env("TREECTL_MIN_FREE", "0")
        .ok();
        root_arg
    }
}

/// The source tree this test crate belongs to.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// Writes a component for the guest into `dir`: the treectl binary
/// (stripped) as `/usr/bin/treectl`, each `(name, text)` of `units` under
/// `/usr/lib/systemd/system` enabled in `multi-user.target.wants`, and each
/// `(name, text)` of `scripts` as an executable `/usr/lib/treectl-vm/NAME`.
pub fn guest_component(dir: &Path, units: &[(&str, &str)], scripts: &[(&str, &str)]) {
    let bin = dir.join("usr/bin");
    std::fs::create_dir_all(&bin).expect("create usr/bin");
    let out = Command::new("strip")
        .arg("-o")
        .arg(bin.join("treectl"))
        .arg(treectl_bin())
        .output()
        .expect("run strip");
    assert!(out.status.success(), "strip: {out:?}");
    let units_dir = dir.join("usr/lib/systemd/system");
    let wants = units_dir.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants).expect("create the units directory");
    for (name, text) in units {
        std::fs::write(units_dir.join(name), text).expect("write a unit");
        std::os::unix::fs::symlink(format!("../{name}"), wants.join(name)).expect("enable a unit");
    }
    let scripts_dir = dir.join("usr/lib/treectl-vm");
    std::fs::create_dir_all(&scripts_dir).expect("create usr/lib/treectl-vm");
    for (name, text) in scripts {
        let path = scripts_dir.join(name);
        std::fs::write(&path, text).expect("write a script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make a script executable");
    }
}

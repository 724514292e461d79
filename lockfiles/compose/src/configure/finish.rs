//! Finishing a configured tree so it fits the deployment model
//! (`docs/deployments.md`) and composes to the same commit every time.
//!
//! In order, after the scripts ran:
//!
//! - `depmod` runs for each kernel under `/usr/lib/modules/*`, whose
//!   `/boot/vmlinuz-<kver>` is linked as `usr/lib/modules/<kver>/vmlinuz`
//!   (where deployments take the kernel from), and
//!   `ldconfig` once (file triggers do not fire for a tree that was never
//!   unpacked by dpkg); ldconfig's `aux-cache` (inode numbers and times) is
//!   removed;
//! - the dpkg database moves to `/usr/lib/sysimage/dpkg` (it describes the
//!   image, and `/var` is per machine) and `/var/lib/dpkg` becomes a
//!   symlink to it, kept in the tree and recreated by tmpfiles.d;
//!   `*-old` backups dpkg leaves are removed;
//! - everything else under `/var` becomes entries of
//!   `/usr/lib/tmpfiles.d/treectl-var.conf` (`d` for directories, `L` for
//!   symlinks, `C` from `/usr/share/factory/var` for files), so a booted
//!   machine recreates it in its own `/var`; files under `/var/log` and
//!   `/var/cache` (logs and caches that differ from run to run) are not
//!   kept;
//!   `/var/lib/dbus/machine-id` (a copy of the random id) is dropped;
//! - the lockfile's `remove` patterns apply;
//! - `/etc/machine-id` is empty (mode 0444), whatever `remove` says:
//!   systemd makes one at first boot; the one a postinst generated is
//!   random;
//! - an empty `/sysroot` exists: prepare-root mounts the physical root
//!   there in a booted deployment (docs/booting.md);
//! - when the tree has an SSH server but (after `remove`) no host keys,
//!   [`SSH_KEYS_UNIT`] makes each machine its own at first boot, before
//!   `ssh.service` starts (sshd refuses to start without them).

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::sandbox::Sandbox;
use super::{ConfigureError as Error, ConfigureReport};

/// Where the dpkg database of a configured tree lives.
pub const DPKG_IMAGE_DIR: &str = "usr/lib/sysimage/dpkg";
/// What `/var/lib/dpkg` points to.
pub const DPKG_LINK_TARGET: &str = "../../usr/lib/sysimage/dpkg";
/// The tmpfiles.d file that recreates the tree's `/var`.
pub const VAR_TMPFILES: &str = "usr/lib/tmpfiles.d/treectl-var.conf";
/// Where files under `/var` are kept for tmpfiles.d to copy.
pub const VAR_FACTORY: &str = "usr/share/factory/var";

/// The unit that makes a machine's SSH host keys at first boot, and its
/// text; wanted by `ssh.service`.
pub const SSH_KEYS_UNIT: &str = "usr/lib/systemd/system/treectl-ssh-host-keys.service";
const SSH_KEYS_UNIT_TEXT: &str = "\
# Written by treectl compose: the composed tree carries no SSH host keys
# (every machine needs its own), so each machine makes them at first boot.
[Unit]
Description=Generate this machine's SSH host keys
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
";

fn exists(root: &Path, rel: &str) -> bool {
    root.join(rel).symlink_metadata().is_ok()
}

fn remove_any(path: &Path) -> Result<(), Error> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(Error::io("removing", path)),
        Ok(_) => std::fs::remove_file(path).map_err(Error::io("removing", path)),
        Err(_) => Ok(()),
    }
}

fn run_tool(sandbox: &Sandbox, argv: &[&str]) -> Result<(), Error> {
    let out = sandbox.run(argv)?;
    if out.success {
        return Ok(());
    }
    Err(Error::Script {
        package: "(finish)".into(),
        script: argv.join(" "),
        status: out.status.clone(),
        tail: out.tail(),
    })
}

/// Finishes the configured tree at `root`; see the module docs.
pub fn finish(
    root: &Path,
    sandbox: &Sandbox,
    remove: &[String],
    report: &mut ConfigureReport,
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let modules = root.join("usr/lib/modules");
    if modules.is_dir() && (exists(root, "usr/sbin/depmod") || exists(root, "sbin/depmod")) {
        let mut kernels: Vec<String> = std::fs::read_dir(&modules)
            .map_err(Error::io("reading", &modules))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        kernels.sort();
        for k in &kernels {
            run_tool(sandbox, &["depmod", "-a", k])?;
            place_kernel(root, k)?;
        }
        report.kernels = kernels;
    }
    if exists(root, "usr/sbin/ldconfig") || exists(root, "sbin/ldconfig") {
        run_tool(sandbox, &["ldconfig"])?;
    }
    remove_any(&root.join("var/cache/ldconfig/aux-cache"))?;
    // A copy of the random id a postinst made; dbus's own tmpfiles.d links
    // it to /etc/machine-id on each machine.
    remove_any(&root.join("var/lib/dbus/machine-id"))?;
    move_dpkg_database(root)?;
    report.tmpfiles_entries = var_to_tmpfiles(root)?;
    for pattern in remove {
        remove_matching(root, pattern)?;
    }
    // After `remove` (whose default names /etc/machine-id): an empty file
    // says "not yet made" to systemd.
    let machine_id = root.join("etc/machine-id");
    if root.join("etc").is_dir() {
        std::fs::write(&machine_id, b"").map_err(Error::io("writing", &machine_id))?;
        std::fs::set_permissions(&machine_id, std::fs::Permissions::from_mode(0o444))
            .map_err(Error::io("setting the mode of", &machine_id))?;
    }
    add_ssh_host_keys_unit(root)?;
    // Where prepare-root mounts the physical root in a booted deployment.
    let sysroot = root.join("sysroot");
    if sysroot.symlink_metadata().is_err() {
        std::fs::create_dir(&sysroot).map_err(Error::io("creating", &sysroot))?;
        std::fs::set_permissions(&sysroot, std::fs::Permissions::from_mode(0o755))
            .map_err(Error::io("setting the mode of", &sysroot))?;
    }
    // The database link survives `/var/*`: checkouts of the tree (and
    // chroots into it) find the packages where dpkg looks.
    let link = root.join("var/lib/dpkg");
    if link.symlink_metadata().is_err() {
        let parent = root.join("var/lib");
        std::fs::create_dir_all(&parent).map_err(Error::io("creating", &parent))?;
        std::os::unix::fs::symlink(DPKG_LINK_TARGET, &link).map_err(Error::io("linking", &link))?;
    }
    Ok(())
}

/// Writes and enables [`SSH_KEYS_UNIT`] when the tree runs sshd from
/// `ssh.service` and has no host key left.
fn add_ssh_host_keys_unit(root: &Path) -> Result<(), Error> {
    let has_server = exists(root, "usr/sbin/sshd")
        && exists(root, "usr/bin/ssh-keygen")
        && (exists(root, "usr/lib/systemd/system/ssh.service")
            || exists(root, "lib/systemd/system/ssh.service"));
    if !has_server {
        return Ok(());
    }
    let ssh = root.join("etc/ssh");
    if let Ok(dir) = std::fs::read_dir(&ssh) {
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("ssh_host_") && name.ends_with("_key") {
                return Ok(());
            }
        }
    }
    let unit = root.join(SSH_KEYS_UNIT);
    if let Some(dir) = unit.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    }
    std::fs::write(&unit, SSH_KEYS_UNIT_TEXT).map_err(Error::io("writing", &unit))?;
    let wants = root.join("usr/lib/systemd/system/ssh.service.wants");
    std::fs::create_dir_all(&wants).map_err(Error::io("creating", &wants))?;
    let link = wants.join("treectl-ssh-host-keys.service");
    remove_any(&link)?;
    std::os::unix::fs::symlink("../treectl-ssh-host-keys.service", &link)
        .map_err(Error::io("linking", &link))
}

/// Links Debian's `/boot/vmlinuz-<kver>` as `usr/lib/modules/<kver>/vmlinuz`,
/// where deployments look for a tree's kernel (one object, two names).
fn place_kernel(root: &Path, kver: &str) -> Result<(), Error> {
    let from = root.join("boot").join(format!("vmlinuz-{kver}"));
    let to = root.join("usr/lib/modules").join(kver).join("vmlinuz");
    if from.is_file() && to.symlink_metadata().is_err() {
        std::fs::hard_link(&from, &to).map_err(Error::io("linking", &to))?;
    }
    Ok(())
}

fn move_dpkg_database(root: &Path) -> Result<(), Error> {
    let db = root.join("var/lib/dpkg");
    for e in std::fs::read_dir(&db).map_err(Error::io("reading", &db))? {
        let e = e.map_err(Error::io("reading", &db))?;
        if e.file_name().to_string_lossy().ends_with("-old") {
            remove_any(&e.path())?;
        }
    }
    let target = root.join(DPKG_IMAGE_DIR);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
    }
    remove_any(&target)?;
    std::fs::rename(&db, &target).map_err(Error::io("moving", &db))?;
    std::os::unix::fs::symlink(DPKG_LINK_TARGET, &db).map_err(Error::io("linking", &db))
}

/// Writes the tmpfiles.d entries for what is under `/var`, moves its files
/// to the factory directory and empties `/var` (but for the database
/// link). Returns the number of entries.
fn var_to_tmpfiles(root: &Path) -> Result<usize, Error> {
    let var = root.join("var");
    if !var.is_dir() {
        return Ok(0);
    }
    let mut lines = String::from(
        "# Written by treectl compose: what the packages put under /var,\n# recreated on each machine.\n",
    );
    let mut count = 0;
    let mut entries = Vec::new();
    collect(&var, "/var", &mut entries)?;
    for (path, rel) in entries {
        let m = path
            .symlink_metadata()
            .map_err(Error::io("reading", &path))?;
        let (mode, uid, gid) = (m.mode() & 0o7777, m.uid(), m.gid());
        let volatile = rel.starts_with("/var/log/") || rel.starts_with("/var/cache/");
        if m.is_dir() {
            let _ = writeln!(lines, "d {rel} {mode:04o} {uid} {gid} -");
        } else if m.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(Error::io("reading", &path))?;
            let _ = writeln!(lines, "L {rel} - - - - {}", target.display());
        } else if volatile {
            continue;
        } else {
            let factory = root.join(VAR_FACTORY).join(rel.trim_start_matches("/var/"));
            if let Some(parent) = factory.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
            }
            std::fs::copy(&path, &factory).map_err(Error::io("copying", &path))?;
            rustix::fs::chown(&factory, Some(uid_of(uid)), Some(gid_of(gid)))
                .map_err(|e| Error::io("changing the owner of", &factory)(e.into()))?;
            let _ = writeln!(
                lines,
                "C {rel} - - - - /{VAR_FACTORY}/{}",
                rel.trim_start_matches("/var/")
            );
            let _ = writeln!(lines, "z {rel} {mode:04o} {uid} {gid} -");
            count += 1;
        }
        count += 1;
    }
    let conf = root.join(VAR_TMPFILES);
    if let Some(parent) = conf.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
    }
    std::fs::write(&conf, lines).map_err(Error::io("writing", &conf))?;
    for e in std::fs::read_dir(&var).map_err(Error::io("reading", &var))? {
        remove_any(&e.map_err(Error::io("reading", &var))?.path())?;
    }
    Ok(count)
}

fn uid_of(uid: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(gid)
}

/// Every path below `dir`, parents before children, in name order; the
/// dpkg database link is not an entry (it is kept as it is).
fn collect(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(std::path::PathBuf, String)>,
) -> Result<(), Error> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io("reading", dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(Error::io("reading", dir))?;
    names.sort();
    for n in names {
        let path = dir.join(&n);
        let r = format!("{rel}/{}", n.to_string_lossy());
        if r == "/var/lib/dpkg" {
            continue;
        }
        let is_dir = path.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
        out.push((path.clone(), r.clone()));
        if is_dir {
            collect(&path, &r, out)?;
        }
    }
    Ok(())
}

/// Removes what a `remove` pattern matches below `root` (the same rule as
/// the merge: `*` and `?` within one component).
fn remove_matching(root: &Path, pattern: &str) -> Result<(), Error> {
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let mut dirs = vec![root.to_owned()];
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for d in dirs {
            if !d.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                continue;
            }
            for e in std::fs::read_dir(&d).map_err(Error::io("reading", &d))? {
                let e = e.map_err(Error::io("reading", &d))?;
                if crate::merge::glob_match(c.as_bytes(), e.file_name().as_encoded_bytes()) {
                    if last {
                        remove_any(&e.path())?;
                    } else {
                        next.push(e.path());
                    }
                }
            }
        }
        dirs = next;
    }
    Ok(())
}

//! The initramfs's programs (`client/initramfs/tree`: `/init` and
//! `/usr/lib/treectl/prepare-root`) run outside any VM: as root, in a
//! private mount namespace, chrooted into a small initramfs on a tmpfs
//! (busybox-static and that tree), against a real ext4 image of a sysroot
//! that `treectl install` made, attached with losetup. What each run leaves
//! in `/proc/self/mountinfo` is checked against the tables of
//! `docs/booting.md`; every refusal must leave the table as it found it.
//!
//! `/init` runs as process 1 of a PID namespace of its own, so its
//! `switch_root` and its power-off end that namespace only (and `/init`
//! refuses to run as any other process).
//!
//! Needs root, busybox (busybox-static), unshare, losetup and mkfs.ext4;
//! each test says why it skips, and none skips under CI=true.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use treectl_e2e::skip::find_tool;
use treectl_e2e::{require_root, require_tools, treectl, treectl_in};

/// The initramfs tree, as the initramfs compose imports it.
const TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../client/initramfs/tree");

/// What the tests of this file need; false after saying why they skip.
fn ready(why: &str) -> bool {
    require_root(why) && require_tools(&["busybox", "unshare", "losetup", "mkfs.ext4"], why)
}

fn check(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The file names in `<sysroot>/boot/loader/entries`, sorted.
fn entry_names(sysroot: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sysroot.join("boot/loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn write_mode(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().expect("a parent")).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

// --- The scripts themselves ---------------------------------------------------

/// The two scripts, executable (the tree is imported as is), parse with
/// busybox's sh and pass shellcheck.
#[test]
fn initramfs_scripts_are_executable_and_pass_sh_n_and_shellcheck() {
    if !require_tools(
        &["busybox", "shellcheck"],
        "to check the initramfs's shell scripts",
    ) {
        return;
    }
    for rel in ["init", "usr/lib/treectl/prepare-root"] {
        let path = Path::new(TREE).join(rel);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{rel}");
        let script = fs::read_to_string(&path).unwrap();
        assert!(script.starts_with("#!/bin/busybox sh\n"), "{rel}");
        check(
            Command::new(find_tool("busybox").expect("required"))
                .args(["sh", "-n"])
                .arg(&path),
        );
        check(
            Command::new(find_tool("shellcheck").expect("required"))
                .args(["--shell=sh", "--severity=style"])
                .arg(&path),
        );
    }
}

// --- The sysroot image -------------------------------------------------------

/// What `/usr/bin/report` prints when `/init` starts it as the
/// deployment's init: sections `== NAME`, read by [`sections`].
const REPORT: &str = r#"#!/usr/bin/busybox sh
bb=/usr/bin/busybox
echo "== pid"; echo "$$"
echo "== args"; echo "$*"
echo "== booted"; $bb cat /run/treectl/booted
echo "== modprobe"; $bb cat /run/modprobe.log
echo "== mountinfo"; $bb cat /proc/self/mountinfo
"#;

/// An ext4 image of a sysroot with one deployment of a small OS tree, made
/// by the real `treectl install`, plus two symlinks in `treectl/deploy`
/// that lead out of it (for the refusals).
struct Image {
    dir: tempfile::TempDir,
    uuid: String,
    label: String,
    /// `<commit>.0`.
    deployment: String,
    /// The file name of the deployment's boot entry in the image.
    entry: String,
}

impl Image {
    fn build() -> Image {
        Image::build_with(|_| {})
    }

    /// The image of a sysroot that `edit` may change (given the sysroot
    /// directory) after `treectl install` and before `mkfs.ext4`.
    fn build_with(edit: impl FnOnce(&Path)) -> Image {
        let dir = tempfile::Builder::new()
            .prefix("treectl-prepare-root")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let tree = dir.path().join("tree");
        let w = |rel: &str, content: &str, mode: u32| write_mode(&tree.join(rel), content, mode);
        w("etc/hostname", "machine\n", 0o644);
        w("usr/share/doc/README", "the deployment's /usr\n", 0o644);
        w("usr/bin/report", REPORT, 0o755);
        w("var/lib/seed", "seeded at install\n", 0o644);
        let busybox = find_tool("busybox").expect("busybox was required");
        fs::copy(&busybox, tree.join("usr/bin/busybox")).unwrap();
        // The empty mount points every OS tree holds (docs/booting.md).
        for d in ["sysroot", "dev", "proc", "sys", "run"] {
            fs::create_dir_all(tree.join(d)).unwrap();
        }

        let origin = dir.path().join("origin");
        treectl_in(&origin, ["init", "--mode", "archive"]).ok();
        let commit = treectl_in(&origin, ["commit", "--ref", "os/stable", "--tree"])
            .arg(&tree)
            .args(["--timestamp", "2024-01-01T00:00:00Z"])
            .ok();
        let sysroot = dir.path().join("sysroot");
        treectl(["install", "--sysroot"])
            .arg(&sysroot)
            .arg("--from-repo")
            .arg(&origin)
            .arg("os/stable")
            .env("TREECTL_MIN_FREE", "0")
            .ok();
        let deployment = format!("{}.0", commit.trim());
        let deploy = sysroot.join("treectl/deploy");
        assert!(deploy.join("os").join(&deployment).is_dir());
        symlink("../../../boot", deploy.join("os/escape.0")).unwrap();
        symlink("/", deploy.join("evil")).unwrap();
        edit(&sysroot);
        let entry = entry_names(&sysroot)
            .into_iter()
            .next()
            .expect("install wrote a boot entry");

        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .to_owned();
        let label = format!("treectl-{}", &uuid[..8]);
        check(
            Command::new(find_tool("mkfs.ext4").expect("mkfs.ext4 was required"))
                .args(["-q", "-L", &label, "-U", &uuid, "-d"])
                .arg(&sysroot)
                .arg(dir.path().join("root.img"))
                .arg("64M"),
        );
        Image {
            dir,
            uuid,
            label,
            deployment,
            entry,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("root.img")
    }

    /// The `treectl=` value of the deployment.
    fn target(&self) -> String {
        format!("/treectl/deploy/os/{}", self.deployment)
    }
}

/// A loop device with an image attached, detached on drop (also when the
/// test fails).
struct Loop {
    dev: String,
}

impl Loop {
    fn attach(image: &Path) -> Loop {
        let out = check(
            Command::new(find_tool("losetup").expect("losetup was required"))
                .args(["--find", "--show"])
                .arg(image),
        );
        let dev = text(&out.stdout).trim().to_owned();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Loop { dev }
    }

    /// `MAJOR:MINOR`, as mountinfo and the booted record write it.
    fn major_minor(&self) -> String {
        let name = self.dev.trim_start_matches("/dev/");
        fs::read_to_string(format!("/sys/block/{name}/dev"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(losetup) = find_tool("losetup") {
            let _ = Command::new(losetup).args(["-d", &self.dev]).status();
        }
    }
}

// --- A fake initramfs ---------------------------------------------------------

/// A directory laid out as the initramfs: the tree, busybox-static as
/// `/bin/busybox`, the test's kernel command line in `/cmdline`.
fn stage_initramfs(dir: &Path, cmdline: &str) -> PathBuf {
    let stage = dir.join("stage");
    fs::create_dir_all(&stage).unwrap();
    check(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{TREE}/."))
            .arg(&stage),
    );
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run",
    ] {
        fs::create_dir_all(stage.join(d)).unwrap();
    }
    fs::copy(
        find_tool("busybox").expect("busybox was required"),
        stage.join("bin/busybox"),
    )
    .unwrap();
    fs::write(stage.join("cmdline"), format!("{cmdline}\n")).unwrap();
    stage
}

/// Runs in a private mount namespace (host side): the initramfs on a tmpfs
/// at $3 from the staged $1, /proc, /dev and /run mounted as /init would,
/// then the script `/check` inside it (chroot); what it kept in /result is
/// copied to $2.
const PREPARE_ROOT_DRIVER: &str = r#"set -eu
stage=$1 out=$2 root=$3
mount -t tmpfs -o mode=0755 initramfs "$root"
cp -a "$stage/." "$root/"
chroot "$root" /bin/busybox --install -s
mount -t proc proc "$root/proc"
mount -t devtmpfs devtmpfs "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
chroot "$root" /bin/sh /check
cp -a "$root/result/." "$out/"
"#;

/// Inside the initramfs: prepare-root between two looks at the mount table
/// and the files it may create, then (after a success) what the prepared
/// deployment looks like from the initramfs, as `KEY=VALUE` lines.
const CHECK: &str = r#"mkdir /result
cat /proc/self/mountinfo >/result/mountinfo.before
ls -a / /run >/result/files.before
rc=0
/usr/lib/treectl/prepare-root >/result/stdout 2>/result/stderr || rc=$?
echo "$rc" >/result/rc
cat /proc/self/mountinfo >/result/mountinfo.after
ls -a / /run >/result/files.after
[ "$rc" = 0 ] || exit 0
d=/sysroot/sysroot/treectl/deploy/os
{
    echo "readme=$(cat /sysroot/usr/share/doc/README)"
    echo "seed=$(cat /sysroot/var/lib/seed)"
    touch /sysroot/usr/probe 2>/dev/null; echo "usr-write=$?"
    touch /sysroot/etc/probe 2>/dev/null; echo "etc-write=$?"
    echo var-probe >/sysroot/var/probe 2>/dev/null; echo "var-write=$?"
    echo "var-is-stateroot-var=$(cat $d/var/probe 2>/dev/null)"
    echo "physical=$(ls /sysroot/sysroot/treectl | tr '\n' ' ')"
    echo "deployment-inode=$(stat -c %i "$d/$(sed -n 's/^deployment=//p' /run/treectl/booted)")"
    echo "root-inode=$(stat -c %i /sysroot)"
    echo "tmp-left=$(ls -d /sysroot.tmp 2>/dev/null)"
    echo "booted-mode=$(stat -c %a /run/treectl/booted)"
    echo "entries=$(ls /sysroot/sysroot/boot/loader/entries | tr '\n' ' ')"
} >/result/probe
cp /run/treectl/booted /result/booted
"#;

/// How one run of prepare-root went.
struct Run {
    rc: i32,
    stdout: String,
    stderr: String,
    before: Vec<Mount>,
    after: Vec<Mount>,
    files_before: String,
    files_after: String,
    /// The `CHECK` script's `KEY=VALUE` lines (after a success).
    probe: BTreeMap<String, String>,
    /// `/run/treectl/booted` (after a success).
    booted: String,
}

/// Runs prepare-root in a fresh namespace and initramfs with `cmdline` as
/// the kernel command line, and `TREECTL_FAILPOINT=failpoint` if given.
fn prepare_root(cmdline: &str, failpoint: Option<&str>) -> Run {
    prepare_root_in(cmdline, failpoint, |_, _| {})
}

/// [`prepare_root`], with `setup` given the staged initramfs and the
/// command that runs it before the run.
fn prepare_root_in(
    cmdline: &str,
    failpoint: Option<&str>,
    setup: impl FnOnce(&Path, &mut Command),
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let stage = stage_initramfs(dir.path(), cmdline);
    fs::write(stage.join("check"), CHECK).unwrap();
    let (out, root) = (dir.path().join("out"), dir.path().join("root"));
    fs::create_dir_all(&out).unwrap();
    fs::create_dir_all(&root).unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "unshare", "--mount", "--propagation", "private"])
        .args(["sh", "-c", PREPARE_ROOT_DRIVER, "sh"])
        .args([&stage, &out, &root])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TREECTL_CMDLINE", "/cmdline");
    if let Some(f) = failpoint {
        cmd.env("TREECTL_FAILPOINT", f);
    }
    setup(&stage, &mut cmd);
    check(&mut cmd);
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    Run {
        rc: read("rc").trim().parse().expect("prepare-root's exit code"),
        stdout: read("stdout"),
        stderr: read("stderr"),
        before: parse_mountinfo(&read("mountinfo.before")),
        after: parse_mountinfo(&read("mountinfo.after")),
        files_before: read("files.before"),
        files_after: read("files.after"),
        probe: key_values(&read("probe")),
        booted: read("booted"),
    }
}

fn key_values(s: &str) -> BTreeMap<String, String> {
    s.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_end().to_owned()))
        .collect()
}

// --- mountinfo ----------------------------------------------------------------

/// One line of `/proc/self/mountinfo` (proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mount {
    id: u32,
    parent: u32,
    major_minor: String,
    /// The directory of the filesystem this mount shows.
    root: String,
    mount_point: String,
    options: Vec<String>,
    /// `shared:N`, `master:N`...; empty for a private mount.
    propagation: Vec<String>,
    fstype: String,
    source: String,
    super_options: Vec<String>,
}

impl Mount {
    fn has(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }

    fn shared(&self) -> bool {
        self.propagation.iter().any(|p| p.starts_with("shared:"))
    }
}

fn parse_mountinfo(s: &str) -> Vec<Mount> {
    s.lines()
        .map(|line| {
            let (left, right) = line
                .split_once(" - ")
                .unwrap_or_else(|| panic!("mountinfo line without ' - ': {line}"));
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let list = |s: &str| s.split(',').map(str::to_owned).collect();
            Mount {
                id: l[0].parse().unwrap(),
                parent: l[1].parse().unwrap(),
                major_minor: l[2].to_owned(),
                root: l[3].to_owned(),
                mount_point: l[4].to_owned(),
                options: list(l[5]),
                propagation: l[6..].iter().map(|s| s.to_string()).collect(),
                fstype: r[0].to_owned(),
                source: r[1].to_owned(),
                super_options: list(r.get(2).copied().unwrap_or("")),
            }
        })
        .collect()
}

fn at<'a>(table: &'a [Mount], mount_point: &str) -> &'a Mount {
    let found: Vec<&Mount> = table
        .iter()
        .filter(|m| m.mount_point == mount_point)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one mount on {mount_point} expected: {table:#?}"
    );
    found[0]
}

/// The prepared deployment as docs/booting.md ("The resulting mount
/// table") describes it, seen from the initramfs: `prefix` is where the
/// deployment is mounted (`/sysroot`; `` after switch_root, when it is
/// `/`). `access` is `rw` or `ro` (the command line's).
fn assert_deployment_table(table: &[Mount], prefix: &str, image: &Image, dev: &Loop, access: &str) {
    let top = if prefix.is_empty() { "/" } else { prefix };
    let deployment = at(table, top);
    let usr = at(table, &format!("{prefix}/usr"));
    let physical = at(table, &format!("{prefix}/sysroot"));
    let var = at(table, &format!("{prefix}/var"));
    let target = image.target();
    for (m, root) in [
        (deployment, target.clone()),
        (usr, format!("{target}/usr")),
        (physical, "/".to_owned()),
        (var, "/treectl/deploy/os/var".to_owned()),
    ] {
        assert_eq!(m.root, root, "what {} shows", m.mount_point);
        assert_eq!(m.major_minor, dev.major_minor(), "{m:?}");
        assert_eq!(m.fstype, "ext4", "{m:?}");
        assert_eq!(m.source, dev.dev, "{m:?}");
        assert!(m.super_options.iter().any(|o| o == access), "{m:?}");
        if !std::ptr::eq(m, deployment) {
            assert_eq!(
                m.parent, deployment.id,
                "{} hangs below {top}",
                m.mount_point
            );
        }
    }
    // /usr is read-only whatever the command line says; the others follow it.
    assert!(usr.has("ro"), "{usr:?}");
    for m in [deployment, physical, var] {
        assert!(m.has(access), "{m:?} is not {access}");
    }
    // Propagation: private but for /var, a peer group of its own.
    for m in [deployment, usr, physical] {
        assert!(m.propagation.is_empty(), "{m:?} is not private");
    }
    assert!(var.shared(), "{var:?} is not shared");
    assert!(
        !var.propagation.iter().any(|p| p.starts_with("master:")),
        "{var:?} is the slave of a private mount, so a slave of nothing"
    );
}

/// The lines of `after` that `before` lacks, and the lines `before` had
/// that `after` lacks.
fn table_changes(before: &[Mount], after: &[Mount]) -> (Vec<Mount>, Vec<Mount>) {
    let added = after
        .iter()
        .filter(|m| !before.contains(m))
        .cloned()
        .collect();
    let removed = before
        .iter()
        .filter(|m| !after.contains(m))
        .cloned()
        .collect();
    (added, removed)
}

/// `entry` (a boot entry's file name) with its counter replaced by
/// `counter` (`+2-1`; empty for none).
fn with_counter(entry: &str, counter: &str) -> String {
    let stem = entry.strip_suffix(".conf").expect("a .conf entry");
    let stem = stem.rsplit_once('+').map_or(stem, |(s, _)| s);
    format!("{stem}{counter}.conf")
}

/// What prepare-root did with the boot entry: its name afterwards and the
/// record's `counted=`.
struct Counted<'a> {
    entry: &'a str,
    counted: &'a str,
}

fn assert_success(
    run: &Run,
    image: &Image,
    dev: &Loop,
    root_arg: &str,
    access: &str,
    count: Counted,
) {
    assert_eq!(run.rc, 0, "prepare-root failed: {}", run.stderr);
    if count.counted != "failed" {
        assert_eq!(run.stderr, "", "a success prints nothing on stderr");
    }
    let mut stdout = vec![];
    if count.counted == "read-only" {
        stdout.push(format!(
            "treectl-prepare-root: the root is mounted read-only (ro): boot entry {} not counted",
            count.entry
        ));
    }
    stdout.push(format!(
        "treectl-prepare-root: /sysroot is deployment {} of stateroot os ({root_arg}, {access})",
        image.deployment
    ));
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), stdout);
    assert_eq!(
        run.probe["entries"].trim(),
        count.entry,
        "the boot entries afterwards"
    );

    // Exactly the four mounts of the table are new; nothing else changed.
    let (added, removed) = table_changes(&run.before, &run.after);
    assert_eq!(removed, vec![], "prepare-root changed existing mounts");
    let mut points: Vec<&str> = added.iter().map(|m| m.mount_point.as_str()).collect();
    points.sort();
    assert_eq!(
        points,
        [
            "/sysroot",
            "/sysroot/sysroot",
            "/sysroot/usr",
            "/sysroot/var"
        ]
    );
    assert_deployment_table(&run.after, "/sysroot", image, dev, access);
    // The deployment hangs where /sysroot is in the initramfs: on its /.
    let initramfs = at(&run.before, "/");
    assert_eq!(at(&run.after, "/sysroot").parent, initramfs.id);

    // The booted record (docs/booting.md, version 1).
    let inode = &run.probe["deployment-inode"];
    assert_eq!(
        run.booted,
        format!(
            "version=1\ntreectl={}\nstateroot=os\ndeployment={}\ndevice={}\ninode={inode}\nroot={root_arg}\n\
             entry={}\ncounted={}\n",
            image.target(),
            image.deployment,
            dev.major_minor(),
            count.entry,
            count.counted,
        )
    );
    assert_eq!(
        &run.probe["root-inode"], inode,
        "/sysroot is the deployment"
    );
    assert_eq!(run.probe["booted-mode"], "644");
    assert_eq!(run.probe["tmp-left"], "", "/sysroot.tmp is removed");

    // What the mounts do.
    let p = &run.probe;
    assert_eq!(p["readme"], "the deployment's /usr");
    assert_eq!(p["seed"], "seeded at install", "/var is the stateroot's");
    assert_ne!(p["usr-write"], "0", "/usr is read-only");
    assert!(
        p["physical"].contains("deploy") && p["physical"].contains("repo"),
        "/sysroot/sysroot is the physical root: {p:?}"
    );
    if access == "rw" {
        assert_eq!(p["etc-write"], "0", "/etc is writable");
        assert_eq!(p["var-write"], "0", "/var is writable");
        assert_eq!(p["var-is-stateroot-var"], "var-probe");
    } else {
        assert_ne!(p["etc-write"], "0", "ro: the whole root is read-only");
    }
}

// --- prepare-root ---------------------------------------------------------------

#[test]
fn prepare_root_mounts_the_deployment_named_by_a_device_path() {
    if !ready("to mount a sysroot image in a private mount namespace") {
        return;
    }
    let image = Image::build();
    let dev = Loop::attach(&image.path());
    let root_arg = dev.dev.clone();
    let run = prepare_root(
        &format!("quiet root={root_arg} rw treectl={}", image.target()),
        None,
    );
    let counted = with_counter(&image.entry, "+2-1");
    assert_success(
        &run,
        &image,
        &dev,
        &root_arg,
        "rw",
        Counted {
            entry: &counted,
            counted: "yes",
        },
    );
}

#[test]
fn prepare_root_finds_the_root_by_uuid_or_label_and_honours_ro_and_rootflags() {
    if !ready("to mount a sysroot image in a private mount namespace") {
        return;
    }
    let image = Image::build();
    let dev = Loop::attach(&image.path());

    let by_uuid = format!("UUID={}", image.uuid);
    let run = prepare_root(
        &format!(
            "root={by_uuid} rootfstype=ext4 rootflags=commit=7 ro treectl={}",
            image.target()
        ),
        None,
    );
    let not_counted = Counted {
        entry: &image.entry,
        counted: "read-only",
    };
    assert_success(&run, &image, &dev, &by_uuid, "ro", not_counted);
    let deployment = at(&run.after, "/sysroot");
    assert!(
        deployment.super_options.iter().any(|o| o == "commit=7"),
        "rootflags reach the mount: {deployment:?}"
    );

    // Neither ro nor rw: read-only, as the kernel mounts a root.
    let by_label = format!("LABEL={}", image.label);
    let run = prepare_root(&format!("root={by_label} treectl={}", image.target()), None);
    let not_counted = Counted {
        entry: &image.entry,
        counted: "read-only",
    };
    assert_success(&run, &image, &dev, &by_label, "ro", not_counted);
}

// --- Boot counting ----------------------------------------------------------------

/// The record's `entry=` and `counted=`.
fn record_count(run: &Run) -> (String, String) {
    let record = key_values(&run.booted);
    (record["entry"].clone(), record["counted"].clone())
}

#[test]
fn prepare_root_counts_each_attempt_as_systemd_boot_does_until_no_tries_are_left() {
    if !ready("to mount a sysroot image in a private mount namespace") {
        return;
    }
    let image = Image::build();
    assert!(image.entry.ends_with("+3-0.conf"), "{}", image.entry);
    let dev = Loop::attach(&image.path());
    let cmdline = format!("root={} rw treectl={}", dev.dev, image.target());

    // +3-0 -> +2-1 -> +1-2 -> +0-3; a bad entry is left alone.
    for (after, counted) in [
        ("+2-1", "yes"),
        ("+1-2", "yes"),
        ("+0-3", "yes"),
        ("+0-3", "bad"),
    ] {
        let run = prepare_root(&cmdline, None);
        let entry = with_counter(&image.entry, after);
        assert_success(
            &run,
            &image,
            &dev,
            &dev.dev,
            "rw",
            Counted {
                entry: &entry,
                counted,
            },
        );
    }
}

#[test]
fn prepare_root_leaves_good_entries_and_counts_the_short_form() {
    if !ready("to mount a sysroot image in a private mount namespace") {
        return;
    }
    for (counter, after, counted) in [("", "", "good"), ("+2", "+1-1", "yes")] {
        let image = Image::build_with(|sysroot| {
            let dir = sysroot.join("boot/loader/entries");
            let name = entry_names(sysroot).remove(0);
            fs::rename(dir.join(&name), dir.join(with_counter(&name, counter))).unwrap();
        });
        let dev = Loop::attach(&image.path());
        let run = prepare_root(
            &format!("root={} rw treectl={}", dev.dev, image.target()),
            None,
        );
        let entry = with_counter(&image.entry, after);
        assert_success(
            &run,
            &image,
            &dev,
            &dev.dev,
            "rw",
            Counted {
                entry: &entry,
                counted,
            },
        );
    }
}

#[test]
fn prepare_root_does_not_count_when_systemd_boot_counted_or_the_root_is_read_only() {
    if !ready("to mount a sysroot image in a private mount namespace") {
        return;
    }
    let image = Image::build();
    let dev = Loop::attach(&image.path());
    let target = image.target();

    // systemd-boot renamed the entry itself and said so in LoaderBootCountPath.
    let run = prepare_root_in(
        &format!("root={} rw treectl={target}", dev.dev),
        None,
        |stage, cmd| {
            write_mode(
                &stage.join("efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"),
                "",
                0o644,
            );
            cmd.env("TREECTL_EFIVARS", "/efivars");
        },
    );
    let not_counted = Counted {
        entry: &image.entry,
        counted: "boot-loader",
    };
    assert_success(&run, &image, &dev, &dev.dev, "rw", not_counted);

    // ro: one console line, and the boot goes on.
    let run = prepare_root(&format!("root={} ro treectl={target}", dev.dev), None);
    let not_counted = Counted {
        entry: &image.entry,
        counted: "read-only",
    };
    assert_success(&run, &image, &dev, &dev.dev, "ro", not_counted);

    // Without either, this image's entry is counted.
    let run = prepare_root(&format!("root={} rw treectl={target}", dev.dev), None);
    assert_eq!(
        record_count(&run),
        (with_counter(&image.entry, "+2-1"), "yes".to_owned())
    );
}

#[test]
fn prepare_root_boots_when_the_entry_cannot_be_renamed() {
    if !ready("to mount a sysroot image in a private mount namespace")
        || !require_tools(&["debugfs"], "to make the entries directory immutable")
    {
        return;
    }
    let image = Image::build();
    // rename(2) in an immutable directory fails with EPERM, even for root.
    let debugfs = find_tool("debugfs").expect("required");
    let dir = "/boot/loader.0/entries";
    let stat = text(
        &check(
            Command::new(&debugfs)
                .args(["-R", &format!("stat {dir}")])
                .arg(image.path()),
        )
        .stdout,
    );
    let flags = stat
        .split_once("Flags: 0x")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no flags in debugfs's stat: {stat}"));
    const IMMUTABLE: u32 = 0x10;
    check(
        Command::new(&debugfs)
            .args([
                "-w",
                "-R",
                &format!("set_inode_field {dir} flags {:#x}", flags | IMMUTABLE),
            ])
            .arg(image.path()),
    );
    let dev = Loop::attach(&image.path());
    let run = prepare_root(
        &format!("root={} rw treectl={}", dev.dev, image.target()),
        None,
    );
    let not_counted = Counted {
        entry: &image.entry,
        counted: "failed",
    };
    assert_success(&run, &image, &dev, &dev.dev, "rw", not_counted);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with(&format!(
            "treectl-prepare-root: cannot count the attempt in boot entry {}: ",
            image.entry
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn prepare_root_refusals_print_one_line_and_leave_nothing_mounted() {
    if !ready("to mount a sysroot image in a private mount namespace") {
        return;
    }
    let image = Image::build();
    let dev = Loop::attach(&image.path());
    let target = image.target();
    let root = format!("root={} rw", dev.dev);
    let missing_uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        (
            format!("{root} treectl=/treectl/deploy/os/../../etc"),
            None,
            "treectl=/treectl/deploy/os/../../etc has a '..' component",
        ),
        (
            format!("{root} treectl=/treectl/deploy/os/escape.0"),
            None,
            "goes through the symlink /treectl/deploy/os/escape.0 (to ../../../boot)",
        ),
        (
            format!("{root} treectl=/treectl/deploy/evil/etc"),
            None,
            "goes through the symlink /treectl/deploy/evil (to /)",
        ),
        (
            format!("{root} treectl=/treectl/deploy/os/{}.1", image.deployment),
            None,
            "does not exist",
        ),
        (
            format!("{root} treectl={target}.tmp"),
            None,
            "still being written",
        ),
        (
            format!("{root} treectl=/treectl/deploy/os"),
            None,
            "is not a deployment path /treectl/deploy/STATEROOT/NAME",
        ),
        (root.clone(), None, "no treectl= on the kernel command line"),
        (
            format!("treectl={target}"),
            None,
            "no root= on the kernel command line",
        ),
        (
            format!(
                "root=UUID={} treectl.root_wait=1 treectl={target}",
                missing_uuid.trim()
            ),
            None,
            "did not appear within 1 s",
        ),
        (
            format!("root=/dev/treectl-no-such-disk treectl.root_wait=0 treectl={target}"),
            None,
            "root device /dev/treectl-no-such-disk did not appear within 0 s",
        ),
    ];
    // A failure after each step: everything mounted so far is undone.
    let steps = ["physical", "deployment", "usr", "sysroot", "var", "record"];
    let failpoints = steps.iter().map(|step| {
        (
            format!("{root} treectl={target}"),
            Some(step),
            format!("stopped at failpoint prepare-root-{step}"),
        )
    });
    let cases = cases
        .into_iter()
        .map(|(c, f, e)| (c, f.map(|s: &str| s.to_owned()), e.to_owned()))
        .chain(failpoints.map(|(c, f, e)| (c, f.map(|s| format!("prepare-root-{s}")), e)));

    for (cmdline, failpoint, expected) in cases {
        let run = prepare_root(&cmdline, failpoint.as_deref());
        let case = format!("{cmdline} (failpoint {failpoint:?})");
        assert_eq!(run.rc, 1, "{case}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{case}: not one line: {:?}", run.stderr);
        assert!(
            lines[0].starts_with("treectl-prepare-root: ") && lines[0].contains(&expected),
            "{case}: {:?} does not say {expected:?}",
            lines[0]
        );
        assert_eq!(run.stdout, "", "{case}");
        assert_eq!(run.after, run.before, "{case}: the mount table changed");
        assert_eq!(
            run.files_after, run.files_before,
            "{case}: files left in / or /run"
        );
    }
}

// --- /init ------------------------------------------------------------------------

/// Runs in new mount and PID namespaces (host side): the initramfs on a
/// tmpfs at $2 from the staged $1, then /init as process 1 in it, with
/// `single` as the argument the kernel would pass.
const INIT_DRIVER: &str = r#"set -eu
stage=$1 root=$2
mount -t tmpfs -o mode=0755 initramfs "$root"
cp -a "$stage/." "$root/"
exec chroot "$root" /init single
"#;

/// A `/sbin/modprobe` that logs instead of loading (`--install` leaves
/// existing files alone, and /init calls it by path), and fails
/// for the module `broken`. The tests never load a module into the
/// machine's kernel.
const FAKE_MODPROBE: &str = r#"#!/bin/sh
echo "$*" >>/run/modprobe.log
if [ "$1" = broken ]; then
    echo "modprobe: module broken not found in modules.dep" >&2
    exit 1
fi
"#;

/// The modules list of the tests that boot.
const MODULES: &str = "# the root device's modules, in order\nvirtio_pci\n\n  virtio_blk  \next4 # and its dependencies\nloop max_loop=4";

/// Runs /init in a fresh initramfs with `cmdline` and `modules` as
/// `/etc/treectl/modules`; `stdin` is its standard input (the debug
/// shell's).
fn init(cmdline: &str, modules: &str, stdin: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let stage = stage_initramfs(dir.path(), cmdline);
    write_mode(&stage.join("etc/treectl/modules"), modules, 0o644);
    write_mode(&stage.join("sbin/modprobe"), FAKE_MODPROBE, 0o755);
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let mut child = Command::new("timeout")
        .args(["120", "unshare", "--mount", "--propagation", "private"])
        .args(["--pid", "--fork", "--kill-child"])
        .args(["sh", "-c", INIT_DRIVER, "sh"])
        .args([&stage, &root])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TREECTL_CMDLINE", "/cmdline")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        // /init may end before reading it: a broken pipe is fine.
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait for unshare")
}

/// `== NAME` sections of the report.
fn sections(out: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            current = Some(name.to_owned());
            map.insert(name.to_owned(), String::new());
        } else if let Some(name) = &current {
            let s = map.get_mut(name).expect("section");
            s.push_str(line);
            s.push('\n');
        }
    }
    map
}

#[test]
fn init_loads_modules_prepares_the_root_and_switches_into_it() {
    if !ready("to run /init as process 1 of a PID namespace") {
        return;
    }
    let image = Image::build();
    let dev = Loop::attach(&image.path());
    let out = init(
        &format!(
            "console=ttyS0 root={} rw treectl={} init=/usr/bin/report",
            dev.dev,
            image.target()
        ),
        MODULES,
        "",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert_eq!(
        stderr, "",
        "a boot without trouble prints nothing on stderr"
    );
    let report = sections(&stdout);
    assert_eq!(
        report.get("pid").map(String::as_str),
        Some("1\n"),
        "the deployment's init is process 1: {stdout}"
    );
    assert_eq!(report["args"], "single\n", "the kernel's arguments go on");
    assert_eq!(
        report["modprobe"], "virtio_pci\nvirtio_blk\next4\nloop max_loop=4\n",
        "modules in the listed order, comments and blank lines skipped"
    );
    assert!(
        report["booted"].contains(&format!("treectl={}\n", image.target())),
        "/run/treectl/booted moved with /run: {}",
        report["booted"]
    );

    let table = parse_mountinfo(&report["mountinfo"]);
    assert_deployment_table(&table, "", &image, &dev, "rw");
    for (point, fstype) in [
        ("/dev", "devtmpfs"),
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/run", "tmpfs"),
    ] {
        let m = at(&table, point);
        assert_eq!(m.fstype, fstype, "{m:?}");
        assert_eq!(
            m.parent,
            at(&table, "/").id,
            "{point} moved into the deployment"
        );
    }
    assert_eq!(
        table.len(),
        8,
        "the deployment's 4 mounts and the kernel's 4: {table:#?}"
    );
}

#[test]
fn init_reports_a_failure_in_one_line_and_powers_off() {
    if !ready("to run /init as process 1 of a PID namespace") {
        return;
    }
    let image = Image::build();
    let dev = Loop::attach(&image.path());
    let missing = format!("root={} rw treectl={}.1", dev.dev, image.target());

    // The default: wait, then power off (reboot(2) in a PID namespace ends
    // it with SIGINT, which unshare passes on).
    let out = init(&missing, MODULES, "");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.signal(), Some(2), "{}: {stderr}", out.status);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("treectl-prepare-root: ") && lines[0].contains("does not exist"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("treectl-init: prepare-root could not mount the deployment")
            && lines[1].contains("powering off in 5 s"),
        "{stderr}"
    );

    // treectl.debug: a shell on the console first.
    let out = init(
        &format!("{missing} treectl.debug"),
        MODULES,
        "echo in the debug shell\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.signal(), Some(2), "{}: {stderr}", out.status);
    assert!(stdout.contains("in the debug shell"), "{stdout}");
    let init_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("treectl-init: "))
        .collect();
    assert_eq!(init_lines.len(), 1, "{stderr}");
    assert!(
        init_lines[0].contains("treectl.debug: starting a shell"),
        "{stderr}"
    );

    // A module that does not load stops the boot there: the debug shell
    // sees the modules tried so far and no /sysroot mounted.
    let out = init(
        &format!(
            "root={} rw treectl={} treectl.debug",
            dev.dev,
            image.target()
        ),
        "virtio_pci\nbroken\next4\n",
        "echo == modprobe; cat /run/modprobe.log; echo == mountinfo; cat /proc/self/mountinfo\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.signal(), Some(2), "{}: {stderr}", out.status);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "treectl-init: cannot load module broken (listed in /etc/treectl/modules): \
          modprobe: module broken not found in modules.dep; \
          treectl.debug: starting a shell, leaving it powers off"
        ],
    );
    let shell = sections(&stdout);
    assert_eq!(shell["modprobe"], "virtio_pci\nbroken\n");
    let table = parse_mountinfo(&shell["mountinfo"]);
    assert!(
        table.iter().all(|m| !m.mount_point.starts_with("/sysroot")),
        "prepare-root did not run: {table:#?}"
    );
}

//! A machine's life across real reboots, in qemu: the composed Debian
//! system of `boot_vm.rs` (see [`vm::Os`]) with treectl,
//! `dist/treectl-boot-ok.service` and `dist/treectl-finalize-staged.service`
//! enabled, installed into an ext4 image and booted again and again. After
//! each boot the harness reads `/boot` back out of the image
//! ([`vm::read_boot`], `debugfs rdump`) and starts the entry
//! [`BootMenu`](treectl_sysroot::boot::BootMenu) picks, as a boot loader
//! would; a guest reboot ends qemu (`-no-reboot`).
//!
//! Updates come without a network: a second, read-only virtio disk holds
//! the composing repository (`repo/`) and `origin`, the host path it had
//! when `treectl install --from-repo` recorded it as the origin. The
//! driver mounts the repository at that path, so `treectl upgrade` finds
//! its origin as on the build host.
//!
//! The driver (`DRIVE` below, run by a unit after multi-user.target and
//! `treectl-boot-ok.service`) prints a report between `TREECTL-VM-BEGIN`
//! and `TREECTL-VM-END` on the serial console: the release (a file of the
//! test's release component), `/etc/motd`, `/var/lib/app/data`, whether
//! `treectl boot-ok` ran, the boot entries and `treectl status --json`.
//! Then it does what the harness, as the boot loader, put on the kernel
//! command line (`treectl_vm_do=`: `upgrade-stage`, `rollback`, `upgrade`
//! or `nothing`), reports `treectl status --json` again and reboots or
//! powers off (`treectl_vm_then=`).
//!
//! The journey: v1 changes `/etc/motd`, writes `/var/lib/app/data` and
//! stages v2 (`upgrade --stage`). Four shutdowns in a row have their
//! power cut (qemu killed) while `finalize-staged` runs, at each of its
//! steps in turn (the failpoints `finalize-etc`, `finalize-exchanged`,
//! `finalize-before-swap`, `finalize-after-swap` in their `stop` form,
//! set by the driver through a runtime drop-in: the harness kills qemu
//! when the console says the point is reached): until the swap v1 boots
//! with v2 still staged, after it v2 boots and nothing is staged. v2
//! comes up with both local changes, `boot-ok` drops its entry's counter, and `rollback` plus a
//! reboot brings v1 back with v2 as the rollback deployment, where
//! `upgrade` finds nothing to do. Then v3, whose health check fails
//! (boot-complete.target fails, so `boot-ok` never runs), is deployed by
//! `upgrade`; it boots three times, each attempt counted by prepare-root
//! (`+3-0` → `+2-1` → `+1-2` → `+0-3`), and the fourth boot starts v1, the
//! last good entry: `status` reports the fallback and `upgrade` does not
//! take v3 again. Then v4, the fix, is staged, but its deployment is lost
//! before the shutdown: `finalize-staged` fails, the machine boots v1,
//! `treectl-finalize-failed.service` fails loudly and `status` reports
//! the failure; `upgrade` deploys v4, which boots and is marked good.
//!
//! Needs root, bwrap, qemu-system-x86_64, mkfs.ext4, debugfs, apt's
//! package lists and the archive; says why it skips, and does not skip
//! under CI=true.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use treectl_e2e::vm::{self, Disk};
use treectl_e2e::{require_root, require_that, require_tools, treectl_in};

const UUID: &str = "0d6c3a8e-2f41-4b7a-9c55-7e1b2a9f4c30";
const UPDATES_UUID: &str = "8a1e3f0c-5d2b-4e69-b7a4-3c9d0e6f1a25";

/// Every boot is killed after this long (one takes about 15 s here).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the driver once multi-user.target is reached and `boot-ok` had
/// its chance.
const DRIVE_UNIT: &str = "\
[Unit]
Description=Drive the treectl VM journey one boot at a time
After=multi-user.target treectl-boot-ok.service

[Service]
Type=oneshot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
ExecStart=/usr/lib/treectl-vm/drive

[Install]
WantedBy=multi-user.target
";

/// The release's own health check, required by boot-complete.target: it
/// fails in a release whose name ends in `-broken`, so that
/// boot-complete.target fails and `treectl boot-ok` never runs.
const HEALTH_UNIT: &str = "\
[Unit]
Description=Check the treectl VM journey's release is healthy
Before=boot-complete.target

[Service]
Type=oneshot
ExecStart=/usr/lib/treectl-vm/health

[Install]
RequiredBy=boot-complete.target
";

const HEALTH: &str = r#"#!/bin/sh
case "$(cat /usr/lib/treectl-vm/release)" in
*-broken) echo "release $(cat /usr/lib/treectl-vm/release) is broken" >&2; exit 1 ;;
esac
"#;

const DRIVE: &str = r#"#!/bin/sh
# tests/tests/vm_journey.rs: report, do what treectl_vm_do= asks, report
# the status again, then reboot or power off as treectl_vm_then= says.
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
action=$(arg treectl_vm_do)
then=$(arg treectl_vm_then)
# The update disk: the repository at the path the origin names.
mkdir -p /run/treectl-vm/updates
mount -o ro /dev/vdb /run/treectl-vm/updates
origin=$(cat /run/treectl-vm/updates/origin)
mkdir -p "$origin" && mount --bind /run/treectl-vm/updates/repo "$origin"
ran=$(systemctl show -P ExecMainExitTimestampMonotonic treectl-boot-ok.service)
echo TREECTL-VM-BEGIN
echo "release: $(cat /usr/lib/treectl-vm/release)"
echo "motd: $(head -n1 /etc/motd 2>/dev/null)"
echo "app-data: $(cat /var/lib/app/data 2>/dev/null)"
if [ "${ran:-0}" != 0 ]; then
    echo "boot-ok: ran, exit $(systemctl show -P ExecMainStatus treectl-boot-ok.service)"
else
    echo "boot-ok: not run"
fi
echo "entries: $(ls /sysroot/boot/loader/entries | tr '\n' ' ')"
echo "status: $(treectl status --json | tr -d '\n')"
echo "finalize-failed-unit: $(systemctl is-failed treectl-finalize-failed.service)"
case "$action" in
upgrade-stage)
    echo "changed on the machine" >/etc/motd
    mkdir -p /var/lib/app && echo "written by v1" >/var/lib/app/data
    out=$(treectl upgrade --stage 2>&1); code=$? ;;
stage-break)
    # Staged, then its deployment lost before shutdown: finalize fails.
    out=$(treectl upgrade --stage 2>&1); code=$?
    staged=$(treectl status --json | sed -n 's/^ *"path": "\(.*\)",$/\1/p' | head -n1)
    rm -rf "$staged" ;;
rollback)
    out=$(treectl rollback 2>&1); code=$? ;;
upgrade)
    out=$(treectl upgrade 2>&1); code=$? ;;
*)
    out=; code=0 ;;
esac
echo "do: $action"
echo "do-exit: $code"
echo "do-output: $(echo "$out" | tr '\n' ' ')"
echo "after: $(treectl status --json | tr -d '\n')"
echo TREECTL-VM-END
umount "$origin" /run/treectl-vm/updates
pause=$(arg treectl_vm_pause)
if [ -n "$pause" ]; then
    # finalize-staged stops at that point at shutdown and says so on the
    # console, where the harness cuts the power.
    d=/run/systemd/system/treectl-finalize-staged.service.d
    mkdir -p "$d"
    printf '[Service]\nEnvironment=TREECTL_FAILPOINT=%s:1:stop\nStandardError=tty\nTTYPath=/dev/ttyS0\n' "$pause" >"$d/pause.conf"
    systemctl daemon-reload
fi
systemctl --no-block "${then:-poweroff}"
"#;

/// Composes release `n` (`/usr/lib/treectl-vm/release` says `name`) into
/// `os/stable`, dated day `n` of 2030 so that each release orders after
/// the one before (a local origin has no serial: the commit time decides).
fn compose_release(os: &vm::Os, dir: &Path, n: u32, name: &str) -> String {
    let file = dir.join("usr/lib/treectl-vm/release");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, format!("{name}\n")).unwrap();
    os.add_dir(dir, "treectl-vm-release");
    os.set_timestamp(&format!("2030-01-{n:02}T00:00:00Z"));
    os.compose("os/stable");
    rev_parse(&os.repo, "os/stable")
}

/// One boot of the journey, logged to `console-N.log`.
struct Machine<'a> {
    dir: &'a Path,
    disks: Vec<Disk>,
    boots: usize,
    times: Vec<(String, Duration)>,
}

/// What one boot showed.
struct Seen {
    /// The entry the harness started.
    entry: String,
    /// The report between the markers.
    lines: Vec<String>,
}

impl Seen {
    fn field(&self, key: &str) -> String {
        vm::Boot::field(&self.lines, key).unwrap_or_else(|| panic!("no {key}: {:?}", self.lines))
    }
    fn json(&self, key: &str) -> Value {
        serde_json::from_str(&self.field(key)).unwrap_or_else(|e| panic!("{key}: {e}"))
    }
}

impl Machine<'_> {
    /// Boots the default entry with `treectl_vm_do=action
    /// treectl_vm_then=then`; checks the guest got to the end of its report
    /// and qemu ended (a reboot or power-off).
    fn boot(&mut self, action: &str, then: &str) -> Seen {
        self.boot_until(action, then, None)
    }

    /// [`Machine::boot`]; with `pause`, `finalize-staged` stops at that
    /// failpoint during the shutdown and the harness cuts the power there.
    fn boot_until(&mut self, action: &str, then: &str, pause: Option<&str>) -> Seen {
        self.boots += 1;
        let log = self.dir.join(format!("console-{}.log", self.boots));
        let marker = pause.map(|p| format!("treectl: stopped at failpoint {p}"));
        let (entry, names, boot) = vm::boot_image_until(
            &self.disks,
            &self.dir.join("loader"),
            // No unit status lines amid the report, and no getty on the
            // console, whose hangup would cut the report short.
            &format!(
                "systemd.show_status=false systemd.getty_auto=0 \
                 treectl_vm_do={action} treectl_vm_then={then}{}",
                pause
                    .map(|p| format!(" treectl_vm_pause={p}"))
                    .unwrap_or_default()
            ),
            &log,
            BOOT_TIMEOUT,
            marker.as_deref(),
        );
        eprintln!(
            "boot {} ({action}, then {then}): {} of {names:?} in {:.1?}",
            self.boots, entry.file_name, boot.elapsed
        );
        self.times
            .push((format!("{} {action}", self.boots), boot.elapsed));
        let lines = boot.report();
        if pause.is_some() {
            assert!(
                boot.powered_off,
                "boot {}: finalize-staged did not reach {pause:?} within {BOOT_TIMEOUT:?}:\n{}",
                self.boots,
                boot.tail(60)
            );
        } else {
            assert!(
                boot.exited.is_some(),
                "boot {}: the VM did not {then} within {BOOT_TIMEOUT:?}:\n{}",
                self.boots,
                boot.tail(60)
            );
        }
        Seen {
            entry: entry.file_name.clone(),
            lines,
        }
    }
}

/// The deployments of a `status --json`, as (commit, boot entry state or
/// "-" for the staged one) in the list's order.
fn deployments(status: &Value) -> Vec<(String, bool, String)> {
    status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["commit"].as_str().unwrap().to_owned(),
                d["staged"] == true,
                d["boot_entry"]["state"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

/// The commit of the booted deployment.
fn booted_commit(status: &Value) -> String {
    let d = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["booted"] == true)
        .unwrap_or_else(|| panic!("nothing booted: {status}"));
    d["commit"].as_str().unwrap().to_owned()
}

fn rev_parse(repo: &Path, rev: &str) -> String {
    treectl_in(repo, ["rev-parse", rev]).ok().trim().to_owned()
}

#[test]
fn a_machine_upgrades_rolls_back_and_falls_back_across_reboots_in_qemu() {
    let why = "to take a composed system through reboots in a VM";
    let tools = ["bwrap", vm::QEMU, "mkfs.ext4", "debugfs", "strip"];
    if !require_root(why) || !require_tools(&tools, why) {
        return;
    }
    let started = Instant::now();
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let updates = t.path().join("updates");
    std::fs::create_dir_all(&updates).unwrap();
    let repo = updates.join("repo");
    let os = match vm::Os::lock(&repo, &t.path().join("os.lock")) {
        Ok(os) => os,
        Err(needs) => {
            require_that(false, &needs, why);
            return;
        }
    };
    let dist = vm::workspace().join("dist");
    let unit = |name: &str| std::fs::read_to_string(dist.join(name)).unwrap();
    let (boot_ok, finalize, finalize_failed) = (
        unit("treectl-boot-ok.service"),
        unit("treectl-finalize-staged.service"),
        unit("treectl-finalize-failed.service"),
    );
    let guest = t.path().join("guest");
    vm::guest_component(
        &guest,
        &[
            ("treectl-boot-ok.service", &boot_ok),
            ("treectl-finalize-staged.service", &finalize),
            ("treectl-finalize-failed.service", &finalize_failed),
            ("treectl-vm-drive.service", DRIVE_UNIT),
        ],
        &[("drive", DRIVE), ("health", HEALTH)],
    );
    let units = guest.join("usr/lib/systemd/system");
    std::fs::write(units.join("treectl-vm-health.service"), HEALTH_UNIT).unwrap();
    let requires = units.join("boot-complete.target.requires");
    std::fs::create_dir_all(&requires).unwrap();
    std::os::unix::fs::symlink(
        "../treectl-vm-health.service",
        requires.join("treectl-vm-health.service"),
    )
    .unwrap();
    os.add_dir(&guest, "treectl-vm-guest");
    let release = t.path().join("release");
    let v1 = compose_release(&os, &release, 1, "v1");
    let composed = started.elapsed();

    let sysroot = t.path().join("sysroot");
    os.install(&sysroot, "os/stable", UUID);
    let disk = t.path().join("disk.img");
    vm::make_disk(&sysroot, &disk, UUID, "4G");
    std::fs::remove_dir_all(&sysroot).unwrap();

    let v2 = compose_release(&os, &release, 2, "v2");
    assert_ne!(v1, v2);
    let origin = std::fs::canonicalize(&repo).unwrap();
    std::fs::write(updates.join("origin"), origin.to_str().unwrap()).unwrap();
    let update_disk = t.path().join("updates.img");
    vm::make_disk(
        &updates,
        &update_disk,
        "8a1e3f0c-5d2b-4e69-b7a4-3c9d0e6f1a25",
        "3G",
    );
    let mut m = Machine {
        dir: t.path(),
        disks: vec![
            Disk {
                image: disk.clone(),
                read_only: false,
            },
            Disk {
                image: update_disk.clone(),
                read_only: true,
            },
        ],
        boots: 0,
        times: Vec::new(),
    };

    // Boot 1: v1, marked good; local changes, then v2 staged. The power is
    // cut while finalize-staged runs at shutdown.
    let seen = m.boot_until("upgrade-stage", "reboot", Some("finalize-etc"));
    assert_eq!(seen.field("release"), "v1");
    assert_eq!(seen.field("boot-ok"), "ran, exit 0");
    let status = seen.json("status");
    assert_eq!(booted_commit(&status), v1);
    assert_eq!(deployments(&status), [(v1.clone(), false, "good".into())]);
    assert_eq!(seen.field("do-exit"), "0", "{:?}", seen.lines);
    let after = seen.json("after");
    assert_eq!(
        deployments(&after),
        [
            (v2.clone(), true, "-".into()),
            (v1.clone(), false, "good".into())
        ],
        "{after}"
    );

    // Boots 2 to 4: each power cut came before the swap: v1 boots, v2 is
    // still staged, and the next shutdown is cut at the next step.
    for (cut, next) in [
        ("finalize-etc", "finalize-exchanged"),
        ("finalize-exchanged", "finalize-before-swap"),
        ("finalize-before-swap", "finalize-after-swap"),
    ] {
        let seen = m.boot_until("nothing", "reboot", Some(next));
        assert!(
            seen.entry.contains(&v1[..12]),
            "cut at {cut}: {}",
            seen.entry
        );
        assert_eq!(seen.field("release"), "v1", "cut at {cut}");
        let status = seen.json("status");
        assert_eq!(booted_commit(&status), v1, "cut at {cut}");
        assert_eq!(
            deployments(&status),
            [
                (v2.clone(), true, "-".into()),
                (v1.clone(), false, "good".into())
            ],
            "cut at {cut}: {status}"
        );
        assert!(status["finalize_failure"].is_null(), "{status}");
    }

    // Boot 5: the last cut came after the swap: v2 is the default, nothing
    // is staged, with the machine's /etc and /var; then back to v1.
    let seen = m.boot("rollback", "reboot");
    assert!(
        seen.entry.contains(&v2[..12]) && seen.entry.contains("+3-0"),
        "{}",
        seen.entry
    );
    assert_eq!(seen.field("release"), "v2");
    assert_eq!(seen.field("motd"), "changed on the machine");
    assert_eq!(seen.field("app-data"), "written by v1");
    assert_eq!(seen.field("boot-ok"), "ran, exit 0");
    let status = seen.json("status");
    assert_eq!(booted_commit(&status), v2);
    let both_good = |first: &str, second: &str| {
        vec![
            (first.to_owned(), false, "good".to_owned()),
            (second.to_owned(), false, "good".to_owned()),
        ]
    };
    assert_eq!(deployments(&status), both_good(&v2, &v1), "{status}");
    assert!(
        !seen.field("entries").contains('+'),
        "every entry good: {}",
        seen.field("entries")
    );
    assert_eq!(seen.field("do-exit"), "0", "{:?}", seen.lines);
    assert_eq!(deployments(&seen.json("after")), both_good(&v1, &v2));

    // Boot 6: v1 again, v2 the rollback deployment; upgrade finds v2, the
    // release the machine rolled back from, and does nothing.
    let seen = m.boot("upgrade", "poweroff");
    assert!(seen.entry.contains(&v1[..12]), "{}", seen.entry);
    assert_eq!(seen.field("release"), "v1");
    assert_eq!(seen.field("motd"), "changed on the machine");
    assert_eq!(seen.field("app-data"), "written by v1");
    let status = seen.json("status");
    assert_eq!(booted_commit(&status), v1);
    assert_eq!(deployments(&status), both_good(&v1, &v2), "{status}");
    assert_eq!(status["deployments"][1]["rollback"], true, "{status}");
    assert_eq!(seen.field("do-exit"), "0", "{:?}", seen.lines);
    let said = seen.field("do-output");
    assert!(said.contains("rolled back from"), "{said}");
    assert_eq!(deployments(&seen.json("after")), both_good(&v1, &v2));

    // v3 never completes its boot: boot-complete.target fails.
    let v3 = compose_release(&os, &release, 3, "v3-broken");
    vm::make_disk(&updates, &update_disk, UPDATES_UUID, "3G");

    // Boot 7: v1 upgrades to v3, a newer release than the one it rolled
    // back from.
    let seen = m.boot("upgrade", "reboot");
    assert!(seen.entry.contains(&v1[..12]), "{}", seen.entry);
    assert_eq!(seen.field("do-exit"), "0", "{:?}", seen.lines);
    let after = seen.json("after");
    let list = deployments(&after);
    assert_eq!(
        list[0],
        (v3.clone(), false, "indeterminate".into()),
        "{after}"
    );
    assert_eq!(list[1], (v1.clone(), false, "good".into()), "{after}");

    // Boots 8 to 10: v3, each attempt counted by prepare-root, never good.
    for (tries, counted) in [("+3-0", "+2-1"), ("+2-1", "+1-2"), ("+1-2", "+0-3")] {
        let seen = m.boot("nothing", "reboot");
        assert!(
            seen.entry.contains(&v3[..12]) && seen.entry.ends_with(&format!("{tries}.conf")),
            "{}",
            seen.entry
        );
        assert_eq!(seen.field("release"), "v3-broken");
        assert_eq!(seen.field("boot-ok"), "not run");
        assert!(
            seen.field("entries").contains(counted),
            "{}",
            seen.field("entries")
        );
        assert_eq!(booted_commit(&seen.json("status")), v3);
    }

    // Boot 11: the boot loader passes over the bad entry and starts v1, the
    // last good one; status says the machine fell back, and upgrade does
    // not take v3 again.
    let seen = m.boot("upgrade", "poweroff");
    assert!(seen.entry.contains(&v1[..12]), "{}", seen.entry);
    assert_eq!(seen.field("release"), "v1");
    assert_eq!(seen.field("boot-ok"), "ran, exit 0");
    let status = seen.json("status");
    assert_eq!(booted_commit(&status), v1);
    let fallback = &status["fallback"];
    assert_eq!(fallback["attempts"], 3, "{status}");
    assert!(
        fallback["failed"].as_str().unwrap().contains(&v3),
        "{status}"
    );
    assert!(
        fallback["booted"].as_str().unwrap().contains(&v1),
        "{status}"
    );
    let list = deployments(&status);
    assert_eq!(list[0], (v3.clone(), false, "bad".into()), "{status}");
    assert_eq!(status["deployments"][0]["failed"], true, "{status}");
    assert_eq!(seen.field("do-exit"), "0", "{:?}", seen.lines);
    let said = seen.field("do-output");
    assert!(said.contains("fell back"), "{said}");
    assert_eq!(deployments(&seen.json("after")), list);

    // v4 fixes v3. Boot 12: v1 stages it, and the staged deployment is
    // lost before shutdown: finalize-staged fails, the machine keeps v1.
    let v4 = compose_release(&os, &release, 4, "v4");
    vm::make_disk(&updates, &update_disk, UPDATES_UUID, "3G");
    let seen = m.boot("stage-break", "reboot");
    assert!(seen.entry.contains(&v1[..12]), "{}", seen.entry);
    assert_eq!(seen.field("do-exit"), "0", "{:?}", seen.lines);
    let after = seen.json("after");
    assert_eq!(
        deployments(&after)[0],
        (v4.clone(), true, "-".into()),
        "{after}"
    );

    // Boot 13: still v1; the failure is reported loudly, by its unit and by
    // status. Then upgrade deploys v4.
    let seen = m.boot("upgrade", "reboot");
    assert!(seen.entry.contains(&v1[..12]), "{}", seen.entry);
    assert_eq!(seen.field("release"), "v1");
    assert_eq!(
        seen.field("finalize-failed-unit"),
        "failed",
        "{:?}",
        seen.lines
    );
    let status = seen.json("status");
    assert_eq!(booted_commit(&status), v1);
    assert_eq!(
        status["finalize_failure"]["commit"],
        v4.as_str(),
        "{status}"
    );
    assert!(
        deployments(&status).iter().all(|d| !d.1),
        "nothing staged: {status}"
    );
    assert_eq!(seen.field("do-exit"), "0", "{:?}", seen.lines);
    let after = seen.json("after");
    assert_eq!(
        deployments(&after)[0],
        (v4.clone(), false, "indeterminate".into()),
        "{after}"
    );
    assert!(after["finalize_failure"].is_null(), "{after}");

    // Boot 14: v4 boots, is marked good, and nothing is left failed.
    let seen = m.boot("nothing", "poweroff");
    assert!(
        seen.entry.contains(&v4[..12]) && seen.entry.contains("+3-0"),
        "{}",
        seen.entry
    );
    assert_eq!(seen.field("release"), "v4");
    assert_eq!(seen.field("boot-ok"), "ran, exit 0");
    assert_eq!(seen.field("finalize-failed-unit"), "inactive");
    let status = seen.json("status");
    assert_eq!(booted_commit(&status), v4);
    assert_eq!(
        deployments(&status)[0],
        (v4.clone(), false, "good".into()),
        "{status}"
    );
    assert!(status["fallback"].is_null(), "{status}");

    for (what, took) in &m.times {
        eprintln!("boot {what}: {took:.1?}");
    }
    eprintln!(
        "compose v1 {composed:.1?}; whole test {:.1?}",
        started.elapsed()
    );
}

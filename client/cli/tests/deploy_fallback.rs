//! After the boot loader fell back (the default's entry ran out of tries
//! and the rollback deployment booted), `status` says so and `upgrade`
//! does not deploy the failed release again until a newer one is
//! published (docs/deployments.md, "Automatic fallback").

mod deploy_support;

use std::fs;

use deploy_support::*;

/// Renames the live entry of the deployment `<commit>.0` to carry
/// `counter` (`+0-3`), as the boot loader would after failed attempts.
fn set_counter(w: &World, commit: &str, counter: &str) {
    let dir = w.sysroot().join("boot/loader/entries");
    let short = &commit[..12];
    let name = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.contains(&format!("-{short}.0")))
        .unwrap_or_else(|| panic!("no entry for {short}"));
    let stem = name.strip_suffix(".conf").unwrap();
    let stem = stem.rsplit_once('+').map_or(stem, |(s, _)| s);
    fs::rename(dir.join(&name), dir.join(format!("{stem}{counter}.conf"))).unwrap();
}

#[test]
fn status_and_upgrade_after_the_boot_loader_fell_back() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    w.install();
    let v2 = w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["commit"], v2.as_str());

    // v2 failed three times; the boot loader started v1.
    set_counter(&w, &v2, "+0-3");
    let booted = format!("/treectl/deploy/os/{v1}.0");
    let failed = format!("/treectl/deploy/os/{v2}.0");
    let sr = w.sr();
    let as_booted = |args: &[&str]| cmd(args).env("TREECTL_BOOTED", &booted);

    let text = as_booted(&["status", "--sysroot", &sr]).ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0], "booted the rollback deployment because the default failed 3 times",
        "{text}"
    );
    let v2_line = lines.iter().find(|l| l.contains(&v2[..12])).unwrap();
    assert!(v2_line.ends_with("[default bad failed]"), "{text}");
    let v1_line = lines.iter().find(|l| l.contains(&v1[..12])).unwrap();
    assert!(
        v1_line.starts_with('*') && v1_line.ends_with("[rollback booted fallback]"),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&as_booted(&["status", "--sysroot", &sr, "--json"]).ok()).unwrap();
    assert_eq!(
        json["fallback"],
        serde_json::json!({"failed": failed, "attempts": 3, "booted": booted}),
        "{json}"
    );
    assert_eq!(json["deployments"][0]["failed"], true);
    assert_eq!(json["deployments"][1]["failed"], false);

    // Nothing booted (an image being built): no fallback to speak of.
    let json = w.status();
    assert!(json["fallback"].is_null(), "{json}");
    assert_eq!(json["deployments"][0]["failed"], false);
    assert!(!cmd(&["status", "--sysroot", &sr])
        .ok()
        .contains("booted the"));

    // The same release again: nothing to do, as after a rollback.
    let before = w.listed();
    let check = as_booted(&["upgrade", "--check", "--sysroot", &sr]).run();
    assert_eq!(check.status.code(), Some(0), "no update: {}", check.stdout);
    let out = as_booted(&["upgrade", "--sysroot", &sr]).ok();
    assert!(out.contains("fell back from"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&as_booted(&["upgrade", "--sysroot", &sr, "--json"]).ok()).unwrap();
    assert_eq!(json["decision"]["decision"], "rolled-back-from", "{json}");
    assert_eq!(json["fallback"]["failed"], failed.as_str(), "{json}");
    assert_eq!(w.listed(), before, "nothing deployed");

    // A newer release is accepted.
    let v3 = w.release("3", 1_700_300_000);
    let check = as_booted(&["upgrade", "--check", "--sysroot", &sr]).run();
    assert_eq!(check.status.code(), Some(10), "{}", check.stdout);
    as_booted(&["upgrade", "--sysroot", &sr]).ok();
    let listed = w.listed();
    assert_eq!(listed[0]["commit"], v3.as_str());
    // The new default is not bad: the fallback is over.
    let json: serde_json::Value =
        serde_json::from_str(&as_booted(&["status", "--sysroot", &sr, "--json"]).ok()).unwrap();
    assert!(json["fallback"].is_null(), "{json}");
}

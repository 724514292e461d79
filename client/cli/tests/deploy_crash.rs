//! Acceptance 3 of issue 7: deploy, stage and finalize killed (SIGKILL) at
//! failpoints and at timed moments, at least 30 times. After each kill
//! exactly one default boot entry exists (the newest version, the one the
//! boot loader's order starts), it points at a complete
//! deployment that equals its commit, the default is the old or the new
//! one, and the next command succeeds.

mod deploy_support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use deploy_support::*;

/// The live boot entries: exactly one default; returns its deployment
/// path (`treectl=` value) after checking the deployment is complete.
fn check_invariants(w: &World, context: &str) -> String {
    let loader = w.sysroot().join("boot/loader");
    let target = fs::read_link(&loader).unwrap_or_else(|e| panic!("{context}: boot/loader: {e}"));
    let dir = w.sysroot().join("boot").join(target).join("entries");
    let mut versions = vec![];
    for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{context}: {}: {e}", dir.display())) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(e.path()).unwrap();
        let version: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("version "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{context}: {name} has no version"));
        let karg = text
            .lines()
            .find_map(|l| l.strip_prefix("options "))
            .and_then(|o| {
                o.split_whitespace()
                    .find_map(|a| a.strip_prefix("treectl="))
            })
            .unwrap_or_else(|| panic!("{context}: {name} has no treectl="))
            .to_owned();
        versions.push((version, name, karg));
    }
    versions.sort();
    let max = versions
        .last()
        .unwrap_or_else(|| panic!("{context}: no boot entries"))
        .0;
    let defaults: Vec<_> = versions.iter().filter(|v| v.0 == max).collect();
    assert_eq!(
        defaults.len(),
        1,
        "{context}: one default entry: {versions:?}"
    );
    let default = defaults[0];
    assert!(
        default.1.starts_with(&format!("treectl-os-{max}-")),
        "{context}: {default:?}"
    );
    // The boot loader's order agrees: it starts the newest entry.
    let menu = treectl_sysroot::boot::BootMenu::read_dir(&dir).unwrap();
    assert_eq!(
        menu.default_entry().map(|e| &e.file_name),
        Some(&default.1),
        "{context}: the boot loader's default"
    );
    let names: BTreeSet<_> = versions.iter().map(|v| v.0).collect();
    assert_eq!(names.len(), versions.len(), "{context}: versions unique");
    // Every entry points at a complete deployment equal to its commit.
    for (_, name, karg) in &versions {
        let path = w.sysroot().join(karg.trim_start_matches('/'));
        assert!(
            path.is_dir(),
            "{context}: {name} points at missing {}",
            path.display()
        );
        let id = path.file_name().unwrap().to_string_lossy().into_owned();
        let commit = id.split('.').next().unwrap();
        let diffs = deployment_differences(&w.sysroot_repo(), commit, &path);
        assert_eq!(diffs, Vec::<String>::new(), "{context}: {name} incomplete");
        assert!(
            path.join("etc/hostname").is_file(),
            "{context}: {name} has no /etc"
        );
    }
    default.2.clone()
}

fn killed(out: &treectl_e2e::Outcome) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9)
}

#[test]
fn kills_during_deploy_stage_and_finalize() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    w.install();
    let v2 = w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--download-only", "--sysroot", &w.sr()]).ok();
    let commits = [v1.clone(), v2.clone()];
    let mut kills = 0;
    let mut round = 0usize;

    // (command, failpoint): the command is run killed, then again whole.
    let deploy_points = [
        "before-refs:1",
        "after-refs:1",
        "deploy-checkout:1",
        "deploy-before-rename:1",
        "deploy-before-swap:1",
        "deploy-after-swap:1",
    ];
    let stage_points = [
        "after-refs:1",
        "deploy-checkout:1",
        "deploy-before-rename:1",
        "stage-written:1",
    ];
    let finalize_points = [
        "finalize-etc:1",
        "finalize-exchanged:1",
        "finalize-before-swap:1",
        "finalize-after-swap:1",
    ];
    for repeat in 0..2 {
        for fp in deploy_points {
            let target = &commits[round % 2];
            round += 1;
            let before = check_invariants(&w, "before");
            let out = cmd(&["deploy", "--sysroot", &w.sr(), target])
                .env("TREECTL_FAILPOINT", fp)
                .run();
            assert!(killed(&out), "deploy at {fp} was not killed");
            kills += 1;
            let after = check_invariants(&w, &format!("deploy killed at {fp}"));
            assert!(
                after == before || after.contains(target.as_str()),
                "{fp}: default is neither old nor new: {after}"
            );
            cmd(&["deploy", "--sysroot", &w.sr(), target]).ok();
            check_invariants(&w, &format!("deploy after {fp}"));
        }
        for fp in stage_points {
            let target = &commits[round % 2];
            round += 1;
            let before = check_invariants(&w, "before");
            let out = cmd(&["deploy", "--stage", "--sysroot", &w.sr(), target])
                .env("TREECTL_FAILPOINT", fp)
                .run();
            assert!(killed(&out), "stage at {fp} was not killed");
            kills += 1;
            assert_eq!(
                check_invariants(&w, &format!("stage killed at {fp}")),
                before
            );
            cmd(&["deploy", "--stage", "--sysroot", &w.sr(), target]).ok();
            cmd(&["finalize-staged", "--sysroot", &w.sr()]).ok();
            let after = check_invariants(&w, &format!("finalize after stage {fp}"));
            assert!(after.contains(target.as_str()));
        }
        for fp in finalize_points {
            let target = &commits[round % 2];
            round += 1;
            cmd(&["deploy", "--stage", "--sysroot", &w.sr(), target]).ok();
            let before = check_invariants(&w, "before");
            let out = cmd(&["finalize-staged", "--sysroot", &w.sr()])
                .env("TREECTL_FAILPOINT", fp)
                .run();
            assert!(killed(&out), "finalize at {fp} was not killed");
            kills += 1;
            let after = check_invariants(&w, &format!("finalize killed at {fp}"));
            assert!(after == before || after.contains(target.as_str()));
            // status agrees: staged until the swap, the default after it.
            let st = w.status();
            let staged: Vec<_> = st["deployments"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["staged"] == true)
                .map(|d| d["commit"].as_str().unwrap().to_owned())
                .collect();
            if after.contains(target.as_str()) {
                assert_eq!(staged, Vec::<String>::new(), "{fp}: swapped in: {st}");
                assert_eq!(st["deployments"][0]["commit"], target.as_str(), "{fp}");
            } else {
                assert_eq!(staged, vec![target.to_string()], "{fp}: still staged: {st}");
            }
            let out = cmd(&["finalize-staged", "--sysroot", &w.sr()]).ok();
            assert!(out.contains("finalized"), "{out}");
            let after = check_invariants(&w, &format!("finalize after {fp}"));
            assert!(
                after.contains(target.as_str()),
                "{fp}: staged one is the default"
            );
            assert!(!w.sysroot().join("treectl/staged.json").exists());
        }
        if repeat == 0 {
            cmd(&["cleanup", "--sysroot", &w.sr()]).ok();
        }
    }

    // Timed kills at varied moments of deploy, stage and finalize.
    let delays_ms = [0u64, 1, 2, 3, 5, 7, 10, 14, 20, 30];
    for (i, delay) in delays_ms.iter().enumerate() {
        for kind in ["deploy", "stage", "finalize"] {
            let target = &commits[round % 2];
            round += 1;
            if kind == "finalize" {
                cmd(&["deploy", "--stage", "--sysroot", &w.sr(), target]).ok();
            }
            let before = check_invariants(&w, "before");
            let sr = w.sr();
            let args: Vec<&str> = match kind {
                "deploy" => vec!["deploy", "--sysroot", &sr, target],
                "stage" => vec!["deploy", "--stage", "--sysroot", &sr, target],
                _ => vec!["finalize-staged", "--sysroot", &sr],
            };
            let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
            let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut child = cmd(&arg_refs)
                .command()
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(*delay + (i as u64 % 3)));
            let _ = child.kill();
            let status = child.wait().unwrap();
            use std::os::unix::process::ExitStatusExt;
            if status.signal() == Some(9) {
                kills += 1;
            }
            let context = format!("{kind} killed after {delay} ms");
            let after = check_invariants(&w, &context);
            assert!(
                after == before || after.contains(target.as_str()),
                "{context}"
            );
            // The next command succeeds.
            let next: Vec<&str> = match kind {
                "finalize" => vec!["finalize-staged", "--sysroot", &args[2]],
                _ => arg_refs.clone(),
            };
            cmd(&next).ok();
            if kind == "stage" {
                cmd(&["finalize-staged", "--sysroot", &w.sr()]).ok();
            }
            check_invariants(&w, &format!("after {context}"));
        }
        if i % 4 == 3 {
            cmd(&["cleanup", "--sysroot", &w.sr()]).ok();
        }
    }
    assert!(kills >= 30, "only {kills} kills");
    // Nothing half-written is left once a command has run.
    cmd(&["cleanup", "--sysroot", &w.sr()]).ok();
    let leftovers: Vec<_> = fs::read_dir(w.sysroot().join("treectl/deploy/os"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    assert!(!Path::new(&w.sysroot().join("boot/loader.tmp")).exists());
    cmd(&["--repo", w.sysroot_repo().to_str().unwrap(), "fsck"]).ok();
}

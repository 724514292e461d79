//! A `finalize-staged` that fails at shutdown: the machine keeps its
//! default, the failure is recorded, `status` and `finalize-staged
//! --check` (treectl-finalize-failed.service on the next boot) report it,
//! and the next successful stage clears it (docs/deployments.md,
//! "Staging").

mod deploy_support;

use std::fs;

use deploy_support::*;

#[test]
fn a_failed_finalize_keeps_the_default_and_is_reported_until_the_next_stage() {
    let w = World::new();
    let v1 = w.release("1", 1_700_000_000);
    w.install();
    let v2 = w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--stage", "--sysroot", &w.sr()]).ok();
    let check = cmd(&["finalize-staged", "--check", "--sysroot", &w.sr()]).ok();
    assert!(check.contains("did not fail"), "{check}");

    // The staged deployment is gone by shutdown (a disk error, a user's
    // rm): finalize cannot merge /etc into it.
    let staged = w.sysroot().join(format!("treectl/deploy/os/{v2}.0"));
    assert!(staged.is_dir());
    fs::remove_dir_all(&staged).unwrap();
    let err = cmd(&["finalize-staged", "--sysroot", &w.sr()]).fails();
    assert!(err.contains(&format!("{v2}.0")), "{err}");

    let st = w.status();
    assert_eq!(w.listed().len(), 1, "{st}");
    assert_eq!(st["deployments"][0]["commit"], v1.as_str(), "{st}");
    assert!(
        st["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["staged"] == false),
        "the failed deployment is no longer staged: {st}"
    );
    let failure = &st["finalize_failure"];
    assert_eq!(failure["version"], 1, "{st}");
    assert_eq!(failure["deployment"], format!("{v2}.0"), "{st}");
    assert_eq!(failure["commit"], v2.as_str(), "{st}");
    assert!(failure["time"].as_i64().unwrap() > 1_700_000_000, "{st}");
    assert!(!failure["error"].as_str().unwrap().is_empty(), "{st}");

    let text = cmd(&["status", "--sysroot", &w.sr()]).ok();
    assert!(
        text.lines().next().unwrap().starts_with(&format!(
            "the staged deployment {v2}.0 failed to finalize at shutdown"
        )),
        "{text}"
    );
    let out = cmd(&["finalize-staged", "--check", "--sysroot", &w.sr()]).run();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("failed to finalize"), "{}", out.stderr);
    // Nothing staged now: a second finalize has nothing to do.
    let again = cmd(&["finalize-staged", "--sysroot", &w.sr()]).ok();
    assert!(again.contains("nothing staged"), "{again}");

    // Staged again, finalized: the failure is answered.
    cmd(&["upgrade", "--stage", "--sysroot", &w.sr()]).ok();
    assert!(w.status()["finalize_failure"].is_null());
    cmd(&["finalize-staged", "--sysroot", &w.sr()]).ok();
    let st = w.status();
    assert_eq!(st["deployments"][0]["commit"], v2.as_str(), "{st}");
    assert!(st["finalize_failure"].is_null(), "{st}");
    cmd(&["finalize-staged", "--check", "--sysroot", &w.sr()]).ok();
}

#[test]
fn staged_json_carries_its_format_version() {
    let w = World::new();
    w.release("1", 1_700_000_000);
    w.install();
    let v2 = w.release("2", 1_700_100_000);
    cmd(&["upgrade", "--stage", "--sysroot", &w.sr()]).ok();
    let path = w.sysroot().join("treectl/staged.json");
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["version"], 1);

    // Written before the field existed: format 1.
    json.as_object_mut().unwrap().remove("version");
    fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    assert_eq!(w.status()["deployments"][0]["commit"], v2.as_str());

    // From a newer treectl: refused, not misread.
    json["version"] = 2.into();
    fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = cmd(&["status", "--sysroot", &w.sr()]).fails();
    assert!(err.contains("format version 2"), "{err}");
    let err = cmd(&["finalize-staged", "--sysroot", &w.sr()]).fails();
    assert!(err.contains("format version 2"), "{err}");
}

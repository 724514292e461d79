//! A sysroot written by an earlier treectl stays usable: the deployment
//! list of format version 1 (`tests/fixtures/state-v1/`, as treectl wrote
//! it before deployments had kernel arguments, with its entries named the
//! way they were then and one counter already counted down by the boot
//! loader) is read, rewritten as version 2 with the counters kept, and a
//! newer format is refused.

use std::fs;
use std::path::Path;

use treectl_sysroot::rollback::set_pinned;
use treectl_sysroot::state::{live_menu, mark_boot_ok, read_state, STATE_VERSION};
use treectl_sysroot::status::status;
use treectl_sysroot::Sysroot;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-v1");
const D0: &str =
    "/treectl/deploy/os/3f5a9c1e2b7d0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293.0";
const D1: &str =
    "/treectl/deploy/os/9a8b7c6d5e4f30211f2e3d4c5b6a79881a2b3c4d5e6f708192a3b4c5d6e7f809.0";

/// A sysroot whose live generation 0 is the fixture.
fn old_sysroot(root: &Path) {
    let gen = root.join("boot/loader.0");
    fs::create_dir_all(gen.join("entries")).unwrap();
    fs::copy(
        Path::new(FIXTURE).join("treectl.json"),
        gen.join("treectl.json"),
    )
    .unwrap();
    for e in fs::read_dir(Path::new(FIXTURE).join("entries")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), gen.join("entries").join(e.file_name())).unwrap();
    }
    std::os::unix::fs::symlink("loader.0", root.join("boot/loader")).unwrap();
}

fn entry_names(sr: &Sysroot) -> Vec<String> {
    live_menu(sr)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.file_name)
        .collect()
}

#[test]
fn version_1_is_read_rewritten_as_version_2_and_keeps_its_counters() {
    let tmp = tempfile::tempdir().unwrap();
    old_sysroot(tmp.path());
    let sr = Sysroot::with_booted(tmp.path(), None);

    let state = read_state(&sr).unwrap();
    assert_eq!(state.version, STATE_VERSION);
    assert_eq!(state.deployments.len(), 2);
    assert!(state.deployments.iter().all(|d| d.kargs.is_empty()));
    assert!(state.deployments[1].pinned);
    assert_eq!(state.deployments[0].cmdline(), format!("treectl={D0}"));

    let st = status(&sr).unwrap();
    assert!(st.deployments[0].loader_default);
    let entry = st.deployments[0].boot_entry.as_ref().unwrap();
    assert_eq!(entry.state, "indeterminate");
    assert_eq!(entry.counter.unwrap().left, 2);
    assert_eq!(st.deployments[1].boot_entry.as_ref().unwrap().state, "good");

    // Any write rewrites the generation in the current format.
    set_pinned(&sr, 0, true).unwrap();
    assert_eq!(
        fs::read_link(tmp.path().join("boot/loader")).unwrap(),
        Path::new("loader.1")
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(tmp.path().join("boot/loader/treectl.json")).unwrap())
            .unwrap();
    assert_eq!(json["version"], STATE_VERSION);
    assert_eq!(json["deployments"][0]["kargs"], serde_json::json!([]));
    assert_eq!(
        entry_names(&sr),
        [
            "treectl-os-2-3f5a9c1e2b7d.0+2-1.conf",
            "treectl-os-1-9a8b7c6d5e4f.0.conf"
        ]
    );
    let menu = live_menu(&sr).unwrap();
    assert_eq!(menu.entries[0].cmdline(), format!("treectl={D0}"));
    assert_eq!(menu.entries[1].treectl_target().as_deref(), Some(D1));

    // Booted and marked good: the counter goes.
    let booted = Sysroot::with_booted(tmp.path(), Some(D0.to_owned()));
    assert!(mark_boot_ok(&booted).unwrap());
    assert_eq!(entry_names(&sr)[0], "treectl-os-2-3f5a9c1e2b7d.0.conf");
    assert!(!mark_boot_ok(&booted).unwrap(), "already good");
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    old_sysroot(tmp.path());
    let path = tmp.path().join("boot/loader.0/treectl.json");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"version\": 1,", "\"version\": 9,");
    fs::write(&path, text).unwrap();
    let err = read_state(&Sysroot::with_booted(tmp.path(), None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("format version 9 (this treectl reads 1 to 2)"),
        "{err}"
    );
}

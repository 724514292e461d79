//! Real Debian packages, fetched with `apt-get download`: the imported tree
//! must equal `dpkg-deb -x` output entry by entry (type, mode, owner,
//! content, symlink target). Skipped, with the reason printed, when not
//! root or when apt-get, dpkg-deb, ar, xz, zstd or gzip are missing or
//! `apt-get download` fails (offline, no package lists); CI refuses the skip.

mod import_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use import_support::*;
use treectl_e2e::{require_root, require_that, require_tools, treectl_in};

/// setuid (sudo, mount), setuid+setgid with a non-root group (passwd:
/// chage/expiry are root:shadow 2755), and a small one for repacking.
const PACKAGES: &[&str] = &["sudo", "passwd", "mount", "mawk"];

fn fetch(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("apt-get")
        .current_dir(dir)
        .arg("download")
        .args(PACKAGES)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "apt-get download failed (offline, or no package lists: run apt-get update): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// Rebuilds `deb` with its data.tar recompressed by `tool` (`zstd` or
/// `gzip`), keeping member order, as dpkg-deb would build it.
fn repack(deb: &Path, tool: &str, ext: &str, out: &Path) -> PathBuf {
    let work = out.with_extension("parts");
    std::fs::create_dir_all(&work).unwrap();
    run(Command::new("ar").current_dir(&work).arg("x").arg(deb));
    let members = String::from_utf8(run(Command::new("ar").arg("t").arg(deb)).stdout).unwrap();
    let data = members
        .lines()
        .find(|m| m.starts_with("data.tar"))
        .unwrap()
        .to_owned();
    let control = members
        .lines()
        .find(|m| m.starts_with("control.tar"))
        .unwrap()
        .to_owned();
    let new_data = format!("data.tar.{ext}");
    let script = format!("xz -dc {data} | {tool} -q -c > {new_data} && rm {data}");
    run(Command::new("sh").current_dir(&work).args(["-c", &script]));
    let _ = std::fs::remove_file(out);
    run(Command::new("ar")
        .current_dir(&work)
        .arg("rc")
        .arg(out)
        .args(["debian-binary", &control, &new_data]));
    out.to_owned()
}

fn data_member(deb: &Path) -> String {
    let members = String::from_utf8(run(Command::new("ar").arg("t").arg(deb)).stdout).unwrap();
    members
        .lines()
        .find(|m| m.starts_with("data.tar"))
        .unwrap()
        .to_owned()
}

#[test]
fn real_packages_match_dpkg_deb_extract() {
    if !require_root("to compare owners: dpkg-deb -x restores them only as root") {
        return;
    }
    let why = "to fetch, repack and extract real Debian packages";
    if !require_tools(&["apt-get", "dpkg-deb", "ar", "xz", "zstd", "gzip"], why) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    let mut debs = match fetch(&dl) {
        Ok(d) => d,
        Err(failed) => {
            let needs = format!("{} from `apt-get download` ({failed})", PACKAGES.join(", "));
            require_that(false, &needs, "to compare real packages with dpkg-deb -x");
            return;
        }
    };
    assert_eq!(debs.len(), PACKAGES.len(), "{debs:?}");
    let mawk = debs
        .iter()
        .find(|p| p.to_string_lossy().contains("mawk_"))
        .unwrap()
        .clone();
    let mount = debs
        .iter()
        .find(|p| p.to_string_lossy().contains("mount_"))
        .unwrap()
        .clone();
    // Debian bookworm ships xz data; zstd and gzip variants are made by
    // repacking real packages (dpkg-deb reads all three).
    let zst = repack(&mawk, "zstd", "zst", &dir.path().join("mawk-zst.deb"));
    let gz = repack(&mount, "gzip", "gz", &dir.path().join("mount-gz.deb"));
    assert!(debs.iter().any(|d| data_member(d) == "data.tar.xz"));
    assert_eq!(data_member(&zst), "data.tar.zst");
    assert_eq!(data_member(&gz), "data.tar.gz");

    let repo = dir.path().join("repo");
    treectl_in(&repo, ["init"]).ok();
    // The repacked ones go to their own refs (same package and version).
    let mut all: Vec<(PathBuf, Option<&str>)> = debs.drain(..).map(|d| (d, None)).collect();
    all.push((zst, Some("test/mawk-zst")));
    all.push((gz, Some("test/mount-gz")));

    // All stock packages at once (both cores), then the repacked ones.
    let mut args = vec!["commit".to_string(), "--json".into()];
    for (d, r) in &all {
        if r.is_none() {
            args.push("--deb".into());
            args.push(d.to_string_lossy().into_owned());
        }
    }
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let reports: serde_json::Value =
        serde_json::from_str(&treectl_in(&repo, &args_ref).ok()).unwrap();
    assert_eq!(reports.as_array().unwrap().len(), PACKAGES.len());
    let mut commits: Vec<(PathBuf, String)> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                PathBuf::from(r["path"].as_str().unwrap()),
                r["commit"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (d, r) in &all {
        if let Some(r) = r {
            let id = treectl_in(&repo, ["commit", "--deb", d.to_str().unwrap(), "--ref", r]).ok();
            commits.push((d.clone(), id.trim().to_owned()));
        }
    }

    let mut setuid_seen = 0;
    for (i, (deb, commit)) in commits.iter().enumerate() {
        let co = dir.path().join(format!("co{i}"));
        treectl_in(&repo, ["checkout", commit, co.to_str().unwrap()]).ok();
        let x = dir.path().join(format!("x{i}"));
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x));
        let a = snapshot(&co);
        let b = snapshot(&x);
        let diff = differences(&a, &b);
        assert!(diff.is_empty(), "{}: {diff:#?}", deb.display());
        assert!(a.len() > 5, "{}: only {} entries", deb.display(), a.len());
        setuid_seen += a
            .values()
            .filter(|n| n.kind == 'f' && n.mode & 0o6000 != 0)
            .count();
        // show lists exactly the setuid/setgid files of the extraction.
        let json: serde_json::Value =
            serde_json::from_str(&treectl_in(&repo, ["show", commit, "--json"]).ok()).unwrap();
        let listed = json["setuid_setgid"].as_array().unwrap().len();
        let expected = b
            .values()
            .filter(|n| n.kind == 'f' && n.mode & 0o6000 != 0)
            .count();
        assert_eq!(listed, expected, "{}", deb.display());
    }
    assert!(
        setuid_seen >= 3,
        "expected setuid/setgid files in sudo, passwd, mount"
    );
    // Re-importing is a no-op that prints the same commit.
    let (first, first_commit) = &commits[0];
    let again = treectl_in(&repo, ["commit", "--deb", first.to_str().unwrap()]).run();
    assert!(again.status.success());
    assert_eq!(again.stdout.trim(), first_commit);
    assert!(again.stderr.contains("already imported"));
    assert!(treectl_in(&repo, ["fsck"]).run().status.success());
}

//! Real Debian packages, fetched with `apt-get download`: the imported tree
//! must equal `dpkg-deb -x` output entry by entry (type, mode, owner,
//! content, symlink target). Skipped, with the reason printed, when not
//! root or when apt-get, dpkg-deb, ar, xz or zstd are missing or offline.

mod import_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use import_support::*;
use treectl_e2e::is_root;

/// setuid (sudo, mount), setuid+setgid with a non-root group (passwd:
/// chage/expiry are root:shadow 2755), and a small one for repacking.
const PACKAGES: &[&str] = &["sudo", "passwd", "mount", "mawk"];

fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root: dpkg-deb -x cannot restore owners".into());
    }
    for tool in ["apt-get", "dpkg-deb", "ar", "xz", "zstd", "gzip"] {
        if !tool_exists(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

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
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    let mut debs = match fetch(&dl) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: {why}");
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
    ok(&repo, &["init"]);
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
    let reports: serde_json::Value = serde_json::from_str(&ok(&repo, &args_ref)).unwrap();
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
            let id = ok(&repo, &["commit", "--deb", d.to_str().unwrap(), "--ref", r]);
            commits.push((d.clone(), id.trim().to_owned()));
        }
    }

    let mut setuid_seen = 0;
    for (i, (deb, commit)) in commits.iter().enumerate() {
        let co = dir.path().join(format!("co{i}"));
        ok(&repo, &["checkout", commit, co.to_str().unwrap()]);
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
            serde_json::from_str(&ok(&repo, &["show", commit, "--json"])).unwrap();
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
    let again = treectl(&repo, &["commit", "--deb", first.to_str().unwrap()]);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), first_commit);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already imported"));
    assert!(treectl(&repo, &["fsck"]).status.success());
}

//! A composed release deployed on a machine: `status` lists the
//! components compose recorded in the commit (`compose.components`).

mod deploy_support;

use std::fs;

use deploy_support::*;

#[test]
fn status_lists_the_components_of_a_composed_release() {
    let w = World::new();
    let dir = w.dir.path();
    for (name, file) in [("base", "etc/os-release"), ("app", "usr/bin/app")] {
        let p = dir.join(name).join(file);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, name).unwrap();
    }
    let origin = w.origin();
    let lock = dir.join("os.lock");
    for name in ["base", "app"] {
        let src = dir.join(name);
        cmd(&[
            "--repo",
            origin.to_str().unwrap(),
            "lock",
            "add",
            "--lockfile",
            lock.to_str().unwrap(),
            "--dir",
            src.to_str().unwrap(),
            "--name",
            name,
        ])
        .ok();
    }
    let compose = || -> String {
        let out = cmd(&[
            "--repo",
            origin.to_str().unwrap(),
            "compose",
            "--json",
            "--lockfile",
            lock.to_str().unwrap(),
            "--ref",
            "os/stable",
        ])
        .ok();
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        report["version"].as_str().expect("a version").to_owned()
    };
    let v1 = compose();
    w.install();
    let listed = w.listed();
    let components = listed[0]["components"].as_object().expect("components map");
    let names: Vec<&str> = components.keys().map(String::as_str).collect();
    assert_eq!(names, ["app", "base"], "{listed:?}");
    assert_eq!(components["app"], "unpinned");

    // The composed version is what status, the boot entry and deploy use
    // (it was "-" for every composed release).
    assert!(v1.ends_with(".1"), "{v1}");
    assert_eq!(listed[0]["version"], v1.as_str(), "{listed:?}");
    fs::write(dir.join("app/usr/bin/app"), "app 2").unwrap();
    let v2 = compose();
    assert_eq!(v2, format!("{}.2", &v1[..v1.len() - 2]));
    cmd(&["upgrade", "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["version"], v2.as_str());
    let text = cmd(&["status", "--sysroot", &w.sr()]).ok();
    assert!(text.contains(&v2) && text.contains(&v1), "{text}");
    let entries = dir.join("sysroot/boot/loader/entries");
    let titles: Vec<String> = fs::read_dir(&entries)
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .filter_map(|t| {
            t.lines()
                .find(|l| l.starts_with("title "))
                .map(str::to_owned)
        })
        .collect();
    assert!(
        titles.iter().any(|t| t.contains(&format!(" {v2} "))),
        "{titles:?}"
    );
    cmd(&["deploy", &v1, "--sysroot", &w.sr()]).ok();
    assert_eq!(w.listed()[0]["version"], v1.as_str());
}

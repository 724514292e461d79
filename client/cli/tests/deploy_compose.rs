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
    cmd(&[
        "--repo",
        origin.to_str().unwrap(),
        "compose",
        "--lockfile",
        lock.to_str().unwrap(),
        "--ref",
        "os/stable",
    ])
    .ok();
    w.install();
    let listed = w.listed();
    let components = listed[0]["components"].as_object().expect("components map");
    let names: Vec<&str> = components.keys().map(String::as_str).collect();
    assert_eq!(names, ["app", "base"], "{listed:?}");
    assert_eq!(components["app"], "unpinned");
}

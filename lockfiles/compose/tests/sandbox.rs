//! The configure sandbox confines what a script does: no writes outside
//! the tree, no network, no host processes, nothing left running, and a
//! failing script's status comes back. Runs over a tiny tree made of
//! busybox-static (Debian package `busybox-static`) and needs bwrap.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use treectl_compose::configure::sandbox::Sandbox;

const BUSYBOX: &str = "/bin/busybox";

/// Skips (printing why) unless the tools are here; never under CI=true.
fn tools_or_skip() -> bool {
    let ok = Sandbox::available() && Path::new(BUSYBOX).exists();
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must install bubblewrap and busybox-static"
        );
        eprintln!("skipping: needs bwrap (bubblewrap) and {BUSYBOX} (busybox-static)");
    }
    ok
}

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "tmp", "run", "proc", "dev", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "ls", "cat", "sleep", "nc", "setsid", "echo", "grep", "wc",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    root
}

#[test]
fn scripts_are_confined() {
    if !tools_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let outside = dir.path().join("outside");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let sandbox = Sandbox::new(&root, 1_700_000_000);
    let script = format!(
        "echo x > {out}; echo y > /../../escaped; \
         echo z | nc -w 2 127.0.0.1 {port} && echo NET-REACHED; \
         echo procs=$(ls /proc | grep -c '^[0-9]'); \
         echo epoch=$SOURCE_DATE_EPOCH path=$PATH; \
         setsid sleep 4242 & exit 0",
        out = outside.display()
    );
    let out = sandbox.run(&["/bin/sh", "-c", &script]).unwrap();
    assert!(out.success, "{}: {}", out.status, out.output);
    // Writes land in the tree or nowhere.
    assert!(!outside.exists(), "wrote outside the tree");
    assert!(root.join("escaped").exists(), "/.. is the tree's root");
    assert!(!dir.path().join("escaped").exists());
    // No network: the host's loopback listener saw nothing.
    assert!(!out.output.contains("NET-REACHED"), "{}", out.output);
    assert_eq!(
        listener.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock)
    );
    // Its own PID namespace: only the sandbox's few processes (bwrap's
    // init, the shell and its pipeline), not the host's.
    let procs: usize = out
        .output
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.trim().parse().ok())
        .expect("the script printed its process count");
    assert!(procs <= 8, "sees {procs} processes: {}", out.output);
    assert!(
        out.output
            .contains("epoch=1700000000 path=/usr/local/sbin:"),
        "{}",
        out.output
    );
    // Nothing it started is still running.
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("sleep\x004242"),
            "process {:?} outlived the sandbox",
            e.file_name()
        );
    }
}

#[test]
fn a_failing_script_reports_its_status_and_output() {
    if !tools_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let sandbox = Sandbox::new(&root, 0);
    let out = sandbox
        .run(&["/bin/sh", "-c", "echo first; echo last >&2; exit 3"])
        .unwrap();
    assert!(!out.success);
    assert_eq!(out.status, "exit status 3");
    assert_eq!(out.tail(), "first\nlast");
}

#[test]
fn scripts_are_told_they_run_in_a_chroot_and_their_syncs_are_filtered() {
    if !tools_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    // The tree's own ischroot says "no" (as Debian's does under a PID
    // namespace, where /proc/1 shares the tree's root).
    let own = "#!/bin/sh\nexit 1\n";
    std::fs::write(root.join("usr/bin/ischroot"), own).unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/ischroot"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sandbox = Sandbox::new(&root, 1_700_000_000);
    let out = sandbox
        .run(&[
            "/bin/sh",
            "-c",
            "/usr/bin/ischroot && echo chroot=yes; \
             grep '^Seccomp:' /proc/self/status",
        ])
        .unwrap();
    assert!(out.success, "{}: {}", out.status, out.output);
    assert!(out.output.contains("chroot=yes"), "{}", out.output);
    // Mode 2: a seccomp filter is in force for the scripts.
    assert!(out.output.contains("Seccomp:\t2"), "{}", out.output);
    // The tree keeps its own file; nothing is left beside the tree.
    assert_eq!(
        std::fs::read_to_string(root.join("usr/bin/ischroot")).unwrap(),
        own
    );
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(beside, [std::ffi::OsString::from("root")]);
}

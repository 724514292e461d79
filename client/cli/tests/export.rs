//! `treectl export`: reproducible cpio and tar archives of a tree, read
//! back with GNU cpio, GNU tar, zstd and gzip, on the real binary.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use treectl_e2e::{
    differences, is_root, require, require_root, require_tools, snapshot, treectl_in,
};

const TS: &str = "2024-01-01T00:00:00Z";
const TS_SECS: i64 = 1_704_067_200;

const FORMATS: [&str; 2] = ["cpio", "tar"];
const COMPRESSIONS: [&str; 3] = ["none", "zstd", "gzip"];

/// The sample tree plus what archives must get right: three names of one
/// file (same content and mode), the same content with another mode (not a
/// link), setgid and sticky bits, paths and a symlink target longer than
/// tar's 100-byte fields, a symlink target a path normaliser would change,
/// a non-ASCII name, and `a`, `a-b`, `a/x`, whose byte order differs from
/// a depth-first walk; the root directory mode 0750. As root also owners,
/// and a read-only directory.
fn export_tree(root: &Path) {
    sample_tree(root);
    let tool = fs::read(root.join("usr/bin/tool")).unwrap();
    let write = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    write("usr/sbin/tool", &tool, 0o755);
    write("usr/lib/tool", &tool, 0o755);
    write("usr/bin/tool-ro", &tool, 0o555);
    write("usr/bin/sg", b"setgid", 0o2755);
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    write("a/x", b"x", 0o644);
    write("a-b", b"a-b", 0o644);
    let deep = ["l".repeat(90), "m".repeat(90), "n".repeat(90)].join("/");
    write(&format!("{deep}/{}", "f".repeat(120)), b"deep", 0o644);
    std::os::unix::fs::symlink("t/".repeat(80), root.join("long-link")).unwrap();
    std::os::unix::fs::symlink("a//b/./c", root.join("odd-link")).unwrap();
    write("caf\u{e9}", b"utf-8 name", 0o644);
    // The root directory's own mode is part of the tree too.
    fs::set_permissions(root, fs::Permissions::from_mode(0o750)).unwrap();
    if is_root() {
        use std::os::unix::fs::{chown, lchown};
        chown(root.join("etc/hostname"), Some(1000), Some(1000)).unwrap();
        chown(root.join("usr/bin/sg"), Some(0), Some(42)).unwrap();
        chown(root.join("a"), Some(1000), Some(100)).unwrap();
        lchown(root.join("bin"), Some(7), Some(8)).unwrap();
        // A read-only directory with a file in it (only root removes it
        // again when the test is done).
        write("ro/file", b"in a read-only directory", 0o644);
        fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    }
}

/// A bare-user and an archive repository, each with `export_tree`
/// committed to `os/a` (the same commit id in both).
fn repos(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    export_tree(&src);
    let bare = init(dir, "bare-user");
    let archive = init(dir, "archive");
    let mut ids = Vec::new();
    for repo in [&bare, &archive] {
        let id = treectl_in(
            repo,
            [
                "commit",
                "--ref",
                "os/a",
                "--tree",
                src.to_str().unwrap(),
                "--timestamp",
                TS,
            ],
        )
        .ok();
        ids.push(id);
    }
    assert_eq!(ids[0], ids[1], "both modes store the same commit");
    (bare, archive)
}

/// `treectl export REV ARGS…` writing to standard output: the bytes.
fn export_stdout(repo: &Path, args: &[&str]) -> Vec<u8> {
    let out = treectl_in(repo, ["export", "os/a"])
        .args(args)
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `treectl export REV ARGS… -o FILE`: the file's bytes.
fn export_file(repo: &Path, args: &[&str], file: &Path) -> Vec<u8> {
    treectl_in(repo, ["export", "os/a"])
        .args(args)
        .arg("-o")
        .arg(file)
        .ok();
    fs::read(file).unwrap()
}

/// Every path of the commit as `ls -R --json` lists it (`/` for the
/// root), with its type and, for files, the object id.
fn tree_paths(repo: &Path) -> Vec<(String, String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&treectl_in(repo, ["ls", "-R", "--json", "os/a"]).ok()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs a tool with `input` on stdin; returns stdout.
fn run_tool(cmd: &mut Command, input: &Path) -> Vec<u8> {
    let out = cmd
        .stdin(fs::File::open(input).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn exports_are_byte_identical_across_runs_and_repository_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, archive) = repos(dir.path());
    for format in FORMATS {
        let mut plain_len = 0;
        for compress in COMPRESSIONS {
            let args = ["--format", format, "--compress", compress];
            let first = export_stdout(&bare, &args);
            let again = export_stdout(&bare, &args);
            let file = dir.path().join(format!("out-{format}-{compress}"));
            let to_file = export_file(&bare, &args, &file);
            let from_archive = export_stdout(&archive, &args);
            assert!(first == again, "{format}/{compress}: two runs differ");
            assert!(
                first == to_file,
                "{format}/{compress}: stdout and -o differ"
            );
            assert!(
                first == from_archive,
                "{format}/{compress}: bare-user and archive repositories differ"
            );
            // Each is what it says it is.
            let magic_ok = match (format, compress) {
                ("cpio", "none") => first.starts_with(b"070701"),
                ("tar", "none") => first.get(257..265) == Some(&b"ustar  \0"[..]),
                (_, "zstd") => first.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
                (_, "gzip") => first.starts_with(&[0x1f, 0x8b, 8]),
                _ => unreachable!(),
            };
            assert!(magic_ok, "{format}/{compress}: {:02x?}", &first[..16]);
            if compress == "none" {
                plain_len = first.len();
            } else {
                assert!(first.len() < plain_len, "{format}/{compress} compresses");
            }
        }
    }
}

#[test]
fn compressed_exports_decompress_to_the_plain_archive() {
    if !require_tools(&["zstd", "gzip"], "to decompress the exports") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = repos(dir.path());
    for format in FORMATS {
        let plain = export_stdout(&bare, &["--format", format]);
        for (compress, tool) in [("zstd", "zstd"), ("gzip", "gzip")] {
            let file = dir.path().join(format!("out.{format}.{compress}"));
            export_file(&bare, &["--format", format, "--compress", compress], &file);
            let out = run_tool(Command::new(tool).args(["-d", "-c"]), &file);
            assert!(out == plain, "{tool} -dc of the {format} export");
        }
    }
}

#[test]
fn cpio_and_tar_list_exactly_the_tree_paths_in_byte_order() {
    if !require_tools(&["cpio", "tar"], "to list the exports") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = repos(dir.path());
    let mut paths: Vec<(String, String)> = tree_paths(&bare)
        .into_iter()
        .map(|(p, kind, _)| (p.trim_start_matches('/').to_owned(), kind))
        .collect();
    paths.sort();
    assert!(paths.iter().any(|(p, _)| p == "a-b"), "{paths:?}");

    let cpio = dir.path().join("tree.cpio");
    export_file(&bare, &["--format", "cpio"], &cpio);
    let listed = run_tool(Command::new("cpio").args(["-t", "--quiet"]), &cpio);
    let want: Vec<String> = paths
        .iter()
        .map(|(p, _)| if p.is_empty() { ".".into() } else { p.clone() })
        .collect();
    let got: Vec<String> = String::from_utf8(listed)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got, want, "cpio -t");

    let tar = dir.path().join("tree.tar");
    export_file(&bare, &["--format", "tar"], &tar);
    let listed = run_tool(
        Command::new("tar").args(["-t", "--quoting-style=literal", "-f", "-"]),
        &tar,
    );
    let want: Vec<String> = paths
        .iter()
        .map(|(p, kind)| match (p.as_str(), kind.as_str()) {
            ("", _) => "./".into(),
            (p, "directory") => format!("{p}/"),
            (p, _) => p.to_owned(),
        })
        .collect();
    let got: Vec<String> = String::from_utf8(listed)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got, want, "tar -t");
}

#[test]
fn extracting_as_root_reproduces_the_checkout() {
    if !require_root("to extract owners and setuid files as they are in the tree")
        || !require_tools(&["cpio", "busybox", "tar"], "to extract the exports")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = repos(dir.path());
    let checkout = dir.path().join("checkout");
    treectl_in(
        &bare,
        ["checkout", "--copy", "os/a", checkout.to_str().unwrap()],
    )
    .ok();
    // Which paths must be one inode: the regular files of one object.
    let mut by_object: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, kind, id) in tree_paths(&bare) {
        if kind == "file" {
            by_object.entry(id).or_default().push(path);
        }
    }
    assert!(
        by_object.values().any(|names| names.len() == 3),
        "the fixture has a file with three names: {by_object:?}"
    );

    // GNU cpio, busybox cpio (a second reader of the same layout) and GNU tar.
    for (format, tool) in [("cpio", "cpio"), ("cpio", "busybox"), ("tar", "tar")] {
        let archive = dir.path().join(format!("tree.{format}"));
        export_file(&bare, &["--format", format], &archive);
        let dest = dir.path().join(format!("extracted-by-{tool}"));
        fs::create_dir(&dest).unwrap();
        let mut cmd = Command::new(tool);
        match tool {
            "cpio" => cmd.args(["-i", "-d", "-m", "--quiet"]),
            "busybox" => cmd.args(["cpio", "-i", "-d", "-m"]),
            _ => cmd.arg("-x"),
        };
        run_tool(cmd.current_dir(&dest), &archive);

        let want = snapshot(&checkout);
        let mut got = snapshot(&dest);
        if format == "cpio" {
            // cpio leaves the directory it extracts into as it is, "."
            // entry or not (the kernel applies it to the rootfs): check
            // the entry itself instead.
            let bytes = fs::read(&archive).unwrap();
            let field = |i: usize| std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
            let root = &want[Path::new("")];
            assert_eq!(&bytes[110..112], b".\0");
            assert_eq!(
                field(1),
                format!("{:08X}", 0o040000 | root.mode),
                "mode of ."
            );
            assert_eq!(field(2), format!("{:08X}", root.uid), "uid of .");
            assert_eq!(field(3), format!("{:08X}", root.gid), "gid of .");
            got.insert(PathBuf::new(), root.clone());
        }
        if tool == "busybox" {
            // busybox cpio does not set the owner of symlinks.
            for (path, node) in got.iter_mut().filter(|(_, n)| n.kind == 'l') {
                node.uid = want[path].uid;
                node.gid = want[path].gid;
            }
        }
        let diffs = differences(&want, &got);
        assert!(diffs.is_empty(), "{tool}: {diffs:#?}");

        let mut inodes = BTreeMap::new();
        for (id, names) in &by_object {
            let metas: Vec<_> = names
                .iter()
                .map(|n| fs::metadata(dest.join(n.trim_start_matches('/'))).unwrap())
                .collect();
            for (n, m) in names.iter().zip(&metas) {
                assert_eq!(
                    m.ino(),
                    metas[0].ino(),
                    "{tool}: {n} is a link of {}",
                    names[0]
                );
                assert_eq!(m.nlink(), names.len() as u64, "{tool}: links of {n}");
                assert_eq!(m.mtime(), TS_SECS, "{tool}: mtime of {n}");
            }
            let other = inodes.insert(metas[0].ino(), id);
            assert!(
                other.is_none(),
                "{tool}: objects {other:?} and {id} share an inode"
            );
        }
    }
}

#[test]
fn an_exported_tar_commits_back_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = repos(dir.path());
    let tar = dir.path().join("tree.tar");
    export_file(&bare, &["--format", "tar"], &tar);
    treectl_in(
        &bare,
        [
            "commit",
            "--ref",
            "os/back",
            "--tar",
            tar.to_str().unwrap(),
            "--timestamp",
            TS,
        ],
    )
    .ok();
    assert_eq!(
        show_json(&bare, "os/back")["root_tree"],
        show_json(&bare, "os/a")["root_tree"]
    );
}

#[test]
fn export_errors_are_one_line_and_leave_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = repos(dir.path());
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let dest = out.join("tree.tar");
    let dest_arg = dest.to_str().unwrap();

    let err = treectl_in(
        &bare,
        ["export", "os/nope", "--format", "tar", "-o", dest_arg],
    )
    .fails();
    assert!(err.contains("os/nope"), "{err}");
    let missing_dir = out.join("no-such-dir/tree.tar");
    let err = treectl_in(&bare, ["export", "os/a", "--format", "tar", "-o"])
        .arg(&missing_dir)
        .fails();
    assert!(err.contains("no-such-dir/tree.tar"), "{err}");
    let err = treectl_in(&bare, ["export", "os/a", "--format", "tar", "-o"])
        .arg(&out)
        .fails();
    assert!(err.contains("is a directory"), "{err}");
    // --json describes an output file; standard output is the archive.
    treectl_in(&bare, ["export", "os/a", "--format", "tar", "--json"]).code(2);
    treectl_in(&bare, ["export", "os/a", "--format", "zip", "-o", dest_arg]).code(2);
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "nothing was written"
    );

    // A file object lost from the store: the export fails part-way, the
    // destination keeps its old content and no temporary file is left.
    fs::write(&dest, "old").unwrap();
    let hostname = tree_paths(&bare)
        .into_iter()
        .find(|(p, _, _)| p == "/etc/hostname")
        .unwrap()
        .2;
    let object = bare
        .join("objects")
        .join(&hostname[..2])
        .join(format!("{}.file", &hostname[2..]));
    fs::remove_file(&object).unwrap();
    for format in FORMATS {
        let err = treectl_in(
            &bare,
            ["export", "os/a", "--format", format, "-o", dest_arg],
        )
        .fails();
        assert!(err.contains("/etc/hostname"), "{err}");
        assert!(err.contains(&hostname), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tree.tar"], "{format}: no temporary file is left");
        let piped = treectl_in(&bare, ["export", "os/a", "--format", format])
            .command()
            .output()
            .unwrap();
        assert!(!piped.status.success(), "{format} to stdout");
    }
}

#[test]
fn export_refuses_to_write_to_a_terminal() {
    if !require("script", "to give the export a terminal as standard output") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = repos(dir.path());
    let cmd = format!(
        "{} --repo {} export os/a --format cpio",
        treectl_e2e::treectl_bin().display(),
        bare.display()
    );
    // `script` runs the command with a new terminal as its stdout and
    // stderr, and (-e) exits with its status.
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("refusing to write a cpio archive to a terminal"),
        "{text}"
    );
    assert!(!text.contains("070701"), "no archive bytes: {text}");
}

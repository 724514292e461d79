//! Importing tar archives and `.deb` packages built here: formats, long
//! names, metadata, and every hostile corner (each refused with nothing
//! left behind).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use treectl_import::deb::{import_debs, DebCommitOptions, DebRequest};
use treectl_import::tar::import_tar;
use treectl_import::{ImportError, ImportOptions, Limits};
use treectl_store::commit::CommitOptions;
use treectl_store::object::{EntryKind, FileKind};
use treectl_store::refs::{self, RefName};
use treectl_store::{ObjectId, Repo, RepoMode};

/// One tar entry, written with a hand-made header so hostile names and
/// types can be expressed.
struct E<'a> {
    kind: u8,
    name: &'a str,
    data: &'a [u8],
    link: &'a str,
    mode: u32,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        kind: b'0',
        name,
        data,
        link: "",
        mode: 0o644,
    }
}
fn dir(name: &str) -> E<'_> {
    E {
        kind: b'5',
        name,
        data: b"",
        link: "",
        mode: 0o755,
    }
}
fn symlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        kind: b'2',
        name,
        data: b"",
        link: target,
        mode: 0o777,
    }
}
fn hardlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        kind: b'1',
        name,
        data: b"",
        link: target,
        mode: 0o644,
    }
}

fn header(e: &E<'_>, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name.fill(0);
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname.fill(0);
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
    }
    h.set_mode(e.mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::new(e.kind));
    h.set_cksum();
    h
}

/// A complete tar archive of `entries`.
fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        b.append(&header(e, e.data.len() as u64), e.data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
fn zst(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).unwrap()
}
fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    repo: Repo,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("repo"), RepoMode::BareUser).unwrap();
        Fixture { dir, repo }
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn import(
        &self,
        name: &str,
        data: &[u8],
        opts: &ImportOptions,
    ) -> Result<ObjectId, ImportError> {
        let p = self.write(name, data);
        let r = RefName::new("t/x").unwrap();
        let c = CommitOptions {
            timestamp: 0,
            ..Default::default()
        };
        import_tar(&self.repo, &p, &r, &c, opts).map(|rep| rep.commit)
    }

    /// Nothing visible changed: no ref, no object, no staging left behind,
    /// and fsck finds nothing.
    fn assert_untouched(&self) {
        assert!(
            refs::list_refs(&self.repo).unwrap().is_empty(),
            "a ref was created"
        );
        let objects = treectl_store::fsck::list_objects(&self.repo, &mut Vec::new()).unwrap();
        assert!(
            objects.is_empty(),
            "objects became visible: {}",
            objects.len()
        );
        let tmp: Vec<_> = std::fs::read_dir(self.repo.path().join("tmp"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(tmp.is_empty(), "staging left behind: {tmp:?}");
        let report = treectl_store::fsck::fsck(&self.repo, false).unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
    }

    /// path -> (kind, mode, content or target)
    fn listing(&self, commit: &ObjectId) -> BTreeMap<String, (char, u32, Vec<u8>)> {
        let c = self.repo.read_commit(commit).unwrap();
        let mut out = BTreeMap::new();
        let m = self.repo.read_dirmeta(&c.root_meta).unwrap();
        out.insert("/".to_string(), ('d', m.mode, vec![]));
        self.walk(&c.root_tree, "", &mut out);
        out
    }

    fn walk(
        &self,
        tree: &ObjectId,
        prefix: &str,
        out: &mut BTreeMap<String, (char, u32, Vec<u8>)>,
    ) {
        for e in self.repo.read_tree(tree).unwrap().entries {
            let p = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
            match e.kind {
                EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                    let (h, content) = self.repo.read_file(&file).unwrap();
                    let (k, data) = if h.kind() == FileKind::Symlink {
                        ('l', h.target.clone())
                    } else {
                        ('f', content)
                    };
                    out.insert(p, (k, h.mode, data));
                }
                EntryKind::Dir { tree, meta } => {
                    let m = self.repo.read_dirmeta(&meta).unwrap();
                    out.insert(p.clone(), ('d', m.mode, vec![]));
                    self.walk(&tree, &p, out);
                }
            }
        }
    }
}

fn opts() -> ImportOptions {
    ImportOptions::default()
}

fn sample() -> Vec<u8> {
    let mut suid = file("./usr/bin/su", b"#!su\n");
    suid.mode = 0o4755;
    let mut sgid = file("./usr/bin/chage", b"chage");
    sgid.mode = 0o2755;
    tar_of(&[
        dir("./"),
        dir("./usr/"),
        dir("./usr/bin/"),
        file("./usr/bin/hello", b"hello\n"),
        suid,
        sgid,
        symlink("./usr/bin/hi", "hello"),
        hardlink("./usr/bin/hello2", "./usr/bin/hello"),
        file("./etc/implicit/parent.conf", b"x=1\n"),
    ])
}

#[test]
fn every_compression_gives_the_same_tree_whatever_the_file_name() {
    let f = Fixture::new();
    let plain = sample();
    let mut trees = Vec::new();
    // Names deliberately lie about the content.
    for (name, data) in [
        ("a.tar.xz", plain.clone()),
        ("b.tar", gz(&plain)),
        ("c.tar.gz", xz(&plain)),
        ("d.tgz", zst(&plain)),
        ("e.tar.zst", bz2(&plain)),
    ] {
        let id = f
            .import(name, &data, &opts())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        trees.push(f.repo.read_commit(&id).unwrap().root_tree);
    }
    assert!(trees.windows(2).all(|w| w[0] == w[1]), "{trees:?}");
}

#[test]
fn modes_links_and_implicit_parents() {
    let f = Fixture::new();
    let id = f.import("s.tar", &sample(), &opts()).unwrap();
    let l = f.listing(&id);
    assert_eq!(l["/usr/bin/su"].1, 0o104755);
    assert_eq!(l["/usr/bin/chage"].1, 0o102755);
    assert_eq!(l["/usr/bin/hi"], ('l', 0o120777, b"hello".to_vec()));
    assert_eq!(l["/usr/bin/hello2"], ('f', 0o100644, b"hello\n".to_vec()));
    assert_eq!(l["/etc"].1, 0o040755);
    assert_eq!(l["/etc/implicit"].1, 0o040755);
    assert_eq!(l.len(), 11, "{:?}", l.keys().collect::<Vec<_>>());
}

#[test]
fn pax_and_gnu_long_names_and_xattrs() {
    let f = Fixture::new();
    let long_gnu = format!("./{}/{}", "d".repeat(120), "f".repeat(150));
    let long_pax = format!("./{}/{}", "p".repeat(130), "q".repeat(140));
    let mut b = tar::Builder::new(Vec::new());
    // GNU: the crate writes a ././@LongLink entry for long names.
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(3);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &long_gnu, &b"gnu"[..]).unwrap();
    // PAX: a path record (and an xattr) in an extended header.
    b.append_pax_extensions([
        ("path", long_pax.as_bytes()),
        ("SCHILY.xattr.user.test", &b"v"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("short").unwrap();
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(3);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, &b"pax"[..]).unwrap();
    let data = b.into_inner().unwrap();
    let id = f.import("long.tar", &data, &opts()).unwrap();
    let l = f.listing(&id);
    assert_eq!(l[&long_gnu[1..]].2, b"gnu");
    assert_eq!(l[&long_pax[1..]], ('f', 0o100600, b"pax".to_vec()));
    assert!(!l.contains_key("/short"));
    // The xattr came through.
    let c = f.repo.read_commit(&id).unwrap();
    let tree = f.repo.read_tree(&c.root_tree).unwrap();
    let EntryKind::Dir { tree: sub, .. } = tree.get(&b"p".repeat(130)).unwrap().kind else {
        panic!()
    };
    let EntryKind::Regular { file } = f.repo.read_tree(&sub).unwrap().entries[0].kind else {
        panic!()
    };
    let h = f.repo.read_file_header(&file).unwrap();
    assert_eq!(h.xattrs, vec![(b"user.test".to_vec(), b"v".to_vec())]);
}

#[test]
fn duplicate_entries_last_one_wins_and_is_reported() {
    let f = Fixture::new();
    let data = tar_of(&[
        file("a", b"first"),
        file("a", b"second"),
        file("b", b"same"),
        file("b", b"same"),
    ]);
    let p = f.write("dup.tar", &data);
    let rep = import_tar(
        &f.repo,
        &p,
        &RefName::new("t/x").unwrap(),
        &CommitOptions::default(),
        &opts(),
    )
    .unwrap();
    assert_eq!(rep.stats.warnings.len(), 1, "{:?}", rep.stats.warnings);
    assert!(
        rep.stats.warnings[0].contains("\"a\""),
        "{:?}",
        rep.stats.warnings
    );
    assert_eq!(f.listing(&rep.commit)["/a"].2, b"second");
}

/// Imports `data`, expects the error `check` accepts, and checks that
/// nothing changed.
fn refused(data: &[u8], o: &ImportOptions, check: impl Fn(&ImportError) -> bool) -> String {
    let f = Fixture::new();
    let err = f
        .import("bad.tar", data, o)
        .expect_err("hostile archive was accepted");
    assert!(check(&err), "unexpected error: {err} ({err:?})");
    f.assert_untouched();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    msg
}

#[test]
fn absolute_and_dotdot_names_refused() {
    let m = refused(
        &tar_of(&[file("ok", b"1"), file("/etc/passwd", b"x")]),
        &opts(),
        |e| matches!(e, ImportError::AbsoluteName { .. }),
    );
    assert!(m.contains("/etc/passwd"), "{m}");
    for name in ["../evil", "a/../../evil", "./a/.."] {
        let m = refused(&tar_of(&[file(name, b"x")]), &opts(), |e| {
            matches!(e, ImportError::DotDot { .. })
        });
        assert!(m.contains(name), "{m}");
    }
}

#[test]
fn entries_through_symlinks_refused() {
    for entries in [
        vec![symlink("lib", "/etc"), file("lib/cron.d/evil", b"x")],
        vec![dir("a/"), symlink("a/b", "../.."), dir("a/b/c/")],
        vec![symlink("x", "."), hardlink("x/y", "x")],
    ] {
        let m = refused(&tar_of(&entries), &opts(), |e| {
            matches!(e, ImportError::ThroughSymlink { .. })
        });
        assert!(m.contains("symlink"), "{m}");
    }
    // A regular file used as a directory.
    refused(
        &tar_of(&[file("f", b"1"), file("f/g", b"2")]),
        &opts(),
        |e| matches!(e, ImportError::NotADirectory { .. }),
    );
}

#[test]
fn hardlinks_outside_or_unseen_refused() {
    for target in ["../etc/shadow", "/etc/shadow", "a/../../x"] {
        let m = refused(
            &tar_of(&[file("a", b"1"), hardlink("h", target)]),
            &opts(),
            |e| matches!(e, ImportError::HardlinkOutside { .. }),
        );
        assert!(m.contains("\"h\"") && m.contains(target), "{m}");
    }
    let m = refused(
        &tar_of(&[hardlink("h", "later"), file("later", b"1")]),
        &opts(),
        |e| matches!(e, ImportError::HardlinkUnseen { .. }),
    );
    assert!(m.contains("later"), "{m}");
    // A hardlink to a directory is not a file entry either.
    refused(&tar_of(&[dir("d/"), hardlink("h", "d")]), &opts(), |e| {
        matches!(e, ImportError::HardlinkUnseen { .. })
    });
}

#[test]
fn devices_and_fifos_refused_unless_allowed() {
    for kind in [b'3', b'4', b'6'] {
        let dev = E {
            kind,
            name: "dev/node",
            data: b"",
            link: "",
            mode: 0o600,
        };
        let data = tar_of(&[file("keep", b"1"), dev]);
        let m = refused(&data, &opts(), |e| matches!(e, ImportError::Device { .. }));
        assert!(
            m.contains("dev/node") && m.contains("--allow-devices"),
            "{m}"
        );

        let f = Fixture::new();
        let p = f.write("dev.tar", &data);
        let o = ImportOptions {
            allow_devices: true,
            ..opts()
        };
        let rep = import_tar(
            &f.repo,
            &p,
            &RefName::new("t/x").unwrap(),
            &CommitOptions::default(),
            &o,
        )
        .unwrap();
        assert_eq!(rep.stats.skipped.len(), 1);
        assert!(rep.stats.skipped[0].contains("dev/node"));
        let l = f.listing(&rep.commit);
        assert!(l.contains_key("/keep") && !l.contains_key("/dev/node"));
    }
}

#[test]
fn oversized_entries_and_totals_refused() {
    let big = vec![7u8; 10_000];
    let data = tar_of(&[file("small", b"1"), file("big", &big)]);
    let o = ImportOptions {
        limits: Limits {
            max_entry_size: 9_999,
            ..Limits::default()
        },
        ..opts()
    };
    let m = refused(&data, &o, |e| {
        matches!(e, ImportError::EntryTooLarge { .. })
    });
    assert!(m.contains("\"big\"") && m.contains("9999"), "{m}");
    let o = ImportOptions {
        limits: Limits {
            max_total_size: 8_000,
            ..Limits::default()
        },
        ..opts()
    };
    refused(&gz(&data), &o, |e| {
        matches!(e, ImportError::TotalTooLarge { limit: 8_000, .. })
    });
    let o = ImportOptions {
        limits: Limits {
            max_entries: 1,
            ..Limits::default()
        },
        ..opts()
    };
    refused(&data, &o, |e| {
        matches!(e, ImportError::TooManyEntries { .. })
    });
}

#[test]
fn decompression_bomb_refused() {
    // 80 MiB of zeros compress to a few KiB with zstd.
    let size = 80u64 << 20;
    let mut h = header(&file("zeros", b""), size);
    h.set_cksum();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.write_all(h.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let m = refused(&bomb, &opts(), |e| {
        matches!(e, ImportError::RatioTooHigh { .. })
    });
    assert!(m.contains("--max-ratio"), "{m}");
}

#[test]
fn truncated_and_corrupt_archives_refused() {
    let data = tar_of(&[file("a", &[1u8; 3000]), file("b", b"2")]);
    // Cut inside the content of "a".
    refused(&data[..1500], &opts(), |e| {
        matches!(e, ImportError::Truncated { .. })
    });
    // Cut at an entry boundary: no end-of-archive marker.
    refused(&data[..512 + 3072], &opts(), |e| {
        matches!(e, ImportError::Truncated { .. })
    });
    // Compressed and cut.
    for packed in [gz(&data), xz(&data), zst(&data), bz2(&data)] {
        let cut = &packed[..packed.len() / 2];
        refused(cut, &opts(), |e| {
            matches!(
                e,
                ImportError::Truncated { .. } | ImportError::Corrupt { .. }
            )
        });
    }
    // A damaged header checksum.
    let mut bad = data.clone();
    bad[512 + 3072] ^= 0x20;
    refused(&bad, &opts(), |e| matches!(e, ImportError::Corrupt { .. }));
    // A flipped bit in xz data fails its check.
    let mut bad = xz(&data);
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    refused(&bad, &opts(), |e| {
        matches!(
            e,
            ImportError::Corrupt { .. } | ImportError::Truncated { .. }
        )
    });
    // A file where the root directory must be ("./" with a trailing slash
    // is a directory in old tars, so use ".").
    refused(&tar_of(&[file(".", b"x")]), &opts(), |e| {
        matches!(e, ImportError::RootNotDir { .. })
    });
}

// ---- .deb ----

fn ar_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(
        format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            data.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(b'\n');
    }
}

const CONTROL: &str = "Package: hello\nVersion: 1:2.10-3+b1~rc1\nArchitecture: amd64\nDepends: libc6 (>= 2.34)\nDescription: hi\n long\n";

fn deb_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        ar_member(&mut out, name, data);
    }
    out
}

fn control_tar() -> Vec<u8> {
    gz(&tar_of(&[
        dir("./"),
        file("./control", CONTROL.as_bytes()),
        file("./conffiles", b"/etc/hello.conf\n"),
        file("./postinst", b"#!/bin/sh\n"),
        file("./md5sums", b""),
        file("./templates", b"Template: x\xff\n"),
        file("./unknown-member", b"ignored"),
    ]))
}

fn good_deb() -> Vec<u8> {
    deb_of(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", control_tar()),
        ("data.tar.xz", xz(&sample())),
    ])
}

fn import_deb(
    f: &Fixture,
    name: &str,
    data: &[u8],
) -> Result<Vec<treectl_import::deb::DebReport>, ImportError> {
    let p = f.write(name, data);
    import_debs(
        &f.repo,
        &[DebRequest {
            path: p,
            ref_name: None,
        }],
        &DebCommitOptions::default(),
        &opts(),
    )
}

#[test]
fn deb_metadata_ref_and_reproducible_commit() {
    let f = Fixture::new();
    let reps = import_deb(&f, "hello.deb", &good_deb()).unwrap();
    let r = &reps[0];
    assert!(!r.import.existing);
    assert_eq!(r.import.ref_name, "deb/hello/1%3A2.10-3%2Bb1%7Erc1/amd64");
    let c = f.repo.read_commit(&r.import.commit).unwrap();
    assert_eq!(c.parent, None);
    assert_eq!(c.timestamp, 1_700_000_000, "newest mtime of data.tar");
    let md = &c.metadata;
    assert_eq!(md["deb.package"], "hello");
    assert_eq!(md["version"], "1:2.10-3+b1~rc1");
    assert_eq!(md["deb.depends"], "libc6 (>= 2.34)");
    assert_eq!(md["deb.scripts"], "postinst");
    assert_eq!(md["deb.conffiles"], "/etc/hello.conf");
    // The control members compose needs for the dpkg database, kept whole.
    assert_eq!(md["deb.control-format"], "1");
    assert_eq!(md["deb.control-file.control"], CONTROL);
    assert_eq!(md["deb.control-file.postinst"], "#!/bin/sh\n");
    assert_eq!(md["deb.control-file.md5sums"], "");
    assert_eq!(md["deb.control-file.conffiles"], "/etc/hello.conf\n");
    assert!(!md.contains_key("deb.control-file.templates"), "not UTF-8");
    assert_eq!(
        treectl_import::deb::control_member(md, "templates").unwrap(),
        b"Template: x\xff\n"
    );
    assert!(treectl_import::deb::control_member(md, "preinst").is_none());
    assert!(!md.keys().any(|k| k.contains("unknown-member")));
    assert_eq!(md["deb.size"], good_deb().len().to_string());
    assert_eq!(md["deb.sha256"].len(), 64);
    assert!(!md.contains_key("deb.source"));
    assert_eq!(f.listing(&r.import.commit)["/usr/bin/su"].1, 0o104755);

    // Re-import: a no-op naming the same commit.
    let again = import_deb(&f, "copy.deb", &good_deb()).unwrap();
    assert!(again[0].import.existing);
    assert_eq!(again[0].import.commit, r.import.commit);

    // Another repository, another day: the same commit id.
    let g = Fixture::new();
    let other = import_deb(&g, "x.deb", &good_deb()).unwrap();
    assert_eq!(other[0].import.commit, r.import.commit);
}

#[test]
fn deb_without_data_or_not_a_deb_refused() {
    type Check = fn(&ImportError) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (
            deb_of(&[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar.gz", control_tar()),
            ]),
            |e| {
                matches!(
                    e,
                    ImportError::MissingMember {
                        member: "data.tar",
                        ..
                    }
                )
            },
        ),
        (b"PK\x03\x04 zip".to_vec(), |e| {
            matches!(e, ImportError::NotADeb { .. })
        }),
        (
            deb_of(&[
                ("debian-binary", b"2.0\n".to_vec()),
                ("data.tar.xz", xz(&sample())),
            ]),
            |e| {
                matches!(
                    e,
                    ImportError::NotADeb { .. } | ImportError::MissingMember { .. }
                )
            },
        ),
        (good_deb()[..good_deb().len() - 100].to_vec(), |e| {
            matches!(e, ImportError::Truncated { .. })
        }),
        (
            deb_of(&[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar.gz", control_tar()),
                (
                    "data.tar.xz",
                    xz(&tar_of(&[file("../../etc/cron.d/x", b"x")])),
                ),
            ]),
            |e| matches!(e, ImportError::DotDot { .. }),
        ),
    ];
    for (data, check) in cases {
        let f = Fixture::new();
        let err = import_deb(&f, "bad.deb", &data).expect_err("accepted");
        assert!(check(&err), "{err:?}");
        f.assert_untouched();
    }
}

#[test]
fn several_debs_are_all_or_nothing() {
    let f = Fixture::new();
    let good = f.write("good.deb", &good_deb());
    let bad_data = deb_of(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", control_tar().clone()),
        ("data.tar.xz", xz(&tar_of(&[file("/abs", b"x")]))),
    ]);
    let bad = f.write("bad.deb", &bad_data);
    let reqs = [good, bad]
        .into_iter()
        .map(|path| DebRequest {
            path,
            ref_name: None,
        })
        .collect::<Vec<_>>();
    let err = import_debs(&f.repo, &reqs, &DebCommitOptions::default(), &opts()).unwrap_err();
    assert!(matches!(err, ImportError::AbsoluteName { .. }), "{err}");
    f.assert_untouched();
}

#[test]
fn deb_data_tar_in_every_compression() {
    let mut commits = Vec::new();
    for (name, data) in [
        ("data.tar", sample()),
        ("data.tar.gz", gz(&sample())),
        ("data.tar.xz", xz(&sample())),
        ("data.tar.zst", zst(&sample())),
    ] {
        let f = Fixture::new();
        let deb = deb_of(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control_tar()),
            (name, data),
        ]);
        let r = import_deb(&f, "p.deb", &deb).unwrap_or_else(|e| panic!("{name}: {e}"));
        commits.push(f.repo.read_commit(&r[0].import.commit).unwrap().root_tree);
    }
    assert!(commits.windows(2).all(|w| w[0] == w[1]));
}

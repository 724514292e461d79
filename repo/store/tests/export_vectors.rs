//! The test vectors of `docs/export.md`: a tiny tree whose archives, in
//! each format and compression, have the SHA-256 written down there, from
//! an `archive` and a `bare-user` repository alike.
//!
//! If one of these fails, the bytes `treectl export` produces changed:
//! that needs a new export format version (`EXPORT_FORMAT_VERSION` and the
//! "Versions" section of `docs/export.md`), or the document is wrong.

use treectl_store::commit::{MemDir, MemEntry};
use treectl_store::export::{
    export, export_to_file, ArchiveFormat, Compression, ExportOptions, ExportStats,
};
use treectl_store::object::{Commit, DirMeta, FileHeader};
use treectl_store::store::{RefUpdate, Transaction};
use treectl_store::{refs::RefName, ObjectId, Repo, RepoMode};

const TIMESTAMP: i64 = 1_700_000_000;

/// SHA-256 of each archive of the vector tree ("Test vectors" in
/// docs/export.md).
const DIGESTS: [(ArchiveFormat, Compression, &str); 6] = [
    (
        ArchiveFormat::Cpio,
        Compression::None,
        "1d4fe0ef645552f1143cbff38afb1fd4dd034c37588d254d419a780a41bca418",
    ),
    (
        ArchiveFormat::Cpio,
        Compression::Zstd,
        "315b2fba38b4c4088d139bd9c22bff0e43cf00b5afd1af1f1200cd2164b1d25c",
    ),
    (
        ArchiveFormat::Cpio,
        Compression::Gzip,
        "dea76abb32af1b0046c726dc74b7c19f5a288bc88b949e6f5c65ceef4191670a",
    ),
    (
        ArchiveFormat::Tar,
        Compression::None,
        "c6f7fa59f74c2f56421515e53071405208e16d938cf149f95b0e84d449b75b89",
    ),
    (
        ArchiveFormat::Tar,
        Compression::Zstd,
        "0a5d8191d70afb857ed27a9cc340f5dbdab2bcdc5731627dc506be461c22c35c",
    ),
    (
        ArchiveFormat::Tar,
        Compression::Gzip,
        "4d5cb9a16c8acf6f63aa286f75d64af625f1b072f645c48481b9018b80d4c2cb",
    ),
];

/// The vector tree, written straight into `repo` (owners need no
/// privileges this way) and committed to `vector`.
fn commit_vector(repo: &Repo) -> ObjectId {
    let txn = Transaction::begin(repo).unwrap();
    let file = |perm, uid, gid, content: &[u8]| {
        let header = FileHeader::regular(perm, uid, gid, vec![], content.len() as u64);
        txn.write_file(&header, content).unwrap()
    };
    let hostname = file(0o644, 0, 0, b"vector\n");
    let sh = file(0o4755, 0, 0, b"#!/bin/true\n");
    let notes = file(0o600, 1000, 1000, b"");
    let link = txn
        .write_file(&FileHeader::symlink(b"usr/bin".to_vec(), 0, 0, vec![]), b"")
        .unwrap();
    let entry = |id, symlink| MemEntry::File { id, symlink };

    let mut root = MemDir::new(DirMeta::new(0o755, 0, 0, vec![]));
    let mut etc = MemDir::new(DirMeta::new(0o755, 0, 0, vec![]));
    etc.entries
        .insert(b"hostname".to_vec(), entry(hostname, false));
    let mut bin = MemDir::new(DirMeta::new(0o755, 0, 0, vec![]));
    bin.entries.insert(b"sh".to_vec(), entry(sh, false));
    bin.entries.insert(b"sh.static".to_vec(), entry(sh, false));
    let mut usr = MemDir::new(DirMeta::new(0o755, 0, 0, vec![]));
    usr.entries.insert(b"bin".to_vec(), MemEntry::Dir(bin));
    let mut home = MemDir::new(DirMeta::new(0o700, 1000, 1000, vec![]));
    home.entries.insert(b"notes".to_vec(), entry(notes, false));
    let tmp = MemDir::new(DirMeta::new(0o1777, 0, 0, vec![]));
    root.entries.insert(b"bin".to_vec(), entry(link, true));
    root.entries.insert(b"etc".to_vec(), MemEntry::Dir(etc));
    root.entries.insert(b"home".to_vec(), MemEntry::Dir(home));
    root.entries.insert(b"tmp".to_vec(), MemEntry::Dir(tmp));
    root.entries.insert(b"usr".to_vec(), MemEntry::Dir(usr));
    let (tree, meta) = root.write(&txn).unwrap();
    let id = txn
        .write_commit(&Commit {
            parent: None,
            root_tree: tree,
            root_meta: meta,
            timestamp: TIMESTAMP,
            subject: "export vector".into(),
            body: String::new(),
            metadata: Default::default(),
        })
        .unwrap();
    txn.commit(&[RefUpdate {
        name: RefName::new("vector").unwrap(),
        target: Some(id),
    }])
    .unwrap();
    id
}

#[test]
fn archives_match_the_spec_in_both_repository_modes() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in [RepoMode::Archive, RepoMode::BareUser] {
        let repo = Repo::init(&tmp.path().join(mode.name()), mode).unwrap();
        let id = commit_vector(&repo);
        for (format, compression, digest) in DIGESTS {
            let opts = ExportOptions {
                format,
                compression,
            };
            let mut bytes = Vec::new();
            let stats = export(&repo, &id, &opts, &mut bytes).unwrap();
            assert_eq!(
                ObjectId::of(&bytes).to_hex(),
                digest,
                "{mode}: {format} compressed with {compression}"
            );
            assert_eq!(
                stats,
                ExportStats {
                    entries: 11,
                    directories: 6,
                    files: 3,
                    hardlinks: 1,
                    symlinks: 1,
                    content_bytes: 19,
                    archive_bytes: bytes.len() as u64,
                }
            );
            // The file form writes the same bytes.
            let path = tmp.path().join("out");
            export_to_file(&repo, &id, &opts, &path).unwrap();
            assert!(std::fs::read(&path).unwrap() == bytes);
        }
    }
}

//! The test vectors of `docs/repository-format.md`: a tiny tree whose
//! canonical encodings and object ids are written down in the specification.
//!
//! The hex strings below are copied from the document. If one of these tests
//! fails, either the code changed the on-disk format (which needs a new
//! format version and a "Version changes" entry) or the document is wrong.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use treectl_store::checkout::{checkout, CheckoutOptions};
use treectl_store::commit::{commit_dir, CommitOptions};
use treectl_store::object::{Commit, DirMeta, EntryKind, FileHeader, Tree, TreeEntry};
use treectl_store::refs::{read_ref, RefName};
use treectl_store::{fsutil, ObjectId, Repo, RepoMode};

// Canonical encodings ("Test vectors" in docs/repository-format.md).
const HELLO_HEADER_HEX: &str = "0101a4810000000000000000000000000000000000000600000000000000";
const LINK_HEADER_HEX: &str =
    "0101ffa100000000000000000000000000000900000068656c6c6f2e7478740000000000000000";
const EMPTY_HEADER_HEX: &str = "010180810000e8030000e803000000000000000000000000000000000000";
const SUB_DIRMETA_HEX: &str = "0301c0410000e8030000e803000000000000";
const ROOT_DIRMETA_HEX: &str = "0301ed410000000000000000000000000000";
const SUB_TREE_HEX: &str = "0201010000000105000000656d707479\
    6f84900d4ecdb3063dd3edcc24ed79a7755488074c714ef99fd1904226228287";
const ROOT_TREE_HEX: &str = "020103000000\
    010900000068656c6c6f2e747874\
    6a8ae316b75236e79d32a130926161c494c17861cc1e3c8947edd203ad6e71ce\
    02040000006c696e6b\
    bdb224f0c4f7ea67dc9054c374185a459e1600b5ecf1d2306cb57296a8862a7c\
    0303000000737562\
    c7e2e07b488575e687e07c22a2d0d7c98801e1324c72e9f8009a19a8a6dd4630\
    7070b2a2d3bb0218457fbb041105164bd4fcebe5767d72919449bd3ea34c086d";
const COMMIT_HEX: &str = "040100\
    59df6d18b5c0f62d93480e3c976d7fc19658adf88256df65e8373191c39d4951\
    36fa62ab9fa80c9fd83e41d79f45da1897b90992edf085557f331b316a6f5bab\
    00f1536500000000\
    0b0000007465737420766563746f72\
    00000000\
    01000000\
    0700000076657273696f6e\
    0100000031";

// Object ids ("Test vectors" in docs/repository-format.md).
const HELLO_ID: &str = "6a8ae316b75236e79d32a130926161c494c17861cc1e3c8947edd203ad6e71ce";
const LINK_ID: &str = "bdb224f0c4f7ea67dc9054c374185a459e1600b5ecf1d2306cb57296a8862a7c";
const EMPTY_ID: &str = "6f84900d4ecdb3063dd3edcc24ed79a7755488074c714ef99fd1904226228287";
const SUB_TREE_ID: &str = "c7e2e07b488575e687e07c22a2d0d7c98801e1324c72e9f8009a19a8a6dd4630";
const SUB_DIRMETA_ID: &str = "7070b2a2d3bb0218457fbb041105164bd4fcebe5767d72919449bd3ea34c086d";
const ROOT_TREE_ID: &str = "59df6d18b5c0f62d93480e3c976d7fc19658adf88256df65e8373191c39d4951";
const ROOT_DIRMETA_ID: &str = "36fa62ab9fa80c9fd83e41d79f45da1897b90992edf085557f331b316a6f5bab";
const COMMIT_ID: &str = "5aa389a4fc3d1b54231c71376d56025b948dc25d3fe991288999867c54c333c8";
/// Not part of the tree: the id every empty directory's tree has.
const EMPTY_TREE_ID: &str = "6188278802c1243a78e1db82e319137ca3416036ac835118caba00b07cfec62a";

const HELLO_CONTENT: &[u8] = b"hello\n";
const TIMESTAMP: i64 = 1_700_000_000;
const SUBJECT: &str = "test vector";

/// The objects of the test-vector tree, built through the public API.
struct Vector {
    hello: FileHeader,
    link: FileHeader,
    empty: FileHeader,
    sub_tree: Tree,
    sub_meta: DirMeta,
    root_tree: Tree,
    root_meta: DirMeta,
    commit: Commit,
}

fn metadata() -> BTreeMap<String, String> {
    BTreeMap::from([("version".to_string(), "1".to_string())])
}

fn vector() -> Vector {
    let hello = FileHeader::regular(0o644, 0, 0, vec![], HELLO_CONTENT.len() as u64);
    let link = FileHeader::symlink(b"hello.txt".to_vec(), 0, 0, vec![]);
    let empty = FileHeader::regular(0o600, 1000, 1000, vec![], 0);
    let sub_tree = Tree::from_entries(vec![TreeEntry {
        name: b"empty".to_vec(),
        kind: EntryKind::Regular {
            file: empty.id_with_content(b""),
        },
    }])
    .expect("valid names");
    let sub_meta = DirMeta::new(0o700, 1000, 1000, vec![]);
    // Given out of order on purpose: the tree sorts its entries by name.
    let root_tree = Tree::from_entries(vec![
        TreeEntry {
            name: b"sub".to_vec(),
            kind: EntryKind::Dir {
                tree: sub_tree.id(),
                meta: sub_meta.id(),
            },
        },
        TreeEntry {
            name: b"link".to_vec(),
            kind: EntryKind::Symlink {
                file: link.id_with_content(b""),
            },
        },
        TreeEntry {
            name: b"hello.txt".to_vec(),
            kind: EntryKind::Regular {
                file: hello.id_with_content(HELLO_CONTENT),
            },
        },
    ])
    .expect("valid names");
    let root_meta = DirMeta::new(0o755, 0, 0, vec![]);
    let commit = Commit {
        parent: None,
        root_tree: root_tree.id(),
        root_meta: root_meta.id(),
        timestamp: TIMESTAMP,
        subject: SUBJECT.into(),
        body: String::new(),
        metadata: metadata(),
    };
    Vector {
        hello,
        link,
        empty,
        sub_tree,
        sub_meta,
        root_tree,
        root_meta,
        commit,
    }
}

fn id(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex).expect("64 hex digits")
}

#[test]
fn encodings_match_the_spec() {
    let v = vector();
    let cases = [
        ("hello.txt header", v.hello.encode(), HELLO_HEADER_HEX),
        ("link header", v.link.encode(), LINK_HEADER_HEX),
        ("empty header", v.empty.encode(), EMPTY_HEADER_HEX),
        ("sub dirmeta", v.sub_meta.encode(), SUB_DIRMETA_HEX),
        ("root dirmeta", v.root_meta.encode(), ROOT_DIRMETA_HEX),
        ("sub tree", v.sub_tree.encode(), SUB_TREE_HEX),
        ("root tree", v.root_tree.encode(), ROOT_TREE_HEX),
        ("commit", v.commit.encode(), COMMIT_HEX),
    ];
    for (what, bytes, expected) in cases {
        assert_eq!(hex::encode(&bytes), expected, "encoding of the {what}");
    }
}

#[test]
fn ids_match_the_spec() {
    let v = vector();
    let cases = [
        (
            "hello.txt",
            v.hello.id_with_content(HELLO_CONTENT),
            HELLO_ID,
        ),
        ("link", v.link.id_with_content(b""), LINK_ID),
        ("empty", v.empty.id_with_content(b""), EMPTY_ID),
        ("sub tree", v.sub_tree.id(), SUB_TREE_ID),
        ("sub dirmeta", v.sub_meta.id(), SUB_DIRMETA_ID),
        ("root tree", v.root_tree.id(), ROOT_TREE_ID),
        ("root dirmeta", v.root_meta.id(), ROOT_DIRMETA_ID),
        ("commit", v.commit.id(), COMMIT_ID),
        (
            "empty tree",
            Tree::from_entries(vec![]).unwrap().id(),
            EMPTY_TREE_ID,
        ),
    ];
    for (what, actual, expected) in cases {
        assert_eq!(actual.to_hex(), expected, "id of the {what}");
    }
    // An id is the SHA-256 of the canonical encoding; for a file object, of
    // the header followed by the content.
    let mut hello = hex::decode(HELLO_HEADER_HEX).expect("hex");
    hello.extend_from_slice(HELLO_CONTENT);
    assert_eq!(ObjectId::of(&hello), id(HELLO_ID));
    assert_eq!(
        ObjectId::of(&hex::decode(COMMIT_HEX).expect("hex")),
        id(COMMIT_ID)
    );
}

#[test]
fn published_encodings_decode() {
    let v = vector();
    let bytes = |h: &str| hex::decode(h).expect("hex");
    assert_eq!(
        FileHeader::decode(&bytes(HELLO_HEADER_HEX)).unwrap(),
        v.hello
    );
    assert_eq!(FileHeader::decode(&bytes(LINK_HEADER_HEX)).unwrap(), v.link);
    assert_eq!(
        FileHeader::decode(&bytes(EMPTY_HEADER_HEX)).unwrap(),
        v.empty
    );
    assert_eq!(
        DirMeta::decode(&bytes(SUB_DIRMETA_HEX)).unwrap(),
        v.sub_meta
    );
    assert_eq!(
        DirMeta::decode(&bytes(ROOT_DIRMETA_HEX)).unwrap(),
        v.root_meta
    );
    assert_eq!(Tree::decode(&bytes(SUB_TREE_HEX)).unwrap(), v.sub_tree);
    assert_eq!(Tree::decode(&bytes(ROOT_TREE_HEX)).unwrap(), v.root_tree);
    assert_eq!(Commit::decode(&bytes(COMMIT_HEX)).unwrap(), v.commit);
}

/// Creates the test-vector tree on disk, with its owners. Needs root.
fn make_tree(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{chown, lchown, symlink};
    let perm = |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode));
    fs::create_dir(root)?;
    fs::write(root.join("hello.txt"), HELLO_CONTENT)?;
    perm(&root.join("hello.txt"), 0o644)?;
    chown(root.join("hello.txt"), Some(0), Some(0))?;
    symlink("hello.txt", root.join("link"))?;
    lchown(root.join("link"), Some(0), Some(0))?;
    fs::create_dir(root.join("sub"))?;
    fs::write(root.join("sub/empty"), b"")?;
    perm(&root.join("sub/empty"), 0o600)?;
    chown(root.join("sub/empty"), Some(1000), Some(1000))?;
    perm(&root.join("sub"), 0o700)?;
    chown(root.join("sub"), Some(1000), Some(1000))?;
    perm(root, 0o755)?;
    chown(root, Some(0), Some(0))?;
    Ok(())
}

/// Any extended attribute a commit would record (an SELinux label, say)
/// changes the ids; returns the first path that has one.
fn path_with_xattrs(root: &Path) -> Option<String> {
    ["", "hello.txt", "link", "sub", "sub/empty"]
        .into_iter()
        .map(|p| root.join(p))
        .find(|p| !fsutil::read_xattrs(p).expect("reading xattrs").is_empty())
        .map(|p| p.display().to_string())
}

#[test]
fn committing_the_tree_from_disk_gives_the_vector_in_both_modes() {
    if !fsutil::privileged() {
        eprintln!(
            "skipping the on-disk part of the test vectors: the tree has files owned by \
             uid 0 and 1000, which only root can create (the in-memory vectors are \
             checked by the other tests)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree).unwrap();
    if let Some(path) = path_with_xattrs(&tree) {
        eprintln!(
            "skipping the on-disk part of the test vectors: {path} carries extended \
             attributes (the vectors have none), so its ids would differ"
        );
        return;
    }
    let opts = CommitOptions {
        subject: SUBJECT.into(),
        body: String::new(),
        timestamp: TIMESTAMP,
        metadata: metadata(),
    };
    let ref_name = RefName::new("test/vector").unwrap();
    for mode in [RepoMode::Archive, RepoMode::BareUser] {
        let path = tmp.path().join(mode.name());
        let repo = Repo::init(&path, mode).unwrap();
        let (commit, _) = commit_dir(&repo, &tree, &ref_name, &opts).unwrap();
        assert_eq!(commit, id(COMMIT_ID), "commit id in a {mode} repository");
        assert_eq!(read_ref(&repo, &ref_name).unwrap(), commit);
        let c = repo.read_commit(&commit).unwrap();
        assert_eq!(c.root_tree, id(ROOT_TREE_ID));
        assert_eq!(c.root_meta, id(ROOT_DIRMETA_ID));

        check_store_layout(&repo);

        // A checkout of the commit, committed again under a new ref (so
        // again without a parent), gives the same commit: neither the mode,
        // hardlinks nor mtimes enter an id.
        let out = tmp.path().join(format!("checkout-{mode}"));
        checkout(&repo, &commit, &out, &CheckoutOptions::default()).unwrap();
        assert_eq!(
            fs::read_link(out.join("link")).unwrap(),
            Path::new("hello.txt")
        );
        let meta = fs::symlink_metadata(out.join("sub/empty")).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o600, 1000, 1000)
        );
        assert_eq!(meta.mtime(), 0);
        let again = RefName::new("test/again").unwrap();
        let (recommit, _) = commit_dir(&repo, &out, &again, &opts).unwrap();
        assert_eq!(
            recommit, commit,
            "recommitting a checkout from a {mode} repository"
        );
    }
}

/// Checks the stored form of the vector's objects against "How objects are
/// stored" in the specification.
fn check_store_layout(repo: &Repo) {
    let object = |hex: &str, ext: &str| {
        repo.path()
            .join("objects")
            .join(&hex[..2])
            .join(format!("{}.{ext}", &hex[2..]))
    };
    // Trees, dirmetas and commits: their canonical bytes in both modes.
    for (hex_id, ext, encoding) in [
        (ROOT_TREE_ID, "tree", ROOT_TREE_HEX),
        (SUB_DIRMETA_ID, "dirmeta", SUB_DIRMETA_HEX),
        (COMMIT_ID, "commit", COMMIT_HEX),
    ] {
        let stored = fs::read(object(hex_id, ext)).unwrap();
        assert_eq!(hex::encode(stored), encoding, "stored {ext} object");
    }
    let ref_file = repo.path().join("refs/heads/test/vector");
    assert_eq!(
        fs::read_to_string(ref_file).unwrap(),
        format!("{COMMIT_ID}\n")
    );
    match repo.mode() {
        RepoMode::Archive => {
            // u32 LE header length, header, zstd frame of the content.
            let stored = fs::read(object(HELLO_ID, "filez")).unwrap();
            let header = hex::decode(HELLO_HEADER_HEX).unwrap();
            assert_eq!(stored[..4], (header.len() as u32).to_le_bytes());
            assert_eq!(stored[4..4 + header.len()], header[..]);
            let content = zstd::stream::decode_all(&stored[4 + header.len()..]).unwrap();
            assert_eq!(content, HELLO_CONTENT);
            // Empty content: no zstd frame at all.
            let stored = fs::read(object(EMPTY_ID, "filez")).unwrap();
            let header = hex::decode(EMPTY_HEADER_HEX).unwrap();
            assert_eq!(stored[..4], (header.len() as u32).to_le_bytes());
            assert_eq!(stored[4..], header[..]);
        }
        RepoMode::BareUser => {
            // Raw content; the header in the user.treectl.meta attribute;
            // owner and mode applied (we run as root); mtime 0.
            for (hex_id, header_hex, content, mode, owner) in [
                (HELLO_ID, HELLO_HEADER_HEX, HELLO_CONTENT, 0o644, 0),
                (EMPTY_ID, EMPTY_HEADER_HEX, &b""[..], 0o600, 1000),
                // A symlink is an empty regular file whose header holds the target.
                (LINK_ID, LINK_HEADER_HEX, &b""[..], 0o644, 0),
            ] {
                let path = object(hex_id, "file");
                let meta = fs::symlink_metadata(&path).unwrap();
                assert!(meta.is_file(), "{} is a regular file", path.display());
                assert_eq!(meta.mode() & 0o7777, mode, "mode of {}", path.display());
                assert_eq!(meta.mtime(), 0, "mtime of {}", path.display());
                if hex_id != LINK_ID {
                    assert_eq!((meta.uid(), meta.gid()), (owner, owner));
                }
                assert_eq!(fs::read(&path).unwrap(), content);
                let file = fs::File::open(&path).unwrap();
                let header = fsutil::fget_xattr(&file, fsutil::META_XATTR).unwrap();
                assert_eq!(
                    hex::encode(header),
                    header_hex,
                    "header of {}",
                    path.display()
                );
            }
        }
    }
}

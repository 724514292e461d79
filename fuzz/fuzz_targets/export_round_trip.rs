//! Export round trips: a tree imported from a hostile tar is exported as
//! a tar and imported again to the same root tree and metadata, and is
//! exported as a newc cpio (an initramfs) without error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_import::tar::import_tar;
use treectl_import::ImportOptions;
use treectl_store::commit::CommitOptions;
use treectl_store::export::{export, ArchiveFormat, Compression, ExportOptions};
use treectl_store::refs::RefName;

fuzz_target!(|data: &[u8]| {
    let repo = treectl_fuzz::scratch_repo();
    let input = treectl_fuzz::input_file("round-trip-in.tar", data);
    let opts = CommitOptions {
        timestamp: 0,
        ..Default::default()
    };
    let first = RefName::new("fuzz/rt-a").expect("a valid ref name");
    let Ok(a) = import_tar(&repo, &input, &first, &opts, &ImportOptions::default()) else {
        return;
    };
    let mut tar = Vec::new();
    export(
        &repo,
        &a.commit,
        &ExportOptions {
            format: ArchiveFormat::Tar,
            compression: Compression::None,
        },
        &mut tar,
    )
    .expect("an imported tree exports as tar");
    let again = treectl_fuzz::input_file("round-trip-out.tar", &tar);
    let second = RefName::new("fuzz/rt-b").expect("a valid ref name");
    let b = import_tar(&repo, &again, &second, &opts, &ImportOptions::default())
        .expect("an exported tar imports");
    let ca = repo.read_commit(&a.commit).expect("commit a");
    let cb = repo.read_commit(&b.commit).expect("commit b");
    assert_eq!(
        (ca.root_tree, ca.root_meta),
        (cb.root_tree, cb.root_meta),
        "tar export then import changed the tree"
    );
    let mut cpio = Vec::new();
    export(
        &repo,
        &a.commit,
        &ExportOptions {
            format: ArchiveFormat::Cpio,
            compression: Compression::None,
        },
        &mut cpio,
    )
    .expect("an imported tree exports as cpio");
    assert!(cpio.starts_with(b"070701"), "a newc cpio");
});

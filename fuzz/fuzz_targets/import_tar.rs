//! The tar importer (and the compression sniffer in front of it) on
//! hostile archives, into a scratch repository: an error or a commit,
//! never a panic, a hang or an allocation past the archive limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_import::tar::import_tar;
use treectl_import::ImportOptions;
use treectl_store::commit::CommitOptions;
use treectl_store::refs::RefName;

fuzz_target!(|data: &[u8]| {
    let repo = treectl_fuzz::scratch_repo();
    let input = treectl_fuzz::input_file("input.tar", data);
    let name = RefName::new("fuzz/tar").expect("a valid ref name");
    let _ = import_tar(
        &repo,
        &input,
        &name,
        &CommitOptions::default(),
        &ImportOptions::default(),
    );
});

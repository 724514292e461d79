//! The `.deb` importer (ar, control and data members, compressed tars)
//! on hostile packages, into a scratch repository.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_import::deb::{import_debs, DebCommitOptions, DebRequest};
use treectl_import::ImportOptions;
use treectl_store::refs::RefName;

fuzz_target!(|data: &[u8]| {
    let repo = treectl_fuzz::scratch_repo();
    let input = treectl_fuzz::input_file("input.deb", data);
    let request = DebRequest {
        path: input,
        ref_name: Some(RefName::new("fuzz/deb").expect("a valid ref name")),
    };
    let _ = import_debs(
        &repo,
        &[request],
        &DebCommitOptions {
            timestamp: Some(0),
            ..Default::default()
        },
        &ImportOptions::default(),
    );
});

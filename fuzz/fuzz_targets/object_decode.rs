//! Trees, dirmetas, commits and file headers from hostile bytes: decoding
//! never panics, and what decodes encodes back to the same bytes (one
//! canonical encoding per object, so one id).
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_store::object::{Commit, DirMeta, FileHeader, Tree};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(t) = Tree::decode(bytes) {
                assert_eq!(t.encode(), bytes, "a tree has one encoding");
            }
        }
        1 => {
            if let Ok(m) = DirMeta::decode(bytes) {
                assert_eq!(m.encode(), bytes, "a dirmeta has one encoding");
            }
        }
        2 => {
            if let Ok(c) = Commit::decode(bytes) {
                assert_eq!(c.encode(), bytes, "a commit has one encoding");
            }
        }
        _ => {
            if let Ok(h) = FileHeader::decode(bytes) {
                assert_eq!(h.encode(), bytes, "a file header has one encoding");
            }
        }
    }
});

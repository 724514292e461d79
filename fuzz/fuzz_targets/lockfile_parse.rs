//! Lockfiles from hostile text: parsing never panics, and a lockfile that
//! parses is written back deterministically and reads back the same.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use treectl_lockfiles::Lockfile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.lock");
    if let Ok(lock) = Lockfile::parse(text, path) {
        let written = lock.to_text();
        let back = Lockfile::parse(&written, path).expect("a written lockfile parses");
        assert_eq!(back, lock);
        assert_eq!(back.to_text(), written);
    }
});

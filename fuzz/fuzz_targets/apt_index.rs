//! apt `Release` and `Packages` text and dependency fields from hostile
//! input: the parsers never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_lockfiles::{apt, apt_trust};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = apt::parse_release(&text);
    if let Ok(entries) = apt::parse_packages(&text, "amd64") {
        for e in entries {
            let _ = apt::parse_relations(&e.depends);
            let _ = apt::parse_provides(&e.provides);
        }
    }
    let _ = apt::parse_relations(&text);
    let _ = apt_trust::parse_rfc2822(&text);
    let _ = apt_trust::check_valid_until("fuzz", &text, 0);
});

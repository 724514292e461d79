//! The pack framing of uploads and batched fetches from hostile bytes:
//! records are read until the end or an error. The cap is as high as it
//! goes, so memory follows the bytes that arrive, not the lengths claimed
//! (libFuzzer's -malloc_limit_mb catches the difference).
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_wire::PackReader;

const MAX_RECORD: u64 = u64::MAX;

fuzz_target!(|data: &[u8]| {
    let mut reader = PackReader::new(data, MAX_RECORD);
    while let Ok(Some((_, _, bytes))) = reader.next_record() {
        assert!(bytes.len() <= data.len());
    }
});

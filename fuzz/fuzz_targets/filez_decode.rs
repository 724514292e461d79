//! The `.filez` / wire form of file objects (header length, header, zstd
//! frame) from hostile bytes: verification never panics and never
//! allocates more than the header's declared size allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_store::store::{file_wire_header, verify_wire_form};
use treectl_store::{ObjectId, ObjectKind};

fuzz_target!(|data: &[u8]| {
    let _ = file_wire_header(data);
    // Any id: the bytes are decoded and decompressed before the hash is
    // compared, so the decoders run in full.
    let id = ObjectId::from_hex(&"ab".repeat(32)).expect("a valid id");
    let _ = verify_wire_form(&id, ObjectKind::File, data);
});

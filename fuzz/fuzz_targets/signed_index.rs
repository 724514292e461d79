//! The signed ref index (`summary.json`) and commit signature JSON from
//! hostile bytes: parsing and verifying never panic, and nothing verifies
//! against a key that signed nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_release::sign::{CommitSignatures, SecretKey};
use treectl_release::summary::SignedIndex;
use treectl_store::refs::RefName;
use treectl_store::ObjectId;

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::from_seed([7; 32]).public();
    if let Ok(index) = SignedIndex::parse(data) {
        let _ = index.index_unverified();
        let _ = index.verify(&key);
        let _ = index.to_bytes();
    }
    let id = ObjectId::from_hex(&"cd".repeat(32)).expect("a valid id");
    if let Ok(sigs) = CommitSignatures::parse(&id, data) {
        let name = RefName::new("os/stable").expect("a valid ref name");
        assert!(
            sigs.verify(&name, &key).is_err(),
            "a signature no key made verified"
        );
    }
});

//! OpenPGP keyrings, clearsigned `InRelease` and detached `Release.gpg`
//! from hostile bytes: nothing panics, and what verifies returns only text
//! that is in the input (the signed part, never bytes around it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use treectl_lockfiles::apt_trust::{verify_detached, verify_inrelease, Keyring};

/// A public key `gpg` made for these targets (ed25519; its secret half,
/// `keys/fuzz-archive.secret.asc`, signs the seeds and nothing else).
const KEY: &str = include_str!("../keys/fuzz-archive.asc");

fuzz_target!(|data: &[u8]| {
    let keyring = Keyring::from_bytes(KEY.as_bytes(), "fuzz key").expect("the test key parses");
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = Keyring::from_bytes(bytes, "fuzz input");
        }
        1 => {
            if let Ok(text) = verify_inrelease("fuzz", bytes, &keyring) {
                let input = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
                for line in text.lines() {
                    assert!(input.contains(line), "{line:?} is not in the input");
                }
            }
        }
        _ => {
            // A Release, then its detached signature after a NUL.
            if let Some(nul) = bytes.iter().position(|b| *b == 0) {
                let _ = verify_detached("fuzz", &bytes[..nul], &bytes[nul + 1..], &keyring);
            }
        }
    }
});

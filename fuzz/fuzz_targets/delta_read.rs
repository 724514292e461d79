//! The static delta reader (parts of every kind: objects, zstd patches,
//! binary diffs, gzip files through their text) on hostile bytes, against
//! a repository that holds the bases. The first input byte picks the mode:
//! even, the rest is read as a delta from scratch; odd, it edits a real
//! delta of every part kind (3-byte records: a position scaled to the
//! delta's length and a byte to XOR there; with bit 1 set, the first
//! record's position also cuts the delta), so the fuzzer starts deep in
//! valid structure. Objects that come out must hash to their ids (the
//! reader checks; the sink only counts them).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use treectl_store::delta::{self, DeltaOptions, ReadLimits};
use treectl_store::Repo;

/// The repository (releases 1 and 2) and the delta 1 -> 2, made once.
fn fixture() -> &'static (PathBuf, Vec<u8>) {
    static FIXTURE: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let repo = treectl_fuzz::scratch_repo();
        let dir = repo.path().parent().expect("a parent").to_owned();
        let ids: Vec<_> = [false, true]
            .iter()
            .map(|&v2| treectl_fuzz::commit_release(&repo, &dir.join(format!("release-{v2}")), v2))
            .collect();
        let info = delta::generate(&repo, Some(&ids[0]), &ids[1], &DeltaOptions::default())
            .expect("generate the delta");
        assert!(
            info.patched >= 3,
            "every patch kind is in the fixture: {info:?}"
        );
        let bytes = std::fs::read(
            repo.path()
                .join(delta::relative_path(Some(&ids[0]), &ids[1])),
        )
        .expect("read the delta");
        (repo.path().to_owned(), bytes)
    })
}

fuzz_target!(|data: &[u8]| {
    let (path, real) = fixture();
    let repo = Repo::open(path).expect("open the repository");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut bytes = real.clone();
        let len = bytes.len();
        let at = |r: &[u8]| usize::from(u16::from_le_bytes([r[0], r[1]])) * len / 65536;
        let records: Vec<&[u8]> = rest.chunks_exact(3).collect();
        for r in &records {
            let i = at(r);
            bytes[i] ^= r[2];
        }
        if let Some(first) = records.first().filter(|_| mode & 2 != 0) {
            let cut = at(first);
            bytes.truncate(cut);
        }
        bytes
    };
    let limits = ReadLimits {
        max_object_bytes: 1 << 20,
    };
    let _ = delta::read(&repo, &input[..], None, &limits, &|_| Ok(()));
});

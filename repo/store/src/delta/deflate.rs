//! gzip files patched through their plain text.
//!
//! Debian compresses changelogs and manual pages with `gzip -9n`. A small
//! change to the text changes the whole compressed stream, so a byte-level
//! patch of one `.gz` against the last version's saves nothing. Instead
//! the delta carries the *text's* patch (zstd, the old text as prefix) and
//! the few bytes `preflate` needs to recompress that text into exactly the
//! original deflate stream (it records how the text was compressed and the
//! encoder's choices a standard encoder would not make). A reader
//! inflates the base, patches the text, recompresses it bit for bit, and
//! the object's hash check proves the result.
//!
//! The reconstruction data is `preflate-rs`'s own encoding, so the crate
//! is pinned to one version: another version's encoding needs a new delta
//! format version (docs/repository-format.md, "Static deltas").

use std::cell::Cell;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

/// The offset of the deflate stream in a gzip member (RFC 1952), or
/// `None` when `data` is not gzip.
pub(super) fn gzip_stream_start(data: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if data.len() < 18 || data[..3] != [0x1f, 0x8b, 8] || data[3] & 0xe0 != 0 {
        return None;
    }
    let flags = data[3];
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let n = u16::from_le_bytes([*data.get(at)?, *data.get(at + 1)?]) as usize;
        at += 2 + n;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += data.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at < data.len()).then_some(at)
}

/// The text of the raw deflate stream at `data[start..]`, at most `limit`
/// bytes of it.
pub(super) fn inflate(data: &[u8], start: usize, limit: u64) -> Result<Vec<u8>, String> {
    let input = data
        .get(start..)
        .ok_or("the deflate stream starts after the base's end")?;
    let mut text = Vec::new();
    flate2::read::DeflateDecoder::new(input)
        .take(limit.saturating_add(1))
        .read_to_end(&mut text)
        .map_err(|e| format!("inflating the base: {e}"))?;
    if text.len() as u64 > limit {
        return Err(format!("the base inflates to more than {limit} bytes"));
    }
    Ok(text)
}

/// A deflate stream taken apart: its text, what recompresses the text
/// into the same stream, and the stream's length.
pub(super) struct Analysis {
    pub text: Vec<u8>,
    pub reconstruction: Vec<u8>,
    pub stream_len: usize,
}

/// Takes apart the deflate stream at `data[start..]`; `None` when preflate
/// cannot describe it (not deflate, or compressed by an encoder too
/// unlike zlib's to be worth it).
pub(super) fn analyze(data: &[u8], start: usize, text_limit: usize) -> Option<Analysis> {
    let config = preflate_rs::PreflateConfig {
        plain_text_limit: text_limit,
        // The delta is read back before it is published: that checks it.
        verify_compression: false,
        ..Default::default()
    };
    let input = data.get(start..)?;
    let (result, text) =
        quietly(|| preflate_rs::preflate_whole_deflate_stream(input, &config))?.ok()?;
    Some(Analysis {
        text: text.text().to_vec(),
        reconstruction: result.corrections,
        stream_len: result.compressed_size,
    })
}

/// Recompresses `text` into the deflate stream `reconstruction` describes.
pub(super) fn recreate(text: &[u8], reconstruction: &[u8]) -> Result<Vec<u8>, String> {
    // The reconstruction data comes from the delta: a library panic on
    // bad input is an error like any other.
    quietly(|| preflate_rs::recreate_whole_deflate_stream(text, reconstruction))
        .ok_or_else(|| "the deflate reconstruction data is invalid".to_owned())?
        .map_err(|e| format!("recompressing: {e}"))
}

/// Runs `f`; a panic in it is `None`, and the panic hook does not see it
/// (no message on stderr, no abort where a hook aborts, as a fuzzer's
/// does): preflate panics on some bad input, which is then an error of
/// ours. The hook in place is wrapped once, and stays silent only on the
/// thread running `f`, only while it does.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    thread_local! {
        static QUIET: Cell<bool> = const { Cell::new(false) };
    }
    static WRAP: Once = Once::new();
    WRAP.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let out = catch_unwind(AssertUnwindSafe(f)).ok();
    QUIET.with(|q| q.set(was));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_panic_run_quietly_is_none_and_the_thread_goes_on() {
        assert_eq!(quietly(|| 7), Some(7));
        let panicked: Option<()> = quietly(|| panic!("inside"));
        assert_eq!(panicked, None);
        // Nested, and the flag restored after each.
        assert_eq!(
            quietly(|| quietly(|| panic!("inner")).is_none()),
            Some(true)
        );
        assert!(catch_unwind(|| panic!("outside, seen by the hook")).is_err());
    }

    fn gzip(text: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(text).expect("gzip");
        e.finish().expect("gzip")
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("line {i}: the quick brown fox {}\n", i * 7 % 13))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_gzip_stream_comes_back_bit_for_bit() {
        for level in [1, 6, 9] {
            let gz = gzip(&text(3000), level);
            let start = gzip_stream_start(&gz).expect("gzip");
            assert_eq!(start, 10);
            let a = analyze(&gz, start, 1 << 20).expect("analyzed");
            assert_eq!(a.text, text(3000));
            assert_eq!(start + a.stream_len + 8, gz.len(), "the trailer follows");
            let again = recreate(&a.text, &a.reconstruction).expect("recreated");
            assert_eq!(again, gz[start..start + a.stream_len]);
            assert_eq!(inflate(&gz, start, 1 << 20).expect("inflate"), a.text);
        }
    }

    /// The format's test vector (docs/repository-format.md): the text
    /// `"treectl delta\n"` three times, compressed by zlib at level 9 as
    /// raw deflate, and the reconstruction data preflate-rs 0.7.6 gives it.
    /// Another encoding of that data needs a new delta format version.
    #[test]
    fn reconstruction_test_vector() {
        let text = b"treectl delta\ntreectl delta\ntreectl delta\n";
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(text).expect("deflate");
        let stream = e.finish().expect("deflate");
        let a = analyze(&stream, 0, 1 << 20).expect("analyzed");
        assert_eq!(a.stream_len, stream.len());
        assert_eq!(
            hex::encode(&stream),
            "2b294a4d4d2ec9514849cd2949e42ac1c30300"
        );
        assert_eq!(
            hex::encode(&a.reconstruction),
            "00000409000408037f00010400000401041b030200"
        );
        assert_eq!(
            recreate(text, &a.reconstruction).expect("recreated"),
            stream
        );
    }

    #[test]
    fn headers_limits_and_bad_reconstruction_data() {
        assert_eq!(gzip_stream_start(b"not gzip at all, no"), None);
        // FNAME: the name is skipped.
        let mut named = gzip(b"hello hello hello", 9);
        named[3] = 8;
        named.splice(10..10, b"name\0".iter().copied());
        assert_eq!(gzip_stream_start(&named), Some(15));
        // A name that never ends.
        let mut endless = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        endless.extend_from_slice(&[b'a'; 20]);
        assert_eq!(gzip_stream_start(&endless), None);
        let gz = gzip(&text(3000), 9);
        assert!(inflate(&gz, 10, 100).is_err(), "over the limit");
        assert!(inflate(&gz, gz.len() + 1, 1 << 20).is_err());
        let a = analyze(&gz, 10, 1 << 20).expect("analyzed");
        // Wrong text, cut or altered reconstruction data: an error or other
        // bytes, never a panic. (A small text: some altered parameters make
        // recompressing slow, which costs the reader CPU but nothing else;
        // only the publisher can sign such a delta.)
        let other = recreate(&text(2999), &a.reconstruction);
        assert!(other.map_or(true, |s| s != gz[10..10 + a.stream_len]));
        for cut in [0, 1, a.reconstruction.len() / 2] {
            let _ = recreate(&a.text, &a.reconstruction[..cut]);
        }
        let small = gzip(&text(200), 9);
        let b = analyze(&small, 10, 1 << 20).expect("analyzed");
        for at in 0..b.reconstruction.len() {
            let mut bad = b.reconstruction.clone();
            bad[at] ^= 0x55;
            let _ = recreate(&b.text, &bad);
        }
    }
}

//! A binary diff for executables: bsdiff's method (Colin Percival, "Naive
//! differences of executable code"), with the search of the `qbsdiff`
//! crate (MIT), written out here because the delta keeps its own stream
//! layout and compression (zstd, one frame) instead of bsdiff 4's bzip2.
//!
//! Compiled code moves between versions: a small change shifts every
//! address after it, so most of the new file is "old bytes plus a small
//! difference" at some offset. The diff is a list of controls, each
//! `(add, copy, seek)`: add `add` bytes of the old file (from the current
//! old position) to as many bytes of the difference stream, copy `copy`
//! new bytes from the extra stream, then move the old position by `seek`.
//! The difference stream is mostly zero bytes, which zstd shrinks well.
//!
//! Payload (before zstd): `count: u64 ‖ count × (add: u64, copy: u64,
//! seek: i64) ‖ Σadd difference bytes ‖ Σcopy extra bytes`, little-endian.

use std::ops::Range;

use suffix_array::SuffixArray;

/// Matches this short are not worth a control.
const SMALL_MATCH: usize = 12;
/// Mismatches a match must have against the current alignment to start a
/// new control.
const MISMATCH_COUNT: usize = 8;
/// Above this, the end of a similar run is found by binary search.
const LONG_SUFFIX: usize = 256;

/// The bsdiff payload turning `old` into `new`.
pub(super) fn diff(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut sa = SuffixArray::new(old);
    sa.enable_buckets();
    let mut search = Search {
        s: old,
        t: new,
        sa: &sa,
        i0: 0,
        j0: 0,
        n0: 0,
        b0: 0,
    };
    let mut controls: Vec<(u64, u64, i64)> = Vec::new();
    let mut diff = Vec::new();
    let mut extra = Vec::new();
    let (mut spos, mut tpos) = (0usize, 0usize);
    while let Some((add, copy, seek)) = search.next_control() {
        diff.extend(
            old[spos..spos + add]
                .iter()
                .zip(&new[tpos..tpos + add])
                .map(|(o, n)| n.wrapping_sub(*o)),
        );
        tpos += add;
        extra.extend_from_slice(&new[tpos..tpos + copy]);
        tpos += copy;
        spos = (spos + add).wrapping_add_signed(seek as isize);
        controls.push((add as u64, copy as u64, seek));
    }
    debug_assert_eq!(tpos, new.len());
    let mut out = Vec::with_capacity(8 + 24 * controls.len() + diff.len() + extra.len());
    out.extend_from_slice(&(controls.len() as u64).to_le_bytes());
    for (add, copy, seek) in &controls {
        out.extend_from_slice(&add.to_le_bytes());
        out.extend_from_slice(&copy.to_le_bytes());
        out.extend_from_slice(&seek.to_le_bytes());
    }
    out.extend_from_slice(&diff);
    out.extend_from_slice(&extra);
    out
}

/// Rebuilds the new file from `old` and a payload; exactly `size` bytes or
/// an error (every control is bounds-checked: a hostile payload can make
/// wrong bytes, which the caller's hash check refuses, never a panic or an
/// allocation beyond `size`).
pub(super) fn apply(old: &[u8], payload: &[u8], size: usize) -> Result<Vec<u8>, String> {
    let word = |at: usize| -> [u8; 8] { payload[at..at + 8].try_into().expect("8 bytes") };
    if payload.len() < 8 {
        return Err("truncated bsdiff controls".into());
    }
    let count = u64::from_le_bytes(word(0));
    let controls_end = count
        .checked_mul(24)
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= payload.len() as u64)
        .ok_or("truncated bsdiff controls")? as usize;
    let mut adds = 0u64;
    for at in (8..controls_end).step_by(24) {
        adds = adds
            .checked_add(u64::from_le_bytes(word(at)))
            .filter(|&a| a <= size as u64)
            .ok_or("bsdiff controls add more than the file's size")?;
    }
    let mut diff_at = controls_end;
    let mut extra_at = controls_end
        .checked_add(adds as usize)
        .filter(|&e| e <= payload.len())
        .ok_or("truncated bsdiff difference bytes")?;
    let mut out = Vec::with_capacity(size);
    let mut old_at: u64 = 0;
    for at in (8..controls_end).step_by(24) {
        let add = u64::from_le_bytes(word(at)) as usize;
        if add > size - out.len() {
            return Err("bsdiff controls make more than the file's size".into());
        }
        let copy = u64::from_le_bytes(word(at + 8));
        let seek = i64::from_le_bytes(word(at + 16));
        let from = usize::try_from(old_at)
            .ok()
            .and_then(|o| old.get(o..o.checked_add(add)?))
            .ok_or("a bsdiff control reads outside the base")?;
        let delta = &payload[diff_at..diff_at + add];
        out.extend(from.iter().zip(delta).map(|(o, d)| o.wrapping_add(*d)));
        diff_at += add;
        let copy = usize::try_from(copy)
            .ok()
            .filter(|&c| c <= size - out.len())
            .ok_or("bsdiff controls make more than the file's size")?;
        let bytes = payload
            .get(extra_at..extra_at + copy)
            .ok_or("truncated bsdiff extra bytes")?;
        out.extend_from_slice(bytes);
        extra_at += copy;
        old_at = old_at
            .checked_add(add as u64)
            .and_then(|o| o.checked_add_signed(seek))
            .ok_or("a bsdiff control seeks outside the base")?;
    }
    if out.len() != size {
        return Err(format!("bsdiff makes {} bytes, not {size}", out.len()));
    }
    if extra_at != payload.len() {
        return Err("bytes after the bsdiff extra bytes".into());
    }
    Ok(out)
}

/// The search state: the previous exact match `s[i0..i0+n0] ==
/// t[j0..j0+n0]`, with `b0` similar bytes before it.
struct Search<'a> {
    s: &'a [u8],
    t: &'a [u8],
    sa: &'a SuffixArray<'a>,
    i0: usize,
    j0: usize,
    n0: usize,
    b0: usize,
}

impl Search<'_> {
    /// The next control, or `None` once the target is covered.
    fn next_control(&mut self) -> Option<(usize, usize, i64)> {
        let (i, j, n) = self.next_match()?;
        let (a0, b) = self.shrink_gap(i, j);
        let (i0, j0, n0, b0) = (self.i0, self.j0, self.n0, self.b0);
        let add = b0 + n0 + a0;
        let copy = (j - b) - (j0 + n0 + a0);
        let seek = (i - b).wrapping_sub(i0 + n0 + a0) as isize as i64;
        (self.i0, self.j0, self.n0, self.b0) = (i, j, n, b);
        Some((add, copy, seek))
    }

    /// The next exact match `(i, j, n)` that differs enough from the
    /// current alignment; the end of both files at the end.
    fn next_match(&mut self) -> Option<(usize, usize, usize)> {
        if self.j0 == self.t.len() && self.b0 == 0 {
            return None;
        }
        let mut j = self.j0 + self.n0;
        let mut k = j;
        let mut m = 0usize;
        while j < self.t.len().saturating_sub(SMALL_MATCH) {
            let (i, n) = extent(self.sa.search_lcp(&self.t[j..]));
            // Bytes of the match that the current alignment also has.
            while k < j + n {
                let at = self.i0.saturating_add(k - self.j0);
                if at < self.s.len() && self.s[at] == self.t[k] {
                    m += 1;
                }
                k += 1;
            }
            if n == 0 {
                j += 1;
                m = 0;
            } else if m == n || n <= SMALL_MATCH {
                // The current alignment already has it, or it is too short
                // to matter: skip it whole.
                j += n;
                m = 0;
            } else if n <= m + MISMATCH_COUNT {
                // Mostly what the current alignment has: step past it.
                let next = if n <= LONG_SUFFIX {
                    j + 1
                } else {
                    let (mut lo, mut hi) = (0, n);
                    while lo < hi {
                        let mid = lo + (hi - lo) / 2;
                        let (im, nm) = extent(self.sa.search_lcp(&self.t[j + mid..]));
                        if i + n == im + nm && n == mid + nm {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    j + lo.max(1)
                };
                let mut at = self.i0.saturating_add(j - self.j0);
                while j < next {
                    if at < self.s.len() && self.s[at] == self.t[j] {
                        m -= 1;
                    }
                    at += 1;
                    j += 1;
                }
            } else {
                return Some((i, j, n));
            }
        }
        Some((self.s.len(), self.t.len(), 0))
    }

    /// How far the previous alignment extends forward (`a0`) and the next
    /// one backward (`b`) into the gap between two exact matches.
    fn shrink_gap(&self, i: usize, j: usize) -> (usize, usize) {
        let gap = &self.t[self.j0 + self.n0..j];
        let suffix = &self.s[(self.i0 + self.n0).min(self.s.len())..];
        let prefix = &self.s[..i];
        let mut a0 = best_similar(gap.iter(), suffix.iter());
        let mut b = best_similar(gap.iter().rev(), prefix.iter().rev());
        if a0 + b > gap.len() {
            let n = a0 + b - gap.len();
            let xs = gap[gap.len() - b..a0].iter();
            let ys = suffix[gap.len() - b..a0].iter();
            let zs = prefix[prefix.len() - b..prefix.len() - b + n].iter();
            let split = best_split(xs, ys, zs);
            a0 -= n - split;
            b -= split;
        }
        (a0, b)
    }
}

fn extent(r: Range<usize>) -> (usize, usize) {
    (r.start, r.end.saturating_sub(r.start))
}

/// The length over which `xs` and `ys` are most alike (matches minus
/// mismatches is highest).
fn best_similar<'a>(xs: impl Iterator<Item = &'a u8>, ys: impl Iterator<Item = &'a u8>) -> usize {
    let (mut best_len, mut matched, mut best) = (0usize, 0usize, 0isize);
    for (n, (x, y)) in (1..).zip(xs.zip(ys)) {
        matched += usize::from(x == y);
        let score = matched as isize - (n - matched) as isize;
        if score > best {
            best_len = n;
            best = score;
        }
    }
    best_len
}

/// Where an overlap of two alignments is best divided: `xs` compared with
/// the first alignment's `ys` and the second's `zs`.
fn best_split<'a>(
    xs: impl Iterator<Item = &'a u8>,
    ys: impl Iterator<Item = &'a u8>,
    zs: impl Iterator<Item = &'a u8>,
) -> usize {
    let (mut split, mut y_matched, mut z_matched, mut best) = (0usize, 0isize, 0isize, 0isize);
    for (n, ((x, y), z)) in (1..).zip(xs.zip(ys).zip(zs)) {
        y_matched += isize::from(x == y);
        z_matched += isize::from(x == z);
        if y_matched - z_matched > best {
            split = n;
            best = y_matched - z_matched;
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::super::tests::noise;
    use super::*;

    /// Like compiled code after a change: a block inserted, everything
    /// after it shifted, and scattered bytes (addresses) changed.
    fn shifted(old: &[u8]) -> Vec<u8> {
        let mut new = old[..30_000].to_vec();
        new.extend_from_slice(&noise(99, 777));
        new.extend_from_slice(&old[30_000..]);
        for at in (40_000..new.len()).step_by(97) {
            new[at] = new[at].wrapping_add(3);
        }
        new
    }

    #[test]
    fn rebuilds_the_new_file_and_beats_zstd_on_shifted_code() {
        let old = noise(7, 300_000);
        let new = shifted(&old);
        let payload = diff(&old, &new);
        assert_eq!(apply(&old, &payload, new.len()).expect("apply"), new);
        let bsdiff = zstd::bulk::compress(&payload, 12).expect("zstd").len();
        let alone = zstd::bulk::compress(&new, 12).expect("zstd").len();
        assert!(bsdiff * 10 < alone, "bsdiff {bsdiff} vs alone {alone}");
    }

    /// The format's test vector (docs/repository-format.md): two controls
    /// turn `abcdefgh` into `abxdeYZfgh`.
    #[test]
    fn payload_test_vector() {
        let mut p = 2u64.to_le_bytes().to_vec();
        // add 5 (a b c+21=x d e), copy 2 (Y Z), seek 0; add 3 (f g h).
        for (add, copy, seek) in [(5u64, 2u64, 0i64), (3, 0, 0)] {
            p.extend_from_slice(&add.to_le_bytes());
            p.extend_from_slice(&copy.to_le_bytes());
            p.extend_from_slice(&seek.to_le_bytes());
        }
        p.extend_from_slice(&[0, 0, 21, 0, 0, 0, 0, 0]);
        p.extend_from_slice(b"YZ");
        assert_eq!(apply(b"abcdefgh", &p, 10).expect("apply"), b"abxdeYZfgh");
    }

    #[test]
    fn edge_cases_rebuild() {
        for (old, new) in [
            (vec![], vec![]),
            (vec![], b"only new".to_vec()),
            (b"only old".to_vec(), vec![]),
            (noise(1, 5000), noise(2, 5000)),
            (noise(3, 20_000), noise(3, 20_000)),
            (noise(4, 100), noise(4, 50_000)),
        ] {
            let payload = diff(&old, &new);
            assert_eq!(apply(&old, &payload, new.len()).expect("apply"), new);
        }
    }

    #[test]
    fn hostile_payloads_are_refused_without_a_panic() {
        let old = noise(7, 50_000);
        let new = shifted(&old[..]);
        let good = diff(&old, &new);
        // Wrong size, truncation anywhere, a byte flipped in the controls.
        assert!(apply(&old, &good, new.len() + 1).is_err());
        assert!(apply(&old, &good, new.len() - 1).is_err());
        for cut in [0, 7, 8, 20, good.len() / 2, good.len() - 1] {
            assert!(apply(&old, &good[..cut], new.len()).is_err(), "cut {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(apply(&old, &longer, new.len()).is_err());
        for at in 0..good.len().min(8 + 24 * 4) {
            for bit in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[at] ^= bit;
                // Either refused, or some bytes that are not the new file
                // (the caller's hash check refuses those).
                if let Ok(out) = apply(&old, &bad, new.len()) {
                    assert_eq!(out.len(), new.len());
                }
            }
        }
        // Controls that add or seek beyond the base.
        let mut huge = 1u64.to_le_bytes().to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&0i64.to_le_bytes());
        assert!(apply(&old, &huge, 10).is_err());
        let mut seek = 2u64.to_le_bytes().to_vec();
        for (a, c, s) in [(1u64, 0u64, i64::MIN), (1, 0, 0)] {
            seek.extend_from_slice(&a.to_le_bytes());
            seek.extend_from_slice(&c.to_le_bytes());
            seek.extend_from_slice(&s.to_le_bytes());
        }
        seek.extend_from_slice(&[0, 0]);
        assert!(apply(&old, &seek, 2).is_err());
    }
}

//! Where a static mirror's packs hold each object, and how a batch of
//! wanted objects becomes a few Range requests: objects sorted by pack and
//! offset, neighbours merged into one range when the bytes between them
//! are few (downloading a small gap is cheaper than another request), and
//! ranges cut at object boundaries so a batch still spreads over workers.

use std::collections::HashMap;

use treectl_release::packs::{PackIndex, PackRef};
use treectl_wire::ObjectRef;

/// Bytes between two wanted objects of a pack that are downloaded and
/// skipped rather than starting another request.
pub const MAX_GAP: u64 = 256 << 10;
/// Smallest and largest range a batch is cut into (see [`piece_bytes`]).
const MIN_PIECE: u64 = 1 << 20;
const MAX_PIECE: u64 = 32 << 20;

/// The verified pack indexes of a remote: each object's pack and bytes.
#[derive(Debug, Default)]
pub struct PackMap {
    packs: Vec<PackRef>,
    at: HashMap<ObjectRef, Slot>,
}

/// An object's place: pack number, offset, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    pack: usize,
    offset: u64,
    length: u64,
}

/// One Range request: `start..end` of a pack, and the objects in it in
/// offset order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackRange {
    pub pack: PackRef,
    pub start: u64,
    pub end: u64,
    /// Each object with its offset and length in the pack.
    pub objects: Vec<(ObjectRef, u64, u64)>,
}

impl PackMap {
    /// Adds a pack whose index was verified against `pack` (its hash,
    /// the pack it names and that pack's size). An object in several
    /// packs keeps the first.
    pub fn add(&mut self, pack: PackRef, index: &PackIndex) {
        let n = self.packs.len();
        self.packs.push(pack);
        for e in &index.entries {
            self.at
                .entry(ObjectRef {
                    id: e.id,
                    kind: e.kind,
                })
                .or_insert(Slot {
                    pack: n,
                    offset: e.offset,
                    length: e.length,
                });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The ranges that fetch the packed objects of `objs`, each at most
    /// about `piece` bytes (a larger object is a range of its own), and
    /// the objects no pack holds.
    pub fn plan(&self, objs: &[ObjectRef], piece: u64) -> (Vec<PackRange>, Vec<ObjectRef>) {
        let mut packed = Vec::new();
        let mut loose = Vec::new();
        for obj in objs {
            match self.at.get(obj) {
                Some(s) => packed.push((*obj, *s)),
                None => loose.push(*obj),
            }
        }
        packed.sort_by_key(|(_, s)| (s.pack, s.offset));
        packed.dedup_by_key(|(o, _)| *o);
        let mut ranges: Vec<PackRange> = Vec::new();
        let mut last_pack = usize::MAX;
        for (obj, s) in packed {
            let end = s.offset + s.length;
            match ranges.last_mut() {
                Some(r)
                    if last_pack == s.pack
                        && s.offset >= r.end
                        && s.offset - r.end <= MAX_GAP
                        && end - r.start <= piece =>
                {
                    r.end = end;
                    r.objects.push((obj, s.offset, s.length));
                }
                _ => ranges.push(PackRange {
                    pack: self.packs[s.pack].clone(),
                    start: s.offset,
                    end,
                    objects: vec![(obj, s.offset, s.length)],
                }),
            }
            last_pack = s.pack;
        }
        (ranges, loose)
    }

    /// The length of `obj` in a pack, if one holds it.
    pub fn length(&self, obj: &ObjectRef) -> Option<u64> {
        self.at.get(obj).map(|s| s.length)
    }

    /// The bytes the packed objects of `objs` take.
    pub fn packed_bytes(&self, objs: &[ObjectRef]) -> u64 {
        objs.iter()
            .filter_map(|o| self.at.get(o))
            .map(|s| s.length)
            .sum()
    }
}

/// How large a range to cut a batch of `total` packed bytes into for
/// `jobs` workers: one range per worker, within bounds.
pub fn piece_bytes(total: u64, jobs: usize) -> u64 {
    (total / jobs.max(1) as u64 + 1).clamp(MIN_PIECE, MAX_PIECE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use treectl_release::packs::PackEntry;
    use treectl_store::{ObjectId, ObjectKind};

    fn obj(n: u8) -> ObjectRef {
        ObjectRef {
            id: ObjectId::of(&[n]),
            kind: ObjectKind::File,
        }
    }

    /// A pack of objects 0..n with the given lengths.
    fn pack(first: u8, lengths: &[u64]) -> (PackRef, PackIndex) {
        let mut offset = 0;
        let entries = lengths
            .iter()
            .enumerate()
            .map(|(i, &length)| {
                let o = obj(first + i as u8);
                let e = PackEntry {
                    id: o.id,
                    kind: o.kind,
                    offset,
                    length,
                };
                offset += length;
                e
            })
            .collect();
        let name = ObjectId::of(&[first, 0xff]);
        (
            PackRef {
                name,
                size: offset,
                index_sha256: name,
                index_size: 0,
            },
            PackIndex {
                pack: name,
                size: offset,
                entries,
            },
        )
    }

    #[test]
    fn runs_merge_small_gaps_and_split_at_the_piece_size() {
        let mut map = PackMap::default();
        let (a, ai) = pack(0, &[100, 100, MAX_GAP, 100, MAX_GAP + 1, 100]);
        let (b, bi) = pack(10, &[50, 50]);
        map.add(a.clone(), &ai);
        map.add(b.clone(), &bi);
        // Asked out of order, with an unpacked object and a duplicate.
        let want = [
            obj(5),
            obj(11),
            obj(0),
            obj(99),
            obj(3),
            obj(1),
            obj(10),
            obj(0),
        ];
        let (ranges, loose) = map.plan(&want, 1 << 30);
        assert_eq!(loose, vec![obj(99)]);
        let got: Vec<_> = ranges
            .iter()
            .map(|r| (r.pack.name, r.start, r.end, r.objects.len()))
            .collect();
        let o3 = 200 + MAX_GAP;
        let o5 = o3 + 100 + MAX_GAP + 1;
        assert_eq!(
            got,
            vec![
                // 0 and 1 adjacent; 3 after a gap of exactly MAX_GAP (object 2).
                (a.name, 0, o3 + 100, 3),
                // 5 after a gap one byte too long.
                (a.name, o5, o5 + 100, 1),
                (b.name, 0, 100, 2),
            ]
        );
        assert_eq!(ranges[0].objects[2], (obj(3), o3, 100));
        // A small piece size cuts runs at object boundaries.
        let (ranges, _) = map.plan(&[obj(10), obj(11)], 60);
        assert_eq!(ranges.len(), 2);
        assert_eq!(
            map.packed_bytes(&want),
            100 + 100 + 100 + 100 + 50 + 50 + 100
        );
        assert_eq!(map.length(&obj(11)), Some(50));
        assert_eq!(map.length(&obj(99)), None);
        assert_eq!(piece_bytes(0, 8), MIN_PIECE);
        assert_eq!(piece_bytes(80 << 20, 8), (10 << 20) + 1);
        assert_eq!(piece_bytes(1 << 40, 8), MAX_PIECE);
    }
}

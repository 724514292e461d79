//! The compose cache: merged directories remembered by their inputs, so a
//! recompose after a small bump skips every merged subtree whose inputs did
//! not change, without reading it.
//!
//! A key is the sha256 of everything that decides a merged directory: the
//! kind of merge, its path(s), the ordered `(component name, tree id,
//! dirmeta id)` inputs that meet there, and the `[[compose.override]]`
//! entries that can apply at or below it (see [`crate::merge`]). The
//! value is the resulting `(tree id, dirmeta id)` plus what the merge
//! reported (dirmeta differences, overridden paths, identical duplicates),
//! so a cached compose reports the same things as an uncached one.
//! `remove` patterns are applied after merging and are not part of keys.
//!
//! Stored in one file, `<repo>/state/compose-cache/entries.jsonl`: a header
//! line `{"format":"treectl-compose-cache","version":1}` then one JSON
//! entry per line. It is only a cache: a missing, unreadable or corrupt
//! file (or line) means recompute, and an entry is only trusted when its
//! tree and dirmeta objects exist in the repository. It is rewritten
//! (atomically, by rename) after each successful compose with the entries
//! that compose used or made, plus older ones while the file stays under
//! [`MAX_ENTRIES`]. Deleting the directory is always safe.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use treectl_store::object::ObjectKind;
use treectl_store::{ObjectId, Repo};

use crate::merge::DirMetaDifference;

/// The cache's directory under the repository.
pub const CACHE_DIR: &str = "state/compose-cache";
/// The cache file inside [`CACHE_DIR`].
pub const CACHE_FILE: &str = "entries.jsonl";
/// Format version of the cache file; another version is ignored.
pub const CACHE_VERSION: u32 = 1;
/// Entries kept beyond those the last compose used.
pub const MAX_ENTRIES: usize = 100_000;
const FORMAT_NAME: &str = "treectl-compose-cache";

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
}

/// What a merged directory came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedMerge {
    pub tree: String,
    pub meta: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub identical_duplicates: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirmeta_differences: Vec<DirMetaDifference>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    #[serde(flatten)]
    value: CachedMerge,
}

/// The cache of one compose: loaded entries, and the ones used or made.
#[derive(Debug, Default)]
pub struct ComposeCache {
    path: Option<PathBuf>,
    entries: HashMap<[u8; 32], CachedMerge>,
    used: HashMap<[u8; 32], CachedMerge>,
    /// Lookups answered from the cache.
    pub hits: usize,
    /// Lookups that had to merge.
    pub misses: usize,
}

impl ComposeCache {
    /// A cache that starts empty and is never saved.
    pub fn disabled() -> ComposeCache {
        ComposeCache::default()
    }

    /// The cache file of `repo`.
    pub fn file(repo: &Repo) -> PathBuf {
        repo.path().join(CACHE_DIR).join(CACHE_FILE)
    }

    /// Loads the repository's cache; anything unreadable gives an empty one.
    pub fn load(repo: &Repo) -> ComposeCache {
        let path = Self::file(repo);
        let entries = std::fs::read_to_string(&path)
            .map(|text| parse(&text))
            .unwrap_or_default();
        ComposeCache {
            path: Some(path),
            entries,
            ..Default::default()
        }
    }

    /// The entry for `key`, if its objects exist in `repo`.
    pub fn get(
        &mut self,
        repo: &Repo,
        key: &[u8; 32],
    ) -> Option<(ObjectId, ObjectId, CachedMerge)> {
        let v = self.entries.get(key)?;
        let tree = ObjectId::from_hex(&v.tree)?;
        let meta = ObjectId::from_hex(&v.meta)?;
        if !repo.has_object(&tree, ObjectKind::Tree) || !repo.has_object(&meta, ObjectKind::DirMeta)
        {
            return None;
        }
        let v = v.clone();
        self.used.insert(*key, v.clone());
        self.hits += 1;
        Some((tree, meta, v))
    }

    /// Remembers a merge made by this compose (saved by [`Self::save`]).
    pub fn put(&mut self, key: [u8; 32], value: CachedMerge) {
        self.misses += 1;
        self.used.insert(key, value);
    }

    /// Writes the cache file: the entries this compose used or made, then
    /// older ones up to [`MAX_ENTRIES`]. Call only once the composed
    /// objects are committed. A disabled cache writes nothing.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut out = serde_json::to_string(&Header {
            format: FORMAT_NAME.into(),
            version: CACHE_VERSION,
        })
        .expect("header serializes");
        out.push('\n');
        let mut n = 0;
        let mut push = |key: &[u8; 32], value: &CachedMerge| {
            let line = Line {
                key: hex::encode(key),
                value: value.clone(),
            };
            out.push_str(&serde_json::to_string(&line).expect("entry serializes"));
            out.push('\n');
        };
        let mut used: Vec<_> = self.used.iter().collect();
        used.sort_by_key(|(k, _)| **k);
        for (k, v) in used {
            push(k, v);
            n += 1;
        }
        let mut old: Vec<_> = self
            .entries
            .iter()
            .filter(|(k, _)| !self.used.contains_key(*k))
            .collect();
        old.sort_by_key(|(k, _)| **k);
        for (k, v) in old {
            if n >= MAX_ENTRIES {
                break;
            }
            push(k, v);
            n += 1;
        }
        let dir = path.parent().expect("the cache file has a directory");
        std::fs::create_dir_all(dir)?;
        treectl_store::store::write_atomic(path, out.as_bytes(), false)
            .map_err(std::io::Error::other)
    }

    /// Where the cache lives, when it is saved.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

fn parse(text: &str) -> HashMap<[u8; 32], CachedMerge> {
    let mut lines = text.lines();
    let header_ok = lines
        .next()
        .and_then(|h| serde_json::from_str::<Header>(h).ok())
        .is_some_and(|h| h.format == FORMAT_NAME && h.version == CACHE_VERSION);
    if !header_ok {
        return HashMap::new();
    }
    let mut out = HashMap::new();
    for l in lines {
        // A corrupt line is skipped: its merge is simply recomputed.
        let Ok(line) = serde_json::from_str::<Line>(l) else {
            continue;
        };
        let mut key = [0u8; 32];
        if hex::decode_to_slice(&line.key, &mut key).is_ok() {
            out.insert(key, line.value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_corrupt_lines_and_other_versions() {
        let good = r#"{"key":"0000000000000000000000000000000000000000000000000000000000000001","tree":"aa","meta":"bb"}"#;
        let text = format!(
            "{{\"format\":\"treectl-compose-cache\",\"version\":1}}\n{good}\nnot json\n{{\"key\":\"zz\",\"tree\":\"a\",\"meta\":\"b\"}}\n"
        );
        let m = parse(&text);
        assert_eq!(m.len(), 1);
        let mut k = [0u8; 32];
        k[31] = 1;
        assert_eq!(m[&k].tree, "aa");
        let other = text.replace("\"version\":1", "\"version\":2");
        assert!(parse(&other).is_empty());
        assert!(parse("").is_empty());
        assert!(parse("garbage\n").is_empty());
    }
}

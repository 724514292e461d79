//! How merged directories meet the compose cache ([`crate::cache`]): the
//! key of a merge, the lookup that splices a cached result in with the
//! reports it made, and the write that records a new one.
//!
//! A key covers everything that decides the result: the kind of merge,
//! its path(s), the ordered inputs (component name, tree id, dirmeta id)
//! and the overrides that can apply at or below it. Component names are in
//! the key because reports name components.

use sha2::{Digest, Sha256};

use super::engine::{Composer, DirIn, DirNode, Node};
use crate::cache::CachedMerge;
use crate::ComposeError as Error;

/// Version of the cache key layout; bump when merge semantics change.
const CACHE_KEY_VERSION: &[u8] = b"treectl-compose-key-1";

/// Where the reports stood before a merge, to cache what it added.
pub(super) struct Mark {
    conflicts: usize,
    duplicates: usize,
    overridden: usize,
    dirmeta: usize,
}

/// Whether an override of `o` (no leading `/`) can decide something at or
/// below `path`.
fn override_touches(o: &str, path: &str) -> bool {
    let p = path.trim_start_matches('/');
    let under = |a: &str, b: &str| a.starts_with(b) && a.as_bytes().get(b.len()) == Some(&b'/');
    o.is_empty() || p.is_empty() || p == o || under(p, o) || under(o, p)
}

impl Composer<'_> {
    pub(super) fn mark(&self) -> Mark {
        Mark {
            conflicts: self.conflicts.len(),
            duplicates: self.stats.identical_duplicates,
            overridden: self.stats.overridden.len(),
            dirmeta: self.stats.dirmeta_differences.len(),
        }
    }

    /// The cache key of a merge of `kind` at `paths` of the `sides`.
    pub(super) fn key(&self, kind: &[u8], paths: &[&str], sides: &[&[DirIn]]) -> [u8; 32] {
        let mut h = Sha256::new();
        let field = |h: &mut Sha256, b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(&mut h, CACHE_KEY_VERSION);
        field(&mut h, kind);
        for p in paths {
            field(&mut h, p.as_bytes());
        }
        for side in sides {
            h.update((side.len() as u64).to_le_bytes());
            for i in *side {
                field(&mut h, self.names[i.owner].as_bytes());
                h.update(i.tree.0);
                h.update(i.meta.0);
            }
        }
        for (o, c) in &self.overrides {
            if paths.iter().any(|p| override_touches(o, p)) {
                field(&mut h, o.as_bytes());
                field(&mut h, self.names[*c].as_bytes());
            }
        }
        h.finalize().into()
    }

    /// The cached merge for `key`, its reports added to this compose's.
    pub(super) fn cached(&mut self, key: &[u8; 32], owner: usize) -> Option<Node> {
        let (tree, meta, v) = self.cache.get(self.repo, key)?;
        self.stats.cached_subtrees += 1;
        self.stats.identical_duplicates += v.identical_duplicates;
        self.stats.overridden.extend(v.overridden);
        self.stats.dirmeta_differences.extend(v.dirmeta_differences);
        Some(Node::Tree { tree, meta, owner })
    }

    /// Writes a merged directory and caches it unless it has conflicts
    /// (a compose with conflicts fails, and must fail again next time).
    pub(super) fn finish(
        &mut self,
        key: [u8; 32],
        mark: Mark,
        dir: DirNode,
    ) -> Result<Node, Error> {
        let owner = dir.meta_owner;
        let mem = self.build_mem(dir)?;
        let (tree, meta) = mem.write(self.txn)?;
        self.fresh.insert(tree);
        if self.conflicts.len() == mark.conflicts {
            self.cache.put(
                key,
                CachedMerge {
                    tree: tree.to_hex(),
                    meta: meta.to_hex(),
                    identical_duplicates: self.stats.identical_duplicates - mark.duplicates,
                    overridden: self.stats.overridden[mark.overridden..].to_vec(),
                    dirmeta_differences: self.stats.dirmeta_differences[mark.dirmeta..].to_vec(),
                },
            );
        }
        Ok(Node::Tree { tree, meta, owner })
    }
}

//! Compose: merging pinned component trees into one OS tree.
//!
//! Components are merged in lockfile order. A directory that only one
//! component ships is spliced in by its tree id and never read
//! ([`MemEntry::Tree`](treectl_store::commit::MemEntry::Tree)); only
//! directories two or more components share are opened and merged, so the
//! work follows the overlap between components, not their size, and
//! writing the result only stores the merged directories (every other tree
//! object already exists).
//!
//! Rules (docs/lockfile.md, "Compose"):
//! - the same path with the same file object (content, mode, owner,
//!   xattrs, symlink target) in two components is fine;
//! - different files, or a file and a directory, at one path are a
//!   conflict; every conflict is collected and reported together, unless a
//!   `[[compose.override]]` names the winning component;
//! - a directory shipped by several components with different metadata
//!   takes the metadata of the last one in lockfile order (what extracting
//!   the packages in that order does), and each such directory is reported;
//! - merged `/usr`: `/bin`, `/sbin`, `/lib*` are merged into `/usr/...`
//!   with the same conflict rules and replaced by symlinks `bin -> usr/bin`;
//!   the moved directory's metadata wins, as `cp -a DIR/. usr/DIR/` does;
//! - then the `remove` patterns are applied.
//!
//! Modules: `engine` applies the plain rules (n-way for shared
//! directories, pairwise where a file is involved), `merged_usr` is the
//! merged-/usr rule, `cached` keys merges for the compose cache, `remove`
//! applies the removal patterns, and `report` holds what a compose reports.

mod cached;
mod engine;
mod merged_usr;
mod remove;
mod report;

use std::collections::BTreeMap;

use treectl_store::object::DirMeta;
use treectl_store::store::Transaction;
use treectl_store::ObjectId;

use crate::cache::ComposeCache;
use crate::ComposeError as Error;
use engine::{join, Composer, DirIn, DirNode};

pub use merged_usr::MERGED_USR_DIRS;
pub use remove::glob_match;
pub use report::{ComposeStats, Conflict, DirMetaDifference};

/// The rules a merge follows (the lockfile's `[compose]` table says which).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeRules {
    /// Move `/bin`, `/sbin` and `/lib*` into `/usr`, leaving symlinks behind.
    pub merged_usr: bool,
    /// Path patterns removed from the merged tree.
    pub remove: Vec<String>,
    /// Which component's version of a conflicting path wins.
    pub overrides: Vec<Override>,
}

/// A conflicting path (or everything below a directory) resolved in favour
/// of one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// An absolute path in the merged tree (before merged-/usr moves).
    pub path: String,
    /// The component whose entry wins.
    pub component: String,
}

/// One component to merge: its name and the root of its commit.
#[derive(Clone, Debug)]
pub struct ComposeInput {
    pub name: String,
    pub tree: ObjectId,
    pub meta: ObjectId,
}

/// Metadata of a directory compose creates itself (`/usr` when no
/// component ships one): 0755 root:root.
pub fn default_dir_meta() -> DirMeta {
    DirMeta::new(0o755, 0, 0, Vec::new())
}

/// Merges `inputs` in order under `settings` and writes the merged
/// directories in `txn`; returns the root (tree, dirmeta) ids. Conflicts
/// are all collected first and returned as one [`Error::Conflicts`].
/// Uses no cache: [`compose_tree_cached`] with [`ComposeCache::disabled`].
pub fn compose_tree(
    txn: &Transaction<'_>,
    inputs: &[ComposeInput],
    settings: &MergeRules,
) -> Result<((ObjectId, ObjectId), ComposeStats), Error> {
    compose_tree_cached(txn, inputs, settings, &mut ComposeCache::disabled())
}

/// [`compose_tree`] with a cache of merged directories
/// ([`crate::cache`]): a directory where several components meet
/// is looked up by its inputs and, when found, spliced in by id without
/// being read. The result is the same with or without the cache. New
/// entries are recorded in `cache`; save it once `txn` is committed.
///
/// How the merge is organised so that it can be cached: at each path the
/// directories of all components that ship one are merged at once (the
/// same result, reports and conflicts as folding them one by one in
/// lockfile order), and each merged directory is written as soon as it is
/// done. Merged `/usr` is part of that walk: `/usr/lib` is the merge of
/// the merged `/usr/lib` and the merged `/lib`, keyed by both sides' inputs.
pub fn compose_tree_cached(
    txn: &Transaction<'_>,
    inputs: &[ComposeInput],
    settings: &MergeRules,
    cache: &mut ComposeCache,
) -> Result<((ObjectId, ObjectId), ComposeStats), Error> {
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let mut overrides = Vec::new();
    for o in &settings.overrides {
        let idx = names
            .iter()
            .position(|n| *n == o.component)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "override of {:?} names component {:?}, which is not in the lockfile",
                    o.path, o.component
                ))
            })?;
        overrides.push((o.path.trim_matches('/').to_owned(), idx));
    }
    let mut c = Composer::new(txn, cache, names, overrides, default_dir_meta())?;
    let mut root = DirNode {
        meta: c.default_meta_id,
        meta_owner: 0,
        entries: BTreeMap::new(),
    };
    if !inputs.is_empty() {
        let roots: Vec<DirIn> = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| DirIn {
                owner: i,
                tree: input.tree,
                meta: input.meta,
            })
            .collect();
        // Every root is opened, as the fold opens each one in turn.
        let opened = c.open_all(&roots, "")?;
        root.meta = opened.meta;
        root.meta_owner = opened.meta_owner;
        let mut groups = opened.groups;
        let mut usr = if settings.merged_usr {
            c.take_merged_usr(&mut groups)?
        } else {
            None
        };
        // Reports are listed in merge order: the moves come first, or
        // last when the rule had to fold its entries (see `merged_usr`).
        if let Some(u) = usr.take_if(|u| !u.folded) {
            c.apply_merged_usr(&mut root, u)?;
        }
        for (name, g) in groups {
            let node = c.resolve_group(&join("", &name), g)?;
            root.entries.insert(name, node);
        }
        if let Some(u) = usr {
            c.apply_merged_usr(&mut root, u)?;
        }
    }
    if !c.conflicts.is_empty() {
        return Err(Error::Conflicts(std::mem::take(&mut c.conflicts)));
    }
    for pattern in &settings.remove {
        c.remove(&mut root, pattern)?;
    }
    let mem = c.build_mem(root)?;
    let ids = mem.write(txn)?;
    Ok((ids, c.stats))
}

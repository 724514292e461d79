//! Compose: merging pinned component trees into one OS tree.
//!
//! Components are merged in lockfile order. A directory that only one
//! component ships is spliced in by its tree id and never read
//! ([`MemEntry::Tree`]); only directories two or more components share
//! are opened and merged, so the work follows the overlap between
//! components, not their size, and writing the result only stores the
//! merged directories (every other tree object already exists).
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

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use serde::Serialize;
use treectl_repo::commit::{MemDir, MemEntry};
use treectl_repo::object::{DirMeta, EntryKind, FileHeader};
use treectl_repo::store::{Repo, Transaction};
use treectl_repo::ObjectId;

use crate::compose_cache::{CachedMerge, ComposeCache};
use crate::lockfile::ComposeSettings;
use crate::Error;

/// The directories merged-/usr moves into `/usr`.
pub const MERGED_USR_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// One component to merge: its name and the root of its commit.
#[derive(Clone, Debug)]
pub struct ComposeInput {
    pub name: String,
    pub tree: ObjectId,
    pub meta: ObjectId,
}

/// Two components ship different things at one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub path: String,
    pub first: String,
    pub second: String,
    /// `content` (two different files) or `type` (file vs directory).
    pub kind: &'static str,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} differs: {} and {})",
            self.path, self.kind, self.first, self.second
        )
    }
}

/// A directory whose metadata differed between components.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DirMetaDifference {
    pub path: String,
    /// The component whose metadata was replaced.
    pub was: String,
    /// The component whose metadata the directory now has.
    pub now: String,
}

/// What a compose did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ComposeStats {
    /// Directories opened and merged (shared by two or more components).
    pub merged_dirs: usize,
    /// Subtrees spliced in by id without being read (component subtrees
    /// and merged subtrees found in the compose cache).
    pub reused_subtrees: usize,
    /// Merged subtrees taken from the compose cache.
    pub cached_subtrees: usize,
    /// Identical files shipped by more than one component.
    pub identical_duplicates: usize,
    /// Paths decided by `[[compose.override]]`.
    pub overridden: Vec<String>,
    pub dirmeta_differences: Vec<DirMetaDifference>,
    /// Paths removed by the `remove` patterns.
    pub removed: Vec<String>,
}

#[derive(Clone, Debug)]
enum Node {
    File {
        id: ObjectId,
        symlink: bool,
        owner: usize,
    },
    /// A subtree of one component, not opened.
    Tree {
        tree: ObjectId,
        meta: ObjectId,
        owner: usize,
    },
    Dir(DirNode),
}

#[derive(Clone, Debug)]
struct DirNode {
    meta: ObjectId,
    meta_owner: usize,
    entries: BTreeMap<Vec<u8>, Node>,
}

/// One component's directory at a path, unopened.
#[derive(Clone, Copy, Debug)]
struct DirIn {
    owner: usize,
    tree: ObjectId,
    meta: ObjectId,
}

/// The directories of several components at one path, opened: the folded
/// metadata and every entry name's nodes in lockfile order.
struct Opened {
    meta: ObjectId,
    meta_owner: usize,
    groups: BTreeMap<Vec<u8>, Vec<Node>>,
}

/// Version of the cache key layout; bump when merge semantics change.
const CACHE_KEY_VERSION: &[u8] = b"treectl-compose-key-1";

struct Composer<'a> {
    repo: &'a Repo,
    txn: &'a Transaction<'a>,
    cache: &'a mut ComposeCache,
    /// Merged trees this compose wrote (not "reused" in the stats).
    fresh: HashSet<ObjectId>,
    /// Directory metadata read so far (and the default one, written in
    /// this transaction and not readable from the store yet).
    metas: HashMap<ObjectId, DirMeta>,
    default_meta_id: ObjectId,
    names: Vec<String>,
    /// Override paths (without the leading `/`) to component index.
    overrides: Vec<(String, usize)>,
    conflicts: Vec<Conflict>,
    stats: ComposeStats,
}

fn join(path: &str, name: &[u8]) -> String {
    format!("{path}/{}", String::from_utf8_lossy(name))
}

impl Composer<'_> {
    fn open(&mut self, tree: &ObjectId, meta: &ObjectId, owner: usize) -> Result<DirNode, Error> {
        self.stats.merged_dirs += 1;
        let t = self.txn.read_tree(tree)?;
        let mut entries = BTreeMap::new();
        for e in t.entries {
            let node = match e.kind {
                EntryKind::Regular { file } => Node::File {
                    id: file,
                    symlink: false,
                    owner,
                },
                EntryKind::Symlink { file } => Node::File {
                    id: file,
                    symlink: true,
                    owner,
                },
                EntryKind::Dir { tree, meta } => Node::Tree { tree, meta, owner },
            };
            entries.insert(e.name, node);
        }
        Ok(DirNode {
            meta: *meta,
            meta_owner: owner,
            entries,
        })
    }

    fn expand(&mut self, node: Node) -> Result<Node, Error> {
        match node {
            Node::Tree { tree, meta, owner } => Ok(Node::Dir(self.open(&tree, &meta, owner)?)),
            other => Ok(other),
        }
    }

    fn owner(node: &Node) -> usize {
        match node {
            Node::File { owner, .. } | Node::Tree { owner, .. } => *owner,
            Node::Dir(d) => d.meta_owner,
        }
    }

    /// The component an override gives `path` to, if any.
    fn override_for(&self, path: &str) -> Option<usize> {
        let p = path.trim_start_matches('/');
        self.overrides
            .iter()
            .filter(|(o, _)| {
                p == o || (p.starts_with(o.as_str()) && p.as_bytes().get(o.len()) == Some(&b'/'))
            })
            .max_by_key(|(o, _)| o.len())
            .map(|(_, c)| *c)
    }

    /// Merges `src` into `dst`, both directories at `path`.
    fn merge_dir(&mut self, dst: &mut DirNode, src: DirNode, path: &str) -> Result<(), Error> {
        if dst.meta != src.meta {
            self.note_dirmeta(path, dst.meta_owner, src.meta_owner);
            dst.meta = src.meta;
            dst.meta_owner = src.meta_owner;
        }
        for (name, new) in src.entries {
            let Some(old) = dst.entries.remove(&name) else {
                dst.entries.insert(name, new);
                continue;
            };
            let p = join(path, &name);
            let merged = self.merge_node(old, new, &p)?;
            dst.entries.insert(name, merged);
        }
        Ok(())
    }

    fn merge_node(&mut self, old: Node, new: Node, path: &str) -> Result<Node, Error> {
        let is_dir = |n: &Node| matches!(n, Node::Tree { .. } | Node::Dir(_));
        match (is_dir(&old), is_dir(&new)) {
            (true, true) => {
                // Same subtree from two components: nothing to merge.
                if let (
                    Node::Tree {
                        tree: a, meta: ma, ..
                    },
                    Node::Tree {
                        tree: b, meta: mb, ..
                    },
                ) = (&old, &new)
                {
                    if a == b && ma == mb {
                        return Ok(old);
                    }
                }
                let Node::Dir(mut d) = self.expand(old)? else {
                    unreachable!("expand turns a tree into a directory")
                };
                let Node::Dir(s) = self.expand(new)? else {
                    unreachable!("expand turns a tree into a directory")
                };
                self.merge_dir(&mut d, s, path)?;
                Ok(Node::Dir(d))
            }
            (false, false) => {
                let (
                    Node::File {
                        id: a, symlink: sa, ..
                    },
                    Node::File {
                        id: b, symlink: sb, ..
                    },
                ) = (&old, &new)
                else {
                    unreachable!("both are files")
                };
                if a == b && sa == sb {
                    self.stats.identical_duplicates += 1;
                    return Ok(old);
                }
                self.conflict(old, new, path, "content")
            }
            _ => self.conflict(old, new, path, "type"),
        }
    }

    fn conflict(
        &mut self,
        old: Node,
        new: Node,
        path: &str,
        kind: &'static str,
    ) -> Result<Node, Error> {
        let (a, b) = (Self::owner(&old), Self::owner(&new));
        match self.override_for(path) {
            Some(w) if w == a => {
                self.stats.overridden.push(path.to_owned());
                Ok(old)
            }
            Some(w) if w == b => {
                self.stats.overridden.push(path.to_owned());
                Ok(new)
            }
            _ => {
                self.conflicts.push(Conflict {
                    path: path.to_owned(),
                    first: self.names[a].clone(),
                    second: self.names[b].clone(),
                    kind,
                });
                Ok(old)
            }
        }
    }

    fn merged_usr(&mut self, root: &mut DirNode, txn: &Transaction<'_>) -> Result<(), Error> {
        for d in MERGED_USR_DIRS {
            let key = d.as_bytes().to_vec();
            let Some(node) = root.entries.remove(&key) else {
                continue;
            };
            if matches!(node, Node::File { .. }) {
                // Already a symlink (or a file): leave it.
                root.entries.insert(key, node);
                continue;
            }
            let owner = Self::owner(&node);
            let usr = match root.entries.remove(b"usr".as_slice()) {
                Some(n @ (Node::Tree { .. } | Node::Dir(_))) => n,
                Some(other) => {
                    let o = Self::owner(&other);
                    self.conflicts.push(Conflict {
                        path: "/usr".into(),
                        first: self.names[o].clone(),
                        second: "merged /usr".into(),
                        kind: "type",
                    });
                    root.entries.insert(b"usr".to_vec(), other);
                    root.entries.insert(key, node);
                    continue;
                }
                None => Node::Dir(DirNode {
                    meta: txn.write_dirmeta(&default_dir_meta())?,
                    meta_owner: owner,
                    entries: BTreeMap::new(),
                }),
            };
            let Node::Dir(mut usr) = self.expand(usr)? else {
                unreachable!("expand turns a tree into a directory")
            };
            let path = format!("/usr/{d}");
            let merged = match usr.entries.remove(&key) {
                None => node,
                Some(existing) => self.merge_node(existing, node, &path)?,
            };
            usr.entries.insert(key.clone(), merged);
            root.entries.insert(b"usr".to_vec(), Node::Dir(usr));
            let target = format!("usr/{d}").into_bytes();
            let link = txn.write_file(&FileHeader::symlink(target, 0, 0, Vec::new()), &[])?;
            root.entries.insert(
                key,
                Node::File {
                    id: link,
                    symlink: true,
                    owner,
                },
            );
        }
        Ok(())
    }

    fn remove(&mut self, root: &mut DirNode, pattern: &str) -> Result<(), Error> {
        let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        if comps.is_empty() {
            return Ok(());
        }
        self.remove_in(root, &comps, "")
    }

    fn remove_in(&mut self, dir: &mut DirNode, comps: &[&str], path: &str) -> Result<(), Error> {
        let names: Vec<Vec<u8>> = dir
            .entries
            .keys()
            .filter(|n| glob_match(comps[0].as_bytes(), n))
            .cloned()
            .collect();
        for name in names {
            let p = join(path, &name);
            if comps.len() == 1 {
                dir.entries.remove(&name);
                self.stats.removed.push(p);
                continue;
            }
            let Some(node) = dir.entries.remove(&name) else {
                continue;
            };
            let node = if matches!(node, Node::Tree { .. }) {
                self.expand(node)?
            } else {
                node
            };
            let node = match node {
                Node::Dir(mut d) => {
                    self.remove_in(&mut d, &comps[1..], &p)?;
                    Node::Dir(d)
                }
                other => other,
            };
            dir.entries.insert(name, node);
        }
        Ok(())
    }

    fn build_mem(&mut self, dir: DirNode) -> Result<MemDir, Error> {
        let meta = match self.metas.get(&dir.meta) {
            Some(m) => m.clone(),
            None => {
                let m = self.txn.read_dirmeta(&dir.meta)?;
                self.metas.insert(dir.meta, m.clone());
                m
            }
        };
        let mut out = MemDir::new(meta);
        for (name, node) in dir.entries {
            let e = match node {
                Node::File { id, symlink, .. } => MemEntry::File { id, symlink },
                Node::Tree { tree, meta, .. } => {
                    if !self.fresh.contains(&tree) {
                        self.stats.reused_subtrees += 1;
                    }
                    MemEntry::Tree { tree, meta }
                }
                Node::Dir(d) => MemEntry::Dir(self.build_mem(d)?),
            };
            out.entries.insert(name, e);
        }
        Ok(out)
    }
}

/// Metadata of a directory compose creates itself (`/usr` when no
/// component ships one): 0755 root:root.
pub fn default_dir_meta() -> DirMeta {
    DirMeta::new(0o755, 0, 0, Vec::new())
}

/// `*` matches any run of bytes, `?` one byte; nothing else is special.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// Merges `inputs` in order under `settings` and writes the merged
/// directories in `txn`; returns the root (tree, dirmeta) ids. Conflicts
/// are all collected first and returned as one [`Error::Conflicts`].
/// Uses no cache; see [`compose_tree_cached`].
pub fn compose_tree(
    txn: &Transaction<'_>,
    inputs: &[ComposeInput],
    settings: &ComposeSettings,
) -> Result<((ObjectId, ObjectId), ComposeStats), Error> {
    compose_tree_cached(txn, inputs, settings, &mut ComposeCache::disabled())
}

/// [`compose_tree`] with a cache of merged directories
/// ([`crate::compose_cache`]): a directory where several components meet
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
    settings: &ComposeSettings,
    cache: &mut ComposeCache,
) -> Result<((ObjectId, ObjectId), ComposeStats), Error> {
    let repo = txn.repo();
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
    let default_meta = default_dir_meta();
    let default_meta_id = txn.write_dirmeta(&default_meta)?;
    let mut c = Composer {
        repo,
        txn,
        cache,
        fresh: HashSet::new(),
        metas: HashMap::from([(default_meta_id, default_meta)]),
        default_meta_id,
        names,
        overrides,
        conflicts: Vec::new(),
        stats: ComposeStats::default(),
    };
    let mut root = DirNode {
        meta: default_meta_id,
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
        let mut slow_usr = false;
        if settings.merged_usr {
            let special = std::iter::once("usr").chain(MERGED_USR_DIRS.iter().copied());
            let all_dir_groups = special.clone().all(|n| {
                groups
                    .get(n.as_bytes())
                    .is_none_or(|g| all_dirs(g).is_some())
            });
            if all_dir_groups {
                c.merged_usr_walk(&mut root, &mut groups)?;
            } else {
                // Something ships /usr or /lib as a file: fold those
                // entries whole and merge them as the rules say.
                slow_usr = true;
                for n in special {
                    if let Some(g) = groups.remove(n.as_bytes()) {
                        let node = c.fold(&join("", n.as_bytes()), g)?;
                        root.entries.insert(n.as_bytes().to_vec(), node);
                    }
                }
            }
        }
        for (name, g) in groups {
            let node = c.resolve_group(&join("", &name), g)?;
            root.entries.insert(name, node);
        }
        if slow_usr {
            c.merged_usr(&mut root, txn)?;
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

/// The inputs of `nodes` if all are unopened directories.
fn all_dirs(nodes: &[Node]) -> Option<Vec<DirIn>> {
    nodes
        .iter()
        .map(|n| match n {
            Node::Tree { tree, meta, owner } => Some(DirIn {
                owner: *owner,
                tree: *tree,
                meta: *meta,
            }),
            _ => None,
        })
        .collect()
}

/// Drops the inputs after the first that are identical to it: folding an
/// unopened directory with an identical one leaves it unopened.
fn collapse(inputs: &[DirIn]) -> Vec<DirIn> {
    let first = inputs[0];
    let same = |i: &DirIn| i.tree == first.tree && i.meta == first.meta;
    let k = inputs.iter().position(|i| !same(i)).unwrap_or(inputs.len());
    let mut v = vec![first];
    v.extend_from_slice(&inputs[k..]);
    v
}

/// Whether an override of `o` (no leading `/`) can decide something at or
/// below `path`.
fn override_touches(o: &str, path: &str) -> bool {
    let p = path.trim_start_matches('/');
    let under = |a: &str, b: &str| a.starts_with(b) && a.as_bytes().get(b.len()) == Some(&b'/');
    o.is_empty() || p.is_empty() || p == o || under(p, o) || under(o, p)
}

/// Where the stats stood before a merge, to cache what it added.
struct Mark {
    conflicts: usize,
    duplicates: usize,
    overridden: usize,
    dirmeta: usize,
}

impl Composer<'_> {
    fn note_dirmeta(&mut self, path: &str, was: usize, now: usize) {
        self.stats.dirmeta_differences.push(DirMetaDifference {
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_owned()
            },
            was: self.names[was].clone(),
            now: self.names[now].clone(),
        });
    }

    /// Opens `inputs` (in order) at `path`: folds their metadata, reporting
    /// each difference, and groups their entries by name.
    fn open_all(&mut self, inputs: &[DirIn], path: &str) -> Result<Opened, Error> {
        let mut out: Option<Opened> = None;
        for i in inputs {
            let d = self.open(&i.tree, &i.meta, i.owner)?;
            match &mut out {
                None => {
                    out = Some(Opened {
                        meta: d.meta,
                        meta_owner: d.meta_owner,
                        groups: d.entries.into_iter().map(|(k, v)| (k, vec![v])).collect(),
                    })
                }
                Some(o) => {
                    if o.meta != d.meta {
                        self.note_dirmeta(path, o.meta_owner, d.meta_owner);
                        o.meta = d.meta;
                        o.meta_owner = d.meta_owner;
                    }
                    for (k, v) in d.entries {
                        o.groups.entry(k).or_default().push(v);
                    }
                }
            }
        }
        Ok(out.expect("open_all is given at least one input"))
    }

    /// Folds `nodes` (one path, lockfile order) with the plain rules.
    fn fold(&mut self, path: &str, nodes: Vec<Node>) -> Result<Node, Error> {
        let mut it = nodes.into_iter();
        let mut acc = it.next().expect("a group has at least one node");
        for n in it {
            acc = self.merge_node(acc, n, path)?;
        }
        Ok(acc)
    }

    /// The merge of `nodes`, through the cache when all are directories.
    fn resolve_group(&mut self, path: &str, mut nodes: Vec<Node>) -> Result<Node, Error> {
        if nodes.len() == 1 {
            return Ok(nodes.pop().expect("one node"));
        }
        match all_dirs(&nodes) {
            Some(ins) => self.nway(path, &ins),
            None => self.fold(path, nodes),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            conflicts: self.conflicts.len(),
            duplicates: self.stats.identical_duplicates,
            overridden: self.stats.overridden.len(),
            dirmeta: self.stats.dirmeta_differences.len(),
        }
    }

    fn key(&self, kind: &[u8], paths: &[&str], sides: &[&[DirIn]]) -> [u8; 32] {
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

    fn cached(&mut self, key: &[u8; 32], owner: usize) -> Option<Node> {
        let (tree, meta, v) = self.cache.get(self.repo, key)?;
        self.stats.cached_subtrees += 1;
        self.stats.identical_duplicates += v.identical_duplicates;
        self.stats.overridden.extend(v.overridden);
        self.stats.dirmeta_differences.extend(v.dirmeta_differences);
        Some(Node::Tree { tree, meta, owner })
    }

    /// Writes a merged directory and caches it unless it has conflicts.
    fn finish(&mut self, key: [u8; 32], mark: Mark, dir: DirNode) -> Result<Node, Error> {
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

    /// Merges the directories `inputs` of several components at `path`.
    fn nway(&mut self, path: &str, inputs: &[DirIn]) -> Result<Node, Error> {
        let ins = collapse(inputs);
        if ins.len() == 1 {
            let i = ins[0];
            return Ok(Node::Tree {
                tree: i.tree,
                meta: i.meta,
                owner: i.owner,
            });
        }
        let key = self.key(b"merge", &[path], &[&ins]);
        if let Some(n) = self.cached(&key, ins[0].owner) {
            return Ok(n);
        }
        let mark = self.mark();
        let o = self.open_all(&ins, path)?;
        let mut dir = DirNode {
            meta: o.meta,
            meta_owner: o.meta_owner,
            entries: BTreeMap::new(),
        };
        for (name, nodes) in o.groups {
            let node = self.resolve_group(&join(path, &name), nodes)?;
            dir.entries.insert(name, node);
        }
        self.finish(key, mark, dir)
    }

    /// Merged `/usr`: the merge of the directories `a` (at `a_path`, under
    /// `/usr`) with the directories `b` (at `b_path`, outside it), as
    /// folding each side and then merging the two results does.
    fn merge2(
        &mut self,
        a_path: &str,
        b_path: &str,
        a: &[DirIn],
        b: &[DirIn],
    ) -> Result<Node, Error> {
        let a = collapse(a);
        let b = collapse(b);
        if a.len() == 1 && b.len() == 1 && a[0].tree == b[0].tree && a[0].meta == b[0].meta {
            return Ok(Node::Tree {
                tree: a[0].tree,
                meta: a[0].meta,
                owner: a[0].owner,
            });
        }
        let key = self.key(b"merged-usr", &[a_path, b_path], &[&a, &b]);
        if let Some(n) = self.cached(&key, a[0].owner) {
            return Ok(n);
        }
        let mark = self.mark();
        let oa = self.open_all(&a, a_path)?;
        let ob = self.open_all(&b, b_path)?;
        let mut dir = DirNode {
            meta: oa.meta,
            meta_owner: oa.meta_owner,
            entries: BTreeMap::new(),
        };
        if oa.meta != ob.meta {
            self.note_dirmeta(a_path, oa.meta_owner, ob.meta_owner);
            dir.meta = ob.meta;
            dir.meta_owner = ob.meta_owner;
        }
        let mut ga = oa.groups;
        for (name, bn) in ob.groups {
            let node = match ga.remove(&name) {
                None => self.resolve_group(&join(b_path, &name), bn)?,
                Some(an) => {
                    let (pa, pb) = (join(a_path, &name), join(b_path, &name));
                    match (all_dirs(&an), all_dirs(&bn)) {
                        (Some(x), Some(y)) => self.merge2(&pa, &pb, &x, &y)?,
                        _ => {
                            let x = self.fold(&pa, an)?;
                            let y = self.fold(&pb, bn)?;
                            self.merge_node(x, y, &pa)?
                        }
                    }
                }
            };
            dir.entries.insert(name, node);
        }
        for (name, an) in ga {
            let node = self.resolve_group(&join(a_path, &name), an)?;
            dir.entries.insert(name, node);
        }
        self.finish(key, mark, dir)
    }

    /// Merged `/usr` when `/usr` and every moved directory are directories
    /// in every component that ships them: `/usr` is opened and each moved
    /// directory merged into it with [`Self::merge2`]; the moved names
    /// become symlinks into `/usr`.
    fn merged_usr_walk(
        &mut self,
        root: &mut DirNode,
        groups: &mut BTreeMap<Vec<u8>, Vec<Node>>,
    ) -> Result<(), Error> {
        let moved: Vec<(&str, Vec<Node>)> = MERGED_USR_DIRS
            .iter()
            .filter_map(|d| groups.remove(d.as_bytes()).map(|g| (*d, g)))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        let (mut usr, mut usr_groups) = match groups.remove(b"usr".as_slice()) {
            Some(g) => {
                let ins = collapse(&all_dirs(&g).expect("checked by the caller"));
                let o = self.open_all(&ins, "/usr")?;
                let dir = DirNode {
                    meta: o.meta,
                    meta_owner: o.meta_owner,
                    entries: BTreeMap::new(),
                };
                (dir, o.groups)
            }
            None => {
                let dir = DirNode {
                    meta: self.default_meta_id,
                    meta_owner: Self::owner(&moved[0].1[0]),
                    entries: BTreeMap::new(),
                };
                (dir, BTreeMap::new())
            }
        };
        for (d, nodes) in moved {
            let key = d.as_bytes().to_vec();
            let (a_path, b_path) = (format!("/usr/{d}"), format!("/{d}"));
            let owner = Self::owner(&nodes[0]);
            let node = match usr_groups.remove(&key) {
                None => self.resolve_group(&b_path, nodes)?,
                Some(un) => {
                    let b = all_dirs(&nodes).expect("checked by the caller");
                    match all_dirs(&un) {
                        Some(a) => self.merge2(&a_path, &b_path, &a, &b)?,
                        None => {
                            let x = self.fold(&a_path, un)?;
                            let y = self.fold(&b_path, nodes)?;
                            self.merge_node(x, y, &a_path)?
                        }
                    }
                }
            };
            usr.entries.insert(key.clone(), node);
            let target = format!("usr/{d}").into_bytes();
            let link = self
                .txn
                .write_file(&FileHeader::symlink(target, 0, 0, Vec::new()), &[])?;
            root.entries.insert(
                key,
                Node::File {
                    id: link,
                    symlink: true,
                    owner,
                },
            );
        }
        for (name, g) in usr_groups {
            let node = self.resolve_group(&join("/usr", &name), g)?;
            usr.entries.insert(name, node);
        }
        root.entries.insert(b"usr".to_vec(), Node::Dir(usr));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"ssh_host_*", b"ssh_host_rsa_key"));
        assert!(glob_match(b"*", b"anything"));
        assert!(!glob_match(b"ssh_host_*", b"sshd_config"));
        assert!(glob_match(b"machine-id", b"machine-id"));
        assert!(!glob_match(b"machine-id", b"machine-id2"));
        assert!(glob_match(b"lib?", b"lib6"));
        assert!(!glob_match(b"lib?", b"lib"));
    }
}

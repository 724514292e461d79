//! The merge engine: the plain rules applied at every path where
//! components meet.
//!
//! A directory only one component ships stays an unopened [`Node::Tree`]
//! and is spliced in by id. Where several components ship a directory,
//! [`Composer::nway`] opens them all at once, groups their entries by name
//! and resolves each group the same way, writing each merged directory
//! when done so that it can be cached ([`super::cached`]). A group that
//! holds a file is folded pairwise in lockfile order instead
//! ([`Composer::fold`]): which entry wins there depends on the order and
//! on the overrides, and merged directories keep each entry's owner
//! ([`Node::Dir`]) so that later conflicts name the right component.
//! Both ways give the tree, reports and conflicts of folding every
//! component in order.

use std::collections::{BTreeMap, HashMap, HashSet};

use treectl_store::commit::{MemDir, MemEntry};
use treectl_store::object::{DirMeta, EntryKind};
use treectl_store::store::{Repo, Transaction};
use treectl_store::ObjectId;

use super::report::{ComposeStats, Conflict, DirMetaDifference};
use crate::cache::ComposeCache;
use crate::ComposeError as Error;

/// One entry of a merge; `owner` is the index of the component it came from.
#[derive(Clone, Debug)]
pub(super) enum Node {
    File {
        id: ObjectId,
        symlink: bool,
        owner: usize,
    },
    /// A subtree of one component (or a merged one already written), not
    /// opened.
    Tree {
        tree: ObjectId,
        meta: ObjectId,
        owner: usize,
    },
    Dir(DirNode),
}

/// A directory being merged in memory.
#[derive(Clone, Debug)]
pub(super) struct DirNode {
    pub(super) meta: ObjectId,
    /// The component whose metadata `meta` is (the last one that differed).
    pub(super) meta_owner: usize,
    pub(super) entries: BTreeMap<Vec<u8>, Node>,
}

/// The nodes of every component at one name, in lockfile order.
pub(super) type Groups = BTreeMap<Vec<u8>, Vec<Node>>;

/// One component's directory at a path, unopened.
#[derive(Clone, Copy, Debug)]
pub(super) struct DirIn {
    pub(super) owner: usize,
    pub(super) tree: ObjectId,
    pub(super) meta: ObjectId,
}

/// The directories of several components at one path, opened: the folded
/// metadata and every entry name's nodes in lockfile order.
pub(super) struct Opened {
    pub(super) meta: ObjectId,
    pub(super) meta_owner: usize,
    pub(super) groups: Groups,
}

/// The state of one compose.
pub(super) struct Composer<'a> {
    pub(super) repo: &'a Repo,
    pub(super) txn: &'a Transaction<'a>,
    pub(super) cache: &'a mut ComposeCache,
    /// Merged trees this compose wrote (not "reused" in the stats).
    pub(super) fresh: HashSet<ObjectId>,
    /// Directory metadata read so far (and the default one, written in
    /// this transaction and not readable from the store yet).
    metas: HashMap<ObjectId, DirMeta>,
    pub(super) default_meta_id: ObjectId,
    pub(super) names: Vec<String>,
    /// Override paths (without the leading `/`) to component index.
    pub(super) overrides: Vec<(String, usize)>,
    pub(super) conflicts: Vec<Conflict>,
    pub(super) stats: ComposeStats,
}

/// `path/name`, for reports.
pub(super) fn join(path: &str, name: &[u8]) -> String {
    format!("{path}/{}", String::from_utf8_lossy(name))
}

/// The inputs of `nodes` if all are unopened directories.
pub(super) fn all_dirs(nodes: &[Node]) -> Option<Vec<DirIn>> {
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
pub(super) fn collapse(inputs: &[DirIn]) -> Vec<DirIn> {
    let first = inputs[0];
    let same = |i: &DirIn| i.tree == first.tree && i.meta == first.meta;
    let k = inputs.iter().position(|i| !same(i)).unwrap_or(inputs.len());
    let mut v = vec![first];
    v.extend_from_slice(&inputs[k..]);
    v
}

impl<'a> Composer<'a> {
    pub(super) fn new(
        txn: &'a Transaction<'a>,
        cache: &'a mut ComposeCache,
        names: Vec<String>,
        overrides: Vec<(String, usize)>,
        default_meta: DirMeta,
    ) -> Result<Composer<'a>, Error> {
        let default_meta_id = txn.write_dirmeta(&default_meta)?;
        Ok(Composer {
            repo: txn.repo(),
            txn,
            cache,
            fresh: HashSet::new(),
            metas: HashMap::from([(default_meta_id, default_meta)]),
            default_meta_id,
            names,
            overrides,
            conflicts: Vec::new(),
            stats: ComposeStats::default(),
        })
    }
}

impl Composer<'_> {
    pub(super) fn open(
        &mut self,
        tree: &ObjectId,
        meta: &ObjectId,
        owner: usize,
    ) -> Result<DirNode, Error> {
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

    /// Opens a [`Node::Tree`]; any other node is returned as it is.
    pub(super) fn expand(&mut self, node: Node) -> Result<Node, Error> {
        match node {
            Node::Tree { tree, meta, owner } => Ok(Node::Dir(self.open(&tree, &meta, owner)?)),
            other => Ok(other),
        }
    }

    pub(super) fn owner(node: &Node) -> usize {
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

    pub(super) fn note_dirmeta(&mut self, path: &str, was: usize, now: usize) {
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

    /// The plain rules for two entries at `path`, `new` coming later in
    /// lockfile order.
    pub(super) fn merge_node(&mut self, old: Node, new: Node, path: &str) -> Result<Node, Error> {
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

    /// Two different entries at `path`: the override's component wins, or
    /// the conflict is recorded and `old` kept so merging can go on and
    /// find every other conflict.
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

    /// Opens `inputs` (in order) at `path`: folds their metadata, reporting
    /// each difference, and groups their entries by name.
    pub(super) fn open_all(&mut self, inputs: &[DirIn], path: &str) -> Result<Opened, Error> {
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
    pub(super) fn fold(&mut self, path: &str, nodes: Vec<Node>) -> Result<Node, Error> {
        let mut it = nodes.into_iter();
        let mut acc = it.next().expect("a group has at least one node");
        for n in it {
            acc = self.merge_node(acc, n, path)?;
        }
        Ok(acc)
    }

    /// The merge of `nodes`, through the cache when all are directories.
    pub(super) fn resolve_group(
        &mut self,
        path: &str,
        mut nodes: Vec<Node>,
    ) -> Result<Node, Error> {
        if nodes.len() == 1 {
            return Ok(nodes.pop().expect("one node"));
        }
        match all_dirs(&nodes) {
            Some(ins) => self.nway(path, &ins),
            None => self.fold(path, nodes),
        }
    }

    /// Merges the directories `inputs` of several components at `path`.
    pub(super) fn nway(&mut self, path: &str, inputs: &[DirIn]) -> Result<Node, Error> {
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

    /// The objects of `dir`: merged directories become [`MemEntry::Dir`],
    /// everything else is referenced by id.
    pub(super) fn build_mem(&mut self, dir: DirNode) -> Result<MemDir, Error> {
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

//! The one walk over everything a commit needs: its root tree and dirmeta,
//! and every tree, dirmeta and file below them, each object once.
//!
//! The walk goes breadth first and asks its caller for trees in batches
//! ([`Closure::take_pending`], [`Closure::add_tree`]), so a caller that
//! fetches trees over the network asks for a whole level at once; callers
//! that read a local store use [`Closure::load_with`]. A tree the caller
//! cannot or need not read ([`Closure::skip_tree`]) stays in the closure
//! without its contents. Once loaded, the closure answers the questions the
//! store's users ask of it: every object ([`Closure::objects`]), an order in
//! which each object comes after the objects it names
//! ([`Closure::children_first`]: the order to write or upload them in), who
//! first named an object ([`Closure::named_by`]), and whether everything
//! below a directory satisfies a test ([`Closure::complete`]).
//!
//! Used by fsck, prune, publish, the pull and the sysroot's local fetch.

use std::collections::{HashMap, HashSet};

use crate::hash::ObjectId;
use crate::object::{EntryKind, ObjectKind, Tree};

/// An object of the closure.
pub type Obj = (ObjectId, ObjectKind);

/// What named an object first: a commit's root, or a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedBy {
    /// One of the roots added with [`Closure::add_root`]; carries the id
    /// the caller gave (usually the commit's).
    Root(ObjectId),
    Tree(ObjectId),
}

/// The objects reachable from one or more root directories.
#[derive(Debug, Default)]
pub struct Closure {
    /// Every object reached, with what named it first, in first-seen order.
    order: Vec<Obj>,
    named_by: HashMap<Obj, NamedBy>,
    /// Loaded trees and the objects each names, in entry order.
    children: HashMap<ObjectId, Vec<Obj>>,
    /// Trees seen but not yet handed to the caller.
    pending: Vec<ObjectId>,
    /// Trees the caller did not load.
    skipped: HashSet<ObjectId>,
}

impl Closure {
    pub fn new() -> Closure {
        Closure::default()
    }

    /// Adds a root directory (a commit's root tree and dirmeta); `by` is
    /// what [`Closure::named_by`] reports for them.
    pub fn add_root(&mut self, tree: ObjectId, meta: ObjectId, by: ObjectId) {
        self.reach((meta, ObjectKind::DirMeta), NamedBy::Root(by));
        self.reach((tree, ObjectKind::Tree), NamedBy::Root(by));
    }

    fn reach(&mut self, obj: Obj, by: NamedBy) {
        if self.named_by.contains_key(&obj) {
            return;
        }
        self.named_by.insert(obj, by);
        self.order.push(obj);
        if obj.1 == ObjectKind::Tree {
            self.pending.push(obj.0);
        }
    }

    /// The trees reached but not yet loaded or skipped: the next batch.
    pub fn take_pending(&mut self) -> Vec<ObjectId> {
        std::mem::take(&mut self.pending)
    }

    /// Records the contents of tree `id`; the trees it names that are new
    /// to the closure become pending.
    pub fn add_tree(&mut self, id: ObjectId, tree: &Tree) {
        let by = NamedBy::Tree(id);
        let mut kids = Vec::with_capacity(tree.entries.len() * 2);
        for entry in &tree.entries {
            match entry.kind {
                EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                    kids.push((file, ObjectKind::File));
                }
                EntryKind::Dir { tree, meta } => {
                    kids.push((meta, ObjectKind::DirMeta));
                    kids.push((tree, ObjectKind::Tree));
                }
            }
        }
        for &kid in &kids {
            self.reach(kid, by);
        }
        self.children.insert(id, kids);
    }

    /// Keeps tree `id` in the closure without its contents (absent, or
    /// known to be complete where the caller is writing).
    pub fn skip_tree(&mut self, id: ObjectId) {
        self.skipped.insert(id);
    }

    /// Loads every pending tree with `load` (`None`: skip it) until nothing
    /// is pending.
    pub fn load_with<E>(
        &mut self,
        mut load: impl FnMut(&ObjectId) -> Result<Option<Tree>, E>,
    ) -> Result<(), E> {
        loop {
            let batch = self.take_pending();
            if batch.is_empty() {
                return Ok(());
            }
            for id in batch {
                match load(&id)? {
                    Some(tree) => self.add_tree(id, &tree),
                    None => self.skip_tree(id),
                }
            }
        }
    }

    /// Every object reached, in the order first seen.
    pub fn objects(&self) -> &[Obj] {
        &self.order
    }

    /// The number of objects reached.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn contains(&self, obj: &Obj) -> bool {
        self.named_by.contains_key(obj)
    }

    /// What named `obj` first.
    pub fn named_by(&self, obj: &Obj) -> Option<NamedBy> {
        self.named_by.get(obj).copied()
    }

    /// The loaded trees (not the skipped ones).
    pub fn loaded_trees(&self) -> impl Iterator<Item = &ObjectId> {
        self.children.keys()
    }

    /// Whether tree `id` was skipped.
    pub fn is_skipped(&self, id: &ObjectId) -> bool {
        self.skipped.contains(id)
    }

    /// Every object in an order where each comes after all the objects it
    /// names: files and dirmetas first, then trees in post-order (skipped
    /// trees count as leaves). Writing or uploading in this order never
    /// leaves an object naming one that is not there yet.
    pub fn children_first(&self) -> Vec<Obj> {
        let mut out: Vec<Obj> = self
            .order
            .iter()
            .filter(|o| o.1 != ObjectKind::Tree)
            .copied()
            .collect();
        let mut done: HashSet<ObjectId> = HashSet::new();
        for root in self.order.iter().filter(|o| o.1 == ObjectKind::Tree) {
            // Iterative post-order: a tree is pushed after its subtrees.
            let mut stack = vec![(root.0, false)];
            while let Some((id, expanded)) = stack.pop() {
                if expanded {
                    out.push((id, ObjectKind::Tree));
                    continue;
                }
                if !done.insert(id) {
                    continue;
                }
                stack.push((id, true));
                for kid in self.children.get(&id).into_iter().flatten() {
                    if kid.1 == ObjectKind::Tree && !done.contains(&kid.0) {
                        stack.push((kid.0, false));
                    }
                }
            }
        }
        out
    }

    /// Whether the directory `tree`/`meta` and everything below it pass
    /// `present`. A skipped tree passes if it itself does. Answers are
    /// computed once per tree.
    pub fn complete(
        &self,
        tree: ObjectId,
        meta: ObjectId,
        present: &dyn Fn(&Obj) -> bool,
        memo: &mut HashMap<ObjectId, bool>,
    ) -> bool {
        let meta_ok = present(&(meta, ObjectKind::DirMeta));
        meta_ok && self.tree_complete(tree, present, memo)
    }

    fn tree_complete(
        &self,
        root: ObjectId,
        present: &dyn Fn(&Obj) -> bool,
        memo: &mut HashMap<ObjectId, bool>,
    ) -> bool {
        // Post-order without recursion: deep trees must not overflow.
        let mut stack = vec![(root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if memo.contains_key(&id) {
                continue;
            }
            let kids = self.children.get(&id);
            if !expanded {
                stack.push((id, true));
                for kid in kids.into_iter().flatten() {
                    if kid.1 == ObjectKind::Tree && !memo.contains_key(&kid.0) {
                        stack.push((kid.0, false));
                    }
                }
                continue;
            }
            let mut ok = present(&(id, ObjectKind::Tree));
            if !self.skipped.contains(&id) {
                ok &= kids.is_some();
                for kid in kids.into_iter().flatten() {
                    ok &= match kid.1 {
                        ObjectKind::Tree => memo.get(&kid.0).copied().unwrap_or(false),
                        _ => present(kid),
                    };
                }
            }
            memo.insert(id, ok);
        }
        memo.get(&root).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::TreeEntry;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    fn tree(entries: Vec<(&str, EntryKind)>) -> Tree {
        Tree::from_entries(
            entries
                .into_iter()
                .map(|(n, kind)| TreeEntry {
                    name: n.as_bytes().to_vec(),
                    kind,
                })
                .collect(),
        )
        .expect("valid tree")
    }

    /// root(1) -> a(2) -> shared(3); root -> shared(3); files 10, 11.
    fn sample() -> HashMap<ObjectId, Tree> {
        let shared = tree(vec![("f", EntryKind::Regular { file: id(10) })]);
        let a = tree(vec![
            (
                "s",
                EntryKind::Dir {
                    tree: id(3),
                    meta: id(20),
                },
            ),
            ("l", EntryKind::Symlink { file: id(11) }),
        ]);
        let root = tree(vec![
            (
                "a",
                EntryKind::Dir {
                    tree: id(2),
                    meta: id(20),
                },
            ),
            (
                "s",
                EntryKind::Dir {
                    tree: id(3),
                    meta: id(21),
                },
            ),
        ]);
        HashMap::from([(id(1), root), (id(2), a), (id(3), shared)])
    }

    fn loaded() -> Closure {
        let trees = sample();
        let mut c = Closure::new();
        c.add_root(id(1), id(20), id(99));
        c.load_with(|t| Ok::<_, ()>(trees.get(t).cloned()))
            .expect("local load");
        c
    }

    #[test]
    fn every_object_once_with_who_named_it() {
        let c = loaded();
        assert_eq!(
            c.len(),
            7,
            "3 trees, 2 dirmetas, 2 files: {:?}",
            c.objects()
        );
        assert_eq!(
            c.named_by(&(id(1), ObjectKind::Tree)),
            Some(NamedBy::Root(id(99)))
        );
        assert_eq!(
            c.named_by(&(id(11), ObjectKind::File)),
            Some(NamedBy::Tree(id(2)))
        );
        // Breadth first: the root names the shared tree before `a` does.
        assert_eq!(
            c.named_by(&(id(3), ObjectKind::Tree)),
            Some(NamedBy::Tree(id(1)))
        );
    }

    #[test]
    fn children_come_before_what_names_them() {
        let c = loaded();
        let order = c.children_first();
        assert_eq!(order.len(), c.len());
        let pos = |o: Obj| order.iter().position(|x| *x == o).expect("in order");
        let trees = sample();
        for (tid, t) in &trees {
            for e in &t.entries {
                let kids: Vec<Obj> = match e.kind {
                    EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                        vec![(file, ObjectKind::File)]
                    }
                    EntryKind::Dir { tree, meta } => {
                        vec![(tree, ObjectKind::Tree), (meta, ObjectKind::DirMeta)]
                    }
                };
                for k in kids {
                    assert!(pos(k) < pos((*tid, ObjectKind::Tree)), "{k:?} before {tid}");
                }
            }
        }
    }

    #[test]
    fn batches_are_whole_levels() {
        let trees = sample();
        let mut c = Closure::new();
        c.add_root(id(1), id(20), id(99));
        assert_eq!(c.take_pending(), vec![id(1)]);
        c.add_tree(id(1), &trees[&id(1)]);
        let mut next = c.take_pending();
        next.sort();
        assert_eq!(next, vec![id(2), id(3)]);
        c.add_tree(id(2), &trees[&id(2)]);
        c.add_tree(id(3), &trees[&id(3)]);
        assert!(
            c.take_pending().is_empty(),
            "the shared tree is asked for once"
        );
    }

    #[test]
    fn skipped_and_missing_trees() {
        let trees = sample();
        let mut c = Closure::new();
        c.add_root(id(1), id(20), id(99));
        // Tree 2 cannot be read: it stays, without its contents.
        c.load_with(|t| Ok::<_, ()>((*t != id(2)).then(|| trees[t].clone())))
            .expect("load");
        assert!(c.is_skipped(&id(2)));
        assert!(!c.contains(&(id(11), ObjectKind::File)));
        let mut memo = HashMap::new();
        let all = |_: &Obj| true;
        assert!(c.complete(id(1), id(20), &all, &mut memo));
        let mut memo = HashMap::new();
        let no_file_10 = |o: &Obj| *o != (id(10), ObjectKind::File);
        assert!(!c.complete(id(1), id(20), &no_file_10, &mut memo));
        assert_eq!(memo.get(&id(3)), Some(&false));
    }
}

//! The merged-/usr rule: `/bin`, `/sbin` and `/lib*` are merged into
//! `/usr/<dir>` with the plain rules (`/usr/<dir>` first, the moved
//! directory second, so its metadata wins, as `cp -a DIR/. usr/DIR/`
//! does) and replaced by symlinks `bin -> usr/bin`.
//!
//! When every component ships `/usr` and the moved entries as directories
//! (the usual case), `/usr/lib` is the merge of the directories at
//! `/usr/lib` with those at `/lib`, done and cached like any shared
//! directory ([`Composer::merge2`]). When some component ships one of
//! them as a file or symlink, each of them is first resolved with the
//! plain rules, since only the winner (a directory, or a file that stays
//! where it is) can be moved; the moves are then made once the rest of
//! the root is merged. Both cases go through [`Composer::apply_merged_usr`].

use std::collections::BTreeMap;

use treectl_store::object::FileHeader;

use super::engine::{all_dirs, collapse, join, Composer, DirIn, DirNode, Groups, Node};
use super::report::Conflict;
use crate::ComposeError as Error;

/// The directories merged-/usr moves into `/usr`.
pub const MERGED_USR_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// `/usr` and the moved entries, taken out of the root's groups.
pub(super) struct MergedUsr {
    usr: Option<Vec<Node>>,
    moved: Vec<(&'static str, Vec<Node>)>,
    /// Some component ships one of them as a non-directory: each group was
    /// folded to one node, and the moves wait for the rest of the root.
    pub(super) folded: bool,
}

/// `/usr` while the moved directories are merged into it.
enum Usr {
    /// Not needed yet: a compose that moves nothing leaves it alone.
    Unopened(Option<Vec<Node>>),
    /// Opened, with the entries of every component not merged yet.
    Open(DirNode, Groups),
    /// A file: nothing can be moved into it.
    NotADir(Node),
}

impl Composer<'_> {
    /// Takes `/usr` and the directories it absorbs out of `groups`; `None`
    /// when nothing is to be moved.
    pub(super) fn take_merged_usr(
        &mut self,
        groups: &mut Groups,
    ) -> Result<Option<MergedUsr>, Error> {
        let special = std::iter::once("usr").chain(MERGED_USR_DIRS.iter().copied());
        let all_dir_groups = special.clone().all(|n| {
            groups
                .get(n.as_bytes())
                .is_none_or(|g| all_dirs(g).is_some())
        });
        if all_dir_groups
            && !MERGED_USR_DIRS
                .iter()
                .any(|d| groups.contains_key(d.as_bytes()))
        {
            // /usr stays an ordinary entry of the root.
            return Ok(None);
        }
        let mut take = |n: &str| -> Result<Option<Vec<Node>>, Error> {
            let Some(g) = groups.remove(n.as_bytes()) else {
                return Ok(None);
            };
            if all_dir_groups {
                return Ok(Some(g));
            }
            Ok(Some(vec![self.fold(&join("", n.as_bytes()), g)?]))
        };
        let usr = take("usr")?;
        let mut moved = Vec::new();
        for d in MERGED_USR_DIRS {
            if let Some(g) = take(d)? {
                moved.push((*d, g));
            }
        }
        Ok(Some(MergedUsr {
            usr,
            moved,
            folded: !all_dir_groups,
        }))
    }

    /// Merges each moved directory into `/usr` and leaves a symlink in its
    /// place; `/usr` goes into `root`.
    pub(super) fn apply_merged_usr(
        &mut self,
        root: &mut DirNode,
        m: MergedUsr,
    ) -> Result<(), Error> {
        let folded = m.folded;
        let mut usr = Usr::Unopened(m.usr);
        for (d, nodes) in m.moved {
            let key = d.as_bytes().to_vec();
            let (a_path, b_path) = (format!("/usr/{d}"), format!("/{d}"));
            if let [Node::File { .. }] = nodes.as_slice() {
                // Already a symlink (or a file): it stays.
                root.entries.insert(key, self.fold(&b_path, nodes)?);
                continue;
            }
            let owner = Self::owner(&nodes[0]);
            if let Usr::Unopened(g) = usr {
                usr = self.open_usr(g, owner)?;
            }
            let (dir, usr_groups) = match &mut usr {
                Usr::Open(dir, groups) => (dir, groups),
                Usr::NotADir(file) => {
                    let o = Self::owner(file);
                    self.conflicts.push(Conflict {
                        path: "/usr".into(),
                        first: self.names[o].clone(),
                        second: "merged /usr".into(),
                        kind: "type",
                    });
                    root.entries.insert(key, self.fold(&b_path, nodes)?);
                    continue;
                }
                Usr::Unopened(_) => unreachable!("opened above"),
            };
            let node = match usr_groups.remove(&key) {
                None => self.resolve_group(&b_path, nodes)?,
                // One resolved node a side: merged in memory like any two
                // nodes, not cached (a tree with /lib as a symlink is rare).
                Some(un) if folded => {
                    let x = self.fold(&a_path, un)?;
                    let y = self.fold(&b_path, nodes)?;
                    self.merge_node(x, y, &a_path)?
                }
                Some(un) => self.merge_sides(&a_path, &b_path, un, nodes)?,
            };
            dir.entries.insert(key.clone(), node);
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
        let usr = match usr {
            Usr::Unopened(None) => return Ok(()),
            Usr::Unopened(Some(g)) => self.fold("/usr", g)?,
            Usr::NotADir(file) => file,
            Usr::Open(mut dir, groups) => {
                for (name, g) in groups {
                    let node = self.resolve_group(&join("/usr", &name), g)?;
                    dir.entries.insert(name, node);
                }
                Node::Dir(dir)
            }
        };
        root.entries.insert(b"usr".to_vec(), usr);
        Ok(())
    }

    /// Opens `/usr` (made with the default metadata when no component
    /// ships it) for the moved directories.
    fn open_usr(&mut self, group: Option<Vec<Node>>, owner: usize) -> Result<Usr, Error> {
        let Some(group) = group else {
            let dir = DirNode {
                meta: self.default_meta_id,
                meta_owner: owner,
                entries: BTreeMap::new(),
            };
            return Ok(Usr::Open(dir, Groups::new()));
        };
        if let Some(ins) = all_dirs(&group) {
            let o = self.open_all(&collapse(&ins), "/usr")?;
            let dir = DirNode {
                meta: o.meta,
                meta_owner: o.meta_owner,
                entries: BTreeMap::new(),
            };
            return Ok(Usr::Open(dir, o.groups));
        }
        // Folded already: one merged directory, or a file.
        let folded = self.fold("/usr", group)?;
        match self.expand(folded)? {
            Node::Dir(d) => {
                let groups = d.entries.into_iter().map(|(k, v)| (k, vec![v])).collect();
                let dir = DirNode {
                    meta: d.meta,
                    meta_owner: d.meta_owner,
                    entries: BTreeMap::new(),
                };
                Ok(Usr::Open(dir, groups))
            }
            file => Ok(Usr::NotADir(file)),
        }
    }

    /// The merge of the entries `a` (at `a_path`, under `/usr`) with the
    /// entries `b` (at `b_path`, outside it), each in lockfile order.
    fn merge_sides(
        &mut self,
        a_path: &str,
        b_path: &str,
        a: Vec<Node>,
        b: Vec<Node>,
    ) -> Result<Node, Error> {
        match (all_dirs(&a), all_dirs(&b)) {
            (Some(x), Some(y)) => self.merge2(a_path, b_path, &x, &y),
            _ => {
                let x = self.fold(a_path, a)?;
                let y = self.fold(b_path, b)?;
                self.merge_node(x, y, a_path)
            }
        }
    }

    /// The merge of the directories `a` (at `a_path`, under `/usr`) with
    /// the directories `b` (at `b_path`, outside it), as folding each side
    /// and then merging the two results does, written and cached.
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
                    self.merge_sides(&pa, &pb, an, bn)?
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
}

//! Assembling an archive's tree in memory, entry by entry, with `tar -x`'s
//! rules (a later entry replaces an earlier one of the same name) and the
//! safety checks that keep every entry inside the tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{display_name, ImportError, Result};
use treectl_store::commit::{MemDir, MemEntry};
use treectl_store::hash::ObjectId;
use treectl_store::object::DirMeta;

/// Metadata of directories that the archive does not list itself: the
/// parents of listed entries. `dpkg-deb -x` (GNU tar) would create them
/// from the umask; we fix them to 0755 root:root so trees do not depend on
/// the importing machine.
pub fn default_dir_meta() -> DirMeta {
    DirMeta::new(0o755, 0, 0, Vec::new())
}

#[derive(Debug)]
struct Dir {
    meta: DirMeta,
    /// Listed by an entry of its own (as opposed to created as a parent).
    explicit: bool,
    entries: BTreeMap<Vec<u8>, Node>,
}

#[derive(Debug)]
enum Node {
    File { id: ObjectId, symlink: bool },
    Dir(Dir),
}

/// A file node as found by [`TreeBuilder::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    File { id: ObjectId, symlink: bool },
    Dir,
}

/// A tree under construction. Paths are given as checked components
/// (see [`split_entry_name`]).
#[derive(Debug)]
pub struct TreeBuilder {
    archive: PathBuf,
    root: Dir,
    warnings: Vec<String>,
}

/// Splits an archive entry name into path components. `./` prefixes, empty
/// components and `.` are dropped; absolute names and `..` are refused.
/// The empty list is the archive root.
pub fn split_entry_name(archive: &Path, name: &[u8]) -> Result<Vec<Vec<u8>>> {
    if name.first() == Some(&b'/') {
        return Err(ImportError::AbsoluteName {
            archive: archive.to_owned(),
            entry: display_name(name),
        });
    }
    let mut out = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(ImportError::DotDot {
                    archive: archive.to_owned(),
                    entry: display_name(name),
                })
            }
            c if c.contains(&0) => {
                return Err(ImportError::BadHeader {
                    archive: archive.to_owned(),
                    entry: display_name(name),
                    field: "name (it contains NUL)",
                })
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// True for a name a tree may hold: not empty, not `.` or `..`, no `/` or
/// NUL (the rule of the tree encoding).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

fn join(comps: &[Vec<u8>]) -> String {
    let parts: Vec<String> = comps.iter().map(|c| display_name(c)).collect();
    parts.join("/")
}

impl TreeBuilder {
    pub fn new(archive: &Path) -> TreeBuilder {
        TreeBuilder {
            archive: archive.to_owned(),
            root: Dir {
                meta: default_dir_meta(),
                explicit: false,
                entries: BTreeMap::new(),
            },
            warnings: Vec::new(),
        }
    }

    /// Findings so far (duplicates replaced).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The directory that will hold `comps`' last component, creating
    /// missing parents with [`default_dir_meta`].
    fn parent_of(&mut self, comps: &[Vec<u8>], entry: &str) -> Result<&mut Dir> {
        let archive = &self.archive;
        let mut dir = &mut self.root;
        let parents = &comps[..comps.len().saturating_sub(1)];
        for (i, name) in parents.iter().enumerate() {
            let node = dir.entries.entry(name.clone()).or_insert_with(|| {
                Node::Dir(Dir {
                    meta: default_dir_meta(),
                    explicit: false,
                    entries: BTreeMap::new(),
                })
            });
            dir = match node {
                Node::Dir(d) => d,
                Node::File { symlink: true, .. } => {
                    return Err(ImportError::ThroughSymlink {
                        archive: archive.clone(),
                        entry: entry.to_owned(),
                        symlink: join(&comps[..=i]),
                    })
                }
                Node::File { symlink: false, .. } => {
                    return Err(ImportError::NotADirectory {
                        archive: archive.clone(),
                        entry: entry.to_owned(),
                        parent: join(&comps[..=i]),
                    })
                }
            };
        }
        Ok(dir)
    }

    /// Adds a regular file or symlink; a later entry of the same name
    /// replaces an earlier one, with a warning when they differ.
    pub fn add_file(
        &mut self,
        comps: &[Vec<u8>],
        id: ObjectId,
        symlink: bool,
        entry: &str,
    ) -> Result<()> {
        let Some(name) = comps.last() else {
            return Err(ImportError::RootNotDir {
                archive: self.archive.clone(),
                entry: entry.to_owned(),
            });
        };
        let name = name.clone();
        let dir = self.parent_of(comps, entry)?;
        let old = dir.entries.insert(name, Node::File { id, symlink });
        let warning = match old {
            None => None,
            Some(Node::File {
                id: old_id,
                symlink: old_link,
            }) if old_id == id && old_link == symlink => None,
            Some(Node::File { .. }) => Some(format!(
                "duplicate entry {entry:?} with different content: the later one wins"
            )),
            Some(Node::Dir(_)) => Some(format!(
                "entry {entry:?} replaces a directory of the same name and everything in it"
            )),
        };
        if let Some(w) = warning {
            self.warnings.push(w);
        }
        Ok(())
    }

    /// Adds a directory entry, or updates the metadata of one already there.
    pub fn add_dir(&mut self, comps: &[Vec<u8>], meta: DirMeta, entry: &str) -> Result<()> {
        let Some(name) = comps.last() else {
            if self.root.explicit && self.root.meta != meta {
                self.warnings.push(format!(
                    "duplicate entry {entry:?} with different metadata: the later one wins"
                ));
            }
            self.root.meta = meta;
            self.root.explicit = true;
            return Ok(());
        };
        let name = name.clone();
        let dir = self.parent_of(comps, entry)?;
        let mut warning = None;
        match dir.entries.get_mut(&name) {
            Some(Node::Dir(d)) => {
                if d.explicit && d.meta != meta {
                    warning = Some(format!(
                        "duplicate entry {entry:?} with different metadata: the later one wins"
                    ));
                }
                d.meta = meta;
                d.explicit = true;
            }
            other => {
                if other.is_some() {
                    warning = Some(format!(
                        "directory entry {entry:?} replaces a file of the same name"
                    ));
                }
                dir.entries.insert(
                    name,
                    Node::Dir(Dir {
                        meta,
                        explicit: true,
                        entries: BTreeMap::new(),
                    }),
                );
            }
        }
        if let Some(w) = warning {
            self.warnings.push(w);
        }
        Ok(())
    }

    /// Finds what `comps` names now, without following symlinks.
    pub fn lookup(&self, comps: &[Vec<u8>]) -> Option<Found> {
        let mut dir = &self.root;
        let Some((last, parents)) = comps.split_last() else {
            return Some(Found::Dir);
        };
        for name in parents {
            match dir.entries.get(name)? {
                Node::Dir(d) => dir = d,
                Node::File { .. } => return None,
            }
        }
        match dir.entries.get(last)? {
            Node::Dir(_) => Some(Found::Dir),
            Node::File { id, symlink } => Some(Found::File {
                id: *id,
                symlink: *symlink,
            }),
        }
    }

    /// The finished tree, ready for [`MemDir::write`].
    pub fn into_mem(self) -> MemDir {
        fn convert(d: Dir) -> MemDir {
            let mut out = MemDir::new(d.meta);
            for (name, node) in d.entries {
                let e = match node {
                    Node::File { id, symlink } => MemEntry::File { id, symlink },
                    Node::Dir(sub) => MemEntry::Dir(convert(sub)),
                };
                out.entries.insert(name, e);
            }
            out
        }
        convert(self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str) -> Result<Vec<Vec<u8>>> {
        split_entry_name(Path::new("t.tar"), name.as_bytes())
    }

    #[test]
    fn entry_names() {
        let ok: &[(&str, &[&str])] = &[
            ("./", &[]),
            (".", &[]),
            ("./usr/bin/", &["usr", "bin"]),
            ("usr//bin/./ls", &["usr", "bin", "ls"]),
            ("a..b/..c", &["a..b", "..c"]),
        ];
        for (name, want) in ok {
            let got = split(name).unwrap();
            let want: Vec<Vec<u8>> = want.iter().map(|s| s.as_bytes().to_vec()).collect();
            assert_eq!(got, want, "{name}");
        }
        assert!(matches!(
            split("/etc/passwd"),
            Err(ImportError::AbsoluteName { .. })
        ));
        for bad in ["../x", "a/../../x", "a/..", "./.."] {
            assert!(
                matches!(split(bad), Err(ImportError::DotDot { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn symlink_parents_refused_and_duplicates_reported() {
        let mut b = TreeBuilder::new(Path::new("t.tar"));
        let id1 = ObjectId::of(b"1");
        let id2 = ObjectId::of(b"2");
        b.add_file(&split("lib").unwrap(), id1, true, "lib")
            .unwrap();
        let err = b
            .add_file(&split("lib/x").unwrap(), id1, false, "lib/x")
            .unwrap_err();
        assert!(
            matches!(err, ImportError::ThroughSymlink { ref symlink, .. } if symlink == "lib"),
            "{err}"
        );
        b.add_file(&split("f").unwrap(), id1, false, "f").unwrap();
        let err = b
            .add_dir(&split("f/d").unwrap(), default_dir_meta(), "f/d")
            .unwrap_err();
        assert!(matches!(err, ImportError::NotADirectory { .. }), "{err}");
        b.add_file(&split("f").unwrap(), id1, false, "f").unwrap();
        assert!(b.warnings().is_empty());
        b.add_file(&split("f").unwrap(), id2, false, "f").unwrap();
        assert_eq!(b.warnings().len(), 1);
        assert_eq!(
            b.lookup(&split("f").unwrap()),
            Some(Found::File {
                id: id2,
                symlink: false
            })
        );
        assert_eq!(b.lookup(&split("nope").unwrap()), None);
        // Implicit parents get the default metadata; an explicit entry later sets it.
        b.add_file(&split("a/b/c").unwrap(), id1, false, "a/b/c")
            .unwrap();
        b.add_dir(
            &split("a").unwrap(),
            DirMeta::new(0o700, 1, 2, vec![]),
            "a/",
        )
        .unwrap();
        let mem = b.into_mem();
        let MemEntry::Dir(a) = &mem.entries[&b"a".to_vec()] else {
            panic!()
        };
        assert_eq!(a.meta, DirMeta::new(0o700, 1, 2, vec![]));
        let MemEntry::Dir(ab) = &a.entries[&b"b".to_vec()] else {
            panic!()
        };
        assert_eq!(ab.meta, default_dir_meta());
    }
}

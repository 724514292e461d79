//! Checking a repository: every object re-hashed, every link between
//! objects and every ref checked, every finding collected.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use crate::closure::{Closure, NamedBy};
use crate::error::{Error, Result};
use crate::hash::ObjectId;
use crate::object::{Commit, DirMeta, EntryKind, FileKind, ObjectKind, Tree};
use crate::refs;
use crate::store::{parse_object_name, LockKind, Repo, RepoLock, OBJECTS_DIR, STATE_DIR};

/// What kind of problem a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The object's content does not hash to its id, or does not decode.
    CorruptObject,
    /// An object that a commit, tree or ref needs is not in the store.
    MissingObject,
    /// A tree names a file object as the wrong type (regular vs symlink).
    WrongEntryType,
    /// A file under `objects/` whose name is not an object's.
    StrayFile,
    /// A ref file that does not hold a commit id.
    InvalidRef,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::CorruptObject => "corrupt-object",
            FindingKind::MissingObject => "missing-object",
            FindingKind::WrongEntryType => "wrong-entry-type",
            FindingKind::StrayFile => "stray-file",
            FindingKind::InvalidRef => "invalid-ref",
        }
    }
}

/// One problem fsck found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The object concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_kind: Option<ObjectKind>,
    /// What needs the object, or the path or ref concerned.
    pub detail: String,
}

/// Everything fsck saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsckReport {
    pub objects_checked: usize,
    pub commits: usize,
    pub refs: usize,
    pub findings: Vec<Finding>,
    /// Commits marked partial (some content deliberately or knowingly
    /// absent); their missing objects are not findings.
    pub partial_commits: Vec<ObjectId>,
    /// What `--repair` did.
    pub repaired: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// A decoded object, kept for the link check.
enum Decoded {
    File(FileKind),
    Tree(Tree),
    DirMeta,
    Commit(Commit),
}

/// Directory holding the partial-commit markers.
pub fn partial_dir(repo: &Repo) -> PathBuf {
    repo.path().join(STATE_DIR).join("partial")
}

pub fn is_partial(repo: &Repo, id: &ObjectId) -> bool {
    partial_dir(repo).join(id.to_hex()).exists()
}

/// Marks a commit as partial: some objects under it are known to be absent.
pub fn mark_partial(repo: &Repo, id: &ObjectId) -> Result<()> {
    let dir = partial_dir(repo);
    fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let p = dir.join(id.to_hex());
    fs::write(&p, b"").map_err(Error::io("writing", &p))
}

/// Lists every stored object; names that are not objects become findings.
pub fn list_objects(
    repo: &Repo,
    findings: &mut Vec<Finding>,
) -> Result<Vec<(ObjectId, ObjectKind)>> {
    let objects = repo.path().join(OBJECTS_DIR);
    let mut out = Vec::new();
    for sub in fs::read_dir(&objects).map_err(Error::io("reading", &objects))? {
        let sub = sub.map_err(Error::io("reading", &objects))?;
        let sub_name = sub.file_name().to_string_lossy().into_owned();
        let sub_path = sub.path();
        if !sub
            .file_type()
            .map_err(Error::io("reading", &sub_path))?
            .is_dir()
            || sub_name.len() != 2
        {
            findings.push(Finding {
                kind: FindingKind::StrayFile,
                object: None,
                object_kind: None,
                detail: sub_path.display().to_string(),
            });
            continue;
        }
        for entry in fs::read_dir(&sub_path).map_err(Error::io("reading", &sub_path))? {
            let entry = entry.map_err(Error::io("reading", &sub_path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match parse_object_name(&sub_name, &name, repo.mode()) {
                Some(o) => out.push(o),
                None => findings.push(Finding {
                    kind: FindingKind::StrayFile,
                    object: None,
                    object_kind: None,
                    detail: entry.path().display().to_string(),
                }),
            }
        }
    }
    out.sort();
    Ok(out)
}

fn verify(repo: &Repo, id: &ObjectId, kind: ObjectKind) -> Result<Decoded, String> {
    match kind {
        ObjectKind::File => {
            let (header, _) = repo.read_file(id).map_err(reason)?;
            Ok(Decoded::File(header.kind()))
        }
        ObjectKind::Tree => repo.read_tree(id).map(Decoded::Tree).map_err(reason),
        ObjectKind::DirMeta => repo
            .read_dirmeta(id)
            .map(|_: DirMeta| Decoded::DirMeta)
            .map_err(reason),
        ObjectKind::Commit => repo.read_commit(id).map(Decoded::Commit).map_err(reason),
    }
}

fn reason(e: Error) -> String {
    match e {
        Error::Corrupt { reason, .. } => reason,
        Error::Decode { err, .. } => err.to_string(),
        other => other.to_string(),
    }
}

/// Checks the repository; with `repair`, removes corrupt objects and marks
/// the commits that need missing objects as partial.
pub fn fsck(repo: &Repo, repair: bool) -> Result<FsckReport> {
    // Repair deletes objects: no transaction may run meanwhile.
    let _lock = if repair {
        Some(RepoLock::acquire(repo.path(), LockKind::Exclusive)?)
    } else {
        None
    };
    let mut report = FsckReport::default();
    let all = list_objects(repo, &mut report.findings)?;
    report.objects_checked = all.len();

    let results: Vec<_> = all
        .par_iter()
        .map(|(id, kind)| (*id, *kind, verify(repo, id, *kind)))
        .collect();
    let mut good: HashMap<(ObjectId, ObjectKind), Decoded> = HashMap::new();
    let mut corrupt: HashSet<(ObjectId, ObjectKind)> = HashSet::new();
    for (id, kind, r) in results {
        match r {
            Ok(d) => {
                good.insert((id, kind), d);
            }
            Err(reason) => {
                report.findings.push(Finding {
                    kind: FindingKind::CorruptObject,
                    object: Some(id),
                    object_kind: Some(kind),
                    detail: reason,
                });
                corrupt.insert((id, kind));
            }
        }
    }

    // Links: one walk over the trees of every commit, each tree once.
    let mut commits: Vec<(bool, ObjectId, Commit)> = good
        .iter()
        .filter_map(|((id, _), d)| match d {
            Decoded::Commit(c) => Some((is_partial(repo, id), *id, c.clone())),
            _ => None,
        })
        .collect();
    commits.sort_by_key(|(partial, id, _)| (*partial, *id));
    report.commits = commits.len();
    // Partial commits are known to lack objects: only complete ones are
    // walked, and what they miss is reported.
    let mut walk = Closure::new();
    for (partial, cid, commit) in &commits {
        if *partial {
            report.partial_commits.push(*cid);
        } else {
            walk.add_root(commit.root_tree, commit.root_meta, *cid);
        }
    }
    walk.load_with(|id| {
        Ok::<_, Error>(match good.get(&(*id, ObjectKind::Tree)) {
            Some(Decoded::Tree(tree)) => Some(tree.clone()),
            _ => None,
        })
    })?;
    let mut reported_missing: HashSet<(ObjectId, ObjectKind)> = HashSet::new();
    for obj in walk.objects() {
        if good.contains_key(obj) || corrupt.contains(obj) {
            continue; // corrupt objects were reported as such already
        }
        reported_missing.insert(*obj);
        let needed_by = match walk.named_by(obj) {
            Some(NamedBy::Root(c)) => format!("commit {}", c.short()),
            Some(NamedBy::Tree(t)) => format!("tree {}", t.short()),
            None => "a commit".to_owned(),
        };
        report.findings.push(missing(obj.0, obj.1, &needed_by));
    }
    for tree_id in walk.loaded_trees() {
        if let Some(Decoded::Tree(tree)) = good.get(&(*tree_id, ObjectKind::Tree)) {
            wrong_entry_types(tree_id, tree, &good, &mut report.findings);
        }
    }
    let present = |o: &(ObjectId, ObjectKind)| good.contains_key(o);
    let mut memo = HashMap::new();
    let needs_repair: Vec<ObjectId> = commits
        .iter()
        .filter(|(partial, _, c)| {
            !partial && !walk.complete(c.root_tree, c.root_meta, &present, &mut memo)
        })
        .map(|(_, cid, _)| *cid)
        .collect();

    // Refs.
    for (name, target) in refs::list_all_refs_raw(repo)? {
        report.refs += 1;
        match target {
            Err(reason) => report.findings.push(Finding {
                kind: FindingKind::InvalidRef,
                object: None,
                object_kind: None,
                detail: format!("ref {name} {reason}"),
            }),
            Ok(id) => {
                let key = (id, ObjectKind::Commit);
                if !good.contains_key(&key)
                    && !corrupt.contains(&key)
                    && reported_missing.insert(key)
                {
                    report
                        .findings
                        .push(missing(id, ObjectKind::Commit, &format!("ref {name}")));
                }
            }
        }
    }

    if repair {
        for (id, kind) in &corrupt {
            let p = repo.object_path(id, *kind);
            fs::remove_file(&p).map_err(Error::io("removing", &p))?;
            report
                .repaired
                .push(format!("removed corrupt {kind} object {id}"));
        }
        for cid in &needs_repair {
            mark_partial(repo, cid)?;
            report.repaired.push(format!("marked commit {cid} partial"));
        }
    }
    report.findings.sort_by_key(|f| (f.kind, f.object));
    Ok(report)
}

/// Findings for the entries of `tree` that name a file object of the other
/// type (a regular file listed as a symlink, or the reverse).
fn wrong_entry_types(
    tree_id: &ObjectId,
    tree: &Tree,
    good: &HashMap<(ObjectId, ObjectKind), Decoded>,
    findings: &mut Vec<Finding>,
) {
    for entry in &tree.entries {
        let (file, want) = match entry.kind {
            EntryKind::Regular { file } => (file, FileKind::Regular),
            EntryKind::Symlink { file } => (file, FileKind::Symlink),
            EntryKind::Dir { .. } => continue,
        };
        if let Some(Decoded::File(k)) = good.get(&(file, ObjectKind::File)) {
            if *k != want {
                findings.push(Finding {
                    kind: FindingKind::WrongEntryType,
                    object: Some(file),
                    object_kind: Some(ObjectKind::File),
                    detail: format!(
                        "tree {} lists {:?} as a {}",
                        tree_id.short(),
                        String::from_utf8_lossy(&entry.name),
                        if want == FileKind::Symlink {
                            "symlink"
                        } else {
                            "regular file"
                        }
                    ),
                });
            }
        }
    }
}

fn missing(id: ObjectId, kind: ObjectKind, needed_by: &str) -> Finding {
    Finding {
        kind: FindingKind::MissingObject,
        object: Some(id),
        object_kind: Some(kind),
        detail: format!("needed by {needed_by}"),
    }
}

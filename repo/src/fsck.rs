//! Checking a repository: every object re-hashed, every link between
//! objects and every ref checked, every finding collected.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

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

    // Links: walk every commit's tree, each tree once. Commits that are not
    // partial go first, so every missing object they need is reported.
    let mut commits: Vec<(bool, ObjectId, Commit)> = good
        .iter()
        .filter_map(|((id, _), d)| match d {
            Decoded::Commit(c) => Some((is_partial(repo, id), *id, c.clone())),
            _ => None,
        })
        .collect();
    commits.sort_by_key(|(partial, id, _)| (*partial, *id));
    report.commits = commits.len();
    let mut links = LinkCheck {
        good: &good,
        corrupt: &corrupt,
        complete: HashMap::new(),
        reported: HashSet::new(),
        findings: Vec::new(),
    };
    let mut needs_repair: Vec<ObjectId> = Vec::new();
    for (partial, cid, commit) in &commits {
        if *partial {
            report.partial_commits.push(*cid);
        }
        let needed_by = format!("commit {}", cid.short());
        let ok = links.dir_complete(commit.root_tree, commit.root_meta, &needed_by, !partial);
        if !ok && !partial {
            needs_repair.push(*cid);
        }
    }
    let mut reported_missing = links.reported;
    report.findings.append(&mut links.findings);

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

struct LinkCheck<'a> {
    good: &'a HashMap<(ObjectId, ObjectKind), Decoded>,
    corrupt: &'a HashSet<(ObjectId, ObjectKind)>,
    /// Trees already walked, and whether everything below them is present.
    complete: HashMap<ObjectId, bool>,
    reported: HashSet<(ObjectId, ObjectKind)>,
    findings: Vec<Finding>,
}

impl LinkCheck<'_> {
    /// Notes an object that should be present; false if it is not usable.
    fn present(&mut self, id: ObjectId, kind: ObjectKind, needed_by: &str, report: bool) -> bool {
        if self.good.contains_key(&(id, kind)) {
            return true;
        }
        // Corrupt objects were reported as such already.
        if report && !self.corrupt.contains(&(id, kind)) && self.reported.insert((id, kind)) {
            self.findings.push(missing(id, kind, needed_by));
        }
        false
    }

    fn dir_complete(
        &mut self,
        tree_id: ObjectId,
        meta_id: ObjectId,
        needed_by: &str,
        report: bool,
    ) -> bool {
        let meta_ok = self.present(meta_id, ObjectKind::DirMeta, needed_by, report);
        if let Some(&ok) = self.complete.get(&tree_id) {
            return ok && meta_ok;
        }
        if !self.present(tree_id, ObjectKind::Tree, needed_by, report) {
            return false;
        }
        let Some(Decoded::Tree(tree)) = self.good.get(&(tree_id, ObjectKind::Tree)) else {
            return false;
        };
        let here = format!("tree {}", tree_id.short());
        let mut ok = true;
        for entry in &tree.entries {
            match entry.kind {
                EntryKind::Dir { tree, meta } => ok &= self.dir_complete(tree, meta, &here, report),
                EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                    let want = if matches!(entry.kind, EntryKind::Symlink { .. }) {
                        FileKind::Symlink
                    } else {
                        FileKind::Regular
                    };
                    if !self.present(file, ObjectKind::File, &here, report) {
                        ok = false;
                    } else if let Some(Decoded::File(k)) = self.good.get(&(file, ObjectKind::File))
                    {
                        if *k != want && report {
                            self.findings.push(Finding {
                                kind: FindingKind::WrongEntryType,
                                object: Some(file),
                                object_kind: Some(ObjectKind::File),
                                detail: format!(
                                    "{here} lists {:?} as a {}",
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
        }
        self.complete.insert(tree_id, ok);
        ok && meta_ok
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

//! Step 3: the walk. The store's [`Closure`] walks the commit's trees level
//! by level; each level's trees and dirmetas that the repository lacks are
//! fetched in one batch (or taken from an interrupted pull's staging),
//! verified and staged. Trees already in the store have their whole
//! closure there, so the walk skips them. What the walk finds missing is
//! what the later steps fetch and store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use treectl_store::closure::Closure;
use treectl_store::object::{Commit, Tree};
use treectl_store::store::verify_wire_form;
use treectl_store::{failpoint, ObjectId, ObjectKind, Repo};
use treectl_wire::ObjectRef;

use super::stage::Staging;
use crate::error::TransportError;
use crate::progress::Counters;
use crate::source::ObjectSource;

/// Deeper trees are refused: a hostile remote could otherwise make the
/// walk go on without end.
const MAX_DEPTH: usize = 4096;

/// What the walk found.
pub(super) struct Walked {
    /// The pulled commit.
    pub commit: ObjectRef,
    /// Every object reached (trees in the store skipped).
    pub closure: Closure,
    /// The commit, trees and dirmetas the store lacks...
    pub need: HashSet<ObjectRef>,
    /// ...and their verified bytes.
    pub metas: HashMap<ObjectRef, Vec<u8>>,
    /// The file objects the store lacks, in the order found.
    pub files: Vec<ObjectRef>,
    /// Objects fetched (not taken from staging).
    pub fetched: u64,
}

/// Fetches and stages a level's metadata: the shared state of a walk.
struct Walker<'a> {
    repo: &'a Repo,
    present: &'a HashSet<ObjectRef>,
    source: &'a dyn ObjectSource,
    staging: &'a Staging,
    counters: &'a Counters,
    metas: Mutex<HashMap<ObjectRef, Vec<u8>>>,
    fetched: AtomicU64,
}

/// Walks `commit`'s closure in `repo`, fetching what it lacks of the
/// metadata from `source`. Objects in `present` (being committed while
/// the walk runs) count as stored.
pub(super) fn walk(
    repo: &Repo,
    present: &HashSet<ObjectRef>,
    source: &dyn ObjectSource,
    staging: &Staging,
    commit: &ObjectId,
    counters: &Counters,
    where_: &str,
) -> Result<Walked, TransportError> {
    let w = Walker {
        repo,
        present,
        source,
        staging,
        counters,
        metas: Mutex::new(HashMap::new()),
        fetched: AtomicU64::new(0),
    };
    let commit_ref = ObjectRef {
        id: *commit,
        kind: ObjectKind::Commit,
    };
    let mut need = HashSet::new();
    let root = if repo.has_object(commit, ObjectKind::Commit) {
        repo.read_commit(commit)?
    } else {
        w.get(&[commit_ref], where_)?;
        need.insert(commit_ref);
        let data = w.metas.lock().expect("metas poisoned")[&commit_ref].clone();
        Commit::decode(&data).map_err(|err| TransportError::Decode {
            what: "commit",
            id: *commit,
            err,
        })?
    };
    let mut closure = Closure::new();
    closure.add_root(root.root_tree, root.root_meta, *commit);
    let files = w.levels(&mut closure, &mut need, where_)?;
    Ok(Walked {
        commit: commit_ref,
        closure,
        need,
        metas: w.metas.into_inner().expect("metas poisoned"),
        files,
        fetched: w.fetched.into_inner(),
    })
}

impl Walker<'_> {
    /// Walks level by level until no tree is pending; returns the files
    /// the store lacks.
    fn levels(
        &self,
        closure: &mut Closure,
        need: &mut HashSet<ObjectRef>,
        where_: &str,
    ) -> Result<Vec<ObjectRef>, TransportError> {
        let mut files = Vec::new();
        let mut seen = 0;
        for depth in 1.. {
            let trees = closure.take_pending();
            let lacks = lacking(self.repo, self.present, &closure.objects()[seen..]);
            seen = closure.len();
            if trees.is_empty() {
                // Only files can be new once no tree is pending.
                files.extend(lacks);
                break;
            }
            if depth > MAX_DEPTH {
                return Err(TransportError::TooDeep(MAX_DEPTH).context(where_));
            }
            let mut level = Vec::new();
            for obj in lacks {
                match obj.kind {
                    ObjectKind::File => files.push(obj),
                    _ => {
                        need.insert(obj);
                        level.push(obj);
                    }
                }
            }
            self.get(&level, where_)?;
            let metas = self.metas.lock().expect("metas poisoned");
            for id in trees {
                let obj = ObjectRef {
                    id,
                    kind: ObjectKind::Tree,
                };
                match metas.get(&obj) {
                    Some(data) => closure.add_tree(id, &decode_tree(&id, data)?),
                    // In the store, with its whole closure.
                    None => closure.skip_tree(id),
                }
            }
        }
        Ok(files)
    }

    /// Makes `objs` available in `metas`: from the staging of an earlier
    /// pull, else fetched, verified and staged.
    fn get(&self, objs: &[ObjectRef], where_: &str) -> Result<(), TransportError> {
        let mut fetch = Vec::new();
        for obj in objs {
            match self.staging.load(obj) {
                Some(d) => {
                    self.metas.lock().expect("metas poisoned").insert(*obj, d);
                }
                None => fetch.push(*obj),
            }
        }
        self.counters
            .objects_total
            .fetch_add(fetch.len() as u64, Ordering::Relaxed);
        self.source
            .fetch(&fetch, &|obj, data| self.keep(obj, data))
            .map_err(|e| e.context(where_))
    }

    /// The sink: verifies, stages and keeps one fetched object.
    fn keep(&self, obj: ObjectRef, data: Vec<u8>) -> Result<(), TransportError> {
        verify_wire_form(&obj.id, obj.kind, &data)?;
        self.staging.save(&obj, &data)?;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        self.counters.objects_done.fetch_add(1, Ordering::Relaxed);
        self.metas.lock().expect("metas poisoned").insert(obj, data);
        failpoint::hit("pull-object");
        Ok(())
    }
}

/// The objects of `reached` neither in `present` nor in the store, in
/// order. One look-up each, on every core: a release reaches thousands.
fn lacking(
    repo: &Repo,
    present: &HashSet<ObjectRef>,
    reached: &[(ObjectId, ObjectKind)],
) -> Vec<ObjectRef> {
    use rayon::prelude::*;
    reached
        .par_iter()
        .map(|&(id, kind)| ObjectRef { id, kind })
        .filter(|obj| !present.contains(obj) && !repo.has_object(&obj.id, obj.kind))
        .collect()
}

fn decode_tree(id: &ObjectId, data: &[u8]) -> Result<Tree, TransportError> {
    Tree::decode(data).map_err(|err| TransportError::Decode {
        what: "tree",
        id: *id,
        err,
    })
}

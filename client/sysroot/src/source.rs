//! Where a deployment's commit comes from: a local repository or a
//! configured remote, the head found there, and revisions for `deploy REV`.

use std::path::PathBuf;

use treectl_store::object::{Commit, ObjectKind};
use treectl_store::refs::{list_refs, rev_parse, RefName};
use treectl_store::{ObjectId, Repo};

use crate::fetch::fetch_commit;
use crate::state::{read_state, Origin, ReleaseOrder};
use crate::{Result, Sysroot, SysrootError};

/// Where a commit comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A local repository and a ref in it.
    LocalRepo { path: PathBuf, refname: String },
    /// A configured remote (`NAME:REF`), fetched by `treectl pull`.
    Remote { name: String, refname: String },
}

impl Source {
    pub fn origin(&self) -> Origin {
        match self {
            Source::LocalRepo { path, refname } => Origin {
                remote: None,
                repo: Some(path.clone()),
                refname: refname.clone(),
            },
            Source::Remote { name, refname } => Origin {
                remote: Some(name.clone()),
                repo: None,
                refname: refname.clone(),
            },
        }
    }

    pub fn from_origin(o: &Origin) -> Option<Source> {
        match (&o.remote, &o.repo) {
            (Some(name), _) => Some(Source::Remote {
                name: name.clone(),
                refname: o.refname.clone(),
            }),
            (None, Some(path)) => Some(Source::LocalRepo {
                path: path.clone(),
                refname: o.refname.clone(),
            }),
            (None, None) => None,
        }
    }
}

/// A head found at an origin, not yet fetched.
pub struct Head {
    pub commit: ObjectId,
    pub meta: Commit,
    /// The origin's release serial, when it has one (a remote's index).
    pub serial: Option<u64>,
    /// The head's ancestors, nearest first, as far as the repository it
    /// was found in holds them (see [`ancestors_of`]).
    pub ancestors: Vec<ObjectId>,
}

impl Head {
    /// A head found in `repo`: its commit object and its ancestry there.
    pub fn read(repo: &Repo, commit: ObjectId, serial: Option<u64>) -> Result<Head> {
        let meta = repo.read_commit(&commit)?;
        let ancestors = ancestors_of(repo, &meta)?;
        Ok(Head {
            commit,
            meta,
            serial,
            ancestors,
        })
    }

    pub fn order(&self) -> ReleaseOrder {
        ReleaseOrder {
            serial: self.serial,
            timestamp: self.meta.timestamp,
        }
    }

    /// Whether `commit` is one of the head's ancestors.
    pub fn descends_from(&self, commit: &ObjectId) -> bool {
        self.ancestors.contains(commit)
    }
}

/// How many ancestors [`ancestors_of`] follows at most: enough for years
/// of releases, bounded so a hostile history cannot make `upgrade` spin.
pub const MAX_ANCESTRY: usize = 10_000;

/// The parents of `meta`, nearest first, until a commit `repo` does not
/// hold (its id is still listed: a child names it) or [`MAX_ANCESTRY`].
pub fn ancestors_of(repo: &Repo, meta: &Commit) -> Result<Vec<ObjectId>> {
    let mut out = Vec::new();
    let mut next = meta.parent;
    while let Some(id) = next {
        if out.len() >= MAX_ANCESTRY || out.contains(&id) {
            break;
        }
        out.push(id);
        next = if repo.has_object(&id, ObjectKind::Commit) {
            repo.read_commit(&id)?.parent
        } else {
            None
        };
    }
    Ok(out)
}

/// Looks up the head of `source` without fetching it. A remote origin is
/// read from what `treectl pull` last verified and stored in the sysroot's
/// repository (its remote ref and the serial in its trust state): the
/// caller pulls first.
pub fn find_head(sysroot: &Sysroot, source: &Source) -> Result<Head> {
    match source {
        Source::LocalRepo { path, refname } => {
            let repo = Repo::open(path)?;
            let commit = rev_parse(&repo, refname)?;
            Head::read(&repo, commit, None)
        }
        Source::Remote { name, refname } => {
            let repo = sysroot.open_repo()?;
            let not_pulled = || SysrootError::NotPulled {
                origin: format!("{name}:{refname}"),
            };
            let commit =
                treectl_store::refs::try_read_remote_ref(&repo, name, &RefName::new(refname)?)?
                    .ok_or_else(not_pulled)?;
            let trust = treectl_release::remote::TrustState::load(&repo, name)?;
            let serial = trust.refs.get(refname.as_str()).map(|r| r.serial);
            Head::read(&repo, commit, serial)
        }
    }
}

/// Refuses `commit` when `origin`'s ref rejects it: a remote's as in the
/// index `pull` last accepted (its trust state), a local repository's as
/// in its published index.
pub fn check_not_rejected(sysroot: &Sysroot, origin: &Origin, commit: &ObjectId) -> Result<()> {
    let rejection = match Source::from_origin(origin) {
        Some(Source::Remote { name, refname }) => {
            let repo = sysroot.open_repo()?;
            let trust = treectl_release::remote::TrustState::load(&repo, &name)?;
            trust
                .refs
                .get(&refname)
                .and_then(|r| r.rejected.iter().find(|x| x.commit == *commit).cloned())
        }
        Some(Source::LocalRepo { path, refname }) => {
            let repo = Repo::open(&path)?;
            treectl_release::publish::current_index(&repo)?
                .refs
                .get(&refname)
                .and_then(|r| r.rejection(commit).cloned())
        }
        None => None,
    };
    match rejection {
        Some(r) => Err(SysrootError::Rejected {
            commit: commit.to_hex(),
            origin: origin.to_string(),
            reason: r.reason,
            serial: r.serial,
        }),
        None => Ok(()),
    }
}

/// Fetches `head` from `source` into the sysroot's repository.
pub fn fetch(sysroot: &Sysroot, source: &Source, head: &Head) -> Result<()> {
    sysroot.check_free_space()?;
    let dst = sysroot.open_repo()?;
    match source {
        Source::LocalRepo { path, refname } => {
            let src = Repo::open(path)?;
            let origin_ref = RefName::new(&format!("origin/{refname}"))?;
            fetch_commit(&src, &dst, &head.commit, &[origin_ref])?;
            Ok(())
        }
        // `treectl pull` already verified and stored it (see find_head).
        Source::Remote { .. } => Ok(()),
    }
}

/// Resolves `rev` for `deploy REV`: a revision or a `version` in the local
/// repository, else in the origin's repository (then fetched).
pub fn resolve_rev(sysroot: &Sysroot, rev: &str) -> Result<ObjectId> {
    let repo = sysroot.open_repo()?;
    if let Some(id) = find_rev(&repo, rev)? {
        return Ok(id);
    }
    let state = read_state(sysroot)?;
    if let Some(Source::LocalRepo { path, .. }) = state
        .deployments
        .first()
        .and_then(|d| d.origin.as_ref())
        .and_then(Source::from_origin)
    {
        let src = Repo::open(&path)?;
        if let Some(id) = find_rev(&src, rev)? {
            sysroot.check_free_space()?;
            fetch_commit(&src, &repo, &id, &[])?;
            return Ok(id);
        }
    }
    Err(SysrootError::UnknownRev {
        rev: rev.to_owned(),
    })
}

/// A revision, or the newest commit whose `version` is `rev` along any
/// ref's history.
fn find_rev(repo: &Repo, rev: &str) -> Result<Option<ObjectId>> {
    match rev_parse(repo, rev) {
        Ok(id) => return Ok(Some(id)),
        Err(treectl_store::Error::UnknownRevision { .. })
        | Err(treectl_store::Error::RefNotFound { .. })
        | Err(treectl_store::Error::InvalidRevision { .. })
        | Err(treectl_store::Error::InvalidRef { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for (_, head) in list_refs(repo)? {
        let mut cur = Some(head);
        while let Some(id) = cur {
            let Ok(c) = repo.read_commit(&id) else { break };
            if c.version() == Some(rev) {
                return Ok(Some(id));
            }
            cur = c.parent;
        }
    }
    Ok(None)
}

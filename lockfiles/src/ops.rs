//! Lockfile operations: add, update (bump), verify, diff and compose.
//! Each works on a [`Lockfile`] value and a repository; reading and writing
//! the lockfile file is the caller's business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use treectl_repo::commit::{finish_commit, CommitOptions};
use treectl_repo::object::ObjectKind;
use treectl_repo::refs::RefName;
use treectl_repo::store::{Repo, Transaction};
use treectl_repo::ObjectId;

use crate::apt::{self, AptIndex, Offer};
use crate::artifacts::{self, deb_component};
use crate::compose::{compose_tree_cached, ComposeInput, ComposeStats};
use crate::compose_cache::ComposeCache;
use crate::debver;
use crate::fetch::{sha256_hex, Fetcher};
use crate::lockfile::{
    AptSource, Component, DirectorySource, GitSource, Lockfile, Source, TarballSource,
    LOCAL_DEB_SOURCE,
};
use crate::Error;

/// Commit metadata of a composed tree: its components, as JSON.
pub const META_COMPONENTS: &str = "compose.components";
/// Commit metadata: sha256 of the lockfile text composed.
pub const META_LOCKFILE_SHA256: &str = "compose.lockfile-sha256";

/// A component as recorded in a composed commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComposedComponent {
    pub name: String,
    pub version: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub commit: String,
}

/// One difference between two component lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub kind: &'static str,
    pub old_version: Option<String>,
    pub new_version: Option<String>,
    pub old_digest: Option<String>,
    pub new_digest: Option<String>,
    pub old_commit: Option<String>,
    pub new_commit: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |o: &Option<String>| o.clone().unwrap_or_default();
        match self.kind {
            "added" => write!(f, "added {} {}", self.name, v(&self.new_version)),
            "removed" => write!(f, "removed {} {}", self.name, v(&self.old_version)),
            _ if self.old_version == self.new_version => write!(
                f,
                "{} {}: rebuilt ({} -> {})",
                self.name,
                v(&self.new_version),
                short(&self.old_digest),
                short(&self.new_digest)
            ),
            _ => write!(
                f,
                "{} {} -> {}",
                self.name,
                v(&self.old_version),
                v(&self.new_version)
            ),
        }
    }
}

fn short(d: &Option<String>) -> String {
    d.as_deref()
        .map(|d| d[..d.len().min(12)].to_owned())
        .unwrap_or_default()
}

/// The changes between two component lists, in the new list's order
/// (removed ones last).
pub fn diff_components(old: &[ComposedComponent], new: &[ComposedComponent]) -> Vec<Change> {
    let olds: BTreeMap<&str, &ComposedComponent> =
        old.iter().map(|c| (c.name.as_str(), c)).collect();
    let news: BTreeMap<&str, &ComposedComponent> =
        new.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut out = Vec::new();
    for n in new {
        match olds.get(n.name.as_str()) {
            None => out.push(Change {
                name: n.name.clone(),
                kind: "added",
                old_version: None,
                new_version: Some(n.version.clone()),
                old_digest: None,
                new_digest: n.digest.clone(),
                old_commit: None,
                new_commit: Some(n.commit.clone()),
            }),
            Some(o) if o.version != n.version || o.digest != n.digest || o.commit != n.commit => {
                out.push(Change {
                    name: n.name.clone(),
                    kind: "changed",
                    old_version: Some(o.version.clone()),
                    new_version: Some(n.version.clone()),
                    old_digest: o.digest.clone(),
                    new_digest: n.digest.clone(),
                    old_commit: Some(o.commit.clone()),
                    new_commit: Some(n.commit.clone()),
                })
            }
            Some(_) => {}
        }
    }
    for o in old {
        if !news.contains_key(o.name.as_str()) {
            out.push(Change {
                name: o.name.clone(),
                kind: "removed",
                old_version: Some(o.version.clone()),
                new_version: None,
                old_digest: o.digest.clone(),
                new_digest: None,
                old_commit: Some(o.commit.clone()),
                new_commit: None,
            });
        }
    }
    out
}

/// The component list of a lockfile, as composed commits record it.
pub fn composed_components(lock: &Lockfile) -> Vec<ComposedComponent> {
    lock.components
        .iter()
        .map(|c| ComposedComponent {
            name: c.name.clone(),
            version: c.version.clone(),
            source: c.source.clone(),
            digest: c.sha256.clone().or(c.git_commit.clone()),
            commit: c.commit.clone().unwrap_or_default(),
        })
        .collect()
}

/// The changes between two lockfiles.
pub fn diff(old: &Lockfile, new: &Lockfile) -> Vec<Change> {
    diff_components(&composed_components(old), &composed_components(new))
}

/// What `lock add` adds.
#[derive(Clone, Debug)]
pub enum AddRequest {
    /// Local `.deb` files.
    Debs(Vec<PathBuf>),
    /// Packages of an apt source (added to the lockfile if new).
    Apt {
        source: AptSource,
        packages: Vec<String>,
        with_deps: bool,
    },
    Tarball {
        url: String,
        sha256: String,
        name: String,
        version: String,
    },
    Git {
        url: String,
        follow: String,
        name: String,
    },
    Directory {
        path: PathBuf,
        name: String,
    },
}

/// What the lockfile's `.deb` components offer to dependencies, from their
/// commits' metadata when the repository has them.
fn installed_offer(repo: &Repo, lock: &Lockfile, skip: &[String]) -> Offer {
    let mut offer = Offer::default();
    for c in &lock.components {
        if skip.contains(&c.name) {
            continue;
        }
        let provides = c
            .commit
            .as_deref()
            .and_then(ObjectId::from_hex)
            .and_then(|id| repo.read_commit(&id).ok())
            .and_then(|commit| commit.metadata.get("deb.provides").cloned())
            .unwrap_or_default();
        offer.add(&c.name, &c.version, &provides);
    }
    offer
}

/// Adds components to `lock`, importing them into `repo`. Returns what
/// changed in the lockfile.
pub fn add(
    repo: &Repo,
    lock: &mut Lockfile,
    fetcher: &Fetcher,
    req: AddRequest,
) -> Result<Vec<Change>, Error> {
    let before = lock.clone();
    match req {
        AddRequest::Debs(paths) => {
            for r in artifacts::import_deb_paths(repo, &paths)? {
                let size = std::fs::metadata(&r.path).ok().map(|m| m.len());
                lock.upsert_component(deb_component(&r, LOCAL_DEB_SOURCE, None, size));
            }
        }
        AddRequest::Apt {
            source,
            packages,
            with_deps,
        } => {
            lock.upsert_source(Source::Apt(source.clone()))
                .map_err(Error::Invalid)?;
            let index = apt::fetch_index(fetcher, &source)?;
            let roots: Vec<String> = packages
                .iter()
                .map(|p| p.split('=').next().unwrap_or(p).to_owned())
                .collect();
            let installed = installed_offer(repo, lock, &roots);
            let chosen = index.resolve(&source.name, &packages, with_deps, &installed)?;
            let comps = import_apt(repo, fetcher, &source, &chosen)?;
            for c in comps {
                lock.upsert_component(c);
            }
        }
        AddRequest::Tarball {
            url,
            sha256,
            name,
            version,
        } => {
            lock.upsert_source(Source::Tarball(TarballSource {
                name: name.clone(),
                url: url.clone(),
            }))
            .map_err(Error::Invalid)?;
            let data = fetcher.get_verified(&url, &sha256, None)?;
            let commit = artifacts::import_tarball(repo, &name, &data)?;
            lock.upsert_component(Component {
                name: name.clone(),
                version,
                source: name,
                architecture: None,
                filename: None,
                size: Some(data.len() as u64),
                sha256: Some(sha256.to_ascii_lowercase()),
                git_commit: None,
                commit: Some(commit.to_hex()),
            });
        }
        AddRequest::Git { url, follow, name } => {
            lock.upsert_source(Source::Git(GitSource {
                name: name.clone(),
                url: url.clone(),
                follow: follow.clone(),
            }))
            .map_err(Error::Invalid)?;
            let head = crate::git::resolve_head(&url, &follow)?;
            lock.upsert_component(git_component(repo, &name, &url, &head)?);
        }
        AddRequest::Directory { path, name } => {
            let abs = std::path::absolute(&path).map_err(|source| Error::Io {
                op: "resolving",
                path: path.clone(),
                source,
            })?;
            lock.upsert_source(Source::Directory(DirectorySource {
                name: name.clone(),
                path: abs.to_string_lossy().into_owned(),
            }))
            .map_err(Error::Invalid)?;
            lock.upsert_component(Component {
                name: name.clone(),
                version: "unpinned".into(),
                source: name,
                architecture: None,
                filename: None,
                size: None,
                sha256: None,
                git_commit: None,
                commit: None,
            });
        }
    }
    lock.validate(Path::new("lockfile"))?;
    Ok(diff(&before, lock))
}

fn git_component(repo: &Repo, name: &str, url: &str, head: &str) -> Result<Component, Error> {
    let commit = artifacts::import_git_commit(repo, name, url, head)?;
    Ok(Component {
        name: name.to_owned(),
        version: head[..12.min(head.len())].to_owned(),
        source: name.to_owned(),
        architecture: None,
        filename: None,
        size: None,
        sha256: None,
        git_commit: Some(head.to_owned()),
        commit: Some(commit.to_hex()),
    })
}

/// Downloads (verified) and imports packages of an apt source.
fn import_apt(
    repo: &Repo,
    fetcher: &Fetcher,
    source: &AptSource,
    chosen: &[apt::PackageEntry],
) -> Result<Vec<Component>, Error> {
    let mut bytes = Vec::with_capacity(chosen.len());
    for e in chosen {
        let data = fetcher.get_verified(&source.artifact_url(&e.filename), &e.sha256, e.size)?;
        bytes.push((e.package.clone(), data));
    }
    let reports = artifacts::import_deb_bytes(repo, &bytes)?;
    let mut out = Vec::new();
    for (e, r) in chosen.iter().zip(reports) {
        if r.package != e.package || r.version != e.version {
            return Err(Error::Component {
                name: e.package.clone(),
                reason: format!(
                    "the index says {} {}, but the .deb is {} {}",
                    e.package, e.version, r.package, r.version
                ),
            });
        }
        out.push(deb_component(
            &r,
            &source.name,
            Some(e.filename.clone()),
            e.size,
        ));
    }
    Ok(out)
}

/// Looks for newer versions of the components named in `only` (all when
/// empty): Debian version ordering for apt, the branch head for git.
/// Updates `lock` in place and imports what changed; returns the changes.
pub fn update(
    repo: &Repo,
    lock: &mut Lockfile,
    fetcher: &Fetcher,
    only: &[String],
) -> Result<Vec<Change>, Error> {
    for n in only {
        if lock.component(n).is_none() {
            return Err(Error::Invalid(format!(
                "no component named {n:?} in the lockfile"
            )));
        }
    }
    let before = lock.clone();
    let wanted = |c: &Component| only.is_empty() || only.contains(&c.name);
    let mut indexes: BTreeMap<String, AptIndex> = BTreeMap::new();
    let mut apt_bumps: BTreeMap<String, Vec<apt::PackageEntry>> = BTreeMap::new();
    let mut new_components = Vec::new();
    for c in lock.components.iter().filter(|c| wanted(c)) {
        match lock.source(&c.source) {
            Some(Source::Apt(src)) => {
                if !indexes.contains_key(&src.name) {
                    indexes.insert(src.name.clone(), apt::fetch_index(fetcher, src)?);
                }
                let index = &indexes[&src.name];
                let newest = index.find(&c.name, None).ok_or_else(|| Error::NotFound {
                    package: c.name.clone(),
                    source_name: src.name.clone(),
                })?;
                let newer = debver::compare(&newest.version, &c.version).is_gt();
                let rebuilt = debver::compare(&newest.version, &c.version).is_eq()
                    && c.sha256.as_deref() != Some(newest.sha256.as_str());
                if newer || rebuilt {
                    apt_bumps
                        .entry(src.name.clone())
                        .or_default()
                        .push(newest.clone());
                }
            }
            Some(Source::Git(g)) => {
                let head = crate::git::resolve_head(&g.url, &g.follow)?;
                if c.git_commit.as_deref() != Some(head.as_str()) {
                    new_components.push(git_component(repo, &c.name, &g.url, &head)?);
                }
            }
            // Local .debs and tarballs have no "newer"; directories are unpinned.
            _ => {}
        }
    }
    for (src_name, entries) in apt_bumps {
        let Some(Source::Apt(src)) = lock.source(&src_name).cloned() else {
            continue;
        };
        new_components.extend(import_apt(repo, fetcher, &src, &entries)?);
    }
    for c in new_components {
        lock.upsert_component(c);
    }
    Ok(diff(&before, lock))
}

/// Checks every component is in `repo` with the pinned digests, and every
/// Depends/Pre-Depends of every `.deb` component is satisfied inside the
/// set. Returns every problem found (empty: all good).
pub fn verify(repo: &Repo, lock: &Lockfile) -> Vec<String> {
    let mut problems = Vec::new();
    let mut offer = Offer::default();
    let mut deps: Vec<(String, String)> = Vec::new();
    for c in &lock.components {
        let Some(hex) = &c.commit else {
            if !matches!(lock.source(&c.source), Some(Source::Directory(_))) {
                problems.push(format!("{}: no commit pinned", c.name));
            }
            continue;
        };
        let Some(id) = ObjectId::from_hex(hex) else {
            problems.push(format!("{}: commit {hex:?} is not a sha256 id", c.name));
            continue;
        };
        if !repo.has_object(&id, ObjectKind::Commit) {
            problems.push(format!(
                "{}: commit {hex} is not in the repository (run `treectl compose` to import it)",
                c.name
            ));
            continue;
        }
        let commit = match repo.read_commit(&id) {
            Ok(commit) => commit,
            Err(e) => {
                problems.push(format!("{}: {e}", c.name));
                continue;
            }
        };
        let meta = |k: &str| commit.metadata.get(k).map(String::as_str);
        let check = |key: &str, want: &Option<String>, problems: &mut Vec<String>| {
            if let Some(w) = want {
                if meta(key) != Some(w.as_str()) {
                    problems.push(format!(
                        "{}: commit {hex} records {key} {}, the lockfile pins {w}",
                        c.name,
                        meta(key).unwrap_or("(none)")
                    ));
                }
            }
        };
        match lock.source(&c.source) {
            Some(Source::Tarball(_)) => check(artifacts::META_TAR_SHA256, &c.sha256, &mut problems),
            Some(Source::Git(_)) => check("git.commit", &c.git_commit, &mut problems),
            Some(Source::Directory(_)) => {}
            Some(Source::Apt(_)) | None => {
                check("deb.sha256", &c.sha256, &mut problems);
                check("deb.version", &Some(c.version.clone()), &mut problems);
                offer.add(
                    meta("deb.package").unwrap_or(&c.name),
                    meta("deb.version").unwrap_or(&c.version),
                    meta("deb.provides").unwrap_or(""),
                );
                let field = format!(
                    "{}, {}",
                    meta("deb.pre-depends").unwrap_or(""),
                    meta("deb.depends").unwrap_or("")
                );
                deps.push((format!("{} {}", c.name, c.version), field));
            }
        }
    }
    for (pkg, field) in deps {
        match apt::parse_relations(&field) {
            Ok(groups) => {
                for g in groups {
                    if !offer.satisfies_group(&g) {
                        problems.push(format!(
                            "{pkg} depends on {}, which no component satisfies",
                            apt::group_text(&g)
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{pkg}: bad dependency field: {e}")),
        }
    }
    problems
}

/// The result of a compose.
#[derive(Clone, Debug, Serialize)]
pub struct ComposeReport {
    pub commit: ObjectId,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub components: usize,
    pub stats: ComposeStats,
    /// Problems that did not stop the compose (the cache not saved).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Composes `lock` onto `ref_name`: imports missing components (checking
/// every sha256 and the resulting commit ids), merges them, applies the
/// compose settings and commits. On any error no ref moves.
pub fn compose(
    repo: &Repo,
    lock: &Lockfile,
    ref_name: &RefName,
    fetcher: &Fetcher,
) -> Result<ComposeReport, Error> {
    if lock.components.is_empty() {
        return Err(Error::Invalid(
            "the lockfile has no components to compose".into(),
        ));
    }
    let ids = artifacts::ensure_components(repo, lock, fetcher)?;
    let mut inputs = Vec::with_capacity(ids.len());
    let mut newest = 0i64;
    let mut recorded = composed_components(lock);
    for ((c, id), rec) in lock.components.iter().zip(&ids).zip(recorded.iter_mut()) {
        let commit = repo.read_commit(id)?;
        newest = newest.max(commit.timestamp);
        rec.commit = id.to_hex();
        inputs.push(ComposeInput {
            name: c.name.clone(),
            tree: commit.root_tree,
            meta: commit.root_meta,
        });
    }
    let timestamp = match &lock.compose.timestamp {
        Some(t) => humantime::parse_rfc3339_weak(t)
            .map_err(|e| Error::Invalid(format!("compose timestamp {t:?}: {e}")))?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        None => newest,
    };
    let txn = Transaction::begin(repo)?;
    let mut cache = ComposeCache::load(repo);
    let (root, stats) = compose_tree_cached(&txn, &inputs, &lock.compose, &mut cache)?;
    let mut opts = CommitOptions {
        subject: format!("Compose of {} components", inputs.len()),
        timestamp,
        ..Default::default()
    };
    opts.metadata.insert(
        META_COMPONENTS.into(),
        serde_json::to_string(&recorded).expect("component records serialize"),
    );
    opts.metadata.insert(
        META_LOCKFILE_SHA256.into(),
        sha256_hex(lock.to_text().as_bytes()),
    );
    let commit = finish_commit(txn, ref_name, root, &opts)?;
    // Saved only now that the merged trees are stored. The compose has
    // succeeded either way: a cache that cannot be written is a warning.
    let mut warnings = Vec::new();
    if let Err(e) = cache.save() {
        warnings.push(format!(
            "could not save the compose cache {}: {e}",
            ComposeCache::file(repo).display()
        ));
    }
    Ok(ComposeReport {
        commit,
        ref_name: ref_name.to_string(),
        components: inputs.len(),
        stats,
        warnings,
    })
}

/// The components a composed commit records; `None` for other commits.
pub fn commit_components(
    commit: &treectl_repo::object::Commit,
) -> Option<Result<Vec<ComposedComponent>, String>> {
    commit.metadata.get(META_COMPONENTS).map(|j| {
        serde_json::from_str(j).map_err(|e| format!("bad {META_COMPONENTS} metadata: {e}"))
    })
}

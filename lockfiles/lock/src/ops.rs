//! Lockfile operations: add, update (bump), verify, diff and compose.
//! Each works on a [`Lockfile`] value and a repository; reading and writing
//! the lockfile file is the caller's business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use treectl_store::checkout::CheckoutOptions;
use treectl_store::commit::{finish_commit, CommitOptions};
use treectl_store::export::{export_to_file, ArchiveFormat, Compression, ExportOptions};
use treectl_store::object::ObjectKind;
use treectl_store::refs::{self, RefName};
use treectl_store::store::{Repo, Transaction};
use treectl_store::ObjectId;

use crate::apt::{self, AptIndex, Offer};
use crate::artifacts::{self, deb_component};
use crate::debver;
use crate::fetch::{sha256_hex, Fetcher};
use crate::lockfile::{
    AptSource, Component, ComposeSettings, DirectorySource, GitSource, InitramfsCompression,
    Lockfile, Source, TarballSource, LOCAL_DEB_SOURCE,
};
use crate::Error;
use treectl_compose::cache::ComposeCache;
use treectl_compose::components::{
    diff_components, Change, ComposedComponent, META_COMPONENTS, META_LOCKFILE_SHA256,
};
use treectl_compose::configure::{
    cache as configure_cache, configure, ConfigureOptions, ConfigureReport, DebPackage,
    InitramfsReport, META_CONFIGURE, META_CONFIGURED,
};
use treectl_compose::initramfs;
use treectl_compose::merge::{compose_tree_cached, ComposeInput, ComposeStats};
use treectl_import::deb::{control_member, KEPT_CONTROL_MEMBERS};

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
    /// The commit's `version` (see [`compose_version`]).
    pub version: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub components: usize,
    pub stats: ComposeStats,
    /// What the configure step did (absent: a plain merge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured: Option<ConfigureReport>,
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
    let ids = artifacts::ensure_components(repo, lock, fetcher, lock.configures())?;
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
        Some(t) => treectl_store::time::unix_secs(
            humantime::parse_rfc3339_weak(t)
                .map_err(|e| Error::Invalid(format!("compose timestamp {t:?}: {e}")))?,
        ),
        None => newest,
    };
    let configuring = lock.configures();
    // The initramfs components are merged into their own tree, not the OS.
    let initramfs_names: Vec<&str> = match &lock.initramfs {
        Some(settings) => {
            if !configuring {
                return Err(Error::Invalid(
                    "[initramfs] needs the configure step (its modules come from the configured kernel): remove `configure = false`".into(),
                ));
            }
            for name in &settings.components {
                if lock.component(name).is_none() {
                    return Err(Error::Invalid(format!(
                        "[initramfs] names component {name:?}, which the lockfile does not have"
                    )));
                }
            }
            settings.components.iter().map(String::as_str).collect()
        }
        None => Vec::new(),
    };
    let (initramfs_inputs, inputs): (Vec<ComposeInput>, Vec<ComposeInput>) = inputs
        .into_iter()
        .partition(|i| initramfs_names.contains(&i.name.as_str()));
    let mut rules = lock.compose.rules();
    if configuring {
        // The patterns apply to the configured tree (scripts may need what
        // they would remove, /var above all).
        rules.remove.clear();
    }
    let mut txn = Transaction::begin(repo)?;
    let mut cache = ComposeCache::load(repo);
    let (mut root, stats) = compose_tree_cached(&txn, &inputs, &rules, &mut cache)?;
    let initramfs = match &lock.initramfs {
        Some(settings) => {
            let mut rules = lock.compose.rules();
            rules.remove.clear();
            rules.overrides.clear();
            let (merged, _) = compose_tree_cached(&txn, &initramfs_inputs, &rules, &mut cache)?;
            Some(InitramfsPlan {
                merged,
                modules: settings.modules.clone(),
                compression: settings.compress,
            })
        }
        None => None,
    };
    let mut configured = None;
    if configuring {
        let mut packages = deb_packages(repo, lock, &ids)?;
        packages.retain(|p| !initramfs_names.contains(&p.component.as_str()));
        let (new_txn, new_root, report) = configure_step(
            repo,
            txn,
            root,
            &packages,
            &ConfigureOptions {
                timestamp,
                remove: lock.compose.remove.clone(),
            },
            initramfs.as_ref(),
        )?;
        txn = new_txn;
        root = new_root;
        configured = Some(report);
    }
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
    if let Some(report) = &configured {
        opts.metadata.insert(META_CONFIGURED.into(), "true".into());
        opts.metadata.insert(
            META_CONFIGURE.into(),
            serde_json::to_string(report).expect("configure reports serialize"),
        );
    }
    let version = compose_version(repo, ref_name, &lock.compose, timestamp, root)?;
    opts.metadata.insert(META_VERSION.into(), version.clone());
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
        version,
        ref_name: ref_name.to_string(),
        components: inputs.len(),
        stats,
        configured,
        warnings,
    })
}

/// Commit metadata: the release's version, as `status`, `log`, `history`
/// and boot entries show it.
pub const META_VERSION: &str = "version";

/// The `version` of a compose of `root` onto `ref_name`: `[compose]
/// version` when set; else automatic, from `version-prefix` (default: the
/// compose date, `YYYYMMDD` UTC): `<prefix>.<n>` with `n` one more than
/// the highest `n` of that prefix along the ref's history, or
/// `<prefix>.<n>.<m>` (`m` counting up from 1) when the ref's head already
/// holds this very tree (a recompose). Deterministic: it depends only on
/// the lockfile, the tree and the ref's history.
pub fn compose_version(
    repo: &Repo,
    ref_name: &RefName,
    settings: &ComposeSettings,
    timestamp: i64,
    root: (ObjectId, ObjectId),
) -> Result<String, Error> {
    if let Some(v) = &settings.version {
        if v.trim().is_empty() || v.chars().any(char::is_whitespace) {
            return Err(Error::Invalid(format!(
                "[compose] version {v:?} must be non-empty and without spaces"
            )));
        }
        return Ok(v.clone());
    }
    let prefix = match &settings.version_prefix {
        Some(p) if p.is_empty() || p.chars().any(char::is_whitespace) => {
            return Err(Error::Invalid(format!(
                "[compose] version-prefix {p:?} must be non-empty and without spaces"
            )))
        }
        Some(p) => p.clone(),
        None => compose_date(timestamp),
    };
    let mut head = refs::try_read_ref(repo, ref_name)?;
    // A recompose of the head's tree: the head's version, one level down.
    if let Some(id) = head {
        let c = repo.read_commit(&id)?;
        if (c.root_tree, c.root_meta) == root {
            if let Some((n, m)) = c.version().and_then(|v| auto_version_parts(v, &prefix)) {
                return Ok(format!("{prefix}.{n}.{}", m.unwrap_or(0) + 1));
            }
        }
    }
    let mut highest = 0u64;
    let mut seen = 0usize;
    while let Some(id) = head {
        if seen >= MAX_VERSION_HISTORY || !repo.has_object(&id, ObjectKind::Commit) {
            break;
        }
        seen += 1;
        let c = repo.read_commit(&id)?;
        if let Some((n, _)) = c.version().and_then(|v| auto_version_parts(v, &prefix)) {
            highest = highest.max(n);
        }
        head = c.parent;
    }
    Ok(format!("{prefix}.{}", highest + 1))
}

/// How far back [`compose_version`] looks for earlier automatic versions.
const MAX_VERSION_HISTORY: usize = 100_000;

/// `YYYYMMDD` (UTC) of a commit time.
fn compose_date(timestamp: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(timestamp.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()[..10].replace('-', "")
}

/// `(n, m)` of an automatic version `<prefix>.<n>[.<m>]`, else `None`.
fn auto_version_parts(version: &str, prefix: &str) -> Option<(u64, Option<u64>)> {
    let rest = version.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let n = parts.next()?.parse().ok()?;
    let m = match parts.next() {
        Some(m) => Some(m.parse().ok()?),
        None => None,
    };
    match parts.next() {
        Some(_) => None,
        None => Some((n, m)),
    }
}

/// The `.deb` components of `lock` with their control data, for the
/// configure step.
fn deb_packages(repo: &Repo, lock: &Lockfile, ids: &[ObjectId]) -> Result<Vec<DebPackage>, Error> {
    let mut out = Vec::new();
    for (c, id) in lock.components.iter().zip(ids) {
        let commit = repo.read_commit(id)?;
        if !commit.metadata.contains_key("deb.package") {
            continue;
        }
        let members = KEPT_CONTROL_MEMBERS
            .iter()
            .filter_map(|m| control_member(&commit.metadata, m).map(|b| ((*m).to_owned(), b)))
            .collect();
        out.push(DebPackage {
            component: c.name.clone(),
            commit: *id,
            tree: commit.root_tree,
            members,
        });
    }
    Ok(out)
}

/// Runs the configure step on the merged tree `merged`, staged in `txn`.
/// A cached result is used when there is one. Otherwise the merged tree's
/// objects are stored (with an unreferenced commit naming them, so it can
/// be checked out: reusable objects, nothing else), a copy is checked out
/// under the repository's `tmp/`, configured, and committed back into a
/// new transaction, which is returned for the composed commit.
fn configure_step<'r>(
    repo: &'r Repo,
    txn: Transaction<'r>,
    merged: (ObjectId, ObjectId),
    packages: &[DebPackage],
    opts: &ConfigureOptions,
    initramfs: Option<&InitramfsPlan>,
) -> Result<(Transaction<'r>, (ObjectId, ObjectId), ConfigureReport), Error> {
    let initramfs_key = initramfs.map(InitramfsPlan::key);
    let key = configure_cache::key(
        merged,
        opts.timestamp,
        &opts.remove,
        packages,
        initramfs_key.as_deref(),
    );
    if let Some((tree, meta, report)) = configure_cache::lookup(repo, &key) {
        return Ok((txn, (tree, meta), report));
    }
    let ts = opts.timestamp;
    let merged_commit = unreferenced_commit(&txn, merged, ts, "Merged tree, before configuring")?;
    let initramfs_commit = initramfs
        .map(|plan| unreferenced_commit(&txn, plan.merged, ts, "Initramfs components, merged"))
        .transpose()?;
    txn.commit(&[])?;
    let scratch = ScratchDir::new(repo)?;
    let tree_dir = scratch.0.join("tree");
    // At the compose timestamp (scripts may compare times), and recorded,
    // so the write-back below reads only what the scripts changed.
    let mut copies = treectl_store::checkout::checkout(
        repo,
        &merged_commit,
        &tree_dir,
        &CheckoutOptions {
            copy: true,
            mtime: Some(ts),
            record_copies: true,
            ..Default::default()
        },
    )?
    .copies
    .unwrap_or_default();
    copies.seal(&scratch.0)?;
    let mut report = configure(repo, &tree_dir, packages, opts)?;
    if let (Some(plan), Some(components)) = (initramfs, initramfs_commit) {
        report.initramfs = make_initramfs(repo, &scratch.0, &tree_dir, plan, &components, opts)?;
    }
    let txn = Transaction::begin(repo)?;
    let (root, _) = treectl_store::commit::write_dir_reusing(&txn, &tree_dir, &copies)?;
    // Remembered before the composed commit exists: the objects are only
    // used once stored, and lookup checks they are.
    let _ = configure_cache::store(repo, &key, root, &report);
    Ok((txn, root, report))
}

/// A commit of `(tree, dirmeta)` that no ref names (reusable objects that
/// can be checked out or exported).
fn unreferenced_commit(
    txn: &Transaction<'_>,
    (tree, meta): (ObjectId, ObjectId),
    timestamp: i64,
    subject: &str,
) -> Result<ObjectId, Error> {
    Ok(txn.write_commit(&treectl_store::object::Commit {
        parent: None,
        root_tree: tree,
        root_meta: meta,
        timestamp,
        subject: subject.into(),
        body: String::new(),
        metadata: BTreeMap::new(),
    })?)
}

/// A writable copy (not hardlinks into the store) of `commit` at `dest`.
fn copy_checkout(repo: &Repo, commit: &ObjectId, dest: &Path) -> Result<(), Error> {
    let opts = CheckoutOptions {
        copy: true,
        ..Default::default()
    };
    treectl_store::checkout::checkout(repo, commit, dest, &opts)?;
    Ok(())
}

/// The initramfs of a compose: the merged tree of the `[initramfs]`
/// components and what to add to it.
struct InitramfsPlan {
    merged: (ObjectId, ObjectId),
    modules: Vec<String>,
    compression: InitramfsCompression,
}

impl InitramfsPlan {
    /// What the configure cache key records of it.
    fn key(&self) -> String {
        format!(
            "{} {} modules {} compress {:?}",
            self.merged.0,
            self.merged.1,
            self.modules.join(","),
            self.compression
        )
    }
}

/// Makes `usr/lib/modules/<kver>/initramfs.img` for each kernel of the
/// configured tree at `os_root` (see `treectl_compose::initramfs`): the
/// initramfs components (`components`, a commit) checked out under
/// `scratch`, the kernel's modules added, the result committed (an
/// unreferenced commit at the compose timestamp) and exported as a newc
/// cpio.
fn make_initramfs(
    repo: &Repo,
    scratch: &Path,
    os_root: &Path,
    plan: &InitramfsPlan,
    components: &ObjectId,
    opts: &ConfigureOptions,
) -> Result<Vec<InitramfsReport>, Error> {
    let kernels = initramfs::kernels(os_root)?;
    if kernels.is_empty() {
        return Err(Error::Invalid(
            "[initramfs] needs a kernel: the configured tree has no usr/lib/modules/<kver> with vmlinuz and modules.dep (add a linux-image package)".into(),
        ));
    }
    let mut reports = Vec::new();
    for kver in kernels {
        let dir = scratch.join(format!("initramfs-{kver}"));
        copy_checkout(repo, components, &dir)?;
        let modules = initramfs::build_dir(os_root, &kver, &plan.modules, &dir)?;
        let txn = Transaction::begin(repo)?;
        let (root, _) = treectl_store::commit::write_dir(&txn, &dir)?;
        let commit =
            unreferenced_commit(&txn, root, opts.timestamp, &format!("Initramfs for {kver}"))?;
        txn.commit(&[])?;
        let image = os_root
            .join("usr/lib/modules")
            .join(&kver)
            .join(initramfs::IMAGE_NAME);
        let compression = match plan.compression {
            InitramfsCompression::Gzip => Compression::Gzip,
            InitramfsCompression::Zstd => Compression::Zstd,
            InitramfsCompression::None => Compression::None,
        };
        let stats = export_to_file(
            repo,
            &commit,
            &ExportOptions {
                format: ArchiveFormat::Cpio,
                compression,
            },
            &image,
        )?;
        reports.push(InitramfsReport {
            kernel: kver,
            commit: commit.to_hex(),
            modules,
            size: stats.archive_bytes,
        });
    }
    Ok(reports)
}

/// A scratch directory under the repository's `tmp/`, `configure-<pid>-…`,
/// removed on drop; one left by a process that died (killed while
/// configuring) is removed by the next compose.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(repo: &Repo) -> Result<ScratchDir, Error> {
        let tmp = repo.path().join(treectl_store::store::TMP_DIR);
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix("configure-")
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if let Some(pid) = pid {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        // Best effort: a later compose tries again.
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = repo
            .path()
            .join(treectl_store::store::TMP_DIR)
            .join(format!("configure-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            op: "creating",
            path: path.clone(),
            source,
        })?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort; see the type's docs. What the parallel removal
        // leaves (it stops at the first error), the plain one tries again.
        if treectl_store::fsutil::remove_dir_all_parallel(&self.0).is_err() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

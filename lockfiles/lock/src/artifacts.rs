//! Importing component artifacts into a repository, reproducibly:
//!
//! - a `.deb` through the `.deb` importer (no parent, timestamp = newest
//!   entry of `data.tar`), ref `deb/<Package>/<Version>/<Arch>`;
//! - a tarball under ref `tar/<name>/<sha256>` (no parent, timestamp =
//!   newest entry mtime, metadata `tar.sha256`);
//! - a git commit under ref `git/<name>/<commit>` (no parent, timestamp =
//!   committer time, metadata `git.commit`);
//! - a directory under ref `dir/<name>`, committed afresh every time (it
//!   is not pinned; the commit has timestamp 0).
//!
//! Every downloaded artifact's sha256 is checked before it is read.

use std::path::{Path, PathBuf};

use treectl_import::deb::{
    import_debs, DebCommitOptions, DebReport, DebRequest, CONTROL_FORMAT, META_CONTROL_FORMAT,
};
use treectl_import::git::{import_git, GitCommitOptions};
use treectl_import::tar::{read_tar, TarFlavor};
use treectl_import::ImportOptions;
use treectl_store::commit::{commit_dir, finish_commit, CommitOptions};
use treectl_store::object::ObjectKind;
use treectl_store::refs::{try_read_ref, RefName};
use treectl_store::store::{Repo, Transaction};
use treectl_store::ObjectId;

use crate::fetch::{sha256_hex, Fetcher};
use crate::lockfile::{Component, Lockfile, Source, LOCAL_DEB_SOURCE};
use crate::Error;

/// Metadata key of a tarball component's sha256.
pub const META_TAR_SHA256: &str = "tar.sha256";

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn ref_name(text: &str) -> Result<RefName, Error> {
    Ok(RefName::new(text)?)
}

/// A scratch file in the repository's `tmp/`, removed on drop.
struct TmpFile(PathBuf);

impl TmpFile {
    fn write(repo: &Repo, name: &str, data: &[u8]) -> Result<TmpFile, Error> {
        let path = repo
            .path()
            .join(treectl_store::store::TMP_DIR)
            .join(format!("lock-{}-{name}", std::process::id()));
        std::fs::write(&path, data).map_err(io("writing", &path))?;
        Ok(TmpFile(path))
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        // Best effort: a leftover file in tmp/ is cleaned by fsck.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Imports `.deb` files given as bytes (already verified); reports in order.
pub fn import_deb_bytes(repo: &Repo, debs: &[(String, Vec<u8>)]) -> Result<Vec<DebReport>, Error> {
    let mut files = Vec::new();
    for (i, (label, data)) in debs.iter().enumerate() {
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        files.push(TmpFile::write(repo, &format!("{i}-{safe}.deb"), data)?);
    }
    import_deb_paths(repo, &files.iter().map(|f| f.0.clone()).collect::<Vec<_>>())
}

/// Imports `.deb` files from disk into their default refs.
pub fn import_deb_paths(repo: &Repo, paths: &[PathBuf]) -> Result<Vec<DebReport>, Error> {
    let requests: Vec<DebRequest> = paths
        .iter()
        .map(|p| DebRequest {
            path: p.clone(),
            ref_name: None,
        })
        .collect();
    Ok(import_debs(
        repo,
        &requests,
        &DebCommitOptions::default(),
        &ImportOptions::default(),
    )?)
}

/// Imports a verified tarball for component `name`; returns the commit.
pub fn import_tarball(repo: &Repo, name: &str, data: &[u8]) -> Result<ObjectId, Error> {
    let sha = sha256_hex(data);
    let r = ref_name(&format!("tar/{name}/{sha}"))?;
    if let Some(id) = try_read_ref(repo, &r)? {
        return Ok(id);
    }
    let txn = Transaction::begin(repo)?;
    let label = PathBuf::from(format!("{name}.tar"));
    let tree = read_tar(
        &txn,
        data,
        &label,
        &ImportOptions::default(),
        TarFlavor { xattrs: true },
    )?;
    let root = tree.builder.into_mem().write(&txn)?;
    let mut opts = CommitOptions {
        subject: format!("{name} (tarball {})", &sha[..12]),
        timestamp: i64::try_from(tree.newest_mtime).unwrap_or(i64::MAX),
        ..Default::default()
    };
    opts.metadata.insert(META_TAR_SHA256.into(), sha);
    opts.metadata.insert("version".into(), name.to_owned());
    Ok(finish_commit(txn, &r, root, &opts)?)
}

/// Imports git commit `commit` of the repository at `url`.
pub fn import_git_commit(
    repo: &Repo,
    name: &str,
    url: &str,
    commit: &str,
) -> Result<ObjectId, Error> {
    let r = ref_name(&format!("git/{name}/{commit}"))?;
    if let Some(id) = try_read_ref(repo, &r)? {
        return Ok(id);
    }
    let path = crate::git::repo_path(url)?;
    let report = import_git(repo, &path, commit, &r, &GitCommitOptions::default())?;
    Ok(report.commit)
}

/// Commits a local directory (unpinned) for component `name`.
pub fn commit_directory(repo: &Repo, name: &str, path: &Path) -> Result<ObjectId, Error> {
    let r = ref_name(&format!("dir/{name}"))?;
    let opts = CommitOptions {
        subject: format!("{name} (directory {})", path.display()),
        timestamp: 0,
        ..Default::default()
    };
    let (id, _) = commit_dir(repo, path, &r, &opts)?;
    Ok(id)
}

/// Whether a `.deb` component's commit carries the control data compose's
/// configure step needs (imports made before it was kept do not).
fn has_control_data(repo: &Repo, id: &ObjectId) -> Result<bool, Error> {
    let commit = repo.read_commit(id)?;
    Ok(!commit.metadata.contains_key("deb.package")
        || commit.metadata.get(META_CONTROL_FORMAT).map(String::as_str) == Some(CONTROL_FORMAT))
}

/// Makes sure every component's commit is in `repo`, downloading (and
/// verifying) and importing what is missing. Returns each component's
/// commit, in lockfile order. A re-imported component must come out with
/// the commit id the lockfile records, or this fails; except a `.deb`,
/// whose pin is its verified sha256: a lockfile written before the
/// importer kept control data pins an older commit id, and the new import
/// is used (compose records the id it used). With `need_control`, a `.deb`
/// commit without control data is imported again from its artifact.
pub fn ensure_components(
    repo: &Repo,
    lock: &Lockfile,
    fetcher: &Fetcher,
    need_control: bool,
) -> Result<Vec<ObjectId>, Error> {
    let mut out: Vec<Option<ObjectId>> = vec![None; lock.components.len()];
    let mut debs: Vec<(usize, String, Vec<u8>)> = Vec::new();
    for (i, c) in lock.components.iter().enumerate() {
        let pinned = match &c.commit {
            Some(hex) => Some(ObjectId::from_hex(hex).ok_or_else(|| Error::Component {
                name: c.name.clone(),
                reason: format!("commit {hex:?} is not a sha256 id"),
            })?),
            None => None,
        };
        let comp_err = |reason: String| Error::Component {
            name: c.name.clone(),
            reason,
        };
        if let Some(id) = pinned {
            if repo.has_object(&id, ObjectKind::Commit)
                && (!need_control || has_control_data(repo, &id)?)
            {
                out[i] = Some(id);
                continue;
            }
        }
        if c.source == LOCAL_DEB_SOURCE {
            return Err(comp_err(
                if pinned.is_some_and(|id| repo.has_object(&id, ObjectKind::Commit)) {
                    "this .deb was imported by a treectl that did not keep its control data, which configuring needs; add it again with `treectl lock add --deb FILE` (or set `[compose] configure = false`)".into()
                } else {
                    "a .deb added from a local file is not in this repository; add it again with `treectl lock add --deb FILE`".into()
                },
            ));
        }
        let source = lock
            .source(&c.source)
            .ok_or_else(|| comp_err(format!("source {:?} is not defined", c.source)))?;
        let sha = || {
            c.sha256
                .clone()
                .ok_or_else(|| comp_err("no sha256 pinned".into()))
        };
        match source {
            Source::Apt(apt) => {
                let filename = c
                    .filename
                    .as_deref()
                    .ok_or_else(|| comp_err("no filename pinned".into()))?;
                let data = fetcher.get_verified(&apt.artifact_url(filename), &sha()?, c.size)?;
                debs.push((i, c.name.clone(), data));
            }
            Source::Tarball(t) => {
                let data = fetcher.get_verified(&t.url, &sha()?, c.size)?;
                out[i] = Some(import_tarball(repo, &c.name, &data)?);
            }
            Source::Git(g) => {
                let commit = c
                    .git_commit
                    .as_deref()
                    .ok_or_else(|| comp_err("no git commit pinned".into()))?;
                out[i] = Some(import_git_commit(repo, &c.name, &g.url, commit)?);
            }
            Source::Directory(d) => {
                out[i] = Some(commit_directory(repo, &c.name, Path::new(&d.path))?);
            }
        }
    }
    if !debs.is_empty() {
        let bytes: Vec<(String, Vec<u8>)> = debs
            .iter()
            .map(|(_, n, d)| (n.clone(), d.clone()))
            .collect();
        let reports = import_deb_bytes(repo, &bytes)?;
        for ((i, _, _), r) in debs.iter().zip(reports) {
            out[*i] = Some(r.import.commit);
        }
    }
    let mut ids = Vec::with_capacity(out.len());
    for (c, id) in lock.components.iter().zip(out) {
        let id = id.expect("every component was found or imported above");
        if let Some(pinned) = &c.commit {
            let derived = matches!(
                lock.source(&c.source),
                Some(Source::Directory(_) | Source::Apt(_))
            );
            if *pinned != id.to_hex() && !derived {
                return Err(Error::Component {
                    name: c.name.clone(),
                    reason: format!(
                        "importing its artifact gave commit {id}, but the lockfile pins {pinned}; the lockfile was made by an incompatible treectl or edited by hand"
                    ),
                });
            }
        }
        ids.push(id);
    }
    Ok(ids)
}

/// A component record for a `.deb` import.
pub fn deb_component(
    report: &DebReport,
    source: &str,
    filename: Option<String>,
    size: Option<u64>,
) -> Component {
    Component {
        name: report.package.clone(),
        version: report.version.clone(),
        source: source.to_owned(),
        architecture: Some(report.architecture.clone()),
        filename,
        size,
        sha256: Some(report.sha256.clone()),
        git_commit: None,
        commit: Some(report.import.commit.to_hex()),
    }
}

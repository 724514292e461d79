//! Refs: names that point at commits, stored as `refs/heads/<name>` files
//! holding a commit id, and revision expressions (`REF^`, `REF~N`, id
//! prefixes) that resolve to commits. Refs pulled from a remote live in
//! `refs/remotes/<remote>/<name>` and are written as `REMOTE:NAME`; prune
//! keeps what they need and fsck checks them like local refs.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::hash::ObjectId;
use crate::object::ObjectKind;
use crate::store::{RefUpdate, Repo, OBJECTS_DIR, REFS_DIR};

/// A validated ref name: `/`-separated components of `A-Z a-z 0-9 . _ - + %`,
/// none empty, none starting with `.`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RefName(String);

impl RefName {
    pub fn new(name: &str) -> Result<RefName> {
        let bad = |reason| Error::InvalidRef {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("empty"));
        }
        if name.len() > 1024 {
            return Err(bad("longer than 1024 bytes"));
        }
        for component in name.split('/') {
            if component.is_empty() {
                return Err(bad(
                    "empty path component (leading, trailing or double '/')",
                ));
            }
            if component.starts_with('.') {
                return Err(bad("a component starts with '.' (this includes '..')"));
            }
            if component.len() > 255 {
                return Err(bad("a component is longer than 255 bytes"));
            }
            if !component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+%".contains(&b))
            {
                return Err(bad(
                    "only letters, digits and . _ - + % are allowed, with / between components",
                ));
            }
        }
        Ok(RefName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn heads_dir(repo: &Repo) -> PathBuf {
    repo.path().join(REFS_DIR).join("heads")
}

fn ref_path(repo: &Repo, name: &RefName) -> PathBuf {
    heads_dir(repo).join(&name.0)
}

/// The commit a ref points at, or `None` if the ref does not exist.
pub fn try_read_ref(repo: &Repo, name: &RefName) -> Result<Option<ObjectId>> {
    read_ref_file(&ref_path(repo, name))
}

/// The commit id in a ref file, or `None` if there is no such ref.
fn read_ref_file(path: &Path) -> Result<Option<ObjectId>> {
    match fs::read_to_string(path) {
        Ok(text) => ObjectId::from_hex(text.trim_end())
            .map(Some)
            .ok_or_else(|| Error::Corrupt {
                kind: ObjectKind::Commit,
                id: ObjectId([0; 32]),
                reason: format!("ref file {} does not hold a commit id", path.display()),
            }),
        // A directory of that name means a longer ref exists, not this one;
        // a file where a directory of the path would be, a shorter one.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) || path.is_dir() =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}

/// The commit a ref points at.
pub fn read_ref(repo: &Repo, name: &RefName) -> Result<ObjectId> {
    try_read_ref(repo, name)?.ok_or_else(|| Error::RefNotFound {
        name: name.to_string(),
    })
}

/// Every ref with its raw file content, sorted by name. Content that is not
/// a commit id is returned as an error entry for fsck to report.
pub fn list_refs_raw(repo: &Repo) -> Result<Vec<(String, std::result::Result<ObjectId, String>)>> {
    let mut out = Vec::new();
    let base = heads_dir(repo);
    walk_refs(&base, &base, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every remote-tracking ref (`refs/remotes/REMOTE/NAME`) with its raw
/// file content, named `REMOTE:NAME`, sorted by name.
pub fn list_remote_refs_raw(
    repo: &Repo,
) -> Result<Vec<(String, std::result::Result<ObjectId, String>)>> {
    let base = remotes_dir(repo);
    let mut raw = Vec::new();
    walk_refs(&base, &base, &mut raw)?;
    let mut out: Vec<_> = raw
        .into_iter()
        .map(|(path, id)| match path.split_once('/') {
            Some((remote, name)) => (format!("{remote}:{name}"), id),
            None => (path, Err("is not under a remote's directory".to_owned())),
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Local and remote-tracking refs together, raw (what fsck checks).
pub fn list_all_refs_raw(
    repo: &Repo,
) -> Result<Vec<(String, std::result::Result<ObjectId, String>)>> {
    let mut out = list_refs_raw(repo)?;
    out.extend(list_remote_refs_raw(repo)?);
    Ok(out)
}

/// The commits every local and remote-tracking ref names (what prune keeps).
pub fn list_ref_targets(repo: &Repo) -> Result<Vec<(String, ObjectId)>> {
    list_all_refs_raw(repo)?
        .into_iter()
        .map(|(name, id)| {
            id.map(|id| (name.clone(), id))
                .map_err(|reason| Error::Corrupt {
                    kind: ObjectKind::Commit,
                    id: ObjectId([0; 32]),
                    reason: format!("ref {name}: {reason}"),
                })
        })
        .collect()
}

/// `refs/remotes/`.
pub fn remotes_dir(repo: &Repo) -> PathBuf {
    repo.path().join(REFS_DIR).join("remotes")
}

/// The file of the remote-tracking ref `REMOTE:NAME`. `remote` must be a
/// valid remote name (one path component).
pub fn remote_ref_path(repo: &Repo, remote: &str, name: &RefName) -> PathBuf {
    remotes_dir(repo).join(remote).join(&name.0)
}

/// The commit a remote-tracking ref points at, if it exists.
pub fn try_read_remote_ref(repo: &Repo, remote: &str, name: &RefName) -> Result<Option<ObjectId>> {
    if !valid_remote_component(remote) {
        return Ok(None);
    }
    read_ref_file(&remote_ref_path(repo, remote, name))
}

/// A remote name is one ref-name component (no `/`).
pub fn valid_remote_component(remote: &str) -> bool {
    !remote.contains('/') && RefName::new(remote).is_ok()
}

/// Every ref and its commit, sorted by name.
pub fn list_refs(repo: &Repo) -> Result<Vec<(RefName, ObjectId)>> {
    let mut out = Vec::new();
    for (name, id) in list_refs_raw(repo)? {
        let id = id.map_err(|reason| Error::Corrupt {
            kind: ObjectKind::Commit,
            id: ObjectId([0; 32]),
            reason: format!("ref {name}: {reason}"),
        })?;
        out.push((RefName(name), id));
    }
    Ok(out)
}

fn walk_refs(
    base: &Path,
    dir: &Path,
    out: &mut Vec<(String, std::result::Result<ObjectId, String>)>,
) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("reading", dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // a temporary file of an interrupted update
        }
        let ft = entry.file_type().map_err(Error::io("reading", &path))?;
        if ft.is_dir() {
            walk_refs(base, &path, out)?;
        } else {
            let name = path
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .into_owned();
            let text = fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
            let id = ObjectId::from_hex(text.trim_end())
                .ok_or_else(|| format!("does not hold a commit id: {:?}", text.trim_end()));
            out.push((name, id));
        }
    }
    Ok(())
}

/// Applies `updates` in order, each atomically on its own. Several new
/// refs (an import of many packages) are written together: every new
/// file and directory made durable by one `syncfs`, then each renamed into
/// place and the renames made durable by another, instead of four or five
/// syncs per ref.
pub(crate) fn apply_updates(
    repo: &Repo,
    scratch: &Path,
    updates: &[RefUpdate],
    fsync: bool,
) -> Result<()> {
    // Checked before any ref moves.
    for update in updates.iter().filter(|u| u.target.is_some()) {
        check_no_conflict(repo, &update.name)?;
    }
    if !fsync || updates.len() < 2 || updates.iter().any(|u| u.target.is_none()) {
        for update in updates {
            apply_update(repo, scratch, update, fsync)?;
        }
        return Ok(());
    }
    let mut staged = Vec::with_capacity(updates.len());
    for (i, update) in updates.iter().enumerate() {
        let id = update.target.expect("checked above");
        let path = ref_path(repo, &update.name);
        let dir = path.parent().expect("ref path has a parent");
        fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let tmp = scratch.join(format!("ref-{i}.tmp"));
        fs::write(&tmp, format!("{id}\n")).map_err(Error::io("updating ref", &path))?;
        staged.push((tmp, path));
    }
    let sync = || {
        let dir = fs::File::open(scratch).map_err(Error::io("opening", scratch))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::io("syncing", scratch)(e.into()))
    };
    sync()?;
    // In order: a later update of the same ref wins, as one by one.
    for (tmp, path) in &staged {
        fs::rename(tmp, path).map_err(Error::io("updating ref", path))?;
    }
    sync()
}

/// A ref is a file under `refs/heads/`: it cannot be named where another
/// ref's file is one of its directories (`deb` and `deb/bash/5.2`), nor
/// where refs are under it, as in git.
fn check_no_conflict(repo: &Repo, name: &RefName) -> Result<()> {
    let conflict = |conflict: String| Error::RefConflict {
        name: name.to_string(),
        conflict,
    };
    let heads = heads_dir(repo);
    if heads.join(name.as_str()).is_dir() {
        return Err(conflict(format!("refs under {name}/ exist")));
    }
    let mut prefix = heads;
    let parts: Vec<&str> = name.as_str().split('/').collect();
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        prefix.push(part);
        if prefix.is_file() {
            let other = parts[..=i].join("/");
            return Err(conflict(format!(
                "ref {other} exists, and no ref can be under it"
            )));
        }
    }
    Ok(())
}

/// Applies one ref update: written to a temporary file in `scratch` (on the
/// same filesystem), flushed, and renamed into place. [`apply_updates`]
/// has checked it for conflicts.
fn apply_update(repo: &Repo, scratch: &Path, update: &RefUpdate, fsync: bool) -> Result<()> {
    let path = ref_path(repo, &update.name);
    let dir = path.parent().expect("ref path has a parent").to_owned();
    match update.target {
        Some(id) => {
            let heads = heads_dir(repo);
            let mut created = Vec::new();
            let mut d = dir.as_path();
            while d != heads && !d.exists() {
                created.push(d.to_owned());
                d = d.parent().expect("under heads");
            }
            fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
            if fsync && !created.is_empty() {
                // New directories must be durable for the ref in them to be.
                fsutil::fsync_dir(d).map_err(Error::io("syncing", d))?;
                for c in created.iter().skip(1) {
                    fsutil::fsync_dir(c).map_err(Error::io("syncing", c))?;
                }
            }
            let tmp = scratch.join("ref.tmp");
            let write = || -> io::Result<()> {
                use std::io::Write;
                let mut f = fs::File::create(&tmp)?;
                f.write_all(format!("{id}\n").as_bytes())?;
                if fsync {
                    f.sync_all()?;
                }
                fs::rename(&tmp, &path)?;
                if fsync {
                    fsutil::fsync_dir(&dir)?;
                }
                Ok(())
            };
            write().map_err(Error::io("updating ref", &path))
        }
        None => {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::RefNotFound {
                        name: update.name.to_string(),
                    })
                }
                Err(e) => return Err(Error::io("deleting ref", &path)(e)),
            }
            if fsync {
                fsutil::fsync_dir(&dir).map_err(Error::io("syncing", &dir))?;
            }
            // Drop directories the deletion emptied (never refs/heads itself).
            let heads = heads_dir(repo);
            let mut d = dir.as_path();
            while d != heads && fs::remove_dir(d).is_ok() {
                d = d.parent().expect("under heads");
            }
            Ok(())
        }
    }
}

/// Resolves a revision: `REF`, a full commit id, a unique prefix of at least
/// 4 hex digits, each optionally followed by `^` (parent) or `~N` (N-th
/// ancestor) any number of times.
pub fn rev_parse(repo: &Repo, rev: &str) -> Result<ObjectId> {
    let (base, steps) = split_suffixes(rev)?;
    let mut id = resolve_base(repo, base, rev)?;
    for _ in 0..steps {
        let commit = repo.read_commit(&id)?;
        id = commit.parent.ok_or(Error::NoParent { id })?;
    }
    // The result must be a commit we have.
    if !repo.has_object(&id, ObjectKind::Commit) {
        return Err(Error::NotFound {
            kind: ObjectKind::Commit,
            id,
        });
    }
    Ok(id)
}

/// Splits `base^~2^` into the base and the total number of parent steps.
fn split_suffixes(rev: &str) -> Result<(&str, u64)> {
    let bad = |reason: &str| Error::InvalidRevision {
        rev: rev.to_owned(),
        reason: reason.to_owned(),
    };
    let end = rev.find(['^', '~']).unwrap_or(rev.len());
    let (base, mut rest) = rev.split_at(end);
    if base.is_empty() {
        return Err(bad("nothing before ^ or ~"));
    }
    let mut steps: u64 = 0;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('^') {
            steps += 1;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('~') {
            let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let n: u64 = if digits == 0 {
                1
            } else {
                r[..digits]
                    .parse()
                    .map_err(|_| bad("number after ~ is too large"))?
            };
            steps = steps.checked_add(n).ok_or_else(|| bad("too many steps"))?;
            rest = &r[digits..];
        } else {
            return Err(bad("expected ^ or ~N after the ref or id"));
        }
    }
    Ok((base, steps))
}

fn resolve_base(repo: &Repo, base: &str, rev: &str) -> Result<ObjectId> {
    // `REMOTE:NAME`: a ref pulled from a remote.
    if let Some((remote, name)) = base.split_once(':') {
        let name = RefName::new(name)?;
        return try_read_remote_ref(repo, remote, &name)?.ok_or_else(|| Error::RefNotFound {
            name: format!("{remote}:{name} (pull it with `treectl pull {remote}:{name}`)"),
        });
    }
    if let Ok(name) = RefName::new(base) {
        if let Some(id) = try_read_ref(repo, &name)? {
            return Ok(id);
        }
    }
    if let Some(id) = ObjectId::from_hex(base) {
        return Ok(id);
    }
    let is_hex = base.len() >= 4 && base.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex {
        return Err(Error::UnknownRevision {
            rev: rev.to_owned(),
        });
    }
    let prefix = base.to_ascii_lowercase();
    let candidates = commits_with_prefix(repo, &prefix)?;
    match candidates.len() {
        0 => Err(Error::UnknownRevision {
            rev: rev.to_owned(),
        }),
        1 => Ok(candidates[0]),
        _ => Err(Error::AmbiguousPrefix { prefix, candidates }),
    }
}

fn commits_with_prefix(repo: &Repo, prefix: &str) -> Result<Vec<ObjectId>> {
    let dir = repo.path().join(OBJECTS_DIR).join(&prefix[..2]);
    let mut out = Vec::new();
    let entries = fs::read_dir(&dir).map_err(Error::io("reading", &dir))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("reading", &dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(rest) = name.strip_suffix(".commit") {
            let hex = format!("{}{rest}", &prefix[..2]);
            if hex.starts_with(prefix) {
                if let Some(id) = ObjectId::from_hex(&hex) {
                    out.push(id);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::{RefUpdate, Transaction};

    /// An empty commit at `timestamp`, written in `txn`.
    fn empty_commit(txn: &Transaction<'_>, timestamp: i64) -> ObjectId {
        let root_tree = txn
            .write_tree(&crate::object::Tree::default())
            .expect("tree");
        let root_meta = txn
            .write_dirmeta(&crate::object::DirMeta::new(0o755, 0, 0, Vec::new()))
            .expect("dirmeta");
        txn.write_commit(&crate::object::Commit {
            parent: None,
            root_tree,
            root_meta,
            timestamp,
            subject: String::new(),
            body: String::new(),
            metadata: Default::default(),
        })
        .expect("commit")
    }

    fn set(name: &str, commit: ObjectId) -> RefUpdate {
        RefUpdate {
            name: RefName::new(name).expect("ref"),
            target: Some(commit),
        }
    }

    fn name(n: &str) -> RefName {
        RefName::new(n).expect("ref")
    }

    #[test]
    fn many_updates_land_together_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&dir.path().join("r"), crate::RepoMode::Archive).expect("init");
        let txn = Transaction::begin(&repo).expect("txn");
        let (c1, c2, c3) = (
            empty_commit(&txn, 1),
            empty_commit(&txn, 2),
            empty_commit(&txn, 3),
        );
        // New nested directories, and one ref set twice: the later wins.
        txn.commit(&[
            set("deb/a/1/amd64", c1),
            set("deb/b/2%2B1/all", c2),
            set("deb/a/1/amd64", c3),
            set("os/stable", c2),
        ])
        .expect("store");
        assert_eq!(read_ref(&repo, &name("deb/a/1/amd64")).expect("a"), c3);
        assert_eq!(read_ref(&repo, &name("deb/b/2%2B1/all")).expect("b"), c2);
        assert_eq!(read_ref(&repo, &name("os/stable")).expect("os"), c2);
        // Nothing left over from the writes.
        let tmp: Vec<_> = fs::read_dir(repo.path().join("tmp"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(tmp.is_empty(), "{tmp:?}");
    }

    #[test]
    fn a_ref_cannot_be_another_refs_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&dir.path().join("r"), crate::RepoMode::Archive).expect("init");
        let txn = Transaction::begin(&repo).expect("txn");
        let commit = empty_commit(&txn, 0);
        txn.commit(&[set("deb", commit), set("os/stable", commit)])
            .expect("store");
        // Reading a ref under another ref: there is none.
        assert_eq!(
            try_read_ref(&repo, &name("deb/bash/5.2/amd64")).expect("read"),
            None
        );
        for (new, why) in [
            (
                "deb/bash/5.2/amd64",
                "ref deb exists, and no ref can be under it",
            ),
            ("os", "refs under os/ exist"),
        ] {
            for updates in [
                vec![set(new, commit)],
                vec![set("other/ok", commit), set(new, commit)],
            ] {
                let txn = Transaction::begin(&repo).expect("txn");
                let err = txn.commit(&updates).expect_err(new).to_string();
                assert_eq!(err, format!("ref {new} cannot be created: {why}"));
            }
        }
        // No ref moved, none was made.
        let refs: Vec<String> = list_refs(&repo)
            .expect("list")
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(refs, ["deb", "os/stable"]);
    }

    #[test]
    fn ref_names() {
        for good in [
            "os/stable",
            "deb/libc6/2.36-9%2Bdeb12u4/amd64",
            "a",
            "x.y_z-1+2",
        ] {
            assert!(RefName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "../x", "a/../b", ".hidden", "a b", "a:b", "é",
        ] {
            assert!(RefName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suffixes() {
        assert_eq!(split_suffixes("os/stable").unwrap(), ("os/stable", 0));
        assert_eq!(split_suffixes("os/stable^").unwrap(), ("os/stable", 1));
        assert_eq!(split_suffixes("os/stable^^").unwrap(), ("os/stable", 2));
        assert_eq!(split_suffixes("abc~3").unwrap(), ("abc", 3));
        assert_eq!(split_suffixes("abc~").unwrap(), ("abc", 1));
        assert_eq!(split_suffixes("abc~2^").unwrap(), ("abc", 3));
        assert!(split_suffixes("^").is_err());
        assert!(split_suffixes("a~x").is_err());
    }
}

//! Git sources, read through gix: the commit a branch or tag points at in a
//! repository on a local path or `file://` URL.

use std::path::{Path, PathBuf};

use crate::Error;

/// The local path of a git source URL (`file://` or a plain path).
pub fn repo_path(url: &str) -> Result<PathBuf, Error> {
    crate::fetch::local_path(url).ok_or_else(|| Error::Git {
        url: url.to_owned(),
        reason: "only local paths and file:// URLs can be read (no network git)".into(),
    })
}

/// The commit id `follow` (a branch, a tag, or a full ref name) names.
pub fn resolve_head(url: &str, follow: &str) -> Result<String, Error> {
    let err = |reason: String| Error::Git {
        url: url.to_owned(),
        reason,
    };
    let path = repo_path(url)?;
    let repo = gix::open(&path).map_err(|e| err(e.to_string()))?;
    let candidates = [
        follow.to_owned(),
        format!("refs/heads/{follow}"),
        format!("refs/tags/{follow}"),
    ];
    for name in &candidates {
        if let Ok(mut r) = repo.find_reference(name.as_str()) {
            let id = r
                .peel_to_id_in_place()
                .map_err(|e| err(format!("{follow}: {e}")))?;
            let obj = repo
                .find_object(id)
                .map_err(|e| err(format!("{follow}: {e}")))?;
            let commit = obj
                .peel_to_commit()
                .map_err(|e| err(format!("{follow} does not name a commit: {e}")))?;
            return Ok(commit.id.to_string());
        }
    }
    Err(err(format!("no branch or tag named {follow:?}")))
}

/// Identity used for `lock update --git-commit` when git's configuration
/// (`user.name`/`user.email`, `author.*`, `committer.*` or the
/// `GIT_AUTHOR_*`/`GIT_COMMITTER_*` variables) names no one.
pub const DEFAULT_IDENTITY_NAME: &str = "treectl";
/// See [`DEFAULT_IDENTITY_NAME`].
pub const DEFAULT_IDENTITY_EMAIL: &str = "treectl@localhost";

/// A commit made by [`commit_file`].
#[derive(Clone, Debug)]
pub struct FileCommit {
    /// The new commit's id (hex).
    pub id: String,
    /// The git repository's working tree.
    pub workdir: PathBuf,
    /// The file's path inside the working tree, `/`-separated.
    pub rela_path: String,
}

/// Commits the current content of `file` (and nothing else) on top of
/// `HEAD` in the git repository that encloses it, as `git commit FILE`
/// does: the blob is written, HEAD's tree is edited at the file's path with
/// gix's tree editor, the commit is written and the branch HEAD names moves
/// (or is born). Other staged or unstaged changes stay as they are.
///
/// The index entry of the file is then pointed at the new blob with the
/// file's current stat data (and the index's cached-tree extension, now
/// stale, is dropped), so `git status` shows the file clean.
///
/// Author and committer come from git's configuration as git itself reads
/// it; when nothing is configured they are
/// [`DEFAULT_IDENTITY_NAME`] <[`DEFAULT_IDENTITY_EMAIL`]>.
pub fn commit_file(file: &Path, message: &str) -> Result<FileCommit, Error> {
    let err = |reason: String| Error::Git {
        url: file.display().to_string(),
        reason,
    };
    let abs = file
        .canonicalize()
        .map_err(|e| err(format!("resolving the path: {e}")))?;
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let repo = gix::discover(dir).map_err(|e| err(format!("no enclosing git repository: {e}")))?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| err("the enclosing git repository is bare".into()))?
        .canonicalize()
        .map_err(|e| err(format!("resolving the working tree: {e}")))?;
    let rela = abs
        .strip_prefix(&workdir)
        .map_err(|_| err(format!("not inside the working tree {}", workdir.display())))?;
    let rela_path = rela
        .to_str()
        .ok_or_else(|| err("the path is not UTF-8".into()))?
        .to_owned();

    let content = std::fs::read(&abs).map_err(|e| err(format!("reading: {e}")))?;
    let blob = repo
        .write_blob(&content)
        .map_err(|e| err(format!("writing the blob: {e}")))?
        .detach();
    let parent = match repo.head_id() {
        Ok(id) => Some(id.detach()),
        // An unborn branch: the first commit has no parent.
        Err(gix::reference::head_id::Error::PeelToId(_)) if head_is_unborn(&repo) => None,
        Err(e) => return Err(err(format!("reading HEAD: {e}"))),
    };
    let base_tree = match parent {
        Some(p) => repo
            .find_commit(p)
            .map_err(|e| err(format!("reading HEAD: {e}")))?
            .tree_id()
            .map_err(|e| err(format!("reading HEAD's tree: {e}")))?
            .detach(),
        None => gix::ObjectId::empty_tree(repo.object_hash()),
    };
    let mut editor = repo
        .edit_tree(base_tree)
        .map_err(|e| err(format!("editing HEAD's tree: {e}")))?;
    editor
        .upsert(rela_path.as_str(), gix::object::tree::EntryKind::Blob, blob)
        .map_err(|e| err(format!("editing HEAD's tree: {e}")))?;
    let tree = editor
        .write()
        .map_err(|e| err(format!("writing the tree: {e}")))?
        .detach();

    let now = format!("{} +0000", treectl_store::time::now());
    let fallback = gix::actor::SignatureRef {
        name: DEFAULT_IDENTITY_NAME.into(),
        email: DEFAULT_IDENTITY_EMAIL.into(),
        time: now.as_str(),
    };
    let committer = match repo.committer() {
        Some(r) => r.map_err(|e| err(format!("committer date: {e}")))?,
        None => fallback,
    };
    let author = match repo.author() {
        Some(r) => r.map_err(|e| err(format!("author date: {e}")))?,
        None => fallback,
    };
    let id = repo
        .commit_as(committer, author, "HEAD", message, tree, parent)
        .map_err(|e| err(format!("committing: {e}")))?
        .detach();

    refresh_index_entry(&repo, &abs, &rela_path, blob).map_err(err)?;
    Ok(FileCommit {
        id: id.to_string(),
        workdir,
        rela_path,
    })
}

fn head_is_unborn(repo: &gix::Repository) -> bool {
    matches!(repo.head().map(|h| h.is_unborn()), Ok(true))
}

/// Points the index entry of `rela_path` at `blob` (adding it if the file
/// was untracked) with the file's current stat data, and drops the cached
/// tree extension, which no longer matches the entries.
fn refresh_index_entry(
    repo: &gix::Repository,
    abs: &Path,
    rela_path: &str,
    blob: gix::ObjectId,
) -> Result<(), String> {
    use gix::bstr::ByteSlice;
    // A fresh copy, not the shared snapshot: it is edited and written back.
    let mut index = if repo.index_path().exists() {
        repo.open_index()
            .map_err(|e| format!("reading the index: {e}"))?
    } else {
        gix::index::File::from_state(
            gix::index::State::new(repo.object_hash()),
            repo.index_path(),
        )
    };
    let meta = gix::index::fs::Metadata::from_path_no_follow(abs)
        .map_err(|e| format!("reading the file's metadata: {e}"))?;
    let stat = gix::index::entry::Stat::from_fs(&meta)
        .map_err(|e| format!("reading the file's metadata: {e}"))?;
    let mode = if meta.is_executable() {
        gix::index::entry::Mode::FILE_EXECUTABLE
    } else {
        gix::index::entry::Mode::FILE
    };
    let path = rela_path.as_bytes().as_bstr();
    match index.entry_mut_by_path_and_stage(path, gix::index::entry::Stage::Unconflicted) {
        Some(e) => {
            e.id = blob;
            e.stat = stat;
            e.mode = mode;
        }
        None => {
            index.dangerously_push_entry(stat, blob, gix::index::entry::Flags::empty(), mode, path);
            index.sort_entries();
        }
    }
    index.remove_tree();
    index
        .write(gix::index::write::Options::default())
        .map_err(|e| format!("writing the index: {e}"))
}

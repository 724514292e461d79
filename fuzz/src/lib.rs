//! What the fuzz targets share: a scratch repository for the importers.

use std::path::PathBuf;
use std::sync::OnceLock;

use treectl_store::config::Config;
use treectl_store::{Repo, RepoMode};

/// A scratch `archive` repository, made once per fuzzing process (fsync
/// off: nothing here needs to survive a crash). Importers commit into it;
/// content addressing keeps it small.
pub fn scratch_repo() -> Repo {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("treectl-fuzz-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let repo = dir.join("repo");
        Repo::init(&repo, RepoMode::Archive).expect("init the scratch repository");
        let mut config = Config::new(RepoMode::Archive);
        config.core.fsync = false;
        std::fs::write(repo.join("config"), config.to_text()).expect("write its config");
        repo
    });
    Repo::open(path).expect("open the scratch repository")
}

/// Writes `data` to a file beside the scratch repository (the importers
/// read paths) and returns its path.
pub fn input_file(name: &str, data: &[u8]) -> PathBuf {
    let repo = scratch_repo();
    let path = repo
        .path()
        .parent()
        .expect("the repository has a parent")
        .join(name);
    std::fs::write(&path, data).expect("write the input");
    path
}

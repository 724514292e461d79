//! What the fuzz targets share: a scratch repository for the importers,
//! and two releases to make a static delta between.

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

/// Commits release 1 (or 2, `v2`) of a small tree into `repo`, written at
/// `dir`: a shared library (a binary diff between the two), a gzip
/// changelog with a new entry (through its text), a configuration file
/// with a changed line (a zstd patch) and, in release 2, a new file.
pub fn commit_release(repo: &Repo, dir: &std::path::Path, v2: bool) -> treectl_store::ObjectId {
    use std::io::Write;
    let write = |path: &str, data: &[u8]| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    };
    let mut lib = b"\x7fELF".to_vec();
    lib.extend(noise(1, 60_000));
    if v2 {
        lib.splice(30_000..30_000, noise(2, 64));
        lib[50_000..50_100].copy_from_slice(&noise(3, 100));
    }
    write("usr/lib/libx.so", &lib);
    let mut text = String::new();
    if v2 {
        text.push_str("p (2.0) unstable; urgency=medium\n\n  * The new release.\n\n");
    }
    for i in (0..400).rev() {
        text.push_str(&format!(
            "p (1.{i}) unstable; urgency=low\n\n  * Change number {i}, fixing bug #{}.\n\n",
            i * 7919 % 100_000
        ));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    gz.write_all(text.as_bytes()).expect("gzip");
    write("usr/share/doc/p/changelog.gz", &gz.finish().expect("gzip"));
    let conf: String = (0..800)
        .map(|i| match (i, v2) {
            (400, true) => "setting-400 = changed\n".to_owned(),
            _ => format!("setting-{i} = {}\n", i * 31 % 997),
        })
        .collect();
    write("etc/p.conf", conf.as_bytes());
    if v2 {
        write("usr/bin/new", &noise(4, 5_000));
    }
    let name = treectl_store::refs::RefName::new(if v2 { "release/2" } else { "release/1" })
        .expect("a valid ref name");
    let opts = treectl_store::commit::CommitOptions {
        timestamp: 1,
        ..Default::default()
    };
    treectl_store::commit::commit_dir(repo, dir, &name, &opts)
        .expect("commit the release")
        .0
}

/// `len` bytes zstd cannot shrink (xorshift).
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

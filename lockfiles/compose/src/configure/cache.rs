//! The configure cache: a configured tree, keyed by everything configuring
//! depends on, so recomposing an unchanged lockfile runs no script.
//!
//! The key is the sha256 of: [`CONFIGURE_VERSION`],
//! the merged tree (tree and dirmeta ids), the compose timestamp, the
//! `remove` patterns, each package's component name and commit id (a
//! `.deb` commit's id covers its tree and its control data), and the
//! initramfs settings with the merged initramfs tree, when there are some. Each entry is
//! `<repo>/state/compose-cache/configure/<key>.json`: the configured
//! `(tree, dirmeta)` and the [`ConfigureReport`]. It is only a cache: an
//! unreadable entry, or one whose objects are missing, is ignored; deleting
//! the directory is always safe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use treectl_store::object::ObjectKind;
use treectl_store::{ObjectId, Repo};

use super::{ConfigureReport, DebPackage, CONFIGURE_VERSION};

/// A cached configure result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedConfigure {
    pub tree: String,
    pub meta: String,
    pub report: ConfigureReport,
}

/// The cache key of configuring `merged` with these inputs.
pub fn key(
    merged: (ObjectId, ObjectId),
    timestamp: i64,
    remove: &[String],
    packages: &[DebPackage],
    initramfs: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    h.update(format!("treectl-configure {CONFIGURE_VERSION}\n"));
    h.update(format!("merged {} {}\n", merged.0, merged.1));
    h.update(format!("timestamp {timestamp}\n"));
    for r in remove {
        h.update(format!("remove {r}\n"));
    }
    for p in packages {
        h.update(format!("package {} {}\n", p.component, p.commit));
    }
    // Absent for a tree without an initramfs, so those keys keep their
    // value.
    if let Some(i) = initramfs {
        h.update(format!("initramfs {i}\n"));
    }
    hex::encode(h.finalize())
}

fn dir(repo: &Repo) -> PathBuf {
    repo.path().join("state/compose-cache/configure")
}

/// The cached result for `key`, when it is readable and its objects exist.
pub fn lookup(repo: &Repo, key: &str) -> Option<(ObjectId, ObjectId, ConfigureReport)> {
    let text = std::fs::read_to_string(dir(repo).join(format!("{key}.json"))).ok()?;
    let c: CachedConfigure = serde_json::from_str(&text).ok()?;
    let tree = ObjectId::from_hex(&c.tree)?;
    let meta = ObjectId::from_hex(&c.meta)?;
    (repo.has_object(&tree, ObjectKind::Tree) && repo.has_object(&meta, ObjectKind::DirMeta))
        .then_some((tree, meta, c.report))
}

/// Remembers a result (atomically: a temporary file renamed into place).
pub fn store(
    repo: &Repo,
    key: &str,
    root: (ObjectId, ObjectId),
    report: &ConfigureReport,
) -> std::io::Result<()> {
    let d = dir(repo);
    std::fs::create_dir_all(&d)?;
    let entry = CachedConfigure {
        tree: root.0.to_hex(),
        meta: root.1.to_hex(),
        report: report.clone(),
    };
    let tmp = d.join(format!(".{key}.{}.tmp", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec(&entry).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, d.join(format!("{key}.json")))
}

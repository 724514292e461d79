//! Lockfiles for treectl: the lockfile format ([`lockfile`]), component
//! sources (apt indexes in [`apt`], tarball URLs, git repositories through
//! gix in [`git`], local directories), Debian version ordering
//! ([`debver`]), bumping a lockfile ([`ops::update`]) and compose, which
//! merges the pinned component trees into one OS tree ([`ops::compose`],
//! through the `treectl-compose` engine).
//!
//! Each component is imported into its own commit, reproducibly (the same
//! `.deb`, tarball or git commit gives the same commit id anywhere), and the
//! lockfile records that id. Compose is reproducible too: the same lockfile
//! composed onto a new ref gives the same commit id in any repository.
//!
//! ```
//! use treectl_lockfiles::lockfile::{Lockfile, LOCKFILE_VERSION};
//!
//! let lock = Lockfile::new();
//! let text = lock.to_text();
//! assert!(text.contains("@generated"));
//! let back = Lockfile::parse(&text, std::path::Path::new("os.lock"))?;
//! assert_eq!(back.version, LOCKFILE_VERSION);
//! assert_eq!(back.to_text(), text); // rewriting changes no byte
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod apt;
pub mod apt_trust;
pub mod artifacts;
pub mod debver;
pub mod fetch;
pub mod git;
pub mod lockfile;
pub mod ops;

pub use lockfile::{Lockfile, LockfileError};

/// Why a lockfile operation failed. Every variant names what it was about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lockfile(#[from] LockfileError),
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error(
        "{what}: checksum mismatch: expected {expected}, got {actual}; the artifact was not used"
    )]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("apt source {source_name} ({url}): {reason}")]
    Index {
        source_name: String,
        url: String,
        reason: String,
    },
    /// The source's `Release` was not trusted (signature, key, expiry):
    /// nothing it lists was read.
    #[error("apt source {source_name}: {error}")]
    Trust {
        source_name: String,
        error: apt_trust::TrustError,
    },
    #[error("package {package:?} is not in apt source {source_name}")]
    NotFound {
        package: String,
        source_name: String,
    },
    #[error("{package} depends on {dependency}, which nothing in the source satisfies")]
    Unsatisfiable { package: String, dependency: String },
    #[error(transparent)]
    Compose(#[from] treectl_compose::ComposeError),
    #[error(transparent)]
    Configure(#[from] treectl_compose::configure::ConfigureError),
    #[error("the initramfs: {0}")]
    Initramfs(#[from] treectl_compose::initramfs::InitramfsError),
    #[error("the initramfs: {0}")]
    Export(#[from] treectl_store::export::ExportError),
    #[error("component {name}: {reason}")]
    Component { name: String, reason: String },
    #[error("git repository {url}: {reason}")]
    Git { url: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Import(#[from] treectl_import::ImportError),
    #[error(transparent)]
    Repo(#[from] treectl_store::Error),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

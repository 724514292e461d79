//! treectl-compose: merging pinned component trees into one OS tree.
//!
//! [`merge`] is the engine (its rules are in `docs/lockfile.md`,
//! "Compose"), [`cache`] remembers merges of shared directories so a
//! recompose after a small bump only redoes what changed, and
//! [`components`] is the metadata a composed commit carries about what it
//! was made from. [`configure`] runs the packages' own configuration
//! (the dpkg database, maintainer scripts in a bubblewrap sandbox) on a
//! checkout of the merged tree and finishes it; [`initramfs`] lays out an
//! initramfs from packages and the OS kernel's modules. Lockfiles (`treectl-lockfiles`) decide *what* is
//! composed; this crate only knows trees.
//!
//! ```
//! use treectl_compose::components::{diff_components, ComposedComponent};
//!
//! let c = |v: &str| ComposedComponent {
//!     name: "libssl3".into(),
//!     version: v.into(),
//!     source: "debian".into(),
//!     digest: None,
//!     commit: String::new(),
//! };
//! let changes = diff_components(&[c("3.0.15-1")], &[c("3.0.17-1")]);
//! assert_eq!(changes[0].to_string(), "libssl3 3.0.15-1 -> 3.0.17-1");
//! ```

pub mod cache;
pub mod components;
pub mod configure;
pub mod initramfs;
pub mod merge;

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{} conflicting path{} (add a [[compose.override]] to the lockfile to pick a winner): {}",
        .0.len(), if .0.len() == 1 { "" } else { "s" },
        .0.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; "))]
    Conflicts(Vec<merge::Conflict>),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Repo(#[from] treectl_store::Error),
}

//! treectl-store: a content-addressed (SHA-256) object store for operating
//! system trees, in the model of OSTree.
//!
//! Files, directory trees, directory metadata and commits are objects named
//! by the SHA-256 of their canonical encoding ([`object`]). A repository
//! ([`store::Repo`]) keeps them under `objects/`, either compressed
//! (`archive`, for servers and mirrors) or as plain files that checkouts
//! hardlink (`bare-user`). Writes go through a [`store::Transaction`] that
//! makes objects durable before any ref names them. [`checkout`],
//! [`export`] (a tree as one cpio or tar archive), [`fsck`] and [`prune`]
//! work on whole repositories; [`closure`] is the one walk
//! over everything a commit needs. Importers, signing and publishing, and
//! the wire types live in crates of their own (`treectl-import`,
//! `treectl-release`, `treectl-wire`).
//!
//! This crate knows nothing of HTTP, async runtimes or the command line.
//!
//! ```
//! use treectl_store::{commit::{commit_dir, CommitOptions}, refs::{rev_parse, RefName}, Repo, RepoMode};
//!
//! let tmp = tempfile::tempdir()?;
//! let tree = tmp.path().join("tree");
//! std::fs::create_dir_all(tree.join("etc"))?;
//! std::fs::write(tree.join("etc/hostname"), "demo\n")?;
//!
//! let repo = Repo::init(&tmp.path().join("repo"), RepoMode::BareUser)?;
//! let opts = CommitOptions { subject: "first".into(), timestamp: 0, ..Default::default() };
//! let (id, _stats) = commit_dir(&repo, &tree, &RefName::new("os/demo")?, &opts)?;
//! assert_eq!(rev_parse(&repo, "os/demo")?, id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checkout;
pub mod closure;
pub mod commit;
pub mod config;
pub mod delta;
pub mod diff;
pub mod error;
pub mod export;
pub mod failpoint;
pub mod fsck;
pub mod fsutil;
pub mod object;
pub mod prune;
pub mod refs;
pub mod store;
pub mod time;

pub use config::{RepoMode, FORMAT_VERSION};
pub use error::{Error, Result};
pub use store::Repo;
pub use treectl_id::{hash, ObjectId, ObjectKind};

//! Lockfiles for treectl: the lockfile format, component sources (apt indexes,
//! tarball URLs, git repositories, local directories), resolving and bumping
//! versions, and the compose plan that merges pinned component trees into one
//! OS tree.
//!
//! This crate is being built up; today it holds no code.

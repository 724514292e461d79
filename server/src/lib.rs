//! The treectl HTTP server: serves a repository directory read-only (the
//! directory is the wire format) and adds uploads, publishing, signing and
//! reverts. This is the only crate in the workspace that knows axum.
//!
//! This crate is being built up; today it holds no code.

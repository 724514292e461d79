//! The treectl client library: what a client machine does with the trees
//! it receives (the `sysroot` module). The `treectl` command-line tool is
//! `src/main.rs`; the object store is the `treectl-repo` crate.

pub mod sysroot;

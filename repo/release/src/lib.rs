//! treectl-release: what makes a repository's content a release that
//! clients can trust. Ed25519 keys and detached commit signatures
//! ([`sign`]), key sets and their rotation ([`keyset`]), the signed ref index `summary.json` ([`summary`]), the pack files
//! static mirrors serve ([`packs`]), publish,
//! revert, the history log and crash recovery ([`publish`]), and on the
//! client side the remotes and their trust state ([`remote`]: the highest
//! index serial accepted, so a replayed older index is refused).
//!
//! The server and the CLI's local-path targets both call [`publish::Publisher`],
//! so a URL and a path behave the same.
//!
//! ```
//! use treectl_release::sign::SecretKey;
//!
//! let key = SecretKey::generate()?;
//! let sigs = [key.sign(b"release 1")];
//! key.public().verify_any("the index", b"release 1", &sigs)?;
//! assert!(key.public().verify_any("the index", b"release 2", &sigs).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod keyset;
pub mod packs;
pub mod publish;
pub mod remote;
pub mod sign;
pub mod summary;

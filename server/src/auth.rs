//! Bearer tokens: the tokens file, hashed tokens, scopes.
//!
//! The tokens file is TOML:
//!
//! ```toml
//! reads = "anonymous"          # or "token": reads need a token too
//!
//! [[token]]
//! name = "release-bot"         # recorded in the history as "who"
//! scope = "publish"            # or "read"
//! sha256 = "<64 hex: SHA-256 of the token's bytes>"
//! ```
//!
//! Only hashes are stored. A presented token is hashed and compared with
//! every stored hash in constant time.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a token may do. `Publish` includes `Read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Read,
    Publish,
}

/// Who may read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadAccess {
    #[default]
    Anonymous,
    Token,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    scope: Scope,
    sha256: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    reads: ReadAccess,
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

/// A known token.
#[derive(Clone, Debug)]
struct Known {
    name: String,
    scope: Scope,
    hash: [u8; 32],
}

/// The server's tokens.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    reads: ReadAccess,
    known: Vec<Known>,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token, or not a known one: 401.
    Unauthenticated(&'static str),
    /// A known token without the scope: 403.
    Forbidden { name: String },
}

/// The identity of an allowed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or `anonymous`.
    pub name: String,
}

/// An invalid tokens file.
#[derive(Debug, thiserror::Error)]
#[error("tokens file {path}: {reason}")]
pub struct TokensError {
    pub path: String,
    pub reason: String,
}

/// SHA-256 of a token, in hex: what the tokens file stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// No tokens at all: reads are anonymous and every write is refused.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let err = |reason: String| TokensError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Tokens::parse(&text).map_err(err)
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut known = Vec::new();
        for t in file.tokens {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(t.sha256.trim(), &mut hash).map_err(|_| {
                format!(
                    "token {:?}: sha256 must be 64 hex digits (the SHA-256 of the token)",
                    t.name
                )
            })?;
            if t.name.is_empty() {
                return Err("a token has an empty name".into());
            }
            known.push(Known {
                name: t.name,
                scope: t.scope,
                hash,
            });
        }
        Ok(Tokens {
            reads: file.reads,
            known,
        })
    }

    /// Whether reads need a token.
    pub fn reads_need_token(&self) -> bool {
        self.reads == ReadAccess::Token
    }

    /// Checks an `Authorization` header value for `needed`.
    pub fn check(&self, header: Option<&str>, needed: Scope) -> Result<Caller, AuthFailure> {
        if needed == Scope::Read && !self.reads_need_token() {
            return Ok(Caller {
                name: "anonymous".into(),
            });
        }
        let header = header.ok_or(AuthFailure::Unauthenticated(
            "this needs a bearer token (Authorization: Bearer TOKEN)",
        ))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthFailure::Unauthenticated(
                "the Authorization header must be \"Bearer TOKEN\"",
            ))?
            .trim();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every entry, without stopping early.
        let mut found: Option<&Known> = None;
        for k in &self.known {
            if constant_time_eq(&k.hash, &hash) && found.is_none() {
                found = Some(k);
            }
        }
        let k = found.ok_or(AuthFailure::Unauthenticated("unknown token"))?;
        if k.scope < needed {
            return Err(AuthFailure::Forbidden {
                name: k.name.clone(),
            });
        }
        Ok(Caller {
            name: k.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(reads: &str) -> Tokens {
        Tokens::parse(&format!(
            "reads = \"{reads}\"\n[[token]]\nname = \"bot\"\nscope = \"publish\"\nsha256 = \"{}\"\n\
             [[token]]\nname = \"mirror\"\nscope = \"read\"\nsha256 = \"{}\"\n",
            hash_token("pub-secret"),
            hash_token("read-secret")
        ))
        .expect("valid tokens file")
    }

    #[test]
    fn scopes_and_failures() {
        let t = tokens("anonymous");
        assert_eq!(
            t.check(None, Scope::Read).expect("anonymous").name,
            "anonymous"
        );
        assert!(matches!(
            t.check(None, Scope::Publish),
            Err(AuthFailure::Unauthenticated(_))
        ));
        assert!(matches!(
            t.check(Some("Bearer wrong"), Scope::Publish),
            Err(AuthFailure::Unauthenticated(_))
        ));
        assert_eq!(
            t.check(Some("Bearer read-secret"), Scope::Publish),
            Err(AuthFailure::Forbidden {
                name: "mirror".into()
            })
        );
        assert_eq!(
            t.check(Some("Bearer pub-secret"), Scope::Publish)
                .expect("allowed")
                .name,
            "bot"
        );
        let t = tokens("token");
        assert!(t.check(None, Scope::Read).is_err());
        assert_eq!(
            t.check(Some("Bearer read-secret"), Scope::Read)
                .expect("allowed")
                .name,
            "mirror"
        );
    }

    /// Row 20 of docs/security.md: the tokens file holds hashes, so
    /// neither the plain token written there nor the stored hash presented
    /// as a token is accepted; and only the exact token matches.
    #[test]
    fn only_the_hash_is_stored_and_only_the_exact_token_matches() {
        // 64 hex digits, so the token itself parses as a "sha256".
        let token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let file = |stored: &str| {
            Tokens::parse(&format!(
                "[[token]]\nname = \"bot\"\nscope = \"publish\"\nsha256 = \"{stored}\"\n"
            ))
            .expect("valid tokens file")
        };
        let bearer = |t: &str| format!("Bearer {t}");
        let unknown = Err(AuthFailure::Unauthenticated("unknown token"));
        // The plain token written where the hash belongs does not authorise it.
        assert_eq!(
            file(token).check(Some(&bearer(token)), Scope::Publish),
            unknown
        );
        let hashed = file(&hash_token(token));
        assert_eq!(
            hashed
                .check(Some(&bearer(token)), Scope::Publish)
                .expect("the exact token")
                .name,
            "bot"
        );
        // A stolen tokens file: the stored hash is not a token.
        assert_eq!(
            hashed.check(Some(&bearer(&hash_token(token))), Scope::Publish),
            unknown
        );
        // Any one byte changed, at every position.
        for i in 0..token.len() {
            let mut changed = token.as_bytes().to_vec();
            changed[i] = if changed[i] == b'x' { b'y' } else { b'x' };
            let changed = String::from_utf8(changed).expect("ascii");
            assert_eq!(
                hashed.check(Some(&bearer(&changed)), Scope::Publish),
                unknown,
                "byte {i} changed"
            );
        }
        // Every proper prefix, and longer tokens.
        for n in 0..token.len() {
            assert_eq!(
                hashed.check(Some(&bearer(&token[..n])), Scope::Publish),
                unknown,
                "prefix of {n} bytes"
            );
        }
        for longer in [format!("{token}0"), format!("0{token}"), token.repeat(2)] {
            assert_eq!(
                hashed.check(Some(&bearer(&longer)), Scope::Publish),
                unknown,
                "{longer}"
            );
        }
    }

    /// The comparison of hashes looks at every byte: equal hashes match,
    /// and a difference in any one byte (any bit) does not.
    #[test]
    fn hash_comparison_sees_every_byte() {
        let a: [u8; 32] = Sha256::digest(b"token").into();
        assert!(constant_time_eq(&a, &a));
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!constant_time_eq(&a, &b), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn bad_files() {
        assert!(
            Tokens::parse("[[token]]\nname = \"x\"\nscope = \"publish\"\nsha256 = \"zz\"\n")
                .is_err()
        );
        assert!(
            Tokens::parse("[[token]]\nname = \"x\"\nscope = \"admin\"\nsha256 = \"\"\n").is_err()
        );
        assert!(Tokens::parse("plaintext = \"secret\"\n").is_err());
    }
}

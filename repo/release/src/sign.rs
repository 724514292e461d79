//! ed25519 signing: key files, signatures over the ref index, and commits'
//! detached signatures, each of which binds a commit to the ref it is
//! published under (so a signed `os/testing` commit cannot be replayed as
//! `os/stable`).
//!
//! Key files are one line of text: `treectl-ed25519-secret <64 hex>` (the
//! 32-byte seed, mode 0600) and `treectl-ed25519-public <64 hex>` (the public
//! key, conventionally the secret key's path plus `.pub`). A key is named by
//! its key id: the first 16 hex digits of the SHA-256 of the public key.
//! Formats are specified in `docs/repository-format.md`.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use treectl_store::hash::ObjectId;
use treectl_store::refs::RefName;
use treectl_store::store::{write_atomic, Repo};

/// First word of a secret key file.
pub const SECRET_KEY_TAG: &str = "treectl-ed25519-secret";
/// First word of a public key file.
pub const PUBLIC_KEY_TAG: &str = "treectl-ed25519-public";
/// Prefix of the message signed for a commit published under a ref.
pub const COMMIT_SIGNATURE_DOMAIN: &[u8] = b"treectl commit signature v1\0";
/// Where commits' detached signatures live: `signatures/<64 hex>.json`.
pub const SIGNATURES_DIR: &str = "signatures";

/// What can go wrong with keys and signatures.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{op} key file {}: {err}", path.display())]
    KeyFileIo {
        op: &'static str,
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("{} is not a treectl {expected} key file: {reason}", path.display())]
    BadKeyFile {
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    #[error("{what} has no signature by key {key_id}")]
    Unsigned { what: String, key_id: String },
    #[error("{what}: the signature by key {key_id} does not verify")]
    BadSignature { what: String, key_id: String },
    #[error("reading the signatures of commit {id}: {reason}")]
    CommitSignatures { id: ObjectId, reason: String },
    #[error(transparent)]
    Repo(#[from] treectl_store::Error),
}

/// A secret signing key.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public().key_id())
    }
}

/// A public key that verifies signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// One signature: which key made it, and the 64 signature bytes in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub key_id: String,
    pub sig: String,
}

impl SecretKey {
    /// A new random key (from the kernel's random source).
    pub fn generate() -> io::Result<SecretKey> {
        let mut seed = [0u8; 32];
        fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(SecretKey::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key_id: self.public().key_id(),
            sig: hex::encode(self.0.sign(message).to_bytes()),
        }
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<SecretKey, SignError> {
        let seed = read_key_file(path, SECRET_KEY_TAG, "secret")?;
        Ok(SecretKey::from_seed(seed))
    }

    /// Writes the secret key to `path` (created new, mode 0600) and the
    /// public key to `path.pub`.
    pub fn write_files(&self, path: &Path) -> Result<PathBuf, SignError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |err| SignError::KeyFileIo {
                op: "writing",
                path,
                err,
            }
        };
        let text = format!("{SECRET_KEY_TAG} {}\n", hex::encode(self.0.to_bytes()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(path))?;
        let mut pub_path = path.as_os_str().to_owned();
        pub_path.push(".pub");
        let pub_path = PathBuf::from(pub_path);
        fs::write(&pub_path, self.public().to_text()).map_err(io_err(&pub_path))?;
        Ok(pub_path)
    }
}

impl PublicKey {
    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<PublicKey, SignError> {
        let bytes = read_key_file(path, PUBLIC_KEY_TAG, "public")?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| SignError::BadKeyFile {
                path: path.to_owned(),
                expected: "public",
                reason: e.to_string(),
            })
    }

    /// A key from its 32 bytes (as a config file keeps it), if they are a
    /// valid ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        VerifyingKey::from_bytes(bytes).ok().map(PublicKey)
    }

    /// The key's 32 bytes in hex (as key sets name it).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// A key from 64 hex digits, if they are a valid ed25519 public key.
    pub fn from_hex(text: &str) -> Option<PublicKey> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        PublicKey::from_bytes(&bytes)
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_KEY_TAG} {}\n", hex::encode(self.0.to_bytes()))
    }

    /// First 16 hex digits of the SHA-256 of the key's 32 bytes.
    pub fn key_id(&self) -> String {
        let mut id = hex::encode(Sha256::digest(self.0.to_bytes()));
        id.truncate(16);
        id
    }

    /// Checks that one of `signatures` is this key's valid signature of
    /// `message`. `what` names the signed thing in errors.
    pub fn verify_any(
        &self,
        what: &str,
        message: &[u8],
        signatures: &[Signature],
    ) -> Result<(), SignError> {
        let key_id = self.key_id();
        let mine: Vec<&Signature> = signatures.iter().filter(|s| s.key_id == key_id).collect();
        if mine.is_empty() {
            return Err(SignError::Unsigned {
                what: what.to_owned(),
                key_id,
            });
        }
        let bad = || SignError::BadSignature {
            what: what.to_owned(),
            key_id: key_id.clone(),
        };
        for sig in mine {
            let mut raw = [0u8; 64];
            if hex::decode_to_slice(&sig.sig, &mut raw).is_err() {
                continue;
            }
            let sig = ed25519_dalek::Signature::from_bytes(&raw);
            if self.0.verify_strict(message, &sig).is_ok() {
                return Ok(());
            }
        }
        Err(bad())
    }
}

fn read_key_file(path: &Path, tag: &str, expected: &'static str) -> Result<[u8; 32], SignError> {
    let text = fs::read_to_string(path).map_err(|err| SignError::KeyFileIo {
        op: "reading",
        path: path.to_owned(),
        err,
    })?;
    let bad = |reason: &str| SignError::BadKeyFile {
        path: path.to_owned(),
        expected,
        reason: reason.to_owned(),
    };
    let mut words = text.split_whitespace();
    match words.next() {
        Some(t) if t == tag => {}
        Some(t) if t == SECRET_KEY_TAG || t == PUBLIC_KEY_TAG => {
            return Err(bad(&format!("it starts with {t}")))
        }
        _ => return Err(bad(&format!("it does not start with {tag}"))),
    }
    let hex_key = words.next().ok_or_else(|| bad("no key after the tag"))?;
    if words.next().is_some() {
        return Err(bad("unexpected text after the key"));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut out).map_err(|_| bad("the key is not 64 hex digits"))?;
    Ok(out)
}

/// The message signed for `commit` published under `ref_name`:
/// `COMMIT_SIGNATURE_DOMAIN ‖ commit id (32 bytes) ‖ ref name`.
pub fn commit_message(commit: &ObjectId, ref_name: &RefName) -> Vec<u8> {
    let mut m = Vec::with_capacity(COMMIT_SIGNATURE_DOMAIN.len() + 32 + ref_name.as_str().len());
    m.extend_from_slice(COMMIT_SIGNATURE_DOMAIN);
    m.extend_from_slice(&commit.0);
    m.extend_from_slice(ref_name.as_str().as_bytes());
    m
}

/// One detached signature of a commit, for one ref.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefSignature {
    #[serde(rename = "ref")]
    pub ref_name: String,
    #[serde(flatten)]
    pub signature: Signature,
}

/// The file `signatures/<commit hex>.json`: a commit's detached signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSignatures {
    pub commit: ObjectId,
    pub signatures: Vec<RefSignature>,
}

impl CommitSignatures {
    /// Checks that `key` signed this commit for `ref_name`.
    pub fn verify(&self, ref_name: &RefName, key: &PublicKey) -> Result<(), SignError> {
        let sigs: Vec<Signature> = self
            .signatures
            .iter()
            .filter(|s| s.ref_name == ref_name.as_str())
            .map(|s| s.signature.clone())
            .collect();
        key.verify_any(
            &format!("commit {} as {ref_name}", self.commit),
            &commit_message(&self.commit, ref_name),
            &sigs,
        )
    }

    pub fn parse(id: &ObjectId, bytes: &[u8]) -> Result<CommitSignatures, SignError> {
        let sigs: CommitSignatures =
            serde_json::from_slice(bytes).map_err(|e| SignError::CommitSignatures {
                id: *id,
                reason: e.to_string(),
            })?;
        if sigs.commit != *id {
            return Err(SignError::CommitSignatures {
                id: *id,
                reason: format!("the file is for commit {}", sigs.commit),
            });
        }
        Ok(sigs)
    }
}

/// `signatures/<hex>.json` relative to the repository.
pub fn commit_signatures_rel_path(id: &ObjectId) -> String {
    format!("{SIGNATURES_DIR}/{}.json", id.to_hex())
}

/// Reads a commit's detached signatures, if it has any.
pub fn read_commit_signatures(
    repo: &Repo,
    id: &ObjectId,
) -> Result<Option<CommitSignatures>, SignError> {
    let path = repo.path().join(commit_signatures_rel_path(id));
    match fs::read(&path) {
        Ok(bytes) => CommitSignatures::parse(id, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(treectl_store::Error::Io {
            op: "reading",
            path,
            err: e,
        }
        .into()),
    }
}

/// Signs `id` for `ref_name` with `key` and adds the signature to the
/// commit's signature file (rewritten atomically). Signing again for the
/// same ref and key replaces the old signature.
pub fn add_commit_signature(
    repo: &Repo,
    id: &ObjectId,
    ref_name: &RefName,
    key: &SecretKey,
) -> Result<(), SignError> {
    let mut sigs = read_commit_signatures(repo, id)?.unwrap_or(CommitSignatures {
        commit: *id,
        signatures: Vec::new(),
    });
    let signature = key.sign(&commit_message(id, ref_name));
    sigs.signatures
        .retain(|s| !(s.ref_name == ref_name.as_str() && s.signature.key_id == signature.key_id));
    sigs.signatures.push(RefSignature {
        ref_name: ref_name.to_string(),
        signature,
    });
    let dir = repo.path().join(SIGNATURES_DIR);
    fs::create_dir_all(&dir).map_err(|err| treectl_store::Error::Io {
        op: "creating",
        path: dir.clone(),
        err,
    })?;
    let mut text = serde_json::to_vec_pretty(&sigs).expect("signatures serialize");
    text.push(b'\n');
    write_atomic(
        &repo.path().join(commit_signatures_rel_path(id)),
        &text,
        repo.fsync(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_ref_binding() {
        let key = SecretKey::from_seed([7; 32]);
        let other = SecretKey::from_seed([8; 32]);
        let id = ObjectId::of(b"commit");
        let stable = RefName::new("os/stable").expect("valid");
        let testing = RefName::new("os/testing").expect("valid");
        let sigs = CommitSignatures {
            commit: id,
            signatures: vec![RefSignature {
                ref_name: stable.to_string(),
                signature: key.sign(&commit_message(&id, &stable)),
            }],
        };
        sigs.verify(&stable, &key.public()).expect("verifies");
        assert!(matches!(
            sigs.verify(&testing, &key.public()),
            Err(SignError::Unsigned { .. })
        ));
        assert!(matches!(
            sigs.verify(&stable, &other.public()),
            Err(SignError::Unsigned { .. })
        ));
        // A signature moved to another ref does not verify there.
        let mut moved = sigs.clone();
        moved.signatures[0].ref_name = testing.to_string();
        assert!(matches!(
            moved.verify(&testing, &key.public()),
            Err(SignError::BadSignature { .. })
        ));
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        let key = SecretKey::generate().expect("random");
        let pub_path = key.write_files(&path).expect("write");
        assert_eq!(pub_path, dir.path().join("key.pub"));
        let back = SecretKey::load(&path).expect("load secret");
        assert_eq!(back.public(), key.public());
        assert_eq!(
            PublicKey::load(&pub_path).expect("load public"),
            key.public()
        );
        assert!(
            PublicKey::load(&path).is_err(),
            "a secret key is not a public key"
        );
        assert!(key.write_files(&path).is_err(), "never overwrites a key");
    }
}

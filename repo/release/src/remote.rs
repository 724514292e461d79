//! Remotes and what a client trusts about them.
//!
//! A remote is a named server (and optional mirrors) that a client pulls
//! published refs from. Remotes live in the repository's `config`, one
//! `[remote.NAME]` table each (`url`, `mirrors`, `trusted-keys`), beside the
//! sections other versions may add. The *trust state* of a remote,
//! `state/remotes/NAME.json`, records the highest ref-index serial this
//! client has accepted from it and, per ref, the serial and commit it last
//! took, so a replayed older index is refused even after a restart. Pulled
//! refs land in `refs/remotes/NAME/REF` (see [`treectl_store::refs`]). Formats:
//! `docs/repository-format.md`. Fetching is the client's business; this
//! module holds no HTTP.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sign::{PublicKey, PUBLIC_KEY_TAG};
use treectl_store::config::Config;
use treectl_store::error::Error;
use treectl_store::fsutil;
use treectl_store::hash::ObjectId;
use treectl_store::refs::{self, RefName};
use treectl_store::store::{write_atomic, Repo, CONFIG_FILE, STATE_DIR};

/// The config section that holds remotes.
pub const REMOTE_SECTION: &str = "remote";
/// Where trust states live, relative to the repository.
pub const TRUST_DIR: &str = "state/remotes";
/// The newest trust state `format` this build reads.
pub const TRUST_FORMAT: u32 = 2;
/// The first format: serials and refs.
pub const TRUST_FORMAT_V1: u32 = 1;
/// Format 2 adds the key set the client follows (`key_set`): an older
/// treectl would go back to the configured keys, which a rotation may
/// have removed, so it must refuse the file instead.
pub const TRUST_FORMAT_KEYS: u32 = 2;
/// Longest remote name.
pub const MAX_REMOTE_NAME: usize = 64;

/// What can go wrong with remotes and their trust state.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid remote name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid URL {url:?} for remote {name}: only http:// and https:// URLs are supported")]
    InvalidUrl { name: String, url: String },
    #[error("remote {name} already exists; remove it first with `treectl remote remove {name}`")]
    Exists { name: String },
    #[error("no remote named {name}; add it with `treectl remote add {name} URL`")]
    NotFound { name: String },
    #[error("remote {name} in the config is malformed: {reason}")]
    Malformed { name: String, reason: String },
    #[error("trust state {} is malformed: {reason}; delete it only if you trust the remote's current index", path.display())]
    BadTrustState { path: PathBuf, reason: String },
    #[error(transparent)]
    Repo(#[from] Error),
}

/// One remote, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub url: String,
    /// Tried in order after `url` fails.
    pub mirrors: Vec<String>,
    /// With any key here, unsigned or wrongly signed content is refused.
    pub trusted_keys: Vec<PublicKey>,
}

impl Remote {
    /// `url` then the mirrors.
    pub fn sources(&self) -> Vec<String> {
        std::iter::once(self.url.clone())
            .chain(self.mirrors.iter().cloned())
            .collect()
    }
}

/// The `[remote.NAME]` table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RemoteSection {
    url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mirrors: Vec<String>,
    /// `treectl-ed25519-public <64 hex>`, as in a public key file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    trusted_keys: Vec<String>,
    #[serde(flatten)]
    rest: toml::Table,
}

/// Checks a remote name: one ref-name component, at most 64 bytes.
pub fn validate_name(name: &str) -> Result<(), RemoteError> {
    let bad = |reason| RemoteError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.len() > MAX_REMOTE_NAME {
        return Err(bad("longer than 64 bytes"));
    }
    if !refs::valid_remote_component(name) {
        return Err(bad(
            "use letters, digits and . _ - + % only, not starting with '.'",
        ));
    }
    Ok(())
}

fn validate_url(name: &str, url: &str) -> Result<(), RemoteError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(RemoteError::InvalidUrl {
            name: name.to_owned(),
            url: url.to_owned(),
        }),
    }
}

fn parse_key(remote: &str, text: &str) -> Result<PublicKey, RemoteError> {
    let bad = |reason: &str| RemoteError::Malformed {
        name: remote.to_owned(),
        reason: format!("trusted key {text:?}: {reason}"),
    };
    let hex_key = match text.split_whitespace().collect::<Vec<_>>()[..] {
        [tag, key] if tag == PUBLIC_KEY_TAG => key,
        _ => return Err(bad(&format!("expected \"{PUBLIC_KEY_TAG} <64 hex>\""))),
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes).map_err(|_| bad("not 64 hex digits"))?;
    PublicKey::from_bytes(&bytes).ok_or_else(|| bad("not an ed25519 public key"))
}

/// Reads the config from disk (not the copy the open repository holds, so
/// edits by another process are not lost).
fn read_config(repo: &Repo) -> Result<Config, RemoteError> {
    let path = repo.path().join(CONFIG_FILE);
    let text = fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    Ok(Config::parse(&text, &path)?)
}

fn sections(config: &Config) -> Result<BTreeMap<String, RemoteSection>, RemoteError> {
    let Some(value) = config.rest.get(REMOTE_SECTION) else {
        return Ok(BTreeMap::new());
    };
    let table = value.as_table().ok_or_else(|| RemoteError::Malformed {
        name: REMOTE_SECTION.to_owned(),
        reason: "[remote] is not a table".to_owned(),
    })?;
    table
        .iter()
        .map(|(name, v)| {
            let section =
                RemoteSection::deserialize(v.clone()).map_err(|e| RemoteError::Malformed {
                    name: name.clone(),
                    reason: e.message().to_owned(),
                })?;
            Ok((name.clone(), section))
        })
        .collect()
}

fn to_remote(name: &str, s: &RemoteSection) -> Result<Remote, RemoteError> {
    Ok(Remote {
        name: name.to_owned(),
        url: s.url.clone(),
        mirrors: s.mirrors.clone(),
        trusted_keys: s
            .trusted_keys
            .iter()
            .map(|k| parse_key(name, k))
            .collect::<Result<_, _>>()?,
    })
}

/// Every configured remote, sorted by name.
pub fn list_remotes(repo: &Repo) -> Result<Vec<Remote>, RemoteError> {
    sections(&read_config(repo)?)?
        .iter()
        .map(|(name, s)| to_remote(name, s))
        .collect()
}

/// The remote `name`.
pub fn get_remote(repo: &Repo, name: &str) -> Result<Remote, RemoteError> {
    let config = read_config(repo)?;
    let all = sections(&config)?;
    let s = all.get(name).ok_or_else(|| RemoteError::NotFound {
        name: name.to_owned(),
    })?;
    to_remote(name, s)
}

fn write_sections(
    repo: &Repo,
    mut config: Config,
    all: &BTreeMap<String, RemoteSection>,
) -> Result<(), RemoteError> {
    if all.is_empty() {
        config.rest.remove(REMOTE_SECTION);
    } else {
        let value = toml::Value::try_from(all).map_err(|e| RemoteError::Malformed {
            name: REMOTE_SECTION.to_owned(),
            reason: e.to_string(),
        })?;
        config.rest.insert(REMOTE_SECTION.to_owned(), value);
    }
    write_atomic(
        &repo.path().join(CONFIG_FILE),
        config.to_text().as_bytes(),
        true,
    )?;
    Ok(())
}

/// Adds a remote to the config.
pub fn add_remote(repo: &Repo, remote: &Remote) -> Result<(), RemoteError> {
    validate_name(&remote.name)?;
    for url in remote.sources() {
        validate_url(&remote.name, &url)?;
    }
    let config = read_config(repo)?;
    let mut all = sections(&config)?;
    if all.contains_key(&remote.name) {
        return Err(RemoteError::Exists {
            name: remote.name.clone(),
        });
    }
    all.insert(
        remote.name.clone(),
        RemoteSection {
            url: remote.url.trim_end_matches('/').to_owned(),
            mirrors: remote
                .mirrors
                .iter()
                .map(|m| m.trim_end_matches('/').to_owned())
                .collect(),
            trusted_keys: remote
                .trusted_keys
                .iter()
                .map(|k| k.to_text().trim_end().to_owned())
                .collect(),
            rest: toml::Table::new(),
        },
    );
    write_sections(repo, config, &all)
}

/// Removes a remote from the config, with its trust state and its
/// remote-tracking refs (what they alone needed goes at the next prune).
pub fn remove_remote(repo: &Repo, name: &str) -> Result<(), RemoteError> {
    let config = read_config(repo)?;
    let mut all = sections(&config)?;
    if all.remove(name).is_none() {
        return Err(RemoteError::NotFound {
            name: name.to_owned(),
        });
    }
    write_sections(repo, config, &all)?;
    let refs_dir = refs::remotes_dir(repo).join(name);
    match fs::remove_dir_all(&refs_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing", &refs_dir)(e).into()),
    }
    let state = trust_path(repo, name);
    match fs::remove_file(&state) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", &state)(e).into()),
    }
}

/// What was last accepted for one ref.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedRef {
    /// The ref's serial in the accepted index.
    pub serial: u64,
    pub commit: ObjectId,
    /// The commits the accepted index rejects on this ref (reverted away
    /// from): a client never deploys one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<crate::summary::Rejection>,
}

/// `state/remotes/NAME.json`: the newest index this client accepted from a
/// remote. Serials never go down: an index with a lower serial, or one with
/// the same serial but other content, is a replay and is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustState {
    pub format: u32,
    /// The accepted index's serial (0: none accepted yet).
    pub serial: u64,
    /// SHA-256 (hex) of the accepted index's payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_sha256: Option<String>,
    /// The accepted index's `generated` time.
    #[serde(default)]
    pub generated: i64,
    /// Per pulled ref.
    #[serde(default)]
    pub refs: BTreeMap<String, TrustedRef>,
    /// The newest key set this client accepted from the remote, reached
    /// from its configured keys through verified rotations: from then on
    /// only its keys sign, and an older key set is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_set: Option<crate::keyset::KeySet>,
}

/// The trust state file of remote `name`.
pub fn trust_path(repo: &Repo, name: &str) -> PathBuf {
    repo.path().join(TRUST_DIR).join(format!("{name}.json"))
}

impl TrustState {
    /// Reads the trust state; a remote never pulled from has the default.
    pub fn load(repo: &Repo, name: &str) -> Result<TrustState, RemoteError> {
        validate_name(name)?;
        let path = trust_path(repo, name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(TrustState {
                    format: TRUST_FORMAT_V1,
                    ..TrustState::default()
                })
            }
            Err(e) => return Err(Error::io("reading", &path)(e).into()),
        };
        let bad = |reason: String| RemoteError::BadTrustState {
            path: path.clone(),
            reason,
        };
        let state: TrustState = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if state.format > TRUST_FORMAT {
            return Err(bad(format!(
                "format {} is newer than this treectl reads ({TRUST_FORMAT})",
                state.format
            )));
        }
        Ok(state)
    }

    /// Writes the trust state atomically and durably.
    pub fn save(&self, repo: &Repo, name: &str) -> Result<(), RemoteError> {
        validate_name(name)?;
        let mut state = self.clone();
        state.format = if state.key_set.is_some() {
            TRUST_FORMAT_KEYS
        } else {
            state.format.max(TRUST_FORMAT_V1)
        };
        let dir = repo.path().join(TRUST_DIR);
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
            let state = repo.path().join(STATE_DIR);
            fsutil::fsync_dir(&state).map_err(Error::io("syncing", &state))?;
        }
        let mut text = serde_json::to_vec_pretty(&state).expect("trust state serializes");
        text.push(b'\n');
        write_atomic(&trust_path(repo, name), &text, true)?;
        Ok(())
    }
}

/// Points the remote-tracking ref `REMOTE:NAME` at `id`, atomically and
/// durably. The caller makes sure `id`'s whole closure is in the store and
/// holds the repository lock (shared), so prune cannot race it.
pub fn write_remote_ref(
    repo: &Repo,
    remote: &str,
    name: &RefName,
    id: &ObjectId,
) -> Result<(), RemoteError> {
    validate_name(remote)?;
    let path = refs::remote_ref_path(repo, remote, name);
    let dir = path.parent().expect("ref path has a parent");
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        // New directories must be durable for the ref in them to be.
        let mut d = dir;
        let top = refs::remotes_dir(repo);
        while let Some(parent) = d.parent() {
            fsutil::fsync_dir(parent).map_err(Error::io("syncing", parent))?;
            if parent == top || !parent.starts_with(&top) {
                break;
            }
            d = parent;
        }
    }
    write_atomic(&path, format!("{id}\n").as_bytes(), repo.fsync())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SecretKey;
    use treectl_store::RepoMode;

    #[test]
    fn names() {
        for good in ["origin", "my-mirror.1", "a"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", ".x", "a:b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_list_remove_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&tmp.path().join("r"), RepoMode::BareUser).expect("init");
        let key = SecretKey::from_seed([3; 32]).public();
        let remote = Remote {
            name: "origin".into(),
            url: "http://127.0.0.1:8080/".into(),
            mirrors: vec!["https://mirror.example/repo".into()],
            trusted_keys: vec![key],
        };
        add_remote(&repo, &remote).expect("add");
        assert!(matches!(
            add_remote(&repo, &remote),
            Err(RemoteError::Exists { .. })
        ));
        let got = get_remote(&repo, "origin").expect("get");
        assert_eq!(got.url, "http://127.0.0.1:8080");
        assert_eq!(got.trusted_keys, vec![key]);
        assert_eq!(list_remotes(&repo).expect("list").len(), 1);
        // The repository still opens: the core section is intact.
        Repo::open(repo.path()).expect("reopen");
        let bad = Remote {
            name: "x".into(),
            url: "ftp://x".into(),
            mirrors: vec![],
            trusted_keys: vec![],
        };
        assert!(matches!(
            add_remote(&repo, &bad),
            Err(RemoteError::InvalidUrl { .. })
        ));
        remove_remote(&repo, "origin").expect("remove");
        assert!(matches!(
            get_remote(&repo, "origin"),
            Err(RemoteError::NotFound { .. })
        ));
    }

    #[test]
    fn trust_state_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(&tmp.path().join("r"), RepoMode::BareUser).expect("init");
        let fresh = TrustState::load(&repo, "origin").expect("default");
        assert_eq!(fresh.serial, 0);
        let mut state = fresh.clone();
        state.serial = 7;
        state.refs.insert(
            "os/stable".into(),
            TrustedRef {
                serial: 5,
                commit: ObjectId::of(b"c"),
                rejected: vec![],
            },
        );
        state.save(&repo, "origin").expect("save");
        assert_eq!(TrustState::load(&repo, "origin").expect("load"), state);
        // Following a key set makes the file format 2, which a reader of
        // format 1 refuses instead of falling back to the configured keys.
        let key = SecretKey::from_seed([4; 32]).public();
        state.key_set = Some(crate::keyset::KeySet::new(2, 1, &[key]).expect("set"));
        state.save(&repo, "origin").expect("save");
        let back = TrustState::load(&repo, "origin").expect("load");
        assert_eq!(back.format, TRUST_FORMAT_KEYS);
        assert_eq!(back.key_set, state.key_set);
        let path = trust_path(&repo, "origin");
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, text.replace("\"format\": 2", "\"format\": 3")).expect("write");
        let err = TrustState::load(&repo, "origin").expect_err("newer format");
        assert!(
            err.to_string()
                .contains("format 3 is newer than this treectl reads (2)"),
            "{err}"
        );
    }
}

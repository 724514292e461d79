//! The repository `config` file.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The repository format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How file objects are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepoMode {
    /// zstd-compressed file objects with the header in front: what servers
    /// and mirrors hold.
    Archive,
    /// Plain files that checkouts hardlink; the header is kept in the
    /// `user.treectl.meta` extended attribute, so no root is needed.
    BareUser,
}

impl RepoMode {
    pub fn name(self) -> &'static str {
        match self {
            RepoMode::Archive => "archive",
            RepoMode::BareUser => "bare-user",
        }
    }
}

impl fmt::Display for RepoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RepoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "archive" => Ok(RepoMode::Archive),
            "bare-user" => Ok(RepoMode::BareUser),
            _ => Err(format!(
                "unknown repository mode {s:?} (archive or bare-user)"
            )),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Core {
    pub format_version: u32,
    pub mode: RepoMode,
    /// Flush data to disk before objects and refs become visible.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub rest: toml::Table,
}

fn yes() -> bool {
    true
}

/// The parsed `config`. Sections this version does not know are kept, so
/// rewriting the file never drops them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub core: Core,
    #[serde(flatten)]
    pub rest: toml::Table,
}

impl Config {
    pub fn new(mode: RepoMode) -> Config {
        Config {
            core: Core {
                format_version: FORMAT_VERSION,
                mode,
                fsync: true,
                rest: toml::Table::new(),
            },
            rest: toml::Table::new(),
        }
    }

    /// Parses the config, refusing a newer format version before anything else.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let bad = |reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| bad(e.message().to_owned()))?;
        let version = table
            .get("core")
            .and_then(|c| c.get("format-version"))
            .and_then(|v| v.as_integer())
            .ok_or_else(|| bad("missing core.format-version".into()))?;
        if version > FORMAT_VERSION as i64 {
            return Err(Error::UnsupportedVersion {
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        if version < 1 {
            return Err(bad(format!("format-version {version} is not valid")));
        }
        Config::deserialize(table).map_err(|e| bad(e.message().to_owned()))
    }

    pub fn to_text(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_unknown_sections() {
        let text = "[core]\nformat-version = 1\nmode = \"archive\"\n\n[remote.origin]\nurl = \"http://x\"\n";
        let c = Config::parse(text, Path::new("config")).unwrap();
        assert_eq!(c.core.mode, RepoMode::Archive);
        assert!(c.core.fsync);
        let again = Config::parse(&c.to_text(), Path::new("config")).unwrap();
        assert!(again.rest.contains_key("remote"));
    }

    #[test]
    fn refuses_newer_version() {
        let text = "[core]\nformat-version = 2\nmode = \"archive\"\n";
        match Config::parse(text, Path::new("config")) {
            Err(Error::UnsupportedVersion { found: 2, .. }) => {}
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }
}

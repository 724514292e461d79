//! The components metadata schema: what a composed commit records about
//! the components it was made from (`compose.components`, JSON), and the
//! differences between two such lists. Deployments read it for `status`
//! and component diffs without knowing anything about lockfiles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Commit metadata of a composed tree: its components, as JSON.
pub const META_COMPONENTS: &str = "compose.components";
/// Commit metadata: sha256 of the lockfile text composed.
pub const META_LOCKFILE_SHA256: &str = "compose.lockfile-sha256";

/// A component as recorded in a composed commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComposedComponent {
    pub name: String,
    pub version: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub commit: String,
}

/// One difference between two component lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub kind: &'static str,
    pub old_version: Option<String>,
    pub new_version: Option<String>,
    pub old_digest: Option<String>,
    pub new_digest: Option<String>,
    pub old_commit: Option<String>,
    pub new_commit: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |o: &Option<String>| o.clone().unwrap_or_default();
        match self.kind {
            "added" => write!(f, "added {} {}", self.name, v(&self.new_version)),
            "removed" => write!(f, "removed {} {}", self.name, v(&self.old_version)),
            _ if self.old_version == self.new_version => write!(
                f,
                "{} {}: rebuilt ({} -> {})",
                self.name,
                v(&self.new_version),
                short(&self.old_digest),
                short(&self.new_digest)
            ),
            _ => write!(
                f,
                "{} {} -> {}",
                self.name,
                v(&self.old_version),
                v(&self.new_version)
            ),
        }
    }
}

fn short(d: &Option<String>) -> String {
    d.as_deref()
        .map(|d| d[..d.len().min(12)].to_owned())
        .unwrap_or_default()
}

/// The changes between two component lists, in the new list's order
/// (removed ones last).
pub fn diff_components(old: &[ComposedComponent], new: &[ComposedComponent]) -> Vec<Change> {
    let olds: BTreeMap<&str, &ComposedComponent> =
        old.iter().map(|c| (c.name.as_str(), c)).collect();
    let news: BTreeMap<&str, &ComposedComponent> =
        new.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut out = Vec::new();
    for n in new {
        match olds.get(n.name.as_str()) {
            None => out.push(Change {
                name: n.name.clone(),
                kind: "added",
                old_version: None,
                new_version: Some(n.version.clone()),
                old_digest: None,
                new_digest: n.digest.clone(),
                old_commit: None,
                new_commit: Some(n.commit.clone()),
            }),
            Some(o) if o.version != n.version || o.digest != n.digest || o.commit != n.commit => {
                out.push(Change {
                    name: n.name.clone(),
                    kind: "changed",
                    old_version: Some(o.version.clone()),
                    new_version: Some(n.version.clone()),
                    old_digest: o.digest.clone(),
                    new_digest: n.digest.clone(),
                    old_commit: Some(o.commit.clone()),
                    new_commit: Some(n.commit.clone()),
                })
            }
            Some(_) => {}
        }
    }
    for o in old {
        if !news.contains_key(o.name.as_str()) {
            out.push(Change {
                name: o.name.clone(),
                kind: "removed",
                old_version: Some(o.version.clone()),
                new_version: None,
                old_digest: o.digest.clone(),
                new_digest: None,
                old_commit: Some(o.commit.clone()),
                new_commit: None,
            });
        }
    }
    out
}

/// The components a composed commit records; `None` for other commits.
pub fn commit_components(
    commit: &treectl_store::object::Commit,
) -> Option<Result<Vec<ComposedComponent>, String>> {
    commit.metadata.get(META_COMPONENTS).map(|j| {
        serde_json::from_str(j).map_err(|e| format!("bad {META_COMPONENTS} metadata: {e}"))
    })
}

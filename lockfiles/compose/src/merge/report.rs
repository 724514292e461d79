//! What a compose reports: the conflicts that fail it, and the
//! [`ComposeStats`] of one that succeeds (dirmeta differences, overrides
//! used, removals, and how much was merged or reused). The compose cache
//! stores the reports of each merged directory, so these types are also
//! part of its file format.

use serde::Serialize;

/// Two components ship different things at one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub path: String,
    pub first: String,
    pub second: String,
    /// `content` (two different files) or `type` (file vs directory).
    pub kind: &'static str,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} differs: {} and {})",
            self.path, self.kind, self.first, self.second
        )
    }
}

/// A directory whose metadata differed between components.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DirMetaDifference {
    pub path: String,
    /// The component whose metadata was replaced.
    pub was: String,
    /// The component whose metadata the directory now has.
    pub now: String,
}

/// What a compose did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ComposeStats {
    /// Directories opened and merged (shared by two or more components).
    pub merged_dirs: usize,
    /// Subtrees spliced in by id without being read (component subtrees
    /// and merged subtrees found in the compose cache).
    pub reused_subtrees: usize,
    /// Merged subtrees taken from the compose cache.
    pub cached_subtrees: usize,
    /// Identical files shipped by more than one component.
    pub identical_duplicates: usize,
    /// Paths decided by `[[compose.override]]`.
    pub overridden: Vec<String>,
    pub dirmeta_differences: Vec<DirMetaDifference>,
    /// Paths removed by the `remove` patterns.
    pub removed: Vec<String>,
}

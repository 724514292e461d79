//! The `remove` patterns, applied to the merged tree once every conflict
//! is known not to have happened: `/`-separated components where `*` and
//! `?` match within one name, so `/var/*` empties `/var` but keeps it.
//! Only directories a pattern reaches into are opened.

use super::engine::{join, Composer, DirNode, Node};
use crate::ComposeError as Error;

impl Composer<'_> {
    /// Removes what `pattern` matches below `root`, recording each path.
    pub(super) fn remove(&mut self, root: &mut DirNode, pattern: &str) -> Result<(), Error> {
        let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        if comps.is_empty() {
            return Ok(());
        }
        self.remove_in(root, &comps, "")
    }

    fn remove_in(&mut self, dir: &mut DirNode, comps: &[&str], path: &str) -> Result<(), Error> {
        let names: Vec<Vec<u8>> = dir
            .entries
            .keys()
            .filter(|n| glob_match(comps[0].as_bytes(), n))
            .cloned()
            .collect();
        for name in names {
            let p = join(path, &name);
            if comps.len() == 1 {
                dir.entries.remove(&name);
                self.stats.removed.push(p);
                continue;
            }
            let Some(node) = dir.entries.remove(&name) else {
                continue;
            };
            let node = if matches!(node, Node::Tree { .. }) {
                self.expand(node)?
            } else {
                node
            };
            let node = match node {
                Node::Dir(mut d) => {
                    self.remove_in(&mut d, &comps[1..], &p)?;
                    Node::Dir(d)
                }
                other => other,
            };
            dir.entries.insert(name, node);
        }
        Ok(())
    }
}

/// `*` matches any run of bytes, `?` one byte; nothing else is special.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"ssh_host_*", b"ssh_host_rsa_key"));
        assert!(glob_match(b"*", b"anything"));
        assert!(!glob_match(b"ssh_host_*", b"sshd_config"));
        assert!(glob_match(b"machine-id", b"machine-id"));
        assert!(!glob_match(b"machine-id", b"machine-id2"));
        assert!(glob_match(b"lib?", b"lib6"));
        assert!(!glob_match(b"lib?", b"lib"));
    }
}

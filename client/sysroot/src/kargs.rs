//! Kernel arguments: viewing and editing those of the next boot.
//!
//! Each deployment carries its kernel arguments (`root=` and the rest;
//! `treectl=` is added by treectl). An edit never changes an existing
//! deployment: like `rpm-ostree kargs`, it makes a new deployment of the
//! same commit with the edited arguments, which becomes the default (or
//! replaces the staged deployment, when one waits for `finalize-staged`),
//! so the previous arguments stay bootable as the rollback deployment.
//! The new entry starts with boot counting like any new deployment.
//!
//! ```
//! use treectl_sysroot::kargs::KargsEdit;
//! let edit = KargsEdit {
//!     append: vec!["console=ttyS0".into()],
//!     replace: vec!["root=UUID=a=UUID=b".into()],
//!     delete: vec!["quiet".into()],
//!     ..KargsEdit::default()
//! };
//! let now = ["root=UUID=a".to_owned(), "quiet".to_owned()];
//! assert_eq!(edit.apply(&now).unwrap(), ["root=UUID=b", "console=ttyS0"]);
//! ```

use serde::Serialize;

use crate::deploy::{commit_id, deploy_commit, next_boot, Switch};
use crate::finalize::read_staged_file;
use crate::state::{read_state, Deployment};
use crate::{Result, Sysroot, SysrootError, KARG};

/// Why an edit cannot apply. Nothing is changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum KargsError {
    #[error("kernel argument {arg:?} {reason}")]
    Invalid { arg: String, reason: &'static str },
    #[error("{KARG}= names the deployment to boot and is written by treectl itself; it cannot be edited")]
    Reserved,
    #[error("no kernel argument {arg} to {action}: `treectl kargs` lists them")]
    NotFound { action: &'static str, arg: String },
    #[error("{key} appears {count} times: name the one to {action} as {key}=VALUE")]
    Ambiguous {
        action: &'static str,
        key: String,
        count: usize,
    },
    #[error("--replace takes KEY=VALUE or KEY=OLD=NEW, not {0:?}")]
    BadReplace(String),
}

/// The key of a kernel argument: the part before the first `=`.
pub fn key_of(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(k, _)| k)
}

/// Checks one argument: not empty, a key, no whitespace or control
/// characters (each argument is one word of the entry's `options` line),
/// and not `treectl=`.
pub fn validate(arg: &str) -> Result<(), KargsError> {
    let invalid = |reason| {
        Err(KargsError::Invalid {
            arg: arg.to_owned(),
            reason,
        })
    };
    if arg.is_empty() {
        return invalid("is empty");
    }
    if arg.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("contains whitespace or a control character (quoting is not supported)");
    }
    if key_of(arg).is_empty() {
        return invalid("has no key before '='");
    }
    if key_of(arg) == KARG {
        return Err(KargsError::Reserved);
    }
    Ok(())
}

/// One edit of a deployment's kernel arguments, in the manner of
/// `rpm-ostree kargs`. Applied in this order: deletions, replacements,
/// appends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KargsEdit {
    /// Appended at the end, even when already present (`console=` may
    /// repeat).
    pub append: Vec<String>,
    /// Appended unless exactly this argument is present.
    pub append_if_missing: Vec<String>,
    /// `KEY=VALUE` removes that argument; `KEY` removes the one argument
    /// with that key (an error when there are several or none).
    pub delete: Vec<String>,
    /// Like `delete`, without the error when it is absent.
    pub delete_if_present: Vec<String>,
    /// `KEY=OLD=NEW` replaces `KEY=OLD`; `KEY=NEW` replaces the one
    /// argument with that key (a `NEW` holding `=` is read as `OLD=NEW`,
    /// unless the present value holds `=` too, as `root=UUID=…` does).
    pub replace: Vec<String>,
}

impl KargsEdit {
    pub fn is_empty(&self) -> bool {
        self == &KargsEdit::default()
    }

    /// The arguments after the edit, or why it cannot apply.
    pub fn apply(&self, kargs: &[String]) -> Result<Vec<String>, KargsError> {
        let mut out = kargs.to_vec();
        for (args, required) in [(&self.delete, true), (&self.delete_if_present, false)] {
            for arg in args {
                delete(&mut out, arg, required)?;
            }
        }
        for spec in &self.replace {
            replace(&mut out, spec)?;
        }
        for arg in &self.append {
            validate(arg)?;
            out.push(arg.clone());
        }
        for arg in &self.append_if_missing {
            validate(arg)?;
            if !out.contains(arg) {
                out.push(arg.clone());
            }
        }
        Ok(out)
    }
}

/// Indexes of the arguments with key `key`.
fn with_key(kargs: &[String], key: &str) -> Vec<usize> {
    (0..kargs.len())
        .filter(|&i| key_of(&kargs[i]) == key)
        .collect()
}

fn delete(kargs: &mut Vec<String>, arg: &str, required: bool) -> Result<(), KargsError> {
    if key_of(arg) == KARG {
        return Err(KargsError::Reserved);
    }
    let before = kargs.len();
    if arg.contains('=') {
        kargs.retain(|a| a != arg);
    } else {
        match with_key(kargs, arg)[..] {
            [] => {}
            [i] => {
                kargs.remove(i);
            }
            ref many => {
                return Err(KargsError::Ambiguous {
                    action: "delete",
                    key: arg.to_owned(),
                    count: many.len(),
                })
            }
        }
    }
    if required && kargs.len() == before {
        return Err(KargsError::NotFound {
            action: "delete",
            arg: arg.to_owned(),
        });
    }
    Ok(())
}

fn replace(kargs: &mut [String], spec: &str) -> Result<(), KargsError> {
    let Some((key, rest)) = spec.split_once('=') else {
        return Err(KargsError::BadReplace(spec.to_owned()));
    };
    if key.is_empty() {
        return Err(KargsError::BadReplace(spec.to_owned()));
    }
    if key == KARG {
        return Err(KargsError::Reserved);
    }
    let found = with_key(kargs, key);
    // KEY=OLD=NEW: OLD is one of the present values (values may hold '=',
    // as root=UUID=…, so they are matched rather than split).
    let old_new = found.iter().find_map(|&i| {
        let value = kargs[i].split_once('=').map_or("", |(_, v)| v);
        let new = rest.strip_prefix(value)?.strip_prefix('=')?;
        Some((i, new))
    });
    // KEY=NEW: the one argument with that key. A NEW holding '=' reads
    // as OLD=NEW (OLD absent) unless the present value holds '=' too.
    let value_of = |i: usize| kargs[i].split_once('=').map_or("", |(_, v)| v);
    let (i, new) = match (old_new, &found[..]) {
        (Some(hit), _) => hit,
        (None, [i]) if !rest.contains('=') || value_of(*i).contains('=') => (*i, rest),
        (None, [_]) => {
            let old = rest.split_once('=').map_or(rest, |(o, _)| o);
            return Err(KargsError::NotFound {
                action: "replace",
                arg: format!("{key}={old}"),
            });
        }
        (None, []) => {
            return Err(KargsError::NotFound {
                action: "replace",
                arg: key.to_owned(),
            })
        }
        (None, many) => {
            return Err(KargsError::Ambiguous {
                action: "replace",
                key: key.to_owned(),
                count: many.len(),
            })
        }
    };
    let arg = format!("{key}={new}");
    validate(&arg)?;
    kargs[i] = arg;
    Ok(())
}

/// What `treectl kargs` shows or made.
#[derive(Clone, Debug, Serialize)]
pub struct KargsOutcome {
    /// The deployment whose arguments these are: the one the next boot
    /// starts, or the one an edit made.
    pub deployment: Deployment,
    /// It is the staged deployment (`finalize-staged` makes it the
    /// default).
    pub staged: bool,
    /// An edit made a new deployment (false: shown, or the edit changed
    /// nothing).
    pub changed: bool,
}

/// Shows (an empty `edit`) or edits the kernel arguments of the
/// deployment the next boot starts ([`next_boot`]). An edit that changes
/// something deploys the same commit again with the new arguments: as the
/// new default, or as the new staged deployment when one is staged.
pub fn kargs(sysroot: &Sysroot, edit: &KargsEdit) -> Result<KargsOutcome> {
    let _lock = if edit.is_empty() {
        None
    } else {
        Some(sysroot.lock()?)
    };
    let state = read_state(sysroot)?;
    let staged = read_staged_file(sysroot)?;
    let base = next_boot(sysroot, &state, staged.as_ref().map(|s| &s.deployment))?
        .ok_or_else(|| SysrootError::NotInstalled(sysroot.root().to_owned()))?;
    let is_staged = staged.is_some();
    let unchanged = |deployment| KargsOutcome {
        deployment,
        staged: is_staged,
        changed: false,
    };
    if edit.is_empty() {
        return Ok(unchanged(base));
    }
    let new = edit.apply(&base.kargs)?;
    if new == base.kargs {
        return Ok(unchanged(base));
    }
    let commit = commit_id(sysroot, &base)?;
    let (switch, clear_floor) = match &staged {
        Some(s) => (Switch::Stage, s.clear_floor),
        None => (Switch::Now, false),
    };
    let deployment = deploy_commit(
        sysroot,
        &commit,
        base.origin.clone(),
        base.order.serial,
        switch,
        clear_floor,
        Some(new),
    )?;
    Ok(KargsOutcome {
        deployment,
        staged: is_staged,
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(f: impl FnOnce(&mut KargsEdit)) -> KargsEdit {
        let mut e = KargsEdit::default();
        f(&mut e);
        e
    }

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn edits_apply_like_rpm_ostree_kargs() {
        let now = v(&[
            "root=UUID=a",
            "console=tty0",
            "console=ttyS0",
            "quiet",
            "x=1",
        ]);
        let s = |x: &str| x.to_owned();
        let cases: Vec<(KargsEdit, Vec<String>)> = vec![
            (
                edit(|e| e.append = v(&["console=ttyS1", "quiet"])),
                v(&[
                    "root=UUID=a",
                    "console=tty0",
                    "console=ttyS0",
                    "quiet",
                    "x=1",
                    "console=ttyS1",
                    "quiet",
                ]),
            ),
            (
                edit(|e| e.append_if_missing = v(&["quiet", "debug"])),
                v(&[
                    "root=UUID=a",
                    "console=tty0",
                    "console=ttyS0",
                    "quiet",
                    "x=1",
                    "debug",
                ]),
            ),
            (
                edit(|e| e.delete = v(&["console=tty0", "quiet", "x"])),
                v(&["root=UUID=a", "console=ttyS0"]),
            ),
            (
                edit(|e| e.delete_if_present = v(&["nosuch", "x=2"])),
                now.clone(),
            ),
            (
                edit(|e| e.replace = v(&["root=UUID=a=UUID=b", "console=ttyS0=ttyS1", "x=2"])),
                v(&[
                    "root=UUID=b",
                    "console=tty0",
                    "console=ttyS1",
                    "quiet",
                    "x=2",
                ]),
            ),
            (
                edit(|e| e.replace = vec![s("root=LABEL=os")]),
                v(&[
                    "root=LABEL=os",
                    "console=tty0",
                    "console=ttyS0",
                    "quiet",
                    "x=1",
                ]),
            ),
            (
                edit(|e| e.replace = vec![s("root=/dev/vda2")]),
                v(&[
                    "root=/dev/vda2",
                    "console=tty0",
                    "console=ttyS0",
                    "quiet",
                    "x=1",
                ]),
            ),
            // Deletions before replacements before appends.
            (
                edit(|e| {
                    e.append = vec![s("x=3")];
                    e.replace = vec![s("x=2")];
                    e.delete = vec![s("console=tty0")];
                }),
                v(&["root=UUID=a", "console=ttyS0", "quiet", "x=2", "x=3"]),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.apply(&now).unwrap(), want, "{e:?}");
        }
    }

    #[test]
    fn edits_that_cannot_apply_say_why() {
        let now = v(&["console=tty0", "console=ttyS0", "quiet"]);
        let cases: Vec<(KargsEdit, &str)> = vec![
            (
                edit(|e| e.delete = v(&["nosuch"])),
                "no kernel argument nosuch to delete",
            ),
            (
                edit(|e| e.delete = v(&["quiet=1"])),
                "no kernel argument quiet=1 to delete",
            ),
            (
                edit(|e| e.delete = v(&["console"])),
                "console appears 2 times",
            ),
            (
                edit(|e| e.replace = v(&["console=tty1"])),
                "console appears 2 times",
            ),
            (
                edit(|e| e.replace = v(&["nosuch=1"])),
                "no kernel argument nosuch to replace",
            ),
            (
                edit(|e| e.replace = v(&["quiet"])),
                "--replace takes KEY=VALUE",
            ),
            (
                edit(|e| e.replace = v(&["quiet=1=2"])),
                "no kernel argument quiet=1 to replace",
            ),
            (edit(|e| e.append = v(&["a b"])), "contains whitespace"),
            (edit(|e| e.append = v(&[""])), "is empty"),
            (edit(|e| e.append = v(&["=x"])), "has no key"),
            (
                edit(|e| e.append = v(&["treectl=/x"])),
                "written by treectl itself",
            ),
            (
                edit(|e| e.delete = v(&["treectl"])),
                "written by treectl itself",
            ),
            (
                edit(|e| e.replace = v(&["treectl=/y"])),
                "written by treectl itself",
            ),
        ];
        for (e, want) in cases {
            let err = e.apply(&now).unwrap_err().to_string();
            assert!(err.contains(want), "{e:?}: {err}");
        }
    }
}

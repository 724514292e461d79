//! The configure step: turns a merged tree of Debian packages into a
//! working system, as debootstrap and mmdebstrap do, reproducibly.
//!
//! It works on a writable checkout of the merged tree (the caller checks it
//! out and commits the result):
//!
//! 1. every timestamp in the tree is the compose timestamp (the checkout
//!    sets them; checked on the tree's root), so what scripts derive from
//!    mtimes (`.pyc` headers) does not depend on when it was made;
//! 2. [`dpkg_db`] writes the dpkg database: every package `unpacked`;
//! 3. in the [`sandbox`], with a `policy-rc.d` that refuses every service
//!    start: each package's `preinst install`, in dependency order
//!    ([`install_order`]), then the tree's own `dpkg --configure -a` (which
//!    runs every `postinst configure` in dpkg's order, and the triggers);
//! 4. [`finish`] fits the result to the deployment model.
//!
//! Rules for scripts that are not deterministic live in [`finish`] and are
//! listed in `docs/lockfile.md` ("Configure").

pub mod cache;
pub mod dpkg_db;
pub mod finish;
pub mod sandbox;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use treectl_store::{ObjectId, Repo};

use sandbox::Sandbox;

/// Why configuring failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// A maintainer script (or dpkg running it) failed. `tail` holds the
    /// last lines of its output, for the log.
    #[error("package {package}: {script} failed with {status}")]
    Script {
        package: String,
        script: String,
        status: String,
        tail: String,
    },
    #[error("the configure sandbox: {reason}")]
    Sandbox { reason: String },
    #[error("component {component}: {reason}")]
    Package { component: String, reason: String },
    #[error("the tree to configure: {reason}")]
    Tree { reason: String },
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] treectl_store::Error),
}

impl ConfigureError {
    pub(crate) fn io<'p>(
        op: &'static str,
        path: &'p Path,
    ) -> impl FnOnce(std::io::Error) -> ConfigureError + 'p {
        move |source| ConfigureError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Bumped whenever the step's output for the same input changes (it is part
/// of the configure cache key).
pub const CONFIGURE_VERSION: u32 = 3;
/// Metadata key of a configured commit: the [`ConfigureReport`] as JSON
/// (the dpkg version, the scripts that ran, the kernels indexed).
pub const META_CONFIGURE: &str = "compose.configure";
/// Metadata key of a configured commit: `true`.
pub const META_CONFIGURED: &str = "compose.configured";
/// Where the refusing `policy-rc.d` is put while scripts run.
pub const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";

/// One Debian package of the composed tree: its component, its tree (for
/// the `.list`) and its kept control members (`control`, scripts, ...).
#[derive(Clone, Debug)]
pub struct DebPackage {
    pub component: String,
    /// The component's commit (its id covers the tree and control data).
    pub commit: ObjectId,
    pub tree: ObjectId,
    pub members: BTreeMap<String, Vec<u8>>,
}

impl DebPackage {
    /// The `control` member as text.
    pub fn control(&self) -> String {
        self.member_text("control").unwrap_or_default()
    }

    /// A member as text, when the package has it.
    pub fn member_text(&self, member: &str) -> Option<String> {
        self.members
            .get(member)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The `Package` field (the component name when missing).
    pub fn package(&self) -> &str {
        self.members
            .get("control")
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|c| dpkg_db::field(c, "Package"))
            .unwrap_or(&self.component)
    }
}

/// How to configure.
#[derive(Clone, Debug)]
pub struct ConfigureOptions {
    /// The compose timestamp: `SOURCE_DATE_EPOCH` and every mtime.
    pub timestamp: i64,
    /// The lockfile's `remove` patterns, applied when finishing.
    pub remove: Vec<String>,
}

/// What configuring did; recorded in the composed commit's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigureReport {
    /// `dpkg-query --version`'s version of the tree's dpkg.
    pub dpkg_version: String,
    /// The scripts that ran, in order: `<package> preinst`, then
    /// `<package> postinst` for every package dpkg configured with one.
    pub scripts: Vec<String>,
    /// Kernels whose modules were indexed by depmod.
    pub kernels: Vec<String>,
    /// Entries written to the `/var` tmpfiles.d file.
    pub tmpfiles_entries: usize,
    /// The initramfs made for each kernel (`[initramfs]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initramfs: Vec<InitramfsReport>,
}

/// One kernel's initramfs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitramfsReport {
    pub kernel: String,
    /// The commit of the initramfs tree (exported as `initramfs.img`).
    pub commit: String,
    /// The modules `/init` loads, in order.
    pub modules: Vec<String>,
    /// The size of `initramfs.img` in bytes.
    pub size: u64,
}

/// The order to run `preinst` in: every package after what it
/// (Pre-)Depends on inside the set; ties and cycles broken by name.
pub fn install_order(packages: &[DebPackage]) -> Vec<usize> {
    let names: BTreeMap<&str, usize> = packages
        .iter()
        .enumerate()
        .map(|(i, p)| (p.package(), i))
        .collect();
    let deps: Vec<BTreeSet<usize>> = packages
        .iter()
        .map(|p| {
            let c = p.control();
            let mut out = BTreeSet::new();
            for f in ["Pre-Depends", "Depends"] {
                for alt in dpkg_db::field(&c, f).unwrap_or_default().split([',', '|']) {
                    let name = alt.split(['(', ':', ' ']).find(|s| !s.is_empty());
                    if let Some(&j) = name.and_then(|n| names.get(n.trim())) {
                        out.insert(j);
                    }
                }
            }
            out
        })
        .collect();
    let mut done = vec![false; packages.len()];
    let mut order = Vec::with_capacity(packages.len());
    while order.len() < packages.len() {
        let ready = names
            .values()
            .copied()
            .find(|&i| !done[i] && deps[i].iter().all(|&d| done[d] || d == i));
        // A cycle: take the first package by name that is left.
        let next = ready.unwrap_or_else(|| {
            names
                .values()
                .copied()
                .find(|&i| !done[i])
                .expect("a package is left while the order is short")
        });
        done[next] = true;
        order.push(next);
    }
    order
}

/// Configures the tree at `root`: a writable checkout of the merged tree
/// of `packages` and maybe other components, every timestamp in it the
/// compose timestamp (`CheckoutOptions::mtime`), so that scripts comparing
/// times see the same ones in every compose.
pub fn configure(
    repo: &Repo,
    root: &Path,
    packages: &[DebPackage],
    opts: &ConfigureOptions,
) -> Result<ConfigureReport, ConfigureError> {
    if !Sandbox::available() {
        return Err(ConfigureError::Sandbox {
            reason: format!(
                "{} cannot be run; install the Debian package bubblewrap, or set `[compose] configure = false`",
                sandbox::BWRAP
            ),
        });
    }
    for p in packages {
        if !p.members.contains_key("control") {
            return Err(ConfigureError::Package {
                component: p.component.clone(),
                reason:
                    "its commit has no control data (imported by an older treectl); import it again"
                        .into(),
            });
        }
    }
    let root_mtime = root
        .symlink_metadata()
        .map_err(ConfigureError::io("reading", root))?
        .mtime();
    if root_mtime != opts.timestamp {
        return Err(ConfigureError::Tree {
            reason: format!(
                "{} has mtime {root_mtime}, not the compose timestamp {}: check it out with that mtime",
                root.display(),
                opts.timestamp
            ),
        });
    }
    dpkg_db::write_database(repo, root, packages)?;
    let policy = root.join(POLICY_RC_D);
    write_policy_rc_d(&policy)?;
    let sandbox = Sandbox::new(root, opts.timestamp);
    let mut report = ConfigureReport {
        dpkg_version: dpkg_version(&sandbox)?,
        ..Default::default()
    };
    let preinsts: Vec<&DebPackage> = install_order(packages)
        .into_iter()
        .map(|i| &packages[i])
        .filter(|p| p.members.contains_key("preinst"))
        .collect();
    run_preinsts(&sandbox, &preinsts, &report.dpkg_version)?;
    report
        .scripts
        .extend(preinsts.iter().map(|p| format!("{} preinst", p.package())));
    let placeholders = ssh_key_placeholders(root, &opts.remove)?;
    let out = sandbox.run(&["dpkg", "--configure", "-a"])?;
    if !out.success {
        return Err(dpkg_failure(&out));
    }
    let mut postinst: Vec<&str> = packages
        .iter()
        .filter(|p| p.members.contains_key("postinst"))
        .map(DebPackage::package)
        .collect();
    postinst.sort_unstable();
    report
        .scripts
        .extend(postinst.into_iter().map(|p| format!("{p} postinst")));
    for p in placeholders {
        std::fs::remove_file(&p).map_err(ConfigureError::io("removing", &p))?;
    }
    std::fs::remove_file(&policy).map_err(ConfigureError::io("removing", &policy))?;
    finish::finish(root, &sandbox, &opts.remove, &mut report)?;
    Ok(report)
}

/// Runs `preinst install` of each of `packages`, in order, with what dpkg
/// gives a maintainer script (dpkg-maintscript-helper needs it), all in
/// one sandbox run ([`PREINST_DRIVER`]). The first that fails stops the
/// run and is the error.
fn run_preinsts(
    sandbox: &Sandbox,
    packages: &[&DebPackage],
    dpkg_version: &str,
) -> Result<(), ConfigureError> {
    if packages.is_empty() {
        return Ok(());
    }
    let mut args: Vec<String> = Vec::with_capacity(3 * packages.len());
    for p in packages {
        let control = p.control();
        let arch = dpkg_db::field(&control, "Architecture").unwrap_or("all");
        args.push(p.package().to_owned());
        args.push(arch.to_owned());
        args.push(format!(
            "/{}/info/{}.preinst",
            dpkg_db::DPKG_DIR,
            dpkg_db::info_name(&control)
        ));
    }
    let mut argv = vec!["/bin/sh", "-c", PREINST_DRIVER, "preinst"];
    argv.extend(args.iter().map(String::as_str));
    let env = [
        ("DPKG_MAINTSCRIPT_NAME", "preinst"),
        ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
        ("DPKG_RUNNING_VERSION", dpkg_version),
        ("DPKG_ADMINDIR", "/var/lib/dpkg"),
        ("DPKG_ROOT", ""),
    ];
    let out = sandbox.run_with_env(&argv, &env)?;
    if out.success {
        return Ok(());
    }
    Err(preinst_failure(&out))
}

/// The shell script that runs the `preinst` scripts: its arguments are
/// `package architecture script` triples. Before each it prints a line
/// `<RS>treectl preinst PACKAGE`; when one fails, `<RS>treectl preinst
/// PACKAGE failed N` (its exit status) and it stops.
pub const PREINST_DRIVER: &str = r#"while [ $# -ge 3 ]; do
    printf '\036treectl preinst %s\n' "$1"
    DPKG_MAINTSCRIPT_PACKAGE=$1 DPKG_MAINTSCRIPT_ARCH=$2 "$3" install
    status=$?
    if [ "$status" -ne 0 ]; then
        printf '\036treectl preinst %s failed %s\n' "$1" "$status"
        exit 1
    fi
    shift 3
done"#;

/// How [`PREINST_DRIVER`]'s lines start.
const MARK: &str = "\u{1e}treectl preinst ";

/// The error for a failed [`PREINST_DRIVER`] run: the package whose script
/// failed, its status, and its own output (the driver's lines left out).
fn preinst_failure(out: &sandbox::RunOutput) -> ConfigureError {
    // A script's last line may lack its newline: the marks are looked for
    // anywhere in a line.
    fn mark(l: &str) -> Option<&str> {
        l.find(MARK).map(|at| &l[at + MARK.len()..])
    }
    let lines: Vec<&str> = out.output.lines().collect();
    let failed = lines
        .iter()
        .rev()
        .find_map(|l| mark(l)?.split_once(" failed "));
    let Some((package, status)) = failed else {
        // The driver itself did not run (no /bin/sh in the tree?).
        return ConfigureError::Script {
            package: "(preinst)".into(),
            script: "the preinst scripts".into(),
            status: out.status.clone(),
            tail: out.tail(),
        };
    };
    let start = lines
        .iter()
        .rposition(|l| mark(l) == Some(package))
        .map_or(0, |i| i + 1);
    let own: Vec<&str> = lines[start..]
        .iter()
        .map(|l| l.find(MARK).map_or(*l, |at| &l[..at]))
        .filter(|l| !l.is_empty())
        .collect();
    ConfigureError::Script {
        package: package.to_owned(),
        script: "preinst".into(),
        status: format!("exit status {status}"),
        tail: own[own.len().saturating_sub(sandbox::TAIL_LINES)..].join("\n"),
    }
}

/// The SSH host keys openssh-server's postinst makes when they are
/// missing (the ones sshd uses without a `HostKey` setting).
pub const SSH_HOST_KEYS: [&str; 3] = [
    "etc/ssh/ssh_host_rsa_key",
    "etc/ssh/ssh_host_ecdsa_key",
    "etc/ssh/ssh_host_ed25519_key",
];

/// Empty files where the host keys go, for each one the lockfile's
/// `remove` patterns drop anyway: the postinst then makes no key (the
/// RSA one alone takes a second) that the compose throws away. Each
/// machine makes its own at first boot ([`finish::SSH_KEYS_UNIT`]).
/// Returns the files made, which are removed after the scripts.
fn ssh_key_placeholders(root: &Path, remove: &[String]) -> Result<Vec<PathBuf>, ConfigureError> {
    let mut made = Vec::new();
    if !root.join("etc/ssh").is_dir() {
        return Ok(made);
    }
    for key in SSH_HOST_KEYS {
        let removed = remove.iter().any(|pattern| {
            let pattern: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
            let path: Vec<&str> = key.split('/').collect();
            pattern.len() == path.len()
                && pattern
                    .iter()
                    .zip(&path)
                    .all(|(p, c)| crate::merge::glob_match(p.as_bytes(), c.as_bytes()))
        });
        let path = root.join(key);
        if removed && path.symlink_metadata().is_err() {
            std::fs::write(&path, b"").map_err(ConfigureError::io("writing", &path))?;
            made.push(path);
        }
    }
    Ok(made)
}

fn write_policy_rc_d(path: &Path) -> Result<(), ConfigureError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ConfigureError::io("creating", dir))?;
    }
    // 101: "action forbidden by policy" (invoke-rc.d's interface).
    std::fs::write(path, "#!/bin/sh\nexit 101\n").map_err(ConfigureError::io("writing", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(ConfigureError::io("setting the mode of", path))
}

fn dpkg_version(sandbox: &Sandbox) -> Result<String, ConfigureError> {
    let out = sandbox.run(&["dpkg-query", "--showformat=${Version}", "--show", "dpkg"])?;
    if !out.success {
        return Err(ConfigureError::Sandbox {
            reason: format!(
                "the tree has no working dpkg (is the package dpkg in the lockfile?): {}",
                out.tail()
            ),
        });
    }
    Ok(out.output.trim().to_owned())
}

/// The error for a failed `dpkg --configure -a`: the first package dpkg
/// names as failing, with the script and its status.
fn dpkg_failure(out: &sandbox::RunOutput) -> ConfigureError {
    // dpkg: error processing package P (--configure):
    //  installed P package post-installation script subprocess returned error exit status N
    let lines: Vec<&str> = out.output.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l.strip_prefix("dpkg: error processing package ") else {
            continue;
        };
        let package = rest.split_whitespace().next().unwrap_or(rest).to_owned();
        let detail = lines.get(i + 1).map(|s| s.trim()).unwrap_or_default();
        let script = if detail.contains("post-installation") {
            "postinst"
        } else if detail.contains("pre-installation") {
            "preinst"
        } else {
            "configure"
        };
        let status = detail
            .split_once("returned error ")
            .map(|(_, s)| s.to_owned())
            .unwrap_or_else(|| detail.to_owned());
        // dpkg goes on with other packages: the package's own output is
        // from its "Setting up" line to the error.
        let setting_up = format!("Setting up {package} (");
        let start = lines[..i]
            .iter()
            .rposition(|l| l.starts_with(&setting_up))
            .unwrap_or(0);
        let end = (i + 2).min(lines.len());
        let own = &lines[start..end];
        let tail = own[own.len().saturating_sub(sandbox::TAIL_LINES)..].join("\n");
        return ConfigureError::Script {
            package,
            script: script.into(),
            status,
            tail,
        };
    }
    ConfigureError::Script {
        package: "(dpkg)".into(),
        script: "dpkg --configure -a".into(),
        status: out.status.clone(),
        tail: out.tail(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(control: &str) -> DebPackage {
        DebPackage {
            component: "c".into(),
            commit: ObjectId::from_hex(&"0".repeat(64)).expect("a valid id"),
            tree: ObjectId::from_hex(&"0".repeat(64)).expect("a valid id"),
            members: [("control".to_owned(), control.as_bytes().to_vec())].into(),
        }
    }

    #[test]
    fn preinst_order_follows_dependencies() {
        let ps = [
            pkg("Package: app\nDepends: libb (>= 1) | other, liba\n"),
            pkg("Package: liba\nPre-Depends: libc6\n"),
            pkg("Package: libc6\n"),
            pkg("Package: libb\nDepends: libc6:any\n"),
            pkg("Package: x\nDepends: y\n"),
            pkg("Package: y\nDepends: x\n"),
        ];
        let names: Vec<&str> = install_order(&ps)
            .into_iter()
            .map(|i| ps[i].package())
            .collect();
        assert_eq!(names, ["libc6", "liba", "libb", "app", "x", "y"]);
    }

    #[test]
    fn preinst_failures_name_package_and_status_with_its_own_output() {
        let out = sandbox::RunOutput {
            success: false,
            status: "exit status 1".into(),
            output: "\u{1e}treectl preinst good\nfine\n\u{1e}treectl preinst bad\none\nno newline\u{1e}treectl preinst bad failed 4\n".into(),
        };
        let e = preinst_failure(&out);
        assert_eq!(
            e.to_string(),
            "package bad: preinst failed with exit status 4"
        );
        let ConfigureError::Script { tail, .. } = e else {
            panic!("not a script error");
        };
        assert_eq!(tail, "one\nno newline");
        // Without the driver's marks (it did not run): the run's status.
        let out = sandbox::RunOutput {
            success: false,
            status: "exit status 127".into(),
            output: "bwrap: execvp /bin/sh: No such file or directory\n".into(),
        };
        assert_eq!(
            preinst_failure(&out).to_string(),
            "package (preinst): the preinst scripts failed with exit status 127"
        );
    }

    #[test]
    fn dpkg_failures_name_package_script_and_status() {
        let out = sandbox::RunOutput {
            success: false,
            status: "exit status 1".into(),
            output: "Setting up bad (1.0) ...\nboom\ndpkg: error processing package bad (--configure):\n installed bad package post-installation script subprocess returned error exit status 3\nSetting up other (2) ...\nlots\n".into(),
        };
        let e = dpkg_failure(&out);
        assert_eq!(
            e.to_string(),
            "package bad: postinst failed with exit status 3"
        );
        let ConfigureError::Script { tail, .. } = e else {
            panic!("not a script error");
        };
        assert!(
            tail.starts_with("Setting up bad") && tail.contains("boom"),
            "{tail}"
        );
        assert!(!tail.contains("lots"), "{tail}");
    }
}

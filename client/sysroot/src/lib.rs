//! Client machines: the sysroot, its deployments and their `/etc`.
//! `docs/deployments.md` describes the model: the layout, the boot
//! generations swapped by one `rename`, how the booted deployment is
//! recognised and what a crash leaves behind.
//!
//! [`Sysroot`] locates everything; [`state`] holds the deployment list and
//! writes boot generations; [`boot`] reads Boot Loader Specification
//! entries and orders them as the boot loader does ([`verscmp`] is its
//! version order); [`fetch`] copies commits into the local repository;
//! [`deploy`] has the operations (install, deploy, stage, finalize,
//! rollback, pin, cleanup, upgrade decisions); [`kargs`] edits a
//! deployment's kernel arguments; [`rollout`] places the machine in a
//! release's phased rollout.

pub mod boot;
pub mod cleanup;
pub mod deploy;
pub mod etc_merge;
pub mod fetch;
pub mod finalize;
mod freeze;
pub mod install;
pub mod kargs;
pub mod rollback;
pub mod rollout;
pub mod source;
pub mod state;
pub mod status;
pub mod upgrade;
pub mod verscmp;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use treectl_store::Repo;

/// The directory below the sysroot that treectl owns.
pub const TREECTL_DIR: &str = "treectl";
/// The kernel command line argument naming the booted deployment.
pub const KARG: &str = "treectl";
/// The default stateroot (operating system name).
pub const DEFAULT_STATEROOT: &str = "os";
/// What prepare-root leaves in a booted system: its record of the booted
/// deployment (docs/booting.md).
pub const BOOTED_RECORD: &str = "/run/treectl/booted";
/// Where a booted system sees its sysroot (the physical root filesystem).
pub const BOOTED_SYSROOT: &str = "/sysroot";

/// Errors of sysroot operations. Each names what was being done and where,
/// and says how to get out of it where there is a way.
#[derive(Debug, thiserror::Error)]
pub enum SysrootError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Repo(#[from] treectl_store::Error),
    #[error("{} is not a treectl sysroot (no boot/loader): run `treectl install --sysroot {}` first", .0.display(), .0.display())]
    NotInstalled(PathBuf),
    #[error("{} already holds a treectl installation: use `treectl deploy` or `treectl upgrade`", .0.display())]
    AlreadyInstalled(PathBuf),
    #[error("the deployment list {} is unreadable ({reason}); the other boot generation may still be intact", path.display())]
    BadState { path: PathBuf, reason: String },
    #[error("no deployment with index {index} (there are {count}); see `treectl status`")]
    NoSuchIndex { index: usize, count: usize },
    #[error("nothing to roll back to: there is only one deployment")]
    NoRollback,
    #[error("refusing to move from {current} to the older release {candidate} (a replayed or reset head?): pass --allow-downgrade if this is intended")]
    Downgrade { current: String, candidate: String },
    #[error("not enough free space under {}: {free} bytes free, {needed} needed (free some space, or set TREECTL_MIN_FREE)", path.display())]
    NoSpace {
        path: PathBuf,
        free: u64,
        needed: u64,
    },
    /// `/boot` cannot take the kernel and initramfs a deployment needs;
    /// nothing was changed.
    #[error("not enough space in {} for the kernel {kver} of {commit}: {free} bytes free, {needed} needed; nothing was changed (remove unused kernels from {}, or make it larger)", path.display(), path.display())]
    BootFull {
        path: PathBuf,
        kver: String,
        commit: String,
        free: u64,
        needed: u64,
    },
    #[error("the default deployment has no origin to upgrade from: use `treectl deploy REV`")]
    NoOrigin,
    #[error("{origin} has not been pulled into the sysroot's repository: run `treectl upgrade` (or `treectl install` with --url) to pull it")]
    NotPulled { origin: String },
    #[error(transparent)]
    Remote(#[from] treectl_release::remote::RemoteError),
    #[error("{rev:?} names no commit or version in the local repository or the origin")]
    UnknownRev { rev: String },
    #[error("the sysroot already has remote {name} with URL {existing}, not {wanted}; remove it with `treectl --repo {} remote remove {name}`", repo.display())]
    RemoteMismatch {
        name: String,
        existing: String,
        wanted: String,
        repo: PathBuf,
    },
    #[error("the sysroot has no remote {name}: pass --url URL (and --trusted-key FILE) to add it")]
    NoRemote { name: String },
    /// The origin's signed index rejects the commit (a revert moved the
    /// ref away from it): it is never deployed while rejected.
    #[error("refusing to deploy {commit}: {origin} was reverted away from it (serial {serial}): {reason}")]
    Rejected {
        commit: String,
        origin: String,
        reason: String,
        serial: u64,
    },
    #[error(transparent)]
    Index(#[from] treectl_release::summary::IndexError),
    #[error("the release is being rolled out in waves, and this machine has no machine id ({} is missing or empty; or set TREECTL_MACHINE_ID): pass --ignore-rollout to take it now", path.display())]
    NoMachineId { path: PathBuf },
    /// The pull from a remote origin failed (offline, refused, corrupt...).
    #[error(transparent)]
    Pull(Box<treectl_transport::TransportError>),
    /// A kernel argument edit that cannot apply (nothing was changed).
    #[error("{0}")]
    Kargs(#[from] kargs::KargsError),
    /// The entries about to be written would not boot the deployment they
    /// should; nothing was written.
    #[error("refusing to write boot entries that would make the boot loader start {loader} instead of {expected}; nothing was changed (please report this)")]
    BootOrder { expected: String, loader: String },
}

pub type Result<T, E = SysrootError> = std::result::Result<T, E>;

impl From<treectl_transport::TransportError> for SysrootError {
    fn from(e: treectl_transport::TransportError) -> Self {
        // Boxed: a transport error is large, and every sysroot result
        // would carry its size.
        SysrootError::Pull(Box::new(e))
    }
}

/// Wraps an `io::Error` with the action and path.
pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SysrootError {
    let path = path.to_owned();
    move |source| SysrootError::Io {
        action,
        path,
        source,
    }
}

/// A sysroot: the root directory of a machine (or an image being built).
#[derive(Clone, Debug)]
pub struct Sysroot {
    root: PathBuf,
    /// The `treectl=` value of the booted deployment, when known.
    booted: Option<String>,
    /// The free-space reserve in bytes, when set by [`Sysroot::with_reserve`].
    reserve: Option<u64>,
}

impl Sysroot {
    /// A sysroot at `root`, with the booted deployment taken from the
    /// environment or the kernel command line (see `docs/deployments.md`).
    ///
    /// On a system booted from a deployment (prepare-root's record exists),
    /// `/` means the physical root, [`BOOTED_SYSROOT`]: `/` is the
    /// deployment itself there.
    pub fn new(root: &Path) -> Sysroot {
        let root = if root == Path::new("/") && Path::new(BOOTED_RECORD).exists() {
            Path::new(BOOTED_SYSROOT)
        } else {
            root
        };
        let booted = booted_arg(root);
        Sysroot {
            root: root.to_owned(),
            booted,
            reserve: None,
        }
    }

    /// A sysroot with the booted deployment given explicitly.
    pub fn with_booted(root: &Path, booted: Option<String>) -> Sysroot {
        Sysroot {
            root: root.to_owned(),
            booted,
            reserve: None,
        }
    }

    /// This sysroot with a free-space reserve of `bytes` instead of the
    /// default (see [`Sysroot::check_free_space`]): an image being built on
    /// a host, say, where the host filesystem's reserve is not the image's.
    pub fn with_reserve(mut self, bytes: u64) -> Sysroot {
        self.reserve = Some(bytes);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `treectl=` value of the booted deployment, when known.
    pub fn booted_arg(&self) -> Option<&str> {
        self.booted.as_deref()
    }

    pub fn treectl_dir(&self) -> PathBuf {
        self.root.join(TREECTL_DIR)
    }

    pub fn repo_path(&self) -> PathBuf {
        self.treectl_dir().join("repo")
    }

    pub fn open_repo(&self) -> Result<Repo> {
        Ok(Repo::open(&self.repo_path())?)
    }

    pub fn boot_dir(&self) -> PathBuf {
        self.root.join("boot")
    }

    pub fn stateroot_dir(&self, stateroot: &str) -> PathBuf {
        self.treectl_dir().join("deploy").join(stateroot)
    }

    pub fn staged_path(&self) -> PathBuf {
        self.treectl_dir().join("staged.json")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.treectl_dir().join("tmp")
    }

    /// The absolute path of a deployment given its `treectl=` value.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Whether this is the running machine's sysroot (whose `/boot` a boot
    /// loader reads after a crash).
    pub fn is_running_system(&self) -> bool {
        is_running_system(&self.root)
    }

    /// Takes the sysroot lock (blocking), creating `treectl/` if needed.
    pub fn lock(&self) -> Result<SysrootLock> {
        let dir = self.treectl_dir();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("locking", &path)(e.into()))?;
        Ok(SysrootLock { _file: file })
    }

    /// Refuses when the filesystem holding the sysroot has less free space
    /// than the reserve: the one given to [`Sysroot::with_reserve`], else
    /// `$TREECTL_MIN_FREE` bytes, else max(64 MiB, 3 %).
    pub fn check_free_space(&self) -> Result<()> {
        let path = self.treectl_dir();
        let st = rustix::fs::statvfs(&path).map_err(|e| io_err("measuring", &path)(e.into()))?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let total = st.f_blocks.saturating_mul(st.f_frsize);
        let needed = match self.reserve.or_else(|| {
            std::env::var("TREECTL_MIN_FREE")
                .ok()
                .and_then(|v| v.parse().ok())
        }) {
            Some(n) => n,
            None => (64u64 << 20).max(total / 100 * 3),
        };
        if free < needed {
            return Err(SysrootError::NoSpace { path, free, needed });
        }
        Ok(())
    }
}

/// Holds the sysroot lock until dropped.
pub struct SysrootLock {
    _file: File,
}

/// Whether `root` is the sysroot of the running machine: `/`, or
/// [`BOOTED_SYSROOT`] on a booted deployment.
fn is_running_system(root: &Path) -> bool {
    root == Path::new("/")
        || (root == Path::new(BOOTED_SYSROOT) && Path::new(BOOTED_RECORD).exists())
}

/// Reads the booted deployment's `treectl=` value: `$TREECTL_BOOTED`, else
/// the `treectl=` argument of `$TREECTL_CMDLINE` (a file), else of
/// `/proc/cmdline` when the sysroot is the running system's (`/`, or
/// [`BOOTED_SYSROOT`] on a booted deployment).
fn booted_arg(root: &Path) -> Option<String> {
    if let Some(v) = std::env::var_os("TREECTL_BOOTED") {
        let v = v.to_string_lossy().into_owned();
        return (!v.is_empty()).then_some(v);
    }
    let cmdline = match std::env::var_os("TREECTL_CMDLINE") {
        Some(file) => fs::read_to_string(file).ok()?,
        None if is_running_system(root) => fs::read_to_string("/proc/cmdline").ok()?,
        None => return None,
    };
    parse_cmdline(&cmdline)
}

/// The value of the last `treectl=` argument of a kernel command line.
pub fn parse_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|arg| arg.strip_prefix(KARG)?.strip_prefix('='))
        .next_back()
        .map(str::to_owned)
}

/// Removes a directory tree, first giving the owner access to every
/// directory in it (deployments hold read-only directories).
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    fn open_up(path: &Path) -> io::Result<()> {
        let m = fs::symlink_metadata(path)?;
        if m.is_dir() {
            if m.permissions().mode() & 0o700 != 0o700 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
            }
            for e in fs::read_dir(path)? {
                open_up(&e?.path())?;
            }
        }
        Ok(())
    }
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("reading", path)(e)),
        Ok(m) if !m.is_dir() => return fs::remove_file(path).map_err(io_err("removing", path)),
        Ok(_) => {}
    }
    open_up(path).map_err(io_err("opening up", path))?;
    fs::remove_dir_all(path).map_err(io_err("removing", path))
}

/// Fsyncs a directory.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    treectl_store::fsutil::fsync_dir(path).map_err(io_err("syncing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_given_to_the_sysroot_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(TREECTL_DIR)).unwrap();
        let sr = Sysroot::with_booted(dir.path(), None);
        let err = sr.clone().with_reserve(u64::MAX).check_free_space();
        assert!(
            matches!(
                err,
                Err(SysrootError::NoSpace {
                    needed: u64::MAX,
                    ..
                })
            ),
            "{err:?}"
        );
        sr.with_reserve(0).check_free_space().unwrap();
    }

    #[test]
    fn cmdline_argument() {
        let cases = [
            (
                "quiet treectl=/treectl/deploy/os/ab.0 rw",
                Some("/treectl/deploy/os/ab.0"),
            ),
            ("treectl=/a treectl=/b", Some("/b")),
            ("treectlx=/a quiet", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_cmdline(line).as_deref(), want, "{line}");
        }
    }
}

//! The sandbox maintainer scripts run in: bubblewrap (`bwrap`, Debian
//! package `bubblewrap`) with the tree being configured as `/`.
//!
//! Each run gets its own mount, PID, IPC, UTS and network namespaces (no
//! network: only a loopback device that is down), a private `/proc`, a
//! `/dev` with only the usual nodes (`null`, `zero`, `full`, `random`,
//! `urandom`, `tty`, `pts`, `shm`), tmpfs `/tmp` and `/run`, a fixed host
//! name and a fixed environment ([`Sandbox::env`]). Nothing of the host's
//! file system is visible, so a script cannot write outside the tree; the
//! PID namespace dies with its first process, so nothing a script starts
//! outlives the run (the kernel kills what is left, and [`Sandbox::run`]
//! returns only once it has). No user namespace:
//! compose runs as root and scripts must be able to `chown` to any id.
//!
//! Why bubblewrap: it is what rpm-ostree uses for the same job, it is in
//! Debian, it is small and it sets up every namespace from one command
//! line, which is easy to read and to test.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::ConfigureError as Error;

/// The program the sandbox is made with.
pub const BWRAP: &str = "bwrap";
/// `PATH` inside the sandbox.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The host name inside the sandbox.
pub const HOSTNAME: &str = "localhost";
/// How many lines of a failed run's output an error keeps.
pub const TAIL_LINES: usize = 20;
/// How long a run's leftover processes may take to die once its command
/// has exited (they are killed at once; only a process stuck in the
/// kernel takes longer).
const TEARDOWN_LIMIT: Duration = Duration::from_secs(60);

/// A tree to run commands in.
#[derive(Clone, Debug)]
pub struct Sandbox {
    root: PathBuf,
    env: Vec<(String, String)>,
}

/// What a run printed (stdout and stderr, interleaved) and how it ended.
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub success: bool,
    /// `exit status N` or `killed by signal N`.
    pub status: String,
    pub output: String,
}

impl RunOutput {
    /// The last [`TAIL_LINES`] lines of the output.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.output.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

impl Sandbox {
    /// A sandbox over `root` with the fixed environment, `SOURCE_DATE_EPOCH`
    /// set to `timestamp`.
    pub fn new(root: &Path, timestamp: i64) -> Sandbox {
        let env = [
            ("PATH", PATH.to_owned()),
            ("LC_ALL", "C.UTF-8".to_owned()),
            ("LANG", "C.UTF-8".to_owned()),
            ("HOME", "/root".to_owned()),
            ("DEBIAN_FRONTEND", "noninteractive".to_owned()),
            ("DEBCONF_NONINTERACTIVE_SEEN", "true".to_owned()),
            ("SOURCE_DATE_EPOCH", timestamp.to_string()),
            ("TZ", "UTC".to_owned()),
        ];
        Sandbox {
            root: root.to_owned(),
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// The environment every command gets (nothing else is passed on).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Whether `bwrap` can be run here.
    pub fn available() -> bool {
        Command::new(BWRAP)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The `bwrap` command line that runs `argv` in the tree.
    pub fn command(&self, argv: &[&str], extra_env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BWRAP);
        cmd.arg("--bind").arg(&self.root).arg("/");
        cmd.args(["--proc", "/proc", "--dev", "/dev"]);
        cmd.args(["--tmpfs", "/tmp", "--tmpfs", "/run"]);
        cmd.args(["--unshare-ipc", "--unshare-pid", "--unshare-net"]);
        cmd.args([
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            HOSTNAME,
        ]);
        cmd.args([
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--chdir",
            "/",
        ]);
        for (k, v) in &self.env {
            cmd.args(["--setenv", k, v]);
        }
        for (k, v) in extra_env {
            cmd.args(["--setenv", k, v]);
        }
        cmd.arg("--").args(argv);
        cmd.env_clear().env("PATH", PATH).stdin(Stdio::null());
        cmd
    }

    /// Runs `argv` in the tree; its stdout and stderr are collected
    /// together (in `<root>.log` beside the tree, removed afterwards).
    /// Errors only when it cannot be started.
    pub fn run(&self, argv: &[&str]) -> Result<RunOutput, Error> {
        self.run_with_env(argv, &[])
    }

    /// [`Sandbox::run`] with more environment variables.
    pub fn run_with_env(
        &self,
        argv: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Result<RunOutput, Error> {
        let log_path = self.beside_root(".log");
        let log = std::fs::File::create(&log_path).map_err(Error::io("creating", &log_path))?;
        let err_log = log.try_clone().map_err(Error::io("opening", &log_path))?;
        let mut cmd = self.command(argv, extra_env);
        cmd.stdout(log).stderr(err_log);
        let status = cmd.status().map_err(|source| Error::Sandbox {
            reason: format!("cannot run {BWRAP} (install the Debian package bubblewrap): {source}"),
        });
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_end(&mut bytes));
        let _ = std::fs::remove_file(&log_path);
        let status = status?;
        read.map_err(Error::io("reading", &log_path))?;
        self.wait_for_leftovers()?;
        let status_text = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "unknown status".to_owned(),
        };
        Ok(RunOutput {
            success: status.success(),
            status: status_text,
            output: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// Waits until no process has the tree as its root. bwrap exits as
    /// soon as the command does, while the namespace's first process may
    /// still be killing what the command left running; only then does the
    /// PID namespace end.
    fn wait_for_leftovers(&self) -> Result<(), Error> {
        let meta = std::fs::metadata(&self.root).map_err(Error::io("reading", &self.root))?;
        let root = (meta.dev(), meta.ino());
        let started = Instant::now();
        loop {
            let left = processes_rooted_at(root);
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() > TEARDOWN_LIMIT {
                return Err(Error::Sandbox {
                    reason: format!(
                        "processes {left:?} of the sandbox did not exit within {} s",
                        TEARDOWN_LIMIT.as_secs()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `<root><suffix>`: a scratch file beside the tree, never inside it.
    fn beside_root(&self, suffix: &str) -> PathBuf {
        let mut path = self.root.clone().into_os_string();
        path.push(suffix);
        PathBuf::from(path)
    }
}

/// Processes whose root directory is the directory `(dev, ino)`.
fn processes_rooted_at(root: (u64, u64)) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // A zombie has no root any more, so stat fails and it is skipped.
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/root")).is_ok_and(|m| (m.dev(), m.ino()) == root)
        })
        .collect()
}

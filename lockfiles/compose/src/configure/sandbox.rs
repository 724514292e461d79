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

    /// The `bwrap` command line that runs `argv` in the tree, with the
    /// seccomp filter bwrap reads from `filter` (an inheritable
    /// descriptor) and the `ischroot` shim beside the tree.
    fn command(
        &self,
        argv: &[&str],
        extra_env: &[(&str, &str)],
        filter: &std::fs::File,
    ) -> Command {
        use std::os::fd::AsRawFd;
        let mut cmd = Command::new(BWRAP);
        cmd.arg("--seccomp").arg(filter.as_raw_fd().to_string());
        cmd.arg("--bind").arg(&self.root).arg("/");
        // Scripts ask `ischroot` whether they may touch a running system
        // (re-exec init, restart services): they may not. The tree's own
        // file stays as it is; the sandbox sees one that says yes.
        if self.root.join(ISCHROOT).is_file() {
            cmd.arg("--ro-bind")
                .arg(self.beside_root(".ischroot"))
                .arg(format!("/{ISCHROOT}"));
        }
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
        let shim = self.beside_root(".ischroot");
        write_executable(&shim, "#!/bin/sh\nexit 0\n")?;
        let filter = self.beside_root(".seccomp");
        std::fs::write(&filter, no_sync_filter()).map_err(Error::io("writing", &filter))?;
        let filter_fd = std::fs::File::open(&filter).map_err(Error::io("opening", &filter))?;
        // bwrap reads the filter from an inherited descriptor.
        rustix::io::fcntl_setfd(&filter_fd, rustix::io::FdFlags::empty())
            .map_err(|e| Error::io("opening", &filter)(e.into()))?;
        let mut cmd = self.command(argv, extra_env, &filter_fd);
        cmd.stdout(log).stderr(err_log);
        let status = cmd.status().map_err(|source| Error::Sandbox {
            reason: format!("cannot run {BWRAP} (install the Debian package bubblewrap): {source}"),
        });
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_end(&mut bytes));
        for scratch in [&log_path, &shim, &filter] {
            let _ = std::fs::remove_file(scratch);
        }
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

/// The tree's `ischroot`, which the sandbox replaces by one that exits 0.
pub const ISCHROOT: &str = "usr/bin/ischroot";

/// A seccomp filter (classic BPF, as bwrap's `--seccomp` reads it) that
/// makes `fsync`, `fdatasync`, `sync`, `syncfs` and `sync_file_range`
/// return success without doing anything. The tree is scratch until the
/// compose commits it (and the commit makes it durable): dpkg alone
/// syncs its database some 1,300 times while configuring a system, for
/// nothing. Only x86-64 system calls are matched; on other architectures
/// the filter allows everything.
pub fn no_sync_filter() -> Vec<u8> {
    const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO_0: u32 = 0x0005_0000;
    // fsync, fdatasync, sync, sync_file_range, syncfs.
    const SYNCS: [u32; 5] = [74, 75, 162, 277, 306];
    let n = SYNCS.len() as u8;
    let mut prog: Vec<(u16, u8, u8, u32)> = vec![
        (LD_ABS_W, 0, 0, 4), // seccomp_data.arch
        (JEQ_K, 0, n + 1, AUDIT_ARCH_X86_64),
        (LD_ABS_W, 0, 0, 0), // seccomp_data.nr
    ];
    for (i, nr) in SYNCS.iter().enumerate() {
        // To the last instruction (return 0) when equal.
        prog.push((JEQ_K, n - i as u8, 0, *nr));
    }
    prog.push((RET_K, 0, 0, RET_ALLOW));
    prog.push((RET_K, 0, 0, RET_ERRNO_0));
    prog.iter()
        .flat_map(|&(code, jt, jf, k)| {
            let mut b = code.to_ne_bytes().to_vec();
            b.extend([jt, jf]);
            b.extend(k.to_ne_bytes());
            b
        })
        .collect()
}

fn write_executable(path: &Path, text: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(Error::io("writing", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io("setting the mode of", path))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program (the three instructions it uses) on
    /// `(arch, nr)`; returns the seccomp action.
    fn run(prog: &[u8], arch: u32, nr: u32) -> u32 {
        let ins: Vec<(u16, u8, u8, u32)> = prog
            .chunks_exact(8)
            .map(|c| {
                (
                    u16::from_ne_bytes([c[0], c[1]]),
                    c[2],
                    c[3],
                    u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = ins[pc];
            match code {
                0x20 => acc = if k == 4 { arch } else { nr },
                0x15 => pc += usize::from(if acc == k { jt } else { jf }),
                0x06 => return k,
                other => panic!("unexpected instruction {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn the_filter_returns_zero_for_syncs_and_allows_the_rest() {
        let prog = no_sync_filter();
        assert_eq!(prog.len(), 10 * 8);
        const X86_64: u32 = 0xc000_003e;
        for nr in [74, 75, 162, 277, 306] {
            assert_eq!(run(&prog, X86_64, nr), 0x0005_0000, "syscall {nr}");
        }
        for nr in [0, 1, 2, 59, 76, 161, 163, 276, 278, 305, 307, 0x4000_004a] {
            assert_eq!(run(&prog, X86_64, nr), 0x7fff_0000, "syscall {nr}");
        }
        // Another architecture's numbers mean other calls: all allowed.
        assert_eq!(run(&prog, 0xc000_00b7, 74), 0x7fff_0000);
    }
}

//! Running the `treectl` binary from a test: where the binary is, and one
//! builder, [`Treectl`], that runs it and checks how it ended.
//!
//! ```no_run
//! use treectl_e2e::{treectl, treectl_in};
//! # let repo = std::path::Path::new("/tmp/repo");
//! treectl_in(repo, ["init", "--mode", "archive"]).ok();
//! let err = treectl_in(repo, ["show", "os/unknown"]).fails();
//! assert!(err.contains("os/unknown"));
//! let out = treectl(["keygen", "--out", "/tmp/k"]).env("TREECTL_DEBUG", "1").run();
//! assert!(out.status.success(), "{}", out.stderr);
//! ```

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::OnceLock;

/// Variables of the test runner's environment that would change what the
/// binary does; every run starts without them, and a test that wants one
/// sets it with [`Treectl::env`].
const CLEARED_ENV: &[&str] = &[
    "TREECTL_REPO",
    "TREECTL_TOKEN",
    "TREECTL_FAILPOINT",
    "TREECTL_BOOTED",
    "TREECTL_CMDLINE",
    "TREECTL_MIN_FREE",
];

/// The `treectl` binary the tests run. One rule:
///
/// - `CARGO_BIN_EXE_treectl` when cargo put it in this test process's
///   environment: cargo does so when it runs the integration tests of the
///   `treectl` package, having just built the binary for them;
/// - otherwise (the tests of `treectl-e2e`, or a test executable started by
///   hand) `target/<profile>/treectl` beside this test executable, built
///   (once per test process) by `cargo build -p treectl -p treectl-server`
///   so it is never stale.
///
/// Either way it is the same file, `target/<profile>/treectl`. `treectl
/// serve` also needs `treectl-server` beside it: [`crate::server::Server`]
/// sees to that.
pub fn treectl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("CARGO_BIN_EXE_treectl") {
        Some(bin) => PathBuf::from(bin),
        None => cargo_build(&["treectl", "treectl-server"]).join("treectl"),
    })
    .clone()
}

/// `treectl-server` beside [`treectl_bin`], where `treectl serve` looks
/// for it: built once per test process (a no-op when it is up to date).
pub fn ensure_server_beside_treectl() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = treectl_bin();
        let built = cargo_build(&["treectl-server"]).join("treectl-server");
        let beside = bin.with_file_name("treectl-server");
        assert!(
            beside.is_file(),
            "cargo built {} but `treectl serve` looks for {}",
            built.display(),
            beside.display()
        );
    });
}

/// Runs `cargo build` of `packages` in the profile of this test executable
/// (`target/<profile>/deps/<test>`); returns `target/<profile>`.
fn cargo_build(packages: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet"]);
    for p in packages {
        build.args(["-p", p]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("run cargo build (cargo is on PATH or named by CARGO under `cargo test`)");
    assert!(status.success(), "cargo build -p {packages:?} failed");
    profile_dir.to_owned()
}

/// `treectl ARGS…`, to be run by one of [`Treectl::ok`], [`Treectl::fails`],
/// [`Treectl::code`] or [`Treectl::run`].
pub fn treectl<I, S>(args: I) -> Treectl
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Treectl::default().args(args)
}

/// `treectl --repo REPO ARGS…`.
pub fn treectl_in<I, S>(repo: impl AsRef<Path>, args: I) -> Treectl
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    treectl([OsStr::new("--repo"), repo.as_ref().as_os_str()]).args(args)
}

/// One run of the binary being set up: arguments, environment, working
/// directory. The environment starts without the variables that steer the
/// binary (`TREECTL_REPO`, `TREECTL_TOKEN`, `TREECTL_FAILPOINT`,
/// `TREECTL_BOOTED`, `TREECTL_CMDLINE`, `TREECTL_MIN_FREE`), so the
/// shell a test runs in cannot change what it checks.
#[derive(Clone, Debug, Default)]
#[must_use = "a Treectl does nothing until it is run"]
pub struct Treectl {
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
}

/// How a run ended, with its output decoded (lossily) as text.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Treectl {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Treectl {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Treectl
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Treectl {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Treectl {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Treectl {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// The process to start, for tests that spawn, kill or redirect it.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(treectl_bin());
        for key in CLEARED_ENV {
            cmd.env_remove(key);
        }
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd.args(&self.args);
        cmd
    }

    /// Runs to the end; whatever happened.
    pub fn run(self) -> Outcome {
        let out = self.output();
        Outcome {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and requires success; returns stdout (which must be UTF-8).
    pub fn ok(self) -> String {
        let shown = self.shown();
        let out = self.output();
        assert!(
            out.status.success(),
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap_or_else(|e| panic!("{shown}: stdout is not UTF-8: {e}"))
    }

    /// Runs and requires a failure reported the way every command reports
    /// one: exactly one line on stderr, starting with `error: `; returns
    /// stderr.
    pub fn fails(self) -> String {
        let shown = self.shown();
        let out = self.run();
        assert!(
            !out.status.success(),
            "{shown} unexpectedly succeeded: {}",
            out.stdout
        );
        let err = out.stderr;
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "error is not one line: {err:?}"
        );
        assert!(err.starts_with("error: "), "{err:?}");
        err
    }

    /// Runs and requires exit status `code`.
    pub fn code(self, code: i32) -> Outcome {
        let shown = self.shown();
        let out = self.run();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{shown} exited with {}, not {code}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        out
    }

    fn output(&self) -> Output {
        self.command()
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.shown()))
    }

    /// `treectl ARGS` for messages, the arguments cut after a dozen (an
    /// import can name hundreds of packages).
    fn shown(&self) -> String {
        const MAX: usize = 12;
        let mut s = String::from("treectl");
        for a in self.args.iter().take(MAX) {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        if self.args.len() > MAX {
            s.push_str(&format!(" … ({} more)", self.args.len() - MAX));
        }
        s
    }
}

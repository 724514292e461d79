//! Helpers for the server tests: a `treectl serve` process that is always
//! stopped, tokens files, small synthetic trees, and [`ServerFixture`], the
//! set-up most server tests share. Requests go through [`crate::http`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cli::{ensure_server_beside_treectl, treectl, treectl_in, Treectl};

/// The publish-scope token written by [`write_tokens`].
pub const PUBLISH_TOKEN: &str = "publish-token-for-tests";
/// The read-scope token written by [`write_tokens`].
pub const READ_TOKEN: &str = "read-token-for-tests";

/// A running `treectl serve`, killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Server log (stderr), for failure messages.
    pub log: PathBuf,
}

impl Server {
    /// Starts `treectl serve --repo REPO --listen 127.0.0.1:0 ARGS...` with
    /// extra environment variables, and waits for its "listening on" line.
    pub fn start(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = repo
            .parent()
            .expect("repo has a parent")
            .join(format!("server-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("create server log");
        ensure_server_beside_treectl();
        let mut serve = treectl(["serve", "--repo"])
            .arg(repo)
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        for (k, v) in env {
            serve = serve.env(k, v);
        }
        let mut child = serve
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start treectl serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let n = BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read server stdout");
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            log,
        };
        assert!(
            n > 0,
            "treectl serve printed nothing; log: {}",
            server.log_text()
        );
        server.addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the process to exit by itself (a failpoint), up to `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        for _ in 0..secs * 20 {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends SIGTERM and waits for a graceful exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().expect("wait for server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a tokens file with a publish token ("release-bot") and a read
/// token ("mirror"), and the two token files; returns the tokens file.
pub fn write_tokens(dir: &Path, reads: &str) -> PathBuf {
    use sha2::Digest;
    let hash = |t: &str| hex(&sha2::Sha256::digest(t.as_bytes()));
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        format!(
            "reads = \"{reads}\"\n\n[[token]]\nname = \"release-bot\"\nscope = \"publish\"\nsha256 = \"{}\"\n\n\
             [[token]]\nname = \"mirror\"\nscope = \"read\"\nsha256 = \"{}\"\n",
            hash(PUBLISH_TOKEN),
            hash(READ_TOKEN)
        ),
    )
    .expect("write tokens file");
    std::fs::write(dir.join("publish.token"), format!("{PUBLISH_TOKEN}\n")).expect("token file");
    std::fs::write(dir.join("read.token"), format!("{READ_TOKEN}\n")).expect("token file");
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A small tree: a few files, a symlink, a subdirectory; `variant` changes
/// one file's content and adds one file, like a point release.
pub fn synthetic_tree(dir: &Path, variant: u32) {
    std::fs::create_dir_all(dir.join("usr/lib")).expect("mkdir");
    std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
    std::fs::write(
        dir.join("etc/os-release"),
        format!("NAME=demo\nVERSION_ID={variant}\n"),
    )
    .expect("write");
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("usr/lib/lib{i}.so")),
            format!("library {i}\n").repeat(100 + i),
        )
        .expect("write");
    }
    std::fs::write(
        dir.join(format!("usr/lib/added-in-{variant}")),
        format!("{variant}\n"),
    )
    .expect("write");
    let link = dir.join("usr/lib/current");
    if !link.exists() {
        std::os::unix::fs::symlink("lib0.so", &link).expect("symlink");
    }
}

/// `treectl --repo REPO init --mode MODE`.
pub fn init_repo(repo: &Path, mode: &str) {
    treectl_in(repo, ["init", "--mode", mode]).ok();
}

/// What most server tests start from, in a fresh temporary directory:
/// `src`, a bare-user repository to commit releases in; `srv`, the archive
/// repository a server serves; and a tokens file from [`write_tokens`]
/// (with `publish.token` and `read.token` beside it).
pub struct ServerFixture {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub srv: PathBuf,
    pub tokens: PathBuf,
}

impl ServerFixture {
    /// The two repositories and a tokens file whose `reads` setting is
    /// `reads` (`anonymous` or `token`).
    pub fn new(reads: &str) -> ServerFixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (src, srv) = (tmp.path().join("src"), tmp.path().join("srv"));
        init_repo(&src, "bare-user");
        init_repo(&srv, "archive");
        let tokens = write_tokens(tmp.path(), reads);
        ServerFixture {
            tmp,
            src,
            srv,
            tokens,
        }
    }

    /// The temporary directory everything is in.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Writes [`synthetic_tree`] `variant` to `DIR/v<variant>` and commits
    /// it to `os/stable` in `src`; returns the commit id.
    pub fn commit(&self, variant: u32) -> String {
        let tree = self.dir().join(format!("v{variant}"));
        synthetic_tree(&tree, variant);
        let out = treectl_in(&self.src, ["commit", "--ref", "os/stable", "--tree"])
            .arg(&tree)
            .ok();
        out.trim().to_owned()
    }

    /// `treectl serve` of `srv` with `--tokens` and `args`, with extra
    /// environment variables.
    pub fn serve(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all = vec!["--tokens", self.tokens.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        Server::start(&self.srv, &all, env)
    }

    /// `treectl --repo SRC push URL os/stable` with the publish token in
    /// `TREECTL_TOKEN`, to be run.
    pub fn push(&self, server: &Server) -> Treectl {
        treectl_in(&self.src, ["push", &server.url(), "os/stable"])
            .env("TREECTL_TOKEN", PUBLISH_TOKEN)
    }
}

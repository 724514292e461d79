//! Helpers for the server tests: a `treectl serve` process that is always
//! stopped, a raw HTTP/1.1 client (raw so that paths like `/objects/../x`
//! reach the server unnormalised), tokens files and small synthetic trees.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::treectl_bin;

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
        let mut cmd = Command::new(treectl_bin());
        cmd.arg("serve")
            .arg("--repo")
            .arg(repo)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start treectl serve");
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

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` field of a JSON error body (panics if it is not one).
    pub fn json_error(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()));
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {v}"))
            .to_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send request");
    // The server may answer (413) before reading everything; ignore errors.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(raw)));
    let head_text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if head {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
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

/// Runs `treectl ARGS` and returns (success, stdout, stderr).
pub fn treectl(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(treectl_bin());
    cmd.args(args).env_remove("TREECTL_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run treectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

//! A hostile static mirror for pull tests: serves a repository directory
//! the way nginx does (plain GETs, `Connection: close`), counts requests
//! per path, and can misbehave on chosen paths: flip a byte, cut the body
//! short, serve another file, send an endless body, trickle one byte per
//! second, answer 500, or serve given bytes instead of the file. Plain
//! answers honour `Range: bytes=N-` (206) and every request's range and
//! body bytes are recorded, so resumed downloads can be counted. Listens on
//! 127.0.0.1:0; stopped on drop. Every loop is bounded.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use treectl_e2e::treectl;

/// What to do for one path.
#[derive(Clone, Debug)]
pub enum Trick {
    FlipByte,
    /// Declare the full length, send half, close.
    Truncate,
    /// Serve this other repository path's bytes.
    OtherFile(String),
    /// Chunked body that never ends (until the client goes or 60 s).
    Endless,
    /// Headers, then one byte per second (until the client goes or 60 s).
    Trickle,
    /// Answer 500 this many more times, then behave.
    Fail(u32),
    /// Serve these bytes.
    Bytes(Vec<u8>),
}

#[derive(Default)]
struct State {
    tricks: HashMap<String, Trick>,
    hits: HashMap<String, usize>,
    /// Per request, in order: path, the `Range` asked for, body bytes sent.
    log: Vec<(String, Option<String>, u64)>,
}

pub struct Mirror {
    pub addr: String,
    root: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Mirror {
    pub fn start(root: &Path) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (root.to_owned(), state.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, s, st) = (r.clone(), s.clone(), st.clone());
                        std::thread::spawn(move || handle(conn, &r, &s, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Mirror {
            addr,
            root: root.to_owned(),
            state,
            stop,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, path: &str, trick: Trick) {
        self.state
            .lock()
            .expect("state")
            .tricks
            .insert(path.to_owned(), trick);
    }

    pub fn clear(&self) {
        self.state.lock().expect("state").tricks.clear();
    }

    /// Requests per path so far.
    pub fn hits(&self) -> HashMap<String, usize> {
        self.state.lock().expect("state").hits.clone()
    }

    pub fn reset_hits(&self) {
        let mut s = self.state.lock().expect("state");
        s.hits.clear();
        s.log.clear();
    }

    /// Every request so far: path, `Range` header, body bytes sent.
    pub fn log(&self) -> Vec<(String, Option<String>, u64)> {
        self.state.lock().expect("state").log.clone()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn handle(mut conn: TcpStream, root: &Path, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 << 10 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut parts = text.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let trick = {
        let mut s = state.lock().expect("state");
        *s.hits.entry(path.clone()).or_default() += 1;
        let t = s.tricks.get(&path).cloned();
        if let Some(Trick::Fail(n)) = &t {
            if *n == 0 {
                s.tricks.remove(&path);
            } else {
                s.tricks.insert(path.clone(), Trick::Fail(n - 1));
            }
        }
        t
    };
    let range = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("range").then(|| v.trim().to_owned())
    });
    let allowed = method == "GET"
        && (path == "/summary.json"
            || path == "/config"
            || path.starts_with("/objects/")
            || path.starts_with("/deltas/")
            || path.starts_with("/signatures/"))
        && !path.contains("..");
    if !allowed {
        let _ = respond(&mut conn, "404 Not Found", b"not found\n");
        return;
    }
    let file = |p: &str| std::fs::read(root.join(p.trim_start_matches('/'))).ok();
    let body = match &trick {
        Some(Trick::OtherFile(other)) => file(other),
        Some(Trick::Bytes(b)) => Some(b.clone()),
        _ => file(&path),
    };
    let Some(mut body) = body else {
        let _ = respond(&mut conn, "404 Not Found", b"not found\n");
        return;
    };
    match trick {
        Some(Trick::Fail(n)) if n > 0 => {
            let _ = respond(&mut conn, "500 Internal Server Error", b"oops\n");
        }
        Some(Trick::FlipByte) => {
            let i = body.len() / 2;
            if let Some(b) = body.get_mut(i) {
                *b ^= 0x20;
            }
            let _ = respond(&mut conn, "200 OK", &body);
        }
        Some(Trick::Truncate) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body[..body.len() / 2]);
        }
        Some(Trick::Endless) => {
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            if conn.write_all(head.as_bytes()).is_err() {
                return;
            }
            let data = vec![b'x'; 64 << 10];
            let chunk = [
                format!("{:x}\r\n", data.len()).into_bytes(),
                data,
                b"\r\n".to_vec(),
            ]
            .concat();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) && !stop.load(Ordering::Relaxed) {
                if conn.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        Some(Trick::Trickle) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if conn.write_all(head.as_bytes()).is_err() {
                return;
            }
            for b in body.iter().take(60) {
                if stop.load(Ordering::Relaxed) || conn.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        _ => {
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n < body.len());
            let sent = match start {
                Some(n) => {
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {n}-{}/{}\r\nConnection: close\r\n\r\n",
                        body.len() - n,
                        body.len() - 1,
                        body.len()
                    );
                    let ok = conn.write_all(head.as_bytes()).is_ok()
                        && conn.write_all(&body[n..]).is_ok();
                    if ok {
                        body.len() - n
                    } else {
                        0
                    }
                }
                None => match respond(&mut conn, "200 OK", &body) {
                    Ok(()) => body.len(),
                    Err(_) => 0,
                },
            };
            state
                .lock()
                .expect("state")
                .log
                .push((path, range, sent as u64));
        }
    }
}

fn respond(conn: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

/// A small OS-like tree: `dirs` directories of `files` files each, a
/// symlink, nested directories; `variant` changes a few files.
pub fn make_tree(dir: &Path, dirs: usize, files: usize, variant: u32) {
    for d in 0..dirs {
        let sub = dir.join(format!("usr/lib/pkg{d}/share"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..files {
            let text = if f == 0 {
                format!("pkg {d} file {f} variant {variant}\n").repeat(50)
            } else {
                format!("pkg {d} file {f}\n").repeat(20 + f)
            };
            std::fs::write(sub.join(format!("f{f}")), text).expect("write");
        }
    }
    std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
    std::fs::write(
        dir.join("etc/os-release"),
        format!("VERSION_ID={variant}\n"),
    )
    .expect("write");
    let link = dir.join("etc/link");
    if !link.exists() {
        std::os::unix::fs::symlink("os-release", link).expect("symlink");
    }
}

/// A publishing side: an archive repository with a signing key.
pub struct Publisher {
    pub srv: PathBuf,
    pub key: PathBuf,
    pub key_pub: PathBuf,
}

impl Publisher {
    pub fn new(dir: &Path) -> Publisher {
        let srv = dir.join("srv");
        let key = dir.join("signing.key");
        treectl(["--repo", s(&srv), "init", "--mode", "archive"]).ok();
        treectl(["keygen", "--out", s(&key)]).ok();
        Publisher {
            srv,
            key_pub: dir.join("signing.key.pub"),
            key,
        }
    }

    /// Commits `tree` as `ref_name` and publishes it signed; returns the id.
    pub fn publish(&self, tree: &Path, ref_name: &str, version: &str) -> String {
        let out = treectl([
            "--repo",
            s(&self.srv),
            "commit",
            "--ref",
            ref_name,
            "--tree",
            s(tree),
            "--timestamp",
            "2024-01-01T00:00:00Z",
            "--metadata",
            &format!("version={version}"),
        ])
        .ok();
        let id = out.trim().to_owned();
        treectl([
            "publish",
            s(&self.srv),
            ref_name,
            &id,
            "--sign-key",
            s(&self.key),
        ])
        .ok();
        id
    }

    /// A fresh bare-user repository at `repo` whose remote `origin` is
    /// `url`, trusting this publisher's key.
    pub fn client(&self, repo: &Path, url: &str) {
        treectl(["--repo", s(repo), "init", "--mode", "bare-user"]).ok();
        treectl([
            "--repo",
            s(repo),
            "remote",
            "add",
            "origin",
            url,
            "--trusted-key",
            s(&self.key_pub),
        ])
        .ok();
    }

    pub fn index_bytes(&self) -> Vec<u8> {
        std::fs::read(self.srv.join("summary.json")).expect("summary.json")
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `objects/XX/rest.ext` request paths of every object in a repository.
pub fn object_paths(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(repo.join("objects")).expect("objects") {
        let dir = dir.expect("entry").path();
        for f in std::fs::read_dir(&dir).expect("fanout") {
            let f = f.expect("entry").path();
            out.push(format!(
                "/objects/{}/{}",
                dir.file_name().expect("name").to_string_lossy(),
                f.file_name().expect("name").to_string_lossy()
            ));
        }
    }
    out.sort();
    out
}

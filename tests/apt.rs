//! A real apt repository for tests: `.deb` files in `pool/`, indexed by
//! `dpkg-scanpackages` into `dists/stable/main/binary-<arch>/Packages(.gz)`
//! with a `Release` listing their SHA256, served on loopback HTTP by a
//! small static file server that stops when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// The tools [`AptRepo`] and [`build_deb`] run: a test that uses them
/// first asks `require_tools(apt::TOOLS, why)`.
pub const TOOLS: &[&str] = &["dpkg-scanpackages", "dpkg-deb", "gzip"];

/// An apt repository being built in a directory.
pub struct AptRepo {
    pub root: PathBuf,
    pub arch: String,
}

impl AptRepo {
    pub fn new(root: &Path, arch: &str) -> AptRepo {
        std::fs::create_dir_all(root.join("pool")).unwrap();
        std::fs::create_dir_all(root.join(format!("dists/stable/main/binary-{arch}"))).unwrap();
        AptRepo {
            root: root.to_owned(),
            arch: arch.to_owned(),
        }
    }

    /// Copies a `.deb` into `pool/` under its own file name.
    pub fn add(&self, deb: &Path) -> PathBuf {
        let dest = self.root.join("pool").join(deb.file_name().unwrap());
        std::fs::copy(deb, &dest).unwrap();
        dest
    }

    /// Rebuilds `Packages`, `Packages.gz` and `Release`.
    pub fn index(&self) {
        let out = Command::new("dpkg-scanpackages")
            .args(["-m", "pool", "/dev/null"])
            .current_dir(&self.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dpkg-scanpackages: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rel = format!("main/binary-{}/Packages", self.arch);
        let dist = self.root.join("dists/stable");
        std::fs::write(dist.join(&rel), &out.stdout).unwrap();
        let st = Command::new("gzip")
            .args(["-kfn9"])
            .arg(dist.join(&rel))
            .status()
            .unwrap();
        assert!(st.success());
        let mut release = String::from(
            "Origin: treectl-test\nSuite: stable\nCodename: stable\nComponents: main\n",
        );
        release.push_str(&format!("Architectures: {}\nSHA256:\n", self.arch));
        for f in [rel.clone(), format!("{rel}.gz")] {
            let data = std::fs::read(dist.join(&f)).unwrap();
            release.push_str(&format!(
                " {} {} {f}\n",
                hex(&Sha256::digest(&data)),
                data.len()
            ));
        }
        std::fs::write(dist.join("Release"), release).unwrap();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Builds a `.deb` named `<name>_<version>_<arch>.deb` in `out` holding
/// `files` (path, content), with optional Depends.
pub fn build_deb(
    out: &Path,
    name: &str,
    version: &str,
    arch: &str,
    depends: Option<&str>,
    files: &[(&str, &[u8])],
) -> PathBuf {
    let dir = out.join(format!("build-{name}-{version}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: t <t@example.invalid>\nDescription: test package\n"
    );
    if let Some(d) = depends {
        control.push_str(&format!("Depends: {d}\n"));
    }
    std::fs::write(dir.join("DEBIAN/control"), control).unwrap();
    for (path, content) in files {
        let p = dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    let deb = out.join(format!("{name}_{version}_{arch}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&dir)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "dpkg-deb --build: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    deb
}

/// A static file server on 127.0.0.1 (GET only), stopped on drop.
pub struct HttpServer {
    pub url: String,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn serve(root: &Path) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let root = root.to_owned();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let root = root.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &root);
                    });
                }
            }
        });
        HttpServer {
            url: format!("http://{addr}"),
            stop,
            addr,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn decode(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(path.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn handle(conn: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        let mut w = &conn;
        let path = decode(target.split('?').next().unwrap_or("/"));
        let file = path
            .filter(|p| !p.split('/').any(|c| c == ".."))
            .map(|p| root.join(p.trim_start_matches('/')))
            .and_then(|p| std::fs::read(p).ok());
        match file {
            Some(body) => {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                w.write_all(&body)?;
            }
            None => write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?,
        }
        w.flush()?;
    }
}

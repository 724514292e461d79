//! A real apt repository for tests: `.deb` files in `pool/`, indexed by
//! `dpkg-scanpackages` into `dists/stable/main/binary-<arch>/Packages(.gz)`
//! with a `Release` listing their SHA256, signed (when asked) by an
//! OpenPGP key `gpg` makes ([`GpgKey`]) into `InRelease` and
//! `Release.gpg`, served on loopback HTTP by a small static file server
//! that stops when dropped.

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
        self.index_with("");
    }

    /// The directory `Release` lies in.
    pub fn dist(&self) -> PathBuf {
        self.root.join("dists/stable")
    }

    /// Signs `Release` with `key`: a clearsigned `InRelease` and a detached
    /// `Release.gpg`, as an archive publishes them.
    pub fn sign(&self, key: &GpgKey) {
        let dist = self.dist();
        let _ = std::fs::remove_file(dist.join("InRelease"));
        let _ = std::fs::remove_file(dist.join("Release.gpg"));
        key.gpg(&[
            "--clearsign",
            "-o",
            dist.join("InRelease").to_str().unwrap(),
            dist.join("Release").to_str().unwrap(),
        ]);
        key.gpg(&[
            "--detach-sign",
            "-o",
            dist.join("Release.gpg").to_str().unwrap(),
            dist.join("Release").to_str().unwrap(),
        ]);
    }

    /// Like [`AptRepo::index`], with `fields` (`Name: value` lines) added
    /// to `Release` before its SHA256 list.
    pub fn index_with(&self, fields: &str) {
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
        release.push_str(fields);
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

/// An OpenPGP signing key made by `gpg` in its own home directory.
pub struct GpgKey {
    pub home: PathBuf,
    /// The primary key's fingerprint (upper-case hex).
    pub fingerprint: String,
}

/// The tools [`GpgKey`] runs.
pub const GPG_TOOLS: &[&str] = &["gpg"];

impl GpgKey {
    /// A new ed25519 signing key for `name`, in `dir` (created).
    pub fn new(dir: &Path, name: &str) -> GpgKey {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let mut key = GpgKey {
            home: dir.to_owned(),
            fingerprint: String::new(),
        };
        key.gpg(&[
            "--passphrase",
            "",
            "--quick-generate-key",
            &format!("{name} <{name}@example.invalid>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let out = key.gpg(&["--with-colons", "--list-keys"]);
        key.fingerprint = out
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .expect("gpg lists the new key's fingerprint");
        key
    }

    /// Runs gpg on this key's home; its stdout.
    pub fn gpg(&self, args: &[&str]) -> String {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes the public key to `path`, armored (`.asc`) or binary.
    pub fn export(&self, path: &Path, armored: bool) -> PathBuf {
        let mut args = vec!["--export", "-o", path.to_str().unwrap()];
        if armored {
            args.insert(0, "--armor");
        }
        self.gpg(&args);
        path.to_owned()
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
    let fields: Vec<(&str, &str)> = depends.map(|d| ("Depends", d)).into_iter().collect();
    build_deb_with(out, name, version, arch, &fields, files)
}

/// [`build_deb`] with more control fields (`Pre-Depends`, `Provides`, …).
pub fn build_deb_with(
    out: &Path,
    name: &str,
    version: &str,
    arch: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &[u8])],
) -> PathBuf {
    let dir = out.join(format!("build-{name}-{version}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: t <t@example.invalid>\nDescription: test package\n"
    );
    for (field, value) in fields {
        control.push_str(&format!("{field}: {value}\n"));
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

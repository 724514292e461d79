//! nginx from Debian's package as a static mirror of a repository
//! directory, for tests: foreground, no master process, on a free loopback
//! port, with its own config, logs and temp dirs; killed on drop. Tests
//! that use it first `require("nginx", why)`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nginx serving one directory.
pub struct Nginx {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Where its config and logs are (`access.log` lists every request).
    pub dir: PathBuf,
}

impl Nginx {
    /// Starts nginx serving `root` the way the mirror guide configures it
    /// (objects immutable, no symlinks, no `tmp/`, `state/`, `lock`,
    /// `refs/`), with its files in `dir`. A test asks
    /// `require("nginx", …)` first: this panics when nginx is missing.
    pub fn start(dir: &Path, root: &Path) -> Nginx {
        let bin = crate::skip::find_tool("nginx")
            .expect("nginx is installed (a test calls require(\"nginx\", …) first)");
        std::fs::create_dir_all(dir).expect("mkdir nginx dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             default_type application/octet-stream;\n  keepalive_requests 100000;\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {root};\n    disable_symlinks on;\n\
             location ~ ^/(tmp|state|lock|refs)(/|$) {{ return 404; }}\n\
             location ~ \\.(filez|tree|dirmeta|commit|pack|idx)$ {{ add_header Cache-Control \"public, max-age=31536000, immutable\"; }}\n  }}\n}}\n",
            root = root.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir: dir.to_owned(),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&nginx.addr).is_ok() {
                return nginx;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

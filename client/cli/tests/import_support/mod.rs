//! Helpers for the import journeys: running the other tools, writing tar
//! archives by hand (hostile ones included) and comparing trees on disk.
//! The binary runs through `treectl_e2e::treectl_in`.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs another tool and requires success.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One tar entry for [`raw_tar`]: type flag, name, content, link target, mode.
pub struct RawEntry<'a> {
    pub kind: u8,
    pub name: &'a str,
    pub data: &'a [u8],
    pub link: &'a str,
    pub mode: u32,
}

pub fn f<'a>(name: &'a str, data: &'a [u8]) -> RawEntry<'a> {
    RawEntry {
        kind: b'0',
        name,
        data,
        link: "",
        mode: 0o644,
    }
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}", value, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

/// A ustar archive written byte by byte, so names like `../x` survive.
pub fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        octal(&mut h[100..108], e.mode as u64);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], e.data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[148..156].fill(b' ');
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// What is compared per path: type, permission bits, owner, symlink
/// target, content. Not timestamps.
pub use treectl_e2e::{differences, snapshot};

pub fn write(path: &Path, data: &[u8]) -> PathBuf {
    fs::write(path, data).unwrap();
    path.to_owned()
}

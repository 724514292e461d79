//! The initramfs, composed from packages: the merged tree of the
//! lockfile's `[initramfs]` components (busybox-static and treectl's own
//! `/init` and prepare-root, for example) plus the kernel modules the
//! target needs, taken with their dependencies from the configured OS
//! tree's kernel (whose `modules.dep` the configure step wrote). Nothing
//! comes from the host. See `docs/booting.md`.
//!
//! For each kernel `usr/lib/modules/<kver>/` of the OS tree, [`build_dir`]
//! lays out one initramfs directory:
//!
//! - the checkout of the merged initramfs components;
//! - `lib` -> `usr/lib` when the components left no `/lib` (busybox's
//!   modprobe looks in `/lib/modules/<kver>`);
//! - `usr/lib/modules/<kver>/`: the modules of [`module_closure`], at the
//!   same relative paths, and a `modules.dep` naming exactly those;
//! - `etc/treectl/modules`: the module names in load order (dependencies
//!   and `softdep pre:` modules first), which `/init` loads one by one.
//!
//! The caller commits that directory and exports it as a newc cpio
//! (`usr/lib/modules/<kver>/initramfs.img` of the OS tree), so the same
//! inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where `/init` reads the modules to load, one name a line.
pub const MODULES_LIST: &str = "etc/treectl/modules";
/// The file name of the initramfs beside a kernel's `vmlinuz`.
pub const IMAGE_NAME: &str = "initramfs.img";

/// Why the initramfs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("kernel {kernel}: module {module} is neither a module nor built in ({hint})")]
    UnknownModule {
        kernel: String,
        module: String,
        hint: &'static str,
    },
    #[error("kernel {kernel}: {reason}")]
    Kernel { kernel: String, reason: String },
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> InitramfsError + 'p {
    move |source| InitramfsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A module's name as modprobe compares it: the file name without `.ko`
/// (and a compression suffix), `-` read as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    stem.replace('-', "_")
}

/// The index files of one kernel that [`module_closure`] reads.
#[derive(Clone, Debug, Default)]
pub struct ModuleIndex {
    /// name -> (relative path, relative paths of its dependencies).
    modules: BTreeMap<String, (String, Vec<String>)>,
    /// name -> names of its `softdep ... pre:` modules (or aliases).
    softdeps: BTreeMap<String, Vec<String>>,
    /// alias -> module names.
    aliases: BTreeMap<String, BTreeSet<String>>,
    builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// Parses `modules.dep`, `modules.softdep`, `modules.alias` and
    /// `modules.builtin` (the last three may be empty).
    pub fn parse(dep: &str, softdep: &str, alias: &str, builtin: &str) -> ModuleIndex {
        let mut index = ModuleIndex::default();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            index
                .modules
                .insert(module_name(path), (path.trim().to_owned(), deps));
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut pre = Vec::new();
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    _ if in_pre => pre.push(w.replace('-', "_")),
                    _ => {}
                }
            }
            index.softdeps.insert(module.replace('-', "_"), pre);
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(a), Some(m)) = (words.next(), words.next(), words.next()) {
                index
                    .aliases
                    .entry(a.replace('-', "_"))
                    .or_default()
                    .insert(m.replace('-', "_"));
            }
        }
        index.builtin = builtin.lines().map(module_name).collect();
        index
    }

    /// The module a name or alias stands for (an alias with several
    /// modules: the first by name), or `None` when built in or unknown.
    fn resolve(&self, name: &str) -> Option<&str> {
        if let Some((k, _)) = self.modules.get_key_value(name) {
            return Some(k);
        }
        self.aliases
            .get(name)?
            .iter()
            .find_map(|m| self.modules.get_key_value(m).map(|(k, _)| k.as_str()))
    }
}

/// The modules to load for `wanted`, in load order: each module after its
/// `softdep pre:` modules and its dependencies. Built-in modules are left
/// out; a name that is neither a module, an alias nor built in is an
/// error. Returns (name, relative path) pairs.
pub fn module_closure(
    kernel: &str,
    index: &ModuleIndex,
    wanted: &[String],
) -> Result<Vec<(String, String)>, InitramfsError> {
    fn visit(
        index: &ModuleIndex,
        name: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<(String, String)>,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        // Soft dependencies are best effort, as for modprobe.
        for pre in index.softdeps.get(name).into_iter().flatten() {
            if let Some(m) = index.resolve(pre) {
                visit(index, m, seen, out);
            }
        }
        let (path, deps) = &index.modules[name];
        for d in deps {
            visit(index, &module_name(d), seen, out);
        }
        out.push((name.to_owned(), path.clone()));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        let n = w.replace('-', "_");
        match index.resolve(&n) {
            Some(m) => visit(index, m, &mut seen, &mut out),
            None if index.builtin.contains(&n) => {}
            None => {
                return Err(InitramfsError::UnknownModule {
                    kernel: kernel.to_owned(),
                    module: w.clone(),
                    hint: "check the name with `modinfo` against the kernel package",
                })
            }
        }
    }
    Ok(out)
}

/// The kernels of a configured tree: `usr/lib/modules/<kver>` directories
/// with a `vmlinuz` and a `modules.dep`, sorted.
pub fn kernels(root: &Path) -> Result<Vec<String>, InitramfsError> {
    let dir = root.join("usr/lib/modules");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io("reading", &dir))?;
        let p = e.path();
        if p.join("vmlinuz").is_file() && p.join("modules.dep").is_file() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn read_optional(path: &Path) -> Result<String, InitramfsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// Adds kernel `kver`'s modules for `wanted` (from the OS tree `os_root`)
/// to the initramfs directory `dir` (a checkout of the merged initramfs
/// components); see the module docs. Returns the modules in load order.
pub fn build_dir(
    os_root: &Path,
    kver: &str,
    wanted: &[String],
    dir: &Path,
) -> Result<Vec<String>, InitramfsError> {
    use std::os::unix::fs::PermissionsExt;
    let kdir = os_root.join("usr/lib/modules").join(kver);
    let index = ModuleIndex::parse(
        &read_optional(&kdir.join("modules.dep"))?,
        &read_optional(&kdir.join("modules.softdep"))?,
        &read_optional(&kdir.join("modules.alias"))?,
        &read_optional(&kdir.join("modules.builtin"))?,
    );
    let closure = module_closure(kver, &index, wanted)?;
    let target = dir.join("usr/lib/modules").join(kver);
    mkdir_p(&target)?;
    let mut dep = String::new();
    for (_, path) in &closure {
        if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(InitramfsError::Kernel {
                kernel: kver.to_owned(),
                reason: format!("modules.dep names an unsafe path {path:?}"),
            });
        }
        let to = target.join(path);
        mkdir_p(to.parent().expect("a module path has a parent"))?;
        let from = kdir.join(path);
        std::fs::copy(&from, &to).map_err(io("copying", &from))?;
        let deps = &index.modules[&module_name(path)].1;
        dep.push_str(&format!("{path}:"));
        for d in deps {
            dep.push(' ');
            dep.push_str(d);
        }
        dep.push('\n');
    }
    let dep_path = target.join("modules.dep");
    std::fs::write(&dep_path, dep).map_err(io("writing", &dep_path))?;
    let lib = dir.join("lib");
    if lib.symlink_metadata().is_err() {
        std::os::unix::fs::symlink("usr/lib", &lib).map_err(io("linking", &lib))?;
    }
    let list = dir.join(MODULES_LIST);
    mkdir_p(list.parent().expect("the list has a parent"))?;
    let names: Vec<String> = closure.into_iter().map(|(n, _)| n).collect();
    let mut text = names.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(&list, text).map_err(io("writing", &list))?;
    std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o644))
        .map_err(io("setting the mode of", &list))?;
    Ok(names)
}

fn mkdir_p(path: &Path) -> Result<(), InitramfsError> {
    std::fs::create_dir_all(path).map_err(io("creating", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(
            DEP,
            "# comment\nsoftdep ext4 pre: crc32c\n",
            "alias crc32c crc32c_generic\nalias crypto-crc32c crc32c_generic\n",
            "kernel/drivers/tty/serial/8250/8250.ko\n",
        )
    }

    #[test]
    fn closure_puts_dependencies_and_softdeps_first() {
        let wanted: Vec<String> = ["virtio-pci", "virtio_blk", "ext4", "8250"]
            .map(String::from)
            .to_vec();
        let names: Vec<String> = module_closure("6.1", &index(), &wanted)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "virtio_pci_modern_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "virtio_blk",
                "crc32c_generic",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4"
            ]
        );
    }

    #[test]
    fn unknown_modules_are_named() {
        let e = module_closure("6.1", &index(), &["nosuch".to_owned()]).unwrap_err();
        assert!(e.to_string().contains("module nosuch"), "{e}");
    }

    #[test]
    fn names_drop_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/a/virtio-pci.ko.xz"), "virtio_pci");
        assert_eq!(module_name("ext4.ko"), "ext4");
    }
}

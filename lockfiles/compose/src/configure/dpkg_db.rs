//! The dpkg database of a composed tree, written from the components: what
//! `dpkg --unpack` of every package would have left, so that
//! `dpkg --configure -a` inside the tree finds exactly the lockfile's
//! packages, each `unpacked`.
//!
//! - `/var/lib/dpkg/status`: one paragraph per package (sorted by name, as
//!   dpkg writes it): the package's `control` file with
//!   `Status: install ok unpacked` after `Package`, and a `Conffiles` field
//!   naming each conffile with the hash `newconffile`;
//! - each conffile is renamed to `<path>.dpkg-new`, as an unpack leaves it,
//!   so configuring installs it and records its hash exactly as dpkg does;
//! - `/var/lib/dpkg/info/<name>.<member>`: `list` (every path of the
//!   component's tree, `/.` first, parents before children), `md5sums`,
//!   `conffiles`, the maintainer scripts (mode 0755), `templates`,
//!   `triggers`, `shlibs`, `symbols`, `config`; `<name>` is
//!   `<package>:<arch>` for `Multi-Arch: same` packages;
//! - `/var/lib/dpkg/triggers/File` and `triggers/<name>`: the trigger
//!   interests an unpack registers (`interest*` lines of `triggers`);
//! - empty `available`, `diversions`, `statoverride`, and the `updates`,
//!   `alternatives`, `parts` directories.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use treectl_store::object::EntryKind;
use treectl_store::{ObjectId, Repo};

use super::{ConfigureError as Error, DebPackage};

/// Where dpkg keeps its database, relative to the tree's root.
pub const DPKG_DIR: &str = "var/lib/dpkg";
/// Control members written to `info/` as executable scripts.
const SCRIPTS: &[&str] = &["preinst", "postinst", "prerm", "postrm", "config"];
/// Control members copied to `info/` (besides `list`).
const INFO_MEMBERS: &[&str] = &[
    "md5sums",
    "conffiles",
    "preinst",
    "postinst",
    "prerm",
    "postrm",
    "config",
    "templates",
    "triggers",
    "shlibs",
    "symbols",
];

/// The first paragraph of a control file, raw lines kept (continuation
/// lines included), without trailing blank lines.
fn first_paragraph(control: &str) -> Vec<&str> {
    control
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// A single-line field of a control file's first paragraph.
pub fn field<'a>(control: &'a str, name: &str) -> Option<&'a str> {
    first_paragraph(control).into_iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (!l.starts_with([' ', '\t']) && k.trim().eq_ignore_ascii_case(name)).then(|| v.trim())
    })
}

/// The conffiles of a package: absolute paths from its `conffiles` member
/// (`remove-on-upgrade` lines are flags for upgrades and are skipped).
pub fn conffiles(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .filter(|l| !l.starts_with("remove-on-upgrade"))
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_owned())
        .collect()
}

/// The status paragraph of a package unpacked but not configured.
pub fn status_paragraph(control: &str, conffiles: &[String]) -> String {
    let mut out = String::new();
    for line in first_paragraph(control) {
        let is_field = |n: &str| {
            line.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(n))
        };
        // A Status or Conffiles field in a control file would be a lie here.
        if is_field("Status") || is_field("Conffiles") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if is_field("Package") {
            out.push_str("Status: install ok unpacked\n");
        }
    }
    if !conffiles.is_empty() {
        out.push_str("Conffiles:\n");
        for c in conffiles {
            let _ = writeln!(out, " {c} newconffile");
        }
    }
    out
}

/// The name of a package's files in `info/`: `<package>:<arch>` for
/// `Multi-Arch: same`, else `<package>`.
pub fn info_name(control: &str) -> String {
    let package = field(control, "Package").unwrap_or_default();
    match (field(control, "Multi-Arch"), field(control, "Architecture")) {
        (Some(ma), Some(arch)) if ma.eq_ignore_ascii_case("same") => format!("{package}:{arch}"),
        _ => package.to_owned(),
    }
}

/// The trigger interests in a `triggers` member, as `(trigger, line)`:
/// the trigger is a file path (for `triggers/File`, whose line is
/// `<path> <package>[/noawait]`) or a name (for `triggers/<name>`, whose
/// line is `<package>[/noawait]`).
pub fn trigger_interests(package: &str, triggers: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in triggers.lines() {
        let mut words = line.split_whitespace();
        let (Some(directive), Some(trigger)) = (words.next(), words.next()) else {
            continue;
        };
        let suffix = match directive {
            "interest" | "interest-await" => "",
            "interest-noawait" => "/noawait",
            _ => continue,
        };
        out.push((trigger.to_owned(), format!("{package}{suffix}")));
    }
    out
}

/// Every path of a stored tree as dpkg's `.list` has it: `/.` first, then
/// each entry, parents before children, in name order.
pub fn list_paths(repo: &Repo, tree: &ObjectId) -> Result<Vec<String>, Error> {
    let mut out = vec!["/.".to_owned()];
    walk(repo, tree, "", &mut out)?;
    Ok(out)
}

fn walk(repo: &Repo, tree: &ObjectId, prefix: &str, out: &mut Vec<String>) -> Result<(), Error> {
    for e in repo.read_tree(tree)?.entries {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
        out.push(path.clone());
        if let EntryKind::Dir { tree, .. } = e.kind {
            walk(repo, &tree, &path, out)?;
        }
    }
    Ok(())
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    std::fs::write(path, data).map_err(Error::io("writing", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("setting the mode of", path))
}

/// What [`write_database`] wrote.
#[derive(Clone, Debug, Default)]
pub struct DatabaseReport {
    /// Conffiles renamed to `.dpkg-new`.
    pub conffiles: usize,
    /// Conffiles a package lists that its tree does not have.
    pub missing_conffiles: Vec<String>,
}

/// Writes the dpkg database for `packages` into the tree at `root` (a
/// writable checkout of the merged tree) and renames their conffiles to
/// `.dpkg-new`.
pub fn write_database(
    repo: &Repo,
    root: &Path,
    packages: &[DebPackage],
) -> Result<DatabaseReport, Error> {
    let db = root.join(DPKG_DIR);
    for dir in ["info", "updates", "triggers", "alternatives", "parts"] {
        let p = db.join(dir);
        std::fs::create_dir_all(&p).map_err(Error::io("creating", &p))?;
    }
    let mut report = DatabaseReport::default();
    let mut sorted: Vec<&DebPackage> = packages.iter().collect();
    sorted.sort_by(|a, b| a.package().cmp(b.package()));
    let mut status = String::new();
    let mut interests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in sorted {
        let control = p.control();
        let conff = p
            .member_text("conffiles")
            .map(|t| conffiles(&t))
            .unwrap_or_default();
        let mut kept = Vec::new();
        for c in &conff {
            let path = root.join(c.trim_start_matches('/'));
            if path.symlink_metadata().is_err() {
                report
                    .missing_conffiles
                    .push(format!("{}: {c}", p.package()));
                continue;
            }
            let new = root.join(format!("{}.dpkg-new", c.trim_start_matches('/')));
            std::fs::rename(&path, &new).map_err(Error::io("renaming", &path))?;
            report.conffiles += 1;
            kept.push(c.clone());
        }
        if !status.is_empty() {
            status.push('\n');
        }
        status.push_str(&status_paragraph(&control, &kept));
        let name = info_name(&control);
        let mut list = list_paths(repo, &p.tree)?.join("\n");
        list.push('\n');
        write(
            &db.join(format!("info/{name}.list")),
            list.as_bytes(),
            0o644,
        )?;
        for member in INFO_MEMBERS {
            if let Some(bytes) = p.members.get(*member) {
                let mode = if SCRIPTS.contains(member) {
                    0o755
                } else {
                    0o644
                };
                write(&db.join(format!("info/{name}.{member}")), bytes, mode)?;
            }
        }
        if let Some(t) = p.member_text("triggers") {
            for (trigger, line) in trigger_interests(p.package(), &t) {
                interests.entry(trigger).or_default().push(line);
            }
        }
    }
    write(&db.join("status"), status.as_bytes(), 0o644)?;
    for empty in ["available", "diversions", "statoverride"] {
        write(&db.join(empty), b"", 0o644)?;
    }
    let mut file_interests = String::new();
    for (trigger, lines) in &interests {
        if trigger.starts_with('/') {
            for l in lines {
                let _ = writeln!(file_interests, "{trigger} {l}");
            }
        } else {
            let mut text = lines.join("\n");
            text.push('\n');
            write(&db.join("triggers").join(trigger), text.as_bytes(), 0o644)?;
        }
    }
    if !file_interests.is_empty() {
        write(&db.join("triggers/File"), file_interests.as_bytes(), 0o644)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROL: &str = "Package: libfoo1\nVersion: 1.0-1\nArchitecture: amd64\nMulti-Arch: same\nDepends: libc6 (>= 2.34)\nDescription: foo\n long text\n .\n more\n";

    #[test]
    fn status_paragraphs() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "Package: a\nVersion: 1\n",
                &[],
                "Package: a\nStatus: install ok unpacked\nVersion: 1\n",
            ),
            (
                "\nPackage: a\nStatus: purge\nDescription: x\n y\n\nPackage: ignored\n",
                &["/etc/a.conf"],
                "Package: a\nStatus: install ok unpacked\nDescription: x\n y\nConffiles:\n /etc/a.conf newconffile\n",
            ),
        ];
        for (control, conff, want) in cases {
            let conff: Vec<String> = conff.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(status_paragraph(control, &conff), *want, "{control:?}");
        }
    }

    #[test]
    fn fields_names_and_conffiles() {
        assert_eq!(field(CONTROL, "version"), Some("1.0-1"));
        assert_eq!(field(CONTROL, "Description"), Some("foo"));
        assert_eq!(field(CONTROL, "long text"), None);
        assert_eq!(info_name(CONTROL), "libfoo1:amd64");
        assert_eq!(info_name("Package: x\nArchitecture: all\n"), "x");
        assert_eq!(
            conffiles("/etc/a\n\nremove-on-upgrade /etc/b\n/etc/c remove-on-upgrade\n"),
            ["/etc/a", "/etc/c"]
        );
    }

    #[test]
    fn trigger_interest_lines() {
        let t = "interest-noawait ldconfig\ninterest /usr/share/man\nactivate-noawait x\ninterest-await /usr/lib/y\n";
        assert_eq!(
            trigger_interests("man-db", t),
            [
                ("ldconfig".into(), "man-db/noawait".into()),
                ("/usr/share/man".into(), "man-db".into()),
                ("/usr/lib/y".into(), "man-db".into()),
            ]
        );
    }
}

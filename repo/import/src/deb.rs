//! Debian packages: the `ar` archive, its `control.tar` (fields, maintainer
//! scripts, conffiles) and its `data.tar`, whose tree is exactly what
//! `dpkg-deb -x` extracts (modes, owners, setuid bits, symlinks, hardlinks).
//!
//! Commits of `.deb` imports are reproducible: no parent, a subject and
//! metadata taken from the package, and (unless given) the timestamp of the
//! newest entry of `data.tar`. The same `.deb` gives the same commit id on
//! any machine.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::tar::{read_tar, TarFlavor};
use super::{ImportError, ImportOptions, ImportReport, ImportStats, Result};
use treectl_store::commit::MemDir;
use treectl_store::hash::ObjectId;
use treectl_store::object::Commit;
use treectl_store::refs::{self, RefName};
use treectl_store::store::{RefUpdate, Repo, Transaction};

/// Control fields recorded in commit metadata, as `deb.<lower-case name>`.
pub const RECORDED_FIELDS: &[&str] = &[
    "Package",
    "Version",
    "Architecture",
    "Depends",
    "Pre-Depends",
    "Provides",
    "Conflicts",
    "Replaces",
    "Source",
];
/// Maintainer scripts whose presence is recorded in `deb.scripts`.
pub const MAINTAINER_SCRIPTS: &[&str] = &["preinst", "postinst", "prerm", "postrm", "config"];
/// Metadata key holding the sha256 of the `.deb` file.
pub const META_SHA256: &str = "deb.sha256";
/// Members of `control.tar` kept whole in commit metadata, so compose can
/// write the dpkg database (`/var/lib/dpkg/status` and
/// `/var/lib/dpkg/info/<package>.<member>`) from the component alone.
pub const KEPT_CONTROL_MEMBERS: &[&str] = &[
    "control",
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
/// Prefix of the metadata keys holding kept control members:
/// `deb.control-file.<member>` holds the member's text (UTF-8), or
/// `deb.control-file.<member>.hex` its bytes in hex when it is not UTF-8.
pub const META_CONTROL_FILE_PREFIX: &str = "deb.control-file.";
/// Metadata key naming the importer's control-data format; present on every
/// commit whose kept control members are complete (absent: imported by a
/// treectl that did not keep them).
pub const META_CONTROL_FORMAT: &str = "deb.control-format";
/// The value of [`META_CONTROL_FORMAT`] this importer writes.
pub const CONTROL_FORMAT: &str = "1";

/// The kept control member `member` of a `.deb` commit's metadata, as
/// bytes; `None` when the package has no such member.
pub fn control_member(metadata: &BTreeMap<String, String>, member: &str) -> Option<Vec<u8>> {
    let key = format!("{META_CONTROL_FILE_PREFIX}{member}");
    if let Some(text) = metadata.get(&key) {
        return Some(text.as_bytes().to_vec());
    }
    metadata
        .get(&format!("{key}.hex"))
        .and_then(|h| hex::decode(h).ok())
}

const AR_MAGIC: &[u8] = b"!<arch>\n";
const AR_HEADER_LEN: usize = 60;
/// Control members larger than this are refused (real ones are a few KiB).
const MAX_CONTROL_FILE: u64 = 16 << 20;

/// Makes a Debian version usable as one ref name component, reversibly:
/// every byte outside `[A-Za-z0-9._-]` becomes `%XX` (upper-case hex), so
/// `1:2.36-9+deb12u4` becomes `1%3A2.36-9%2Bdeb12u4`. A leading `.` (not
/// allowed at the start of a ref component) is escaped too.
pub fn escape_version(version: &str) -> String {
    let mut out = String::with_capacity(version.len());
    for (i, b) in version.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Reverses [`escape_version`]; `None` for text it cannot have produced.
pub fn unescape_version(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The default ref of a package: `deb/<Package>/<escaped Version>/<Architecture>`.
pub fn default_ref(package: &str, version: &str, arch: &str) -> treectl_store::Result<RefName> {
    RefName::new(&format!("deb/{package}/{}/{arch}", escape_version(version)))
}

/// One member of an `ar` archive, borrowed from the file's bytes.
struct Member<'a> {
    name: String,
    data: &'a [u8],
}

/// Splits an `ar` archive (the common format `.deb` uses) into members.
fn ar_members<'a>(archive: &Path, data: &'a [u8]) -> Result<Vec<Member<'a>>> {
    let not_deb = |reason: String| ImportError::NotADeb {
        archive: archive.to_owned(),
        reason,
    };
    let Some(mut rest) = data.strip_prefix(AR_MAGIC) else {
        return Err(not_deb("no ar archive signature".into()));
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < AR_HEADER_LEN {
            return Err(ImportError::Truncated {
                archive: archive.to_owned(),
                at: Some("ar member header".into()),
            });
        }
        let (hdr, body) = rest.split_at(AR_HEADER_LEN);
        if &hdr[58..60] != b"`\n" {
            return Err(ImportError::Corrupt {
                archive: archive.to_owned(),
                at: None,
                detail: "bad ar member header".into(),
            });
        }
        let name = String::from_utf8_lossy(&hdr[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size: usize = std::str::from_utf8(&hdr[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ImportError::Corrupt {
                archive: archive.to_owned(),
                at: Some(name.clone()),
                detail: "bad ar member size".into(),
            })?;
        if body.len() < size {
            return Err(ImportError::Truncated {
                archive: archive.to_owned(),
                at: Some(name),
            });
        }
        out.push(Member {
            name,
            data: &body[..size],
        });
        // Members are padded to an even offset.
        let next = (size + (size & 1)).min(body.len());
        rest = &body[next..];
    }
    Ok(out)
}

/// The parts of a `.deb` found by [`split_deb`].
struct DebParts<'a> {
    control: &'a [u8],
    data: &'a [u8],
    data_member: String,
}

fn split_deb<'a>(archive: &Path, bytes: &'a [u8]) -> Result<DebParts<'a>> {
    let members = ar_members(archive, bytes)?;
    let not_deb = |reason: String| ImportError::NotADeb {
        archive: archive.to_owned(),
        reason,
    };
    let mut iter = members.into_iter().filter(|m| !m.name.starts_with('_'));
    match iter.next() {
        Some(m) if m.name == "debian-binary" => {
            if !m.data.starts_with(b"2.") {
                return Err(not_deb(format!(
                    "unsupported format version {:?}",
                    String::from_utf8_lossy(m.data).trim()
                )));
            }
        }
        Some(m) => {
            return Err(not_deb(format!(
                "first member is {:?}, not debian-binary",
                m.name
            )))
        }
        None => return Err(not_deb("empty ar archive".into())),
    }
    let mut control = None;
    let mut data = None;
    for m in iter {
        if m.name == "control.tar" || m.name.starts_with("control.tar.") {
            if control.is_some() || data.is_some() {
                return Err(not_deb(format!("unexpected member {:?}", m.name)));
            }
            control = Some(m.data);
        } else if m.name == "data.tar" || m.name.starts_with("data.tar.") {
            if control.is_none() || data.is_some() {
                return Err(not_deb(format!("unexpected member {:?}", m.name)));
            }
            data = Some((m.data, m.name));
        } else {
            return Err(not_deb(format!("unknown member {:?}", m.name)));
        }
    }
    let control = control.ok_or_else(|| ImportError::MissingMember {
        archive: archive.to_owned(),
        member: "control.tar",
    })?;
    let (data, data_member) = data.ok_or_else(|| ImportError::MissingMember {
        archive: archive.to_owned(),
        member: "data.tar",
    })?;
    Ok(DebParts {
        control,
        data,
        data_member,
    })
}

/// What `control.tar` says about a package.
#[derive(Clone, Debug, Default)]
pub struct ControlInfo {
    /// Fields of the `control` file, by name as written.
    pub fields: Vec<(String, String)>,
    /// Names of the maintainer scripts present.
    pub scripts: Vec<String>,
    /// Lines of `conffiles`.
    pub conffiles: Vec<String>,
    /// The members of [`KEPT_CONTROL_MEMBERS`] present, whole.
    pub members: BTreeMap<String, Vec<u8>>,
}

impl ControlInfo {
    /// A field by name, case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the first paragraph of a Debian control file. Continuation
/// lines are folded into one line with single spaces (multi-line fields
/// such as Description are not recorded anyway).
pub fn parse_control(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some((_, v)) = fields.last_mut() else {
                return Err("continuation line before the first field".into());
            };
            let more = line.trim();
            if more != "." && !more.is_empty() {
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(more);
            }
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("line {line:?} is not a field"))?;
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(format!("bad field name {k:?}"));
        }
        fields.push((k.to_owned(), v.trim().to_owned()));
    }
    Ok(fields)
}

fn read_control(archive: &Path, control_tar: &[u8], opts: &ImportOptions) -> Result<ControlInfo> {
    use std::io::Read;
    let bad = |reason: String| ImportError::Control {
        archive: archive.to_owned(),
        reason,
    };
    let corrupt = |e: std::io::Error| ImportError::Corrupt {
        archive: archive.to_owned(),
        at: Some("control.tar".into()),
        detail: e.to_string(),
    };
    let (_, dec) = super::compress::decoder(control_tar).map_err(corrupt)?;
    let state = std::rc::Rc::new(super::limits::StreamState::default());
    state.compressed.set(control_tar.len() as u64);
    let capped = super::limits::Capped::new(dec, state, opts.limits);
    let mut tar = ::tar::Archive::new(capped);
    let mut info = ControlInfo::default();
    let mut control_text = None;
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&path);
        let name = name.trim_start_matches("./").to_owned();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if entry.size() > MAX_CONTROL_FILE {
            return Err(bad(format!("control member {name:?} is too large")));
        }
        if !KEPT_CONTROL_MEMBERS.contains(&name.as_str()) {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        match name.as_str() {
            "control" => {
                let text = String::from_utf8(bytes.clone())
                    .map_err(|_| bad("control: not UTF-8".into()))?;
                control_text = Some(text);
            }
            "conffiles" => {
                info.conffiles = String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            n if MAINTAINER_SCRIPTS.contains(&n) => info.scripts.push(n.to_owned()),
            _ => {}
        }
        info.members.insert(name, bytes);
    }
    let text = control_text.ok_or_else(|| ImportError::MissingMember {
        archive: archive.to_owned(),
        member: "control.tar ./control file",
    })?;
    info.fields = parse_control(&text).map_err(bad)?;
    for required in ["Package", "Version", "Architecture"] {
        if info.get(required).is_none_or(str::is_empty) {
            return Err(bad(format!("no {required} field")));
        }
    }
    info.scripts.sort();
    Ok(info)
}

/// One `.deb` to import.
#[derive(Clone, Debug)]
pub struct DebRequest {
    pub path: PathBuf,
    /// The ref to move; `None` for [`default_ref`].
    pub ref_name: Option<RefName>,
}

/// How `.deb` commits are made.
#[derive(Clone, Debug, Default)]
pub struct DebCommitOptions {
    /// Commit subject; empty for `<Package> <Version> (<Architecture>)`.
    pub subject: String,
    pub body: String,
    /// Commit time; `None` for the newest mtime in `data.tar`.
    pub timestamp: Option<i64>,
    /// Extra metadata, added to what the package records.
    pub metadata: BTreeMap<String, String>,
}

/// The result of importing one `.deb`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DebReport {
    pub path: PathBuf,
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    #[serde(flatten)]
    pub import: ImportReport,
}

/// A package read and staged, waiting for its commit.
struct Staged {
    path: PathBuf,
    ref_name: RefName,
    info: ControlInfo,
    sha256: String,
    size: u64,
    existing: Option<ObjectId>,
    tree: Option<(MemDir, ImportStats, u64)>,
}

fn read_deb(txn: &Transaction<'_>, req: &DebRequest, opts: &ImportOptions) -> Result<Staged> {
    let path = &req.path;
    let bytes = std::fs::read(path).map_err(ImportError::io("reading", path))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let parts = split_deb(path, &bytes)?;
    let info = read_control(path, parts.control, opts)?;
    let field = |n: &str| info.get(n).unwrap_or_default().to_owned();
    let ref_name = match &req.ref_name {
        Some(r) => r.clone(),
        None => default_ref(&field("Package"), &field("Version"), &field("Architecture")).map_err(
            |e| ImportError::Control {
                archive: path.clone(),
                reason: format!("cannot make a ref from the package name: {e}"),
            },
        )?,
    };
    let mut staged = Staged {
        path: path.clone(),
        ref_name,
        info,
        sha256,
        size: bytes.len() as u64,
        existing: None,
        tree: None,
    };
    // Same ref, same file, imported by this importer: nothing to do. (A
    // commit made before control data was kept is imported again.)
    if let Some(head) = refs::try_read_ref(txn.repo(), &staged.ref_name)? {
        let commit = txn.repo().read_commit(&head)?;
        if commit.metadata.get(META_SHA256) == Some(&staged.sha256)
            && commit.metadata.get(META_CONTROL_FORMAT).map(String::as_str) == Some(CONTROL_FORMAT)
        {
            staged.existing = Some(head);
            return Ok(staged);
        }
    }
    let data_path = path.join(&parts.data_member);
    let tree = read_tar(
        txn,
        parts.data,
        &data_path,
        opts,
        TarFlavor { xattrs: false },
    )?;
    // A missing "./" entry leaves the root with the default metadata
    // (0755 root:root), like the other directories the archive omits.
    let mem = tree.builder.into_mem();
    staged.tree = Some((mem, tree.stats, tree.newest_mtime));
    Ok(staged)
}

fn commit_for(
    staged: &Staged,
    root: (ObjectId, ObjectId),
    newest_mtime: u64,
    opts: &DebCommitOptions,
) -> Commit {
    let info = &staged.info;
    let field = |n: &str| info.get(n).unwrap_or_default().to_owned();
    let mut metadata = opts.metadata.clone();
    for name in RECORDED_FIELDS {
        if let Some(v) = info.get(name) {
            metadata.insert(format!("deb.{}", name.to_ascii_lowercase()), v.to_owned());
        }
    }
    if !info.scripts.is_empty() {
        metadata.insert("deb.scripts".into(), info.scripts.join(" "));
    }
    if !info.conffiles.is_empty() {
        metadata.insert("deb.conffiles".into(), info.conffiles.join("\n"));
    }
    for (member, bytes) in &info.members {
        match std::str::from_utf8(bytes) {
            Ok(text) => metadata.insert(format!("{META_CONTROL_FILE_PREFIX}{member}"), text.into()),
            Err(_) => metadata.insert(
                format!("{META_CONTROL_FILE_PREFIX}{member}.hex"),
                hex::encode(bytes),
            ),
        };
    }
    metadata.insert(META_CONTROL_FORMAT.into(), CONTROL_FORMAT.into());
    metadata.insert(META_SHA256.into(), staged.sha256.clone());
    metadata.insert("deb.size".into(), staged.size.to_string());
    metadata.insert("version".into(), field("Version"));
    let subject = if opts.subject.is_empty() {
        format!(
            "{} {} ({})",
            field("Package"),
            field("Version"),
            field("Architecture")
        )
    } else {
        opts.subject.clone()
    };
    Commit {
        parent: None,
        root_tree: root.0,
        root_meta: root.1,
        timestamp: opts
            .timestamp
            .unwrap_or_else(|| i64::try_from(newest_mtime).unwrap_or(i64::MAX)),
        subject,
        body: opts.body.clone(),
        metadata,
    }
}

/// Imports `.deb` files, several at once on all cores, in one transaction:
/// either every package is imported and every ref moved, or (on any error)
/// nothing changes. A package whose ref already holds a commit of the same
/// file (same sha256) is left as it is and reported as `existing`.
pub fn import_debs(
    repo: &Repo,
    requests: &[DebRequest],
    commit: &DebCommitOptions,
    opts: &ImportOptions,
) -> Result<Vec<DebReport>> {
    let txn = Transaction::begin(repo)?;
    // Largest first, so the long ones do not start last.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    let sizes: Vec<u64> = requests
        .iter()
        .map(|r| std::fs::metadata(&r.path).map(|m| m.len()).unwrap_or(0))
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let results: Vec<(usize, Result<Staged>)> = order
        .par_iter()
        .with_max_len(1)
        .map(|&i| (i, read_deb(&txn, &requests[i], opts)))
        .collect();
    let mut staged: Vec<Option<Staged>> = (0..requests.len()).map(|_| None).collect();
    for (i, r) in results {
        staged[i] = Some(r?);
    }
    let staged: Vec<Staged> = staged.into_iter().flatten().collect();

    let mut by_ref: HashMap<&RefName, &Staged> = HashMap::new();
    for s in &staged {
        if let Some(other) = by_ref.insert(&s.ref_name, s) {
            if other.sha256 != s.sha256 {
                return Err(ImportError::SameRef {
                    first: other.path.clone(),
                    second: s.path.clone(),
                    ref_name: s.ref_name.to_string(),
                });
            }
        }
    }

    let mut reports = Vec::with_capacity(staged.len());
    let mut updates: Vec<RefUpdate> = Vec::new();
    for s in &staged {
        let (commit_id, stats, existing) = match (&s.existing, &s.tree) {
            (Some(id), _) => (*id, ImportStats::default(), true),
            (None, Some((mem, stats, newest))) => {
                let root = mem.write(&txn)?;
                let c = commit_for(s, root, *newest, commit);
                let id = txn.write_commit(&c)?;
                if !updates.iter().any(|u| u.name == s.ref_name) {
                    updates.push(RefUpdate {
                        name: s.ref_name.clone(),
                        target: Some(id),
                    });
                }
                (id, stats.clone(), false)
            }
            (None, None) => unreachable!("read_deb stages a tree or finds the existing commit"),
        };
        let mut import = ImportReport::new(commit_id, &s.ref_name, stats);
        import.existing = existing;
        let field = |n: &str| s.info.get(n).unwrap_or_default().to_owned();
        reports.push(DebReport {
            path: s.path.clone(),
            package: field("Package"),
            version: field("Version"),
            architecture: field("Architecture"),
            sha256: s.sha256.clone(),
            import,
        });
    }
    txn.commit(&updates)?;
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_escaping_round_trips() {
        let cases = [
            ("1:2.36-9+deb12u4", "1%3A2.36-9%2Bdeb12u4"),
            ("1.0~rc1", "1.0%7Erc1"),
            ("2.0", "2.0"),
            ("1%2", "1%252"),
            (".5", "%2E5"),
            ("1.2_3-4", "1.2_3-4"),
        ];
        for (v, want) in cases {
            let e = escape_version(v);
            assert_eq!(e, want, "{v}");
            assert_eq!(unescape_version(&e).as_deref(), Some(v));
            RefName::new(&format!("deb/p/{e}/amd64")).unwrap();
        }
        assert_eq!(unescape_version("%zz"), None);
        assert_eq!(unescape_version("%4"), None);
        assert_eq!(
            default_ref("libc6", "2.36-9+deb12u4", "amd64")
                .unwrap()
                .as_str(),
            "deb/libc6/2.36-9%2Bdeb12u4/amd64"
        );
        assert!(default_ref("bad name", "1", "amd64").is_err());
    }

    #[test]
    fn control_fields() {
        let text = "Package: libfoo\nVersion: 1.0\nDepends: a,\n b (>= 2)\nDescription: x\n long\n .\n more\n\nPackage: other\n";
        let f = parse_control(text).unwrap();
        let info = ControlInfo {
            fields: f,
            ..Default::default()
        };
        assert_eq!(info.get("package"), Some("libfoo"));
        assert_eq!(info.get("Depends"), Some("a, b (>= 2)"));
        assert_eq!(info.get("Description"), Some("x long more"));
        assert!(parse_control(" lead\n").is_err());
        assert!(parse_control("nocolon\n").is_err());
    }

    #[test]
    fn ar_parsing_refuses_junk() {
        let p = Path::new("x.deb");
        assert!(matches!(
            ar_members(p, b"junk"),
            Err(ImportError::NotADeb { .. })
        ));
        let mut ar = AR_MAGIC.to_vec();
        ar.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "debian-binary", 0, 0, 0, 100644, 4
            )
            .as_bytes(),
        );
        ar.extend_from_slice(b"2.0\n");
        let m = ar_members(p, &ar).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].data, b"2.0\n");
        assert!(matches!(
            split_deb(p, &ar),
            Err(ImportError::MissingMember { .. })
        ));
        assert!(matches!(
            ar_members(p, &ar[..ar.len() - 1]),
            Err(ImportError::Truncated { .. })
        ));
    }
}

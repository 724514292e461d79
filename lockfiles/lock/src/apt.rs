//! Apt repositories: `InRelease`/`Release`, `Packages(.xz|.gz)` indexes,
//! dependency fields, and the dependency closure of a set of packages.
//!
//! `InRelease` (or `Release` and `Release.gpg`) is verified against the
//! source's `signed-by` keys, and its `Valid-Until` checked, before any
//! index it lists is read ([`crate::apt_trust`]); the signed `Release`
//! file's SHA256 list is then checked against every `Packages` file read,
//! and a lockfile pins the sha256 of every `.deb`, checked before use.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;

use crate::apt_trust;
use crate::debver::{self, Relation};
use crate::fetch::{join_url, Fetcher};
use crate::lockfile::AptSource;
use crate::Error;

/// One package paragraph of a `Packages` index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageEntry {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub filename: String,
    pub size: Option<u64>,
    pub sha256: String,
    pub depends: String,
    pub pre_depends: String,
    pub provides: String,
}

/// Every package of one apt source, by name; versions newest first.
#[derive(Clone, Debug, Default)]
pub struct AptIndex {
    pub packages: BTreeMap<String, Vec<PackageEntry>>,
}

/// One alternative of a dependency: `name[:arch] [(rel version)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub relation: Option<(Relation, String)>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.relation {
            Some((r, v)) => write!(f, "{} ({} {v})", self.name, r.as_str()),
            None => write!(f, "{}", self.name),
        }
    }
}

/// Shows a group of alternatives as written: `a (>= 1) | b`.
pub fn group_text(group: &[Dep]) -> String {
    group
        .iter()
        .map(Dep::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Parses a `Depends`-style field into groups of alternatives.
pub fn parse_relations(field: &str) -> Result<Vec<Vec<Dep>>, String> {
    let mut out = Vec::new();
    for group in field.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            alts.push(parse_dep(alt.trim())?);
        }
        out.push(alts);
    }
    Ok(out)
}

fn parse_dep(text: &str) -> Result<Dep, String> {
    // Arch restrictions `[...]` and build profiles `<...>` (source
    // packages only) follow the name and version; drop them.
    let (name, rel) = match text.split_once('(') {
        Some((n, r)) => {
            let close = r
                .find(')')
                .ok_or_else(|| format!("unclosed version in {text:?}"))?;
            (n.trim(), Some(&r[..=close]))
        }
        None => (text.split(['[', '<']).next().unwrap_or("").trim(), None),
    };
    let name = name.split(':').next().unwrap_or("").trim();
    if name.is_empty() {
        return Err(format!("empty package name in {text:?}"));
    }
    let relation = match rel {
        None => None,
        Some(r) => {
            let r = r
                .strip_suffix(')')
                .ok_or_else(|| format!("unclosed version in {text:?}"))?
                .trim();
            let split = r
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .ok_or_else(|| format!("no version in {text:?}"))?;
            let (op, ver) = r.split_at(split);
            let op = Relation::parse(op.trim())
                .ok_or_else(|| format!("unknown relation {op:?} in {text:?}"))?;
            Some((op, ver.trim().to_owned()))
        }
    };
    Ok(Dep {
        name: name.to_owned(),
        relation,
    })
}

/// Parses `Provides`: `name [(= version)]` entries.
pub fn parse_provides(field: &str) -> Vec<(String, Option<String>)> {
    parse_relations(field)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|d| (d.name, d.relation.map(|(_, v)| v)))
        .collect()
}

/// Parses the paragraphs of a `Packages` file, keeping packages of `arch`
/// and `all`.
pub fn parse_packages(text: &str, arch: &str) -> Result<Vec<PackageEntry>, String> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        if para.trim().is_empty() {
            continue;
        }
        let fields = treectl_import::deb::parse_control(para)?;
        let get = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let e = PackageEntry {
            package: get("Package"),
            version: get("Version"),
            architecture: get("Architecture"),
            filename: get("Filename"),
            size: get("Size").parse().ok(),
            sha256: get("SHA256").to_ascii_lowercase(),
            depends: get("Depends"),
            pre_depends: get("Pre-Depends"),
            provides: get("Provides"),
        };
        if e.package.is_empty() || e.version.is_empty() || e.filename.is_empty() {
            return Err(format!(
                "a paragraph lacks Package, Version or Filename (near {:?})",
                para.lines().next().unwrap_or("")
            ));
        }
        if e.sha256.len() != 64 {
            return Err(format!("package {} {} has no SHA256", e.package, e.version));
        }
        if e.architecture == arch || e.architecture == "all" {
            out.push(e);
        }
    }
    Ok(out)
}

/// The SHA256 section of a `Release` file: path -> (sha256, size).
pub fn parse_release(text: &str) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    let mut in_sha = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_sha = line.trim_end() == "SHA256:";
            continue;
        }
        if in_sha {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [hash, size, path] = parts[..] {
                if let Ok(size) = size.parse() {
                    out.insert(path.to_owned(), (hash.to_ascii_lowercase(), size));
                }
            }
        }
    }
    out
}

/// The text between the armor lines of an `InRelease` file, unverified
/// (for a source with `allow-unsigned`); unchanged for a `Release`.
fn strip_clearsign(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("-----BEGIN PGP SIGNED MESSAGE-----") else {
        return text;
    };
    let body = rest.split_once("\n\n").map(|(_, b)| b).unwrap_or(rest);
    body.split("\n-----BEGIN PGP SIGNATURE-----")
        .next()
        .unwrap_or(body)
}

impl AptSource {
    /// The directory `Release` and the indexes live in.
    fn dist_url(&self) -> String {
        if self.suite.ends_with('/') {
            join_url(&self.url, &self.suite)
        } else {
            join_url(&self.url, &format!("dists/{}", self.suite))
        }
    }

    /// Where an artifact with this `Filename` lies.
    /// Over HTTP the name is percent-encoded, as apt does (pool names
    /// hold `%3a` for epochs and `+`).
    pub fn artifact_url(&self, filename: &str) -> String {
        if crate::fetch::local_path(&self.url).is_some() {
            return join_url(&self.url, filename);
        }
        let mut enc = String::with_capacity(filename.len());
        for b in filename.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        join_url(&self.url, &enc)
    }
}

/// Reads the source's `Release` and every `Packages` index it lists.
pub fn fetch_index(fetcher: &Fetcher, source: &AptSource) -> Result<AptIndex, Error> {
    let base = source.dist_url();
    let index_err = |url: &str, reason: String| Error::Index {
        source_name: source.name.clone(),
        url: url.to_owned(),
        reason,
    };
    let (release_url, text) = read_release(fetcher, source, &base)?;
    let hashes = parse_release(&text);
    let dirs: Vec<String> = if source.suite.ends_with('/') {
        vec![String::new()]
    } else if source.components.is_empty() {
        return Err(index_err(
            &release_url,
            "no components given for a non-flat repository".into(),
        ));
    } else {
        source
            .components
            .iter()
            .map(|c| format!("{c}/binary-{}/", source.architecture))
            .collect()
    };
    let mut index = AptIndex::default();
    for dir in dirs {
        let mut found = false;
        for suffix in [".xz", ".gz", ""] {
            let rel = format!("{dir}Packages{suffix}");
            let Some((sha, size)) = hashes.get(&rel) else {
                continue;
            };
            let url = join_url(&base, &rel);
            let body = fetcher.get_verified(&url, sha, Some(*size))?;
            let text = decompress(&body).map_err(|e| index_err(&url, e))?;
            for e in parse_packages(&text, &source.architecture).map_err(|e| index_err(&url, e))? {
                index.packages.entry(e.package.clone()).or_default().push(e);
            }
            found = true;
            break;
        }
        if !found {
            return Err(index_err(
                &release_url,
                format!("Release lists no {dir}Packages(.xz|.gz) with a SHA256"),
            ));
        }
    }
    for versions in index.packages.values_mut() {
        versions.sort_by(|a, b| debver::compare(&b.version, &a.version));
        versions.dedup_by(|a, b| a.version == b.version && a.architecture == b.architecture);
    }
    Ok(index)
}

/// Fetches the source's `Release` and returns its URL and the text that
/// may be read: the signed text, checked against the source's keys and
/// its `Valid-Until`, or for an `allow-unsigned` source what was fetched.
fn read_release(
    fetcher: &Fetcher,
    source: &AptSource,
    base: &str,
) -> Result<(String, String), Error> {
    let trust = |error| Error::Trust {
        source_name: source.name.clone(),
        error,
    };
    let keyring = if source.allow_unsigned {
        None
    } else {
        let signed_by = source.signed_by.as_deref().ok_or_else(|| Error::Index {
            source_name: source.name.clone(),
            url: source.url.clone(),
            reason: "the lockfile records no signed-by for it, so its Release cannot be checked; add signed-by (a keyring path or an armored key) to its [[source]]".into(),
        })?;
        Some(apt_trust::Keyring::load(signed_by).map_err(trust)?)
    };
    let inrelease = join_url(base, "InRelease");
    let (url, text) = if let Some(body) = fetcher.try_get(&inrelease)? {
        let text = match &keyring {
            Some(k) => apt_trust::verify_inrelease(&inrelease, &body, k).map_err(trust)?,
            None => strip_clearsign(&String::from_utf8_lossy(&body)).to_owned(),
        };
        (inrelease, text)
    } else {
        let url = join_url(base, "Release");
        let Some(body) = fetcher.try_get(&url)? else {
            return Err(Error::Index {
                source_name: source.name.clone(),
                url,
                reason: "neither InRelease nor Release exists; check the URL and suite".into(),
            });
        };
        if let Some(k) = &keyring {
            let sig_url = format!("{url}.gpg");
            let Some(sig) = fetcher.try_get(&sig_url)? else {
                return Err(trust(apt_trust::TrustError::Unsigned { url }));
            };
            apt_trust::verify_detached(&url, &body, &sig, k).map_err(trust)?;
        }
        let text = String::from_utf8(body).map_err(|_| Error::Index {
            source_name: source.name.clone(),
            url: url.clone(),
            reason: "Release is not UTF-8 text".into(),
        })?;
        (url, text)
    };
    if source.check_valid_until {
        apt_trust::check_valid_until(&url, &text, treectl_store::time::now()).map_err(trust)?;
    }
    Ok((url, text))
}

/// A `Packages` file as text, whatever compression its content shows
/// (the importers' sniffer: the name's suffix is not trusted).
fn decompress(body: &[u8]) -> Result<String, String> {
    let mut out = String::new();
    treectl_import::compress::decoder(body)
        .and_then(|(_, mut r)| r.read_to_string(&mut out))
        .map_err(|e| format!("cannot decompress or read as UTF-8: {e}"))?;
    Ok(out)
}

/// What a package set offers to dependencies: real packages and Provides.
#[derive(Default)]
pub struct Offer {
    /// name -> versions of real packages
    real: BTreeMap<String, Vec<String>>,
    /// virtual name -> provided versions (`None` for unversioned)
    provided: BTreeMap<String, Vec<Option<String>>>,
}

impl Offer {
    pub fn add(&mut self, name: &str, version: &str, provides: &str) {
        self.real
            .entry(name.to_owned())
            .or_default()
            .push(version.to_owned());
        for (p, v) in parse_provides(provides) {
            self.provided.entry(p).or_default().push(v);
        }
    }

    /// Whether one alternative is satisfied.
    pub fn satisfies(&self, dep: &Dep) -> bool {
        let ok = |v: &str| match &dep.relation {
            None => true,
            Some((r, want)) => r.holds(v, want),
        };
        if self
            .real
            .get(&dep.name)
            .is_some_and(|vs| vs.iter().any(|v| ok(v)))
        {
            return true;
        }
        self.provided.get(&dep.name).is_some_and(|vs| {
            vs.iter().any(|v| match (&dep.relation, v) {
                (None, _) => true,
                (Some(_), Some(v)) => ok(v),
                (Some(_), None) => false,
            })
        })
    }

    pub fn satisfies_group(&self, group: &[Dep]) -> bool {
        group.iter().any(|d| self.satisfies(d))
    }
}

impl AptIndex {
    /// The newest version of `name`, or exactly `version` when given.
    pub fn find(&self, name: &str, version: Option<&str>) -> Option<&PackageEntry> {
        let versions = self.packages.get(name)?;
        match version {
            None => versions.first(),
            Some(v) => versions
                .iter()
                .find(|e| debver::compare(&e.version, v).is_eq()),
        }
    }

    /// The best package for one alternative: the newest real package that
    /// fits, else the newest provider (by name order on ties).
    fn candidate(&self, dep: &Dep) -> Option<&PackageEntry> {
        if let Some(vs) = self.packages.get(&dep.name) {
            let fit = vs.iter().find(|e| match &dep.relation {
                None => true,
                Some((r, want)) => r.holds(&e.version, want),
            });
            if fit.is_some() {
                return fit;
            }
        }
        for vs in self.packages.values() {
            if let Some(e) = vs.first() {
                let mut o = Offer::default();
                o.add("", "", &e.provides);
                if o.satisfies(dep) {
                    return Some(e);
                }
            }
        }
        None
    }

    /// The packages `roots` name (`name` or `name=version`) and, with
    /// `with_deps`, everything their Depends and Pre-Depends need, chosen
    /// from this index. Alternatives already satisfied by `installed` or by
    /// a package chosen earlier are not added again. Roots come first in
    /// the order given, then dependencies in the order they were found.
    pub fn resolve(
        &self,
        source_name: &str,
        roots: &[String],
        with_deps: bool,
        installed: &Offer,
    ) -> Result<Vec<PackageEntry>, Error> {
        let mut chosen: Vec<PackageEntry> = Vec::new();
        let mut names = BTreeSet::new();
        let mut offer = Offer::default();
        let mut queue = VecDeque::new();
        for root in roots {
            let (name, version) = match root.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (root.as_str(), None),
            };
            let e = self.find(name, version).ok_or_else(|| Error::NotFound {
                package: root.clone(),
                source_name: source_name.to_owned(),
            })?;
            if names.insert(e.package.clone()) {
                offer.add(&e.package, &e.version, &e.provides);
                chosen.push(e.clone());
                queue.push_back(chosen.len() - 1);
            }
        }
        if !with_deps {
            return Ok(chosen);
        }
        while let Some(i) = queue.pop_front() {
            let pkg = chosen[i].clone();
            let field = format!("{}, {}", pkg.pre_depends, pkg.depends);
            let groups = parse_relations(&field).map_err(|reason| Error::Index {
                source_name: source_name.to_owned(),
                url: pkg.filename.clone(),
                reason: format!(
                    "{} {}: bad dependency field: {reason}",
                    pkg.package, pkg.version
                ),
            })?;
            for group in groups {
                if offer.satisfies_group(&group) || installed.satisfies_group(&group) {
                    continue;
                }
                let Some(e) = group.iter().find_map(|d| self.candidate(d)) else {
                    return Err(Error::Unsatisfiable {
                        package: format!("{} {}", pkg.package, pkg.version),
                        dependency: group_text(&group),
                    });
                };
                if names.insert(e.package.clone()) {
                    offer.add(&e.package, &e.version, &e.provides);
                    chosen.push(e.clone());
                    queue.push_back(chosen.len() - 1);
                } else {
                    // The chosen version of that package does not fit.
                    return Err(Error::Unsatisfiable {
                        package: format!("{} {}", pkg.package, pkg.version),
                        dependency: group_text(&group),
                    });
                }
            }
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "Package: a\nVersion: 1.0\nArchitecture: amd64\nFilename: pool/a_1.0.deb\nSize: 3\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\nDepends: b (>= 2) | c, mail-transport-agent\nPre-Depends: libc6:any (>= 2.14)\n\n\
Package: a\nVersion: 1.1\nArchitecture: amd64\nFilename: pool/a_1.1.deb\nSHA256: 1111111111111111111111111111111111111111111111111111111111111111\nDepends: b (>= 2) | c, mail-transport-agent\n\n\
Package: b\nVersion: 1.5\nArchitecture: all\nFilename: pool/b.deb\nSHA256: 2222222222222222222222222222222222222222222222222222222222222222\n\n\
Package: c\nVersion: 1\nArchitecture: amd64\nFilename: pool/c.deb\nSHA256: 3333333333333333333333333333333333333333333333333333333333333333\n\n\
Package: postfix\nVersion: 3\nArchitecture: amd64\nFilename: pool/p.deb\nSHA256: 4444444444444444444444444444444444444444444444444444444444444444\nProvides: mail-transport-agent\n\n\
Package: arm\nVersion: 3\nArchitecture: arm64\nFilename: pool/arm.deb\nSHA256: 5555555555555555555555555555555555555555555555555555555555555555\n";

    fn index() -> AptIndex {
        let mut idx = AptIndex::default();
        for e in parse_packages(PACKAGES, "amd64").unwrap() {
            idx.packages.entry(e.package.clone()).or_default().push(e);
        }
        for v in idx.packages.values_mut() {
            v.sort_by(|a, b| debver::compare(&b.version, &a.version));
        }
        idx
    }

    #[test]
    fn relations_parse() {
        let g =
            parse_relations("libc6:any (>= 2.14), b (<< 3) | c, d [amd64], e (<< 2) <!nocheck>")
                .unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g[3][0].relation, Some((Relation::Lt, "2".into())));
        assert_eq!(g[0][0].name, "libc6");
        assert_eq!(g[0][0].relation, Some((Relation::Ge, "2.14".into())));
        assert_eq!(group_text(&g[1]), "b (<< 3) | c");
        assert_eq!(g[2][0].name, "d");
        assert!(parse_relations("x (>= 1").is_err());
        assert!(parse_relations("x (~ 1)").is_err());
    }

    #[test]
    fn closure_with_alternatives_and_provides() {
        let idx = index();
        assert!(!idx.packages.contains_key("arm"));
        let got = idx
            .resolve("s", &["a".into()], true, &Offer::default())
            .unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|e| (e.package.as_str(), e.version.as_str()))
            .collect();
        // b is too old for (>= 2), so c; the MTA comes from postfix's Provides.
        assert_eq!(names, [("a", "1.1"), ("c", "1"), ("postfix", "3")]);
        let got = idx
            .resolve("s", &["a=1.0".into()], false, &Offer::default())
            .unwrap();
        assert_eq!(got[0].version, "1.0");
    }

    #[test]
    fn missing_and_unsatisfiable() {
        let idx = index();
        assert!(matches!(
            idx.resolve("s", &["nope".into()], true, &Offer::default()),
            Err(Error::NotFound { .. })
        ));
        // a 1.0 pre-depends on libc6, which the index lacks.
        let err = idx
            .resolve("s", &["a=1.0".into()], true, &Offer::default())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Unsatisfiable { dependency, .. } if dependency == "libc6 (>= 2.14)"),
            "{err}"
        );
    }

    /// A source from a lockfile written before signatures were checked:
    /// refused before anything is fetched, with the way out.
    #[test]
    fn source_without_signed_by_is_refused_before_fetching() {
        let dir = tempfile::tempdir().unwrap();
        let source = AptSource {
            name: "old".into(),
            url: dir.path().join("nothing-here").display().to_string(),
            suite: "stable".into(),
            components: vec!["main".into()],
            architecture: "amd64".into(),
            signed_by: None,
            allow_unsigned: false,
            check_valid_until: true,
        };
        let fetcher = Fetcher::new().unwrap();
        let err = fetch_index(&fetcher, &source).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Index { .. }) && msg.contains("records no signed-by"),
            "{msg}"
        );
    }

    #[test]
    fn release_sha256_section() {
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: x\nMD5Sum:\n 00 1 main/binary-amd64/Packages\nSHA256:\n ab 12 main/binary-amd64/Packages\n cd 7 main/binary-amd64/Packages.xz\n-----BEGIN PGP SIGNATURE-----\nxyz\n";
        let r = parse_release(strip_clearsign(text));
        assert_eq!(r.len(), 2);
        assert_eq!(r["main/binary-amd64/Packages"], ("ab".into(), 12));
    }
}

//! Trust in apt repositories: which OpenPGP keys may sign a source's
//! `Release` (`signed-by`, as in apt's deb822 sources), the check of
//! `InRelease` or `Release` + `Release.gpg` against them, `Valid-Until`,
//! and the keyrings this machine's apt configuration names for a URL (the
//! default of `lock add --apt`).
//!
//! Signatures are checked with rpgp (the `pgp` crate, pure Rust). The
//! rule is apt's: at least one signature by a key of the source's keyring
//! must be good, and a signature by a key of the keyring that does not
//! verify refuses the file. Signatures by other keys are ignored (the
//! Debian archive signs with several keys). Signatures made with a weak
//! digest (MD5, SHA-1, RIPEMD-160) are refused, as apt refuses them. The
//! `Release` text used afterwards is only ever the signed text, never
//! bytes around it.

use std::path::{Path, PathBuf};

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, PublicKeyTrait};

/// The first line of an armored OpenPGP key, which marks an embedded
/// `signed-by` (anything else is a list of keyring paths).
pub const ARMORED_KEY_HEADER: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

/// Why a `Release` was not trusted. Every message names the file and what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("keyring {path}: {reason}")]
    Keyring { path: String, reason: String },
    #[error("{url} is signed only by key(s) {keys}, none of which is in the source's keyring ({keyring}); pass the right --signed-by")]
    UntrustedKey {
        url: String,
        keys: String,
        keyring: String,
    },
    #[error(
        "{url}: the signature by key {key} does not verify: the file was altered or is corrupt"
    )]
    BadSignature { url: String, key: String },
    #[error("{url}: the signature by key {key} uses the weak digest {digest}, which apt refuses too; the archive must re-sign with SHA-256 or stronger")]
    WeakDigest {
        url: String,
        key: String,
        digest: String,
    },
    #[error("{url}: key {key} of the keyring {why}")]
    UnusableKey {
        url: String,
        key: String,
        why: String,
    },
    #[error("{url} is not signed (neither InRelease nor Release.gpg); use --allow-unsigned only for a local repository you trust")]
    Unsigned { url: String },
    #[error("{url} expired at {valid_until} (its Valid-Until); a mirror may be frozen. For a snapshot archive pass --no-check-valid-until")]
    Expired { url: String, valid_until: String },
    #[error("{url}: {reason}")]
    Malformed { url: String, reason: String },
}

/// The keys a source trusts, with where they came from (for messages).
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    origin: String,
}

impl Keyring {
    /// Loads a `signed-by` value: an armored key block, or keyring files
    /// (binary or armored) separated by commas or spaces (`lock add`
    /// records absolute paths).
    pub fn load(signed_by: &str) -> Result<Keyring, TrustError> {
        let text = signed_by.trim();
        if text.starts_with(ARMORED_KEY_HEADER) {
            let keys = parse_keys(text.as_bytes()).map_err(|reason| TrustError::Keyring {
                path: "(embedded in the lockfile)".into(),
                reason,
            })?;
            return Ok(Keyring {
                keys,
                origin: "the key embedded in the lockfile".into(),
            });
        }
        let mut keys = Vec::new();
        let paths: Vec<&str> = text
            .split([',', ' ', '\n'])
            .filter(|p| !p.is_empty())
            .collect();
        if paths.is_empty() {
            return Err(TrustError::Keyring {
                path: String::new(),
                reason: "signed-by is empty".into(),
            });
        }
        for p in &paths {
            let path = Path::new(p);
            let data = std::fs::read(path).map_err(|e| TrustError::Keyring {
                path: (*p).to_owned(),
                reason: e.to_string(),
            })?;
            keys.extend(parse_keys(&data).map_err(|reason| TrustError::Keyring {
                path: (*p).to_owned(),
                reason,
            })?);
        }
        Ok(Keyring {
            keys,
            origin: paths.join(", "),
        })
    }

    /// Parses keys from bytes (binary or armored), for callers that hold
    /// them already.
    pub fn from_bytes(data: &[u8], origin: &str) -> Result<Keyring, TrustError> {
        Ok(Keyring {
            keys: parse_keys(data).map_err(|reason| TrustError::Keyring {
                path: origin.to_owned(),
                reason,
            })?,
            origin: origin.to_owned(),
        })
    }

    /// The fingerprints of the primary keys, upper-case hex.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{:X}", k.primary_key.fingerprint()))
            .collect()
    }

    /// Checks one signature over `data`: `Ok(Some(fpr))` when a key of the
    /// keyring made it and it verifies, `Ok(None)` when no key of the
    /// keyring made it, an error when one did and it does not verify (or
    /// the key is expired or revoked).
    fn check(&self, url: &str, sig: &Signature, data: &[u8]) -> Result<Option<String>, TrustError> {
        let now = treectl_store::time::now();
        for key in &self.keys {
            let primary = &key.primary_key;
            let subkeys = key
                .public_subkeys
                .iter()
                .filter(|s| pgp::composed::SignedPublicSubKey::verify(s, primary).is_ok())
                .map(|s| &s.key as &dyn Signer);
            for signer in std::iter::once(primary as &dyn Signer).chain(subkeys) {
                if !issued_by(sig, signer) {
                    continue;
                }
                let name = format!("{:X}", signer.fpr());
                if !key.details.revocation_signatures.is_empty() {
                    return Err(TrustError::UnusableKey {
                        url: url.into(),
                        key: name,
                        why: "is revoked".into(),
                    });
                }
                if let Some(at) = key.expires_at().filter(|at| at.timestamp() < now) {
                    return Err(TrustError::UnusableKey {
                        url: url.into(),
                        key: name,
                        why: format!("expired at {at}"),
                    });
                }
                match sig.hash_alg() {
                    Some(HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160)
                    | Some(HashAlgorithm::None)
                    | None => {
                        return Err(TrustError::WeakDigest {
                            url: url.into(),
                            key: name,
                            digest: sig
                                .hash_alg()
                                .map_or_else(|| "(none)".into(), |h| h.to_string()),
                        })
                    }
                    Some(_) => {}
                }
                // Only a signature over a document (not a key certification)
                // can vouch for a Release.
                if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
                    return Err(TrustError::BadSignature {
                        url: url.into(),
                        key: name,
                    });
                }
                return match signer.check_sig(sig, data) {
                    Ok(()) => Ok(Some(name)),
                    Err(_) => Err(TrustError::BadSignature {
                        url: url.into(),
                        key: name,
                    }),
                };
            }
        }
        Ok(None)
    }

    /// Applies apt's rule to all signatures over `data`.
    fn check_all(&self, url: &str, sigs: &[Signature], data: &[u8]) -> Result<(), TrustError> {
        if sigs.is_empty() {
            return Err(TrustError::Malformed {
                url: url.into(),
                reason: "holds no signature".into(),
            });
        }
        let mut good = false;
        for sig in sigs {
            good |= self.check(url, sig, data)?.is_some();
        }
        if good {
            return Ok(());
        }
        let mut keys: Vec<String> = sigs.iter().map(issuer_name).collect();
        keys.dedup();
        Err(TrustError::UntrustedKey {
            url: url.into(),
            keys: keys.join(", "),
            keyring: self.origin.clone(),
        })
    }
}

/// A primary key or subkey that can check a signature.
trait Signer {
    fn fpr(&self) -> pgp::types::Fingerprint;
    fn id(&self) -> pgp::types::KeyId;
    fn check_sig(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()>;
}

impl<K: PublicKeyTrait> Signer for K {
    fn fpr(&self) -> pgp::types::Fingerprint {
        self.fingerprint()
    }
    fn id(&self) -> pgp::types::KeyId {
        self.key_id()
    }
    fn check_sig(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        sig.verify(self, data)
    }
}

fn issued_by(sig: &Signature, signer: &dyn Signer) -> bool {
    let fpr = signer.fpr();
    let id = signer.id();
    sig.issuer_fingerprint().into_iter().any(|f| *f == fpr)
        || sig.issuer().into_iter().any(|i| *i == id)
}

/// The issuer of a signature as a message shows it: the fingerprint when
/// the signature carries one, else the key id.
fn issuer_name(sig: &Signature) -> String {
    if let Some(f) = sig.issuer_fingerprint().first() {
        return format!("{f:X}");
    }
    match sig.issuer().first() {
        Some(id) => hex_upper(id.as_ref()),
        None => "(no issuer)".into(),
    }
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn parse_keys(data: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let armored = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .is_some_and(|i| data[i..].starts_with(b"-----BEGIN"));
    let mut keys = Vec::new();
    if armored {
        let (iter, _) = SignedPublicKey::from_armor_many(data).map_err(|e| e.to_string())?;
        for k in iter {
            keys.push(k.map_err(|e| e.to_string())?);
        }
    } else {
        for k in SignedPublicKey::from_bytes_many(data).map_err(|e| e.to_string())? {
            keys.push(k.map_err(|e| e.to_string())?);
        }
    }
    if keys.is_empty() {
        return Err("holds no OpenPGP public key".into());
    }
    Ok(keys)
}

/// Verifies an `InRelease` file and returns its signed text (LF line
/// ends), the only part of it that may be read.
pub fn verify_inrelease(url: &str, data: &[u8], keyring: &Keyring) -> Result<String, TrustError> {
    let malformed = |reason: String| TrustError::Malformed {
        url: url.into(),
        reason,
    };
    let text = std::str::from_utf8(data)
        .map_err(|_| malformed("is not UTF-8 text, so not a clearsigned Release".into()))?;
    let (msg, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| malformed(format!("is not a clearsigned message: {e}")))?;
    let signed = msg.signed_text();
    keyring.check_all(url, msg.signatures(), signed.as_bytes())?;
    Ok(signed.replace("\r\n", "\n"))
}

/// Verifies `Release` against the detached signature(s) of `Release.gpg`.
pub fn verify_detached(
    url: &str,
    release: &[u8],
    signature: &[u8],
    keyring: &Keyring,
) -> Result<(), TrustError> {
    let armored = signature.starts_with(b"-----BEGIN");
    let sigs: Vec<Signature> = if armored {
        let (iter, _) =
            DetachedSignature::from_armor_many(signature).map_err(|e| TrustError::Malformed {
                url: format!("{url}.gpg"),
                reason: format!("is not an OpenPGP signature: {e}"),
            })?;
        iter.filter_map(Result::ok).map(|d| d.signature).collect()
    } else {
        DetachedSignature::from_bytes_many(signature)
            .map_err(|e| TrustError::Malformed {
                url: format!("{url}.gpg"),
                reason: format!("is not an OpenPGP signature: {e}"),
            })?
            .filter_map(Result::ok)
            .map(|d| d.signature)
            .collect()
    };
    keyring.check_all(url, &sigs, release)
}

/// Refuses a `Release` whose `Valid-Until` lies before `now` (seconds
/// since the epoch).
pub fn check_valid_until(url: &str, release: &str, now: i64) -> Result<(), TrustError> {
    let Some(value) = release_field(release, "Valid-Until") else {
        return Ok(());
    };
    let until = parse_rfc2822(&value).ok_or_else(|| TrustError::Malformed {
        url: url.into(),
        reason: format!("Valid-Until {value:?} is not a date"),
    })?;
    if now > until {
        return Err(TrustError::Expired {
            url: url.into(),
            valid_until: value,
        });
    }
    Ok(())
}

/// A top-level field of a `Release` paragraph.
pub fn release_field(release: &str, name: &str) -> Option<String> {
    release.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (!l.starts_with(' ') && k.eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
    })
}

/// Seconds since the epoch of a `Release` date (`Sat, 11 Jul 2026
/// 10:16:37 UTC`; the weekday is optional, the zone `UTC`, `GMT`, `Z` or
/// a `+hhmm` offset).
pub fn parse_rfc2822(text: &str) -> Option<i64> {
    let text = text.split_once(',').map_or(text, |(_, rest)| rest).trim();
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [day, month, year, time, zone] = parts[..] else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(month))? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else { return None };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    let offset = match zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let n: i64 = z[1..].parse().ok()?;
            let secs = (n / 100) * 3600 + (n % 100) * 60;
            if z.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The `signed-by` this machine's apt configuration (under `etc`,
/// normally `/etc/apt`) gives the repository at `url`: the `Signed-By` of
/// a deb822 source or the `signed-by=` option of a one-line source naming
/// that URL, or apt's global keyrings (`trusted.gpg`, `trusted.gpg.d/`)
/// for a source that names none. `None` when apt has no source for `url`.
pub fn machine_signed_by(etc: &Path, url: &str) -> Option<String> {
    let want = url.trim_end_matches('/');
    let mut files: Vec<PathBuf> = std::fs::read_dir(etc.join("sources.list.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.insert(0, etc.join("sources.list"));
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let found = match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => deb822_signed_by(&text, want),
            Some("list") => one_line_signed_by(&text, want),
            _ => None,
        };
        if let Some(signed_by) = found {
            return Some(signed_by.unwrap_or_else(|| global_keyrings(etc)));
        }
    }
    None
}

/// `Some(Some(signed_by))` or `Some(None)` (no Signed-By) for the first
/// enabled stanza of type `deb` naming `url`.
fn deb822_signed_by(text: &str, url: &str) -> Option<Option<String>> {
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some(cont) = line.strip_prefix([' ', '\t']) {
                if let Some((_, v)) = fields.last_mut() {
                    v.push('\n');
                    v.push_str(if cont.trim() == "." { "" } else { cont.trim() });
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let types = get("types").unwrap_or_default();
        let enabled = get("enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        let names_url = get("uris")
            .unwrap_or_default()
            .split_whitespace()
            .any(|u| u.trim_end_matches('/') == url);
        if enabled && names_url && types.split_whitespace().any(|t| t == "deb") {
            return Some(get("signed-by").map(|v| v.trim().to_owned()));
        }
    }
    None
}

fn one_line_signed_by(text: &str, url: &str) -> Option<Option<String>> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let rest = rest.trim_start();
        let (opts, rest) = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?,
            None => ("", rest),
        };
        if rest
            .split_whitespace()
            .next()
            .map(|u| u.trim_end_matches('/'))
            != Some(url)
        {
            continue;
        }
        return Some(
            opts.split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_owned),
        );
    }
    None
}

/// apt's keyrings for sources without Signed-By.
fn global_keyrings(etc: &Path) -> String {
    let mut out = Vec::new();
    if etc.join("trusted.gpg").is_file() {
        out.push(etc.join("trusted.gpg"));
    }
    let mut parts: Vec<PathBuf> = std::fs::read_dir(etc.join("trusted.gpg.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    parts.retain(|p| p.extension().is_some_and(|e| e == "gpg" || e == "asc"));
    parts.sort();
    out.extend(parts);
    out.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_rfc2822("Sat, 11 Jul 2026 10:16:37 UTC"),
            Some(1_783_764_997)
        );
        assert_eq!(
            parse_rfc2822("11 Jul 2026 10:16:37 +0000"),
            Some(1_783_764_997)
        );
        assert_eq!(
            parse_rfc2822("Sun, 06 Dec 2026 09:00:00 +0100"),
            parse_rfc2822("Sun, 06 Dec 2026 08:00:00 GMT")
        );
        assert_eq!(
            parse_rfc2822("Mon, 29 Feb 2024 00:00:00 UTC"),
            Some(1_709_164_800)
        );
        for bad in [
            "",
            "yesterday",
            "Sat, 11 Jul 2026 10:16 UTC",
            "11 Foo 2026 00:00:00 UTC",
            "11 Jul 2026 25:00:00 UTC",
            "11 Jul 2026 10:00:00 CEST",
        ] {
            assert_eq!(parse_rfc2822(bad), None, "{bad}");
        }
    }

    #[test]
    fn valid_until_is_honoured() {
        let release = "Origin: x\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nValid-Until: Sat, 18 Jul 2026 10:16:37 UTC\nSHA256:\n ab 1 Valid-Until: no\n";
        let until = parse_rfc2822("Sat, 18 Jul 2026 10:16:37 UTC").unwrap();
        assert!(check_valid_until("u", release, until).is_ok());
        let err = check_valid_until("u", release, until + 1).unwrap_err();
        assert!(matches!(err, TrustError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("--no-check-valid-until"), "{err}");
        assert!(check_valid_until("u", "Origin: x\n", i64::MAX).is_ok());
        assert!(check_valid_until("u", "Valid-Until: soon\n", 0).is_err());
    }

    #[test]
    fn apt_sources_give_signed_by() {
        let etc = tempfile::tempdir().unwrap();
        let d = etc.path();
        std::fs::create_dir_all(d.join("sources.list.d")).unwrap();
        std::fs::create_dir_all(d.join("trusted.gpg.d")).unwrap();
        std::fs::write(d.join("trusted.gpg.d/b.asc"), "").unwrap();
        std::fs::write(d.join("trusted.gpg.d/a.gpg"), "").unwrap();
        std::fs::write(d.join("trusted.gpg.d/readme"), "").unwrap();
        std::fs::write(
            d.join("sources.list.d/x.sources"),
            "Types: deb-src\nURIs: http://src.invalid/d\nSigned-By: /src.gpg\n\n\
             Types: deb\n# note\nURIs: http://a.invalid/d/ http://b.invalid/d\nSuites: s\nSigned-By: /k.gpg\n\n\
             Types: deb\nURIs: http://off.invalid/d\nEnabled: no\nSigned-By: /off.gpg\n\n\
             Types: deb\nURIs: http://c.invalid/d\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n -----END PGP PUBLIC KEY BLOCK-----\n\n\
             Types: deb\nURIs: http://none.invalid/d\n",
        )
        .unwrap();
        std::fs::write(
            d.join("sources.list"),
            "# deb http://a.invalid/d s main\ndeb [arch=amd64 signed-by=/one.gpg] http://one.invalid/ s main\ndeb http://plain.invalid s main\n",
        )
        .unwrap();
        let global = format!(
            "{},{}",
            d.join("trusted.gpg.d/a.gpg").display(),
            d.join("trusted.gpg.d/b.asc").display()
        );
        let got = |u: &str| machine_signed_by(d, u);
        assert_eq!(got("http://b.invalid/d/").as_deref(), Some("/k.gpg"));
        assert_eq!(got("http://a.invalid/d").as_deref(), Some("/k.gpg"));
        assert_eq!(
            got("http://c.invalid/d").as_deref(),
            Some("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----")
        );
        assert_eq!(got("http://none.invalid/d"), Some(global.clone()));
        assert_eq!(got("http://one.invalid").as_deref(), Some("/one.gpg"));
        assert_eq!(got("http://plain.invalid"), Some(global));
        assert_eq!(got("http://off.invalid/d"), None);
        assert_eq!(got("http://src.invalid/d"), None);
        assert_eq!(got("http://elsewhere.invalid"), None);
    }

    #[test]
    fn unknown_keyring_contents_are_refused() {
        assert!(Keyring::from_bytes(b"not a key", "x").is_err());
        assert!(Keyring::load("").is_err());
        let err = Keyring::load("/nonexistent/k.gpg").err().unwrap();
        assert!(err.to_string().contains("/nonexistent/k.gpg"), "{err}");
    }
}

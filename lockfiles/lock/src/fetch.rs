//! Fetching artifacts and indexes over HTTP(S) or from `file://` URLs and
//! plain paths, with a size cap, and sha256 checks before anything is used.
//! HTTP goes through the transport's client policy (timeouts, user agent,
//! keep-alive) and its low-speed abort, like every other treectl request.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use treectl_transport::body::Metered;
use treectl_transport::client::HttpPolicy;

use crate::Error;

/// Largest body accepted for one fetch (an index or an artifact).
pub const MAX_FETCH_SIZE: u64 = 4 << 30;

/// A blocking fetcher that keeps one HTTP connection pool.
pub struct Fetcher {
    client: reqwest::blocking::Client,
    policy: HttpPolicy,
}

impl Fetcher {
    pub fn new() -> Result<Fetcher, Error> {
        let policy = HttpPolicy::default();
        let client = policy.client().map_err(|e| {
            let cause =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            Error::Fetch {
                url: String::new(),
                reason: format!("cannot set up the HTTP client: {cause}"),
            }
        })?;
        Ok(Fetcher { client, policy })
    }

    /// The bytes at `url`; `Ok(None)` when the server says 404 (or the file
    /// does not exist), so callers can try another name.
    pub fn try_get(&self, url: &str) -> Result<Option<Vec<u8>>, Error> {
        let fail = |reason: String| Error::Fetch {
            url: url.to_owned(),
            reason,
        };
        if let Some(path) = local_path(url) {
            return match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(fail(e.to_string())),
            };
        }
        let resp = self
            .client
            .get(url)
            .send()
            .map_err(|e| fail(format!("{e}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(fail(format!("server answered {}", resp.status())));
        }
        let mut body = Vec::new();
        Metered::new(resp, self.policy.low_speed, None)
            .take(MAX_FETCH_SIZE + 1)
            .read_to_end(&mut body)
            .map_err(|e| fail(e.to_string()))?;
        if body.len() as u64 > MAX_FETCH_SIZE {
            return Err(fail(format!("body is larger than {MAX_FETCH_SIZE} bytes")));
        }
        Ok(Some(body))
    }

    /// Like [`Fetcher::try_get`], but a missing file is an error.
    pub fn get(&self, url: &str) -> Result<Vec<u8>, Error> {
        self.try_get(url)?.ok_or_else(|| Error::Fetch {
            url: url.to_owned(),
            reason: "not found (404)".into(),
        })
    }

    /// Fetches `url` and checks its sha256 (and size, when known) before
    /// returning it.
    pub fn get_verified(
        &self,
        url: &str,
        sha256: &str,
        size: Option<u64>,
    ) -> Result<Vec<u8>, Error> {
        let body = self.get(url)?;
        if let Some(size) = size {
            if body.len() as u64 != size {
                return Err(Error::Digest {
                    what: url.to_owned(),
                    expected: format!("{size} bytes"),
                    actual: format!("{} bytes", body.len()),
                });
            }
        }
        let actual = sha256_hex(&body);
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(Error::Digest {
                what: url.to_owned(),
                expected: sha256.to_owned(),
                actual,
            });
        }
        Ok(body)
    }
}

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The path a `file://` URL or a plain path names; `None` for http(s).
pub fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return None;
    }
    Some(Path::new(url).to_owned())
}

/// Joins a base URL and a relative path with exactly one `/`.
pub fn join_url(base: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

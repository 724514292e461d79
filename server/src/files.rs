//! The read side: plain GET and HEAD of the repository's own files, so any
//! static web server is a full mirror. Only names the repository format
//! defines are served (`config`, `summary.json`, `keys.json`, `objects/XX/….EXT`,
//! `signatures/<id>.json`, `deltas/<from>-<to>.delta`); anything else, including `tmp/`, `state/`,
//! `lock`, `..` and paths through symlinks, is 404.

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use treectl_release::keyset::KEYS_FILE;
use treectl_release::summary::INDEX_FILE;
use treectl_store::store::parse_object_name;
use treectl_store::{ObjectId, RepoMode};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::AppState;

/// How a served file may be cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileClass {
    /// Content-addressed: never changes.
    Object,
    /// Rewritten in place (config, index, signatures).
    Mutable,
}

/// Maps a request path to a repository file, or `None` (404).
fn classify(path: &str, mode: RepoMode) -> Option<(String, FileClass, Option<ObjectId>)> {
    let rel = path.strip_prefix('/')?;
    if rel == "config" || rel == INDEX_FILE || rel == KEYS_FILE {
        return Some((rel.to_owned(), FileClass::Mutable, None));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["objects", dir, file] => {
            let (id, _kind) = parse_object_name(dir, file, mode)?;
            Some((rel.to_owned(), FileClass::Object, Some(id)))
        }
        // Static deltas are immutable, like objects.
        ["deltas", file] => {
            let name = file.strip_suffix(".delta")?;
            let ids: Vec<&str> = name.split('-').collect();
            let valid = matches!(ids.len(), 1 | 2)
                && ids.iter().all(|h| {
                    h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                        && ObjectId::from_hex(h).is_some()
                });
            valid.then(|| (rel.to_owned(), FileClass::Object, None))
        }
        ["signatures", file] => {
            let hex = file.strip_suffix(".json")?;
            let lower = hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            (lower && ObjectId::from_hex(hex).is_some())
                .then(|| (rel.to_owned(), FileClass::Mutable, None))
        }
        _ => None,
    }
}

/// A single byte range, resolved against the file size.
fn parse_range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: serve the whole file (allowed by RFC 9110)
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(size.saturating_sub(1))
        };
        if start >= size || end < start {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(range))
}

fn etag_for(class: FileClass, id: Option<ObjectId>, meta: &std::fs::Metadata) -> String {
    match (class, id) {
        (FileClass::Object, Some(id)) => format!("\"{}\"", id.to_hex()),
        _ => format!(
            "\"{:x}-{:x}-{:x}\"",
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size()
        ),
    }
}

/// GET and HEAD of repository files.
pub async fn serve_file(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Metrics::add(&state.metrics.file_requests, 1);
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on repository files; use GET or HEAD"),
        ));
    }
    state.auth_read(&headers)?;
    let not_found = || ApiError::not_found(format!("no such file: {}", uri.path()));
    let (rel, class, id) = classify(uri.path(), state.repo.mode()).ok_or_else(not_found)?;
    let full = state.repo.path().join(&rel);
    // No symlink anywhere below the repository root: the canonical path
    // must be exactly the expected one.
    match tokio::fs::canonicalize(&full).await {
        Ok(canon) if canon == state.repo_root.join(&rel) => {}
        _ => return Err(not_found()),
    }
    let file = open_nofollow(full).await.map_err(|_| not_found())?;
    let meta = file.metadata().await.map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(not_found());
    }
    let size = meta.len();
    let etag = etag_for(class, id, &meta);
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CACHE_CONTROL,
            match class {
                FileClass::Object => "public, max-age=31536000, immutable",
                FileClass::Mutable => "no-cache",
            },
        )
        .header(
            header::CONTENT_TYPE,
            if rel.ends_with(".json") {
                "application/json"
            } else {
                "application/octet-stream"
            },
        );
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if inm.split(',').any(|t| t.trim() == etag || t.trim() == "*") {
            return Ok(builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .expect("valid response"));
        }
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, size));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Ok((a, b))) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        Some(Err(())) => {
            return Ok(builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .expect("valid response"));
        }
    };
    builder = builder
        .status(status)
        .header(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method == Method::HEAD {
        return Ok(builder.body(Body::empty()).expect("valid response"));
    }
    let mut file = file;
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal("seeking in a repository file", &e))?;
    }
    Metrics::add(&state.metrics.file_bytes, len);
    if class == FileClass::Object {
        if let Some((_, kind)) = rel
            .split('/')
            .collect::<Vec<_>>()
            .as_slice()
            .get(1..3)
            .and_then(|p| parse_object_name(p[0], p[1], state.repo.mode()))
        {
            state.metrics.object_sent(kind, len);
        }
    }
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(len), 64 * 1024));
    Ok(builder.body(body).expect("valid response").into_response())
}

async fn open_nofollow(path: PathBuf) -> std::io::Result<tokio::fs::File> {
    let mut opts = tokio::fs::OpenOptions::new();
    opts.read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    opts.open(path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_repository_files_are_served() {
        let id = "ab".to_owned() + &"c".repeat(62);
        let obj = format!("/objects/ab/{}.filez", &id[2..]);
        assert!(classify(&obj, RepoMode::Archive).is_some());
        assert!(classify(&obj, RepoMode::BareUser).is_none());
        assert!(classify("/config", RepoMode::Archive).is_some());
        assert!(classify("/summary.json", RepoMode::Archive).is_some());
        assert!(classify("/keys.json", RepoMode::Archive).is_some());
        assert!(classify(&format!("/signatures/{id}.json"), RepoMode::Archive).is_some());
        assert!(classify(&format!("/deltas/{id}-{id}.delta"), RepoMode::Archive).is_some());
        assert!(classify(&format!("/deltas/{id}.delta"), RepoMode::BareUser).is_some());
        for bad in [
            "/",
            "/lock",
            "/tmp/x",
            "/state/history.jsonl",
            "/refs/heads/os/stable",
            "/objects/../config",
            "/objects/ab/../../config",
            "/signatures/../config.json",
            "/deltas/x.delta",
            "/deltas/.tmp.delta",
            "/deltas/../config.delta",
            "/objects/AB/cc.filez",
            "//config",
        ] {
            assert!(classify(bad, RepoMode::Archive).is_none(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Some(Ok((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}

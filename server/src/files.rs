//! The read side: plain GET and HEAD of the repository's own files, so any
//! static web server is a full mirror. Only names the repository format
//! defines are served (`config`, `summary.json`, `keys.json`, `objects/XX/….EXT`,
//! `signatures/<id>.json`, `packs/<sha256>.pack` and `.idx`,
//! `deltas/<from>-<to>.delta`); anything else, including `tmp/`, `state/`,
//! `lock`, `..` and paths through symlinks, is 404.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use treectl_release::keyset::KEYS_FILE;
use treectl_release::packs::PACKS_DIR;
use treectl_release::summary::INDEX_FILE;
use treectl_store::store::parse_object_name;
use treectl_store::{ObjectId, ObjectKind, RepoMode};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::AppState;

/// How a served file may be cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileClass {
    /// Content-addressed: never changes (objects, packs and their indexes).
    Object,
    /// Rewritten in place (config, index, signatures).
    Mutable,
}

/// An object file's id and kind.
type Object = (ObjectId, ObjectKind);

/// Maps a request path to a repository file, or `None` (404); an object
/// file comes with its id and kind.
fn classify(path: &str, mode: RepoMode) -> Option<(String, FileClass, Option<Object>)> {
    let rel = path.strip_prefix('/')?;
    if rel == "config" || rel == INDEX_FILE || rel == KEYS_FILE {
        return Some((rel.to_owned(), FileClass::Mutable, None));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["objects", dir, file] => {
            let object = parse_object_name(dir, file, mode)?;
            Some((rel.to_owned(), FileClass::Object, Some(object)))
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
            is_lower_id(hex).then(|| (rel.to_owned(), FileClass::Mutable, None))
        }
        [PACKS_DIR, file] => {
            let hex = file
                .strip_suffix(".pack")
                .or_else(|| file.strip_suffix(".idx"))?;
            is_lower_id(hex).then(|| (rel.to_owned(), FileClass::Object, None))
        }
        _ => None,
    }
}

/// 64 lowercase hex digits: the only spelling the repository writes.
fn is_lower_id(hex: &str) -> bool {
    hex.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && ObjectId::from_hex(hex).is_some()
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

fn etag_for(id: Option<ObjectId>, meta: &std::fs::Metadata) -> String {
    match id {
        Some(id) => object_etag(id),
        None => format!(
            "\"{:x}-{:x}-{:x}\"",
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size()
        ),
    }
}

/// A strong ETag from the object id: the id names the bytes.
fn object_etag(id: ObjectId) -> String {
    format!("\"{}\"", id.to_hex())
}

/// Files up to this size are read whole in one call (and objects of this
/// size are kept in the object cache); larger ones are sent in chunks.
pub const SMALL_FILE: u64 = 64 * 1024;
/// Chunk size for larger files: few reads per response, bounded memory
/// per connection.
const CHUNK: usize = 512 * 1024;

/// Small objects kept in memory, weighed by their size. Objects never
/// change, so an entry is always the bytes of the file it was read from;
/// one removed by `treectl prune` may still be sent until it is evicted,
/// which is what a client could have fetched a moment earlier.
pub struct ObjectCache {
    cache: Option<quick_cache::sync::Cache<ObjectId, Bytes, ByLen>>,
}

#[derive(Clone)]
struct ByLen;

impl quick_cache::Weighter<ObjectId, Bytes> for ByLen {
    fn weight(&self, _: &ObjectId, bytes: &Bytes) -> u64 {
        // The entry's bookkeeping counts too, so empty objects are not free.
        bytes.len() as u64 + 64
    }
}

impl ObjectCache {
    /// A cache of at most `bytes` (0: no cache).
    pub fn new(bytes: u64) -> ObjectCache {
        let cache = (bytes > 0).then(|| {
            let items = (bytes / 4096).clamp(16, 1 << 20) as usize;
            quick_cache::sync::Cache::with_weighter(items, bytes, ByLen)
        });
        ObjectCache { cache }
    }

    fn get(&self, id: &ObjectId) -> Option<Bytes> {
        self.cache.as_ref()?.get(id)
    }

    fn insert(&self, id: ObjectId, bytes: Bytes) {
        if let Some(c) = &self.cache {
            c.insert(id, bytes);
        }
    }

    /// Bytes held now.
    pub fn weight(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weight())
    }
}

/// A file's bytes, ready to send.
enum Content {
    /// Small: all of it in memory.
    Memory(Bytes),
    /// Larger: read in chunks while sending.
    File(std::fs::File),
}

/// GET and HEAD of repository files.
///
/// Everything runs on the request's own task: a cached object costs no
/// system call, and an uncached file is opened and read with a few plain
/// calls (from the page cache, as a static server does) rather than a
/// round trip through the blocking pool for each.
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
    let (rel, class, object) = classify(uri.path(), state.repo.mode()).ok_or_else(not_found)?;
    let object_id = object.map(|(id, _)| id);
    let cached = object_id.and_then(|id| Some((id, state.objects.get(&id)?)));
    let (content, size, etag) = match cached {
        Some((id, bytes)) => {
            let size = bytes.len() as u64;
            (Content::Memory(bytes), size, object_etag(id))
        }
        None => {
            let mut file = open_beneath(&state, &rel).map_err(|_| not_found())?;
            let meta = file.metadata().map_err(|_| not_found())?;
            if !meta.is_file() {
                return Err(not_found());
            }
            let size = meta.len();
            let etag = etag_for(object_id, &meta);
            if size <= SMALL_FILE {
                let mut buf = Vec::with_capacity(size as usize);
                file.read_to_end(&mut buf)
                    .map_err(|e| ApiError::internal("reading a repository file", &e))?;
                if buf.len() as u64 != size {
                    // Only a non-object file can change under us; send
                    // what the metadata described or nothing.
                    return Err(ApiError::internal(
                        "reading a repository file",
                        &std::io::Error::other("the file changed while it was read"),
                    ));
                }
                let bytes = Bytes::from(buf);
                if let Some(id) = object_id {
                    state.objects.insert(id, bytes.clone());
                }
                (Content::Memory(bytes), size, etag)
            } else {
                (Content::File(file), size, etag)
            }
        }
    };
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
    Metrics::add(&state.metrics.file_bytes, len);
    if let Some((_, kind)) = object {
        state.metrics.object_sent(kind, len);
    }
    let body = match content {
        Content::Memory(bytes) => Body::from(bytes.slice(start as usize..(start + len) as usize)),
        Content::File(mut file) => {
            if start > 0 {
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| ApiError::internal("seeking in a repository file", &e))?;
            }
            Body::new(FileChunks {
                file,
                remaining: len,
            })
        }
    };
    Ok(builder.body(body).expect("valid response").into_response())
}

/// A file's bytes as a response body, read in [`CHUNK`]s as the connection
/// takes them. Reads come from the page cache and are done in place, as a
/// static server does; a file shorter than promised ends the body with an
/// error (the client sees a cut response, never wrong bytes).
struct FileChunks {
    file: std::fs::File,
    remaining: u64,
}

impl HttpBody for FileChunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = self.remaining.min(CHUNK as u64);
        // read_to_end fills the spare capacity without zeroing it first.
        let mut buf = Vec::with_capacity(want as usize);
        let read = match (&mut self.file).take(want).read_to_end(&mut buf) {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than its size",
            )),
            Ok(n) => Ok(n),
            Err(e) => Err(e),
        };
        Poll::Ready(Some(read.map(|n| {
            self.remaining -= n as u64;
            Frame::data(Bytes::from(buf))
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Opens `rel` below the repository root without following any symlink
/// and without leaving the root (`openat2` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`); kernels without `openat2` get the same rule
/// from a canonical-path comparison.
fn open_beneath(state: &AppState, rel: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    match openat2(
        &state.root_dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        Err(rustix::io::Errno::NOSYS) => {
            let full = state.repo_root.join(rel);
            if std::fs::canonicalize(&full)? != full {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(OFlags::NOFOLLOW.bits() as i32)
                .open(full)
        }
        Err(e) => Err(e.into()),
    }
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
        for pack in [format!("/packs/{id}.pack"), format!("/packs/{id}.idx")] {
            assert_eq!(
                classify(&pack, RepoMode::Archive).map(|c| c.1),
                Some(FileClass::Object),
                "{pack}"
            );
        }
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
            "/packs/../config",
            "/packs/abc.pack",
            "/packs/x/y.pack",
        ] {
            assert!(classify(bad, RepoMode::Archive).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_object_cache_stays_within_its_budget() {
        let cache = ObjectCache::new(64 * 1024);
        for i in 0..200u32 {
            let id = ObjectId::from_hex(&format!("{i:064x}")).expect("id");
            cache.insert(id, Bytes::from(vec![i as u8; 4000]));
            assert!(cache.weight() <= 64 * 1024, "{} after {i}", cache.weight());
        }
        assert!(cache.weight() > 32 * 1024, "the cache keeps what fits");
        let last = ObjectId::from_hex(&format!("{:064x}", 199)).expect("id");
        assert_eq!(cache.get(&last).as_deref(), Some(&[199u8; 4000][..]));
        let off = ObjectCache::new(0);
        off.insert(last, Bytes::from_static(b"x"));
        assert_eq!(off.get(&last), None);
        assert_eq!(off.weight(), 0);
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

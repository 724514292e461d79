//! Pulling a published ref from a remote (`treectl pull NAME:REF`).
//!
//! 1. Fetch `summary.json` from the remote's URL (then its mirrors), check
//!    its signature against the trusted keys, its expiry, and that its
//!    serial (and the ref's) is not lower than what this client accepted
//!    last ([`TrustState`]).
//! 2. Fetch the commit and its detached signature, which must bind it to
//!    the ref.
//! 3. Walk the trees level by level, fetching only the tree and dirmeta
//!    objects the repository lacks. They are verified and kept in a
//!    resumable staging directory (`tmp/pull-NAME/`) until the end, so
//!    `objects/` never holds a tree whose children are missing.
//! 4. Fetch the missing file objects, many at a time (the batched
//!    `/v1/objects/fetch` when the server offers it, plain GETs from static
//!    mirrors), verify each against its id before staging it, and commit
//!    them in batches: an interrupted pull keeps what it finished.
//! 5. Store the trees, dirmetas and commit (children first), record the
//!    accepted index in the trust state, then move `refs/remotes/NAME/REF`.
//!
//! Transient failures (timeouts, 5xx, cut connections, a transfer slower
//! than the low-speed limit) are retried with backoff, then the next mirror
//! is tried. Bodies are capped (declared sizes checked before reading,
//! actual sizes while reading).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use treectl_repo::object::{Commit, EntryKind, FileHeader, ObjectKind, Tree};
use treectl_repo::refs::RefName;
use treectl_repo::remote::{self, Remote, TrustState, TrustedRef};
use treectl_repo::sign::{CommitSignatures, PublicKey};
use treectl_repo::store::{extension, verify_wire_form, LockKind, RepoLock, Transaction};
use treectl_repo::summary::{RefEntry, RefIndex, SignedIndex};
use treectl_repo::wire::{FetchRequest, HealthResponse, ObjectRef, PackError, PackReader};
use treectl_repo::{failpoint, ObjectId, Repo, RepoMode};

use crate::progress::Progress;

/// Settings of one pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Requests in flight at once.
    pub jobs: usize,
    /// Whole-request limit (connect, headers and body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// A transfer slower than this many bytes per second over
    /// `low_speed_time` is aborted (and retried).
    pub low_speed_limit: u64,
    pub low_speed_time: Duration,
    /// Retries of a transient failure per source, with doubling backoff.
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_index_bytes: u64,
    /// Largest object, both as sent and (files) uncompressed.
    pub max_object_bytes: u64,
    /// File objects per transaction: what an interrupted pull keeps.
    pub commit_every: usize,
    /// Use plain GETs even when the server offers the batched fetch.
    pub no_batch: bool,
    pub token: Option<String>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            jobs: 8,
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(30),
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(30),
            retries: 3,
            retry_delay: Duration::from_millis(500),
            max_index_bytes: 16 << 20,
            max_object_bytes: 1 << 30,
            commit_every: 2000,
            no_batch: false,
            token: None,
        }
    }
}

/// What a pull did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PullOutcome {
    pub remote: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub commit: ObjectId,
    pub serial: u64,
    pub version: Option<String>,
    /// The remote ref already named this commit.
    pub unchanged: bool,
    pub objects_fetched: u64,
    pub bytes_fetched: u64,
    pub seconds: f64,
}

/// How a fetch failed: transient failures are retried, then fail over.
#[derive(Debug)]
enum FetchError {
    Transient(String),
    NotFound(String),
    Fatal(String),
}

impl FetchError {
    fn message(&self) -> &str {
        match self {
            FetchError::Transient(m) | FetchError::NotFound(m) | FetchError::Fatal(m) => m,
        }
    }
}

/// Counters shared by the workers and the progress display.
#[derive(Default)]
pub struct Counters {
    pub objects_done: AtomicU64,
    pub objects_total: AtomicU64,
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
}

/// The HTTP side: one client (keep-alive pool) and the sources in order.
struct Fetcher<'a> {
    client: Client,
    sources: Vec<String>,
    /// Sources that exhausted their retries on a transient failure.
    dead: Vec<AtomicBool>,
    /// Whether each source offers `/v1/objects/fetch`.
    batched: Vec<bool>,
    opts: &'a PullOptions,
    counters: &'a Counters,
}

impl<'a> Fetcher<'a> {
    fn new(sources: Vec<String>, opts: &'a PullOptions, counters: &'a Counters) -> Result<Self> {
        let client = Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .pool_max_idle_per_host(opts.jobs.max(1) * 2)
            .tcp_nodelay(true)
            .user_agent(concat!("treectl/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the HTTP client")?;
        let n = sources.len();
        Ok(Fetcher {
            client,
            sources,
            dead: (0..n).map(|_| AtomicBool::new(false)).collect(),
            batched: vec![false; n],
            opts,
            counters,
        })
    }

    fn request(&self, req: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.opts.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Asks each source whether it is a treectl server with the batched
    /// fetch (`/v1/health` answers); static mirrors answer 404.
    fn probe(&mut self) {
        if self.opts.no_batch {
            return;
        }
        for i in 0..self.sources.len() {
            let url = format!("{}/v1/health", self.sources[i]);
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let ok = self
                .request(self.client.get(&url))
                .timeout(self.opts.connect_timeout.min(self.opts.timeout))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| read_body(r, 64 << 10, self.opts, self.counters).ok())
                .and_then(|b| serde_json::from_slice::<HealthResponse>(&b).ok())
                .is_some_and(|h| h.status == "ok");
            self.batched[i] = ok;
        }
    }

    fn classify_send(url: &str, e: reqwest::Error) -> FetchError {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "failed"
        };
        FetchError::Transient(format!("GET {url}: {what}: {}", root_cause(&e)))
    }

    fn check_status(url: &str, resp: Response) -> Result<Response, FetchError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let msg = format!("{url} answered {status}");
        Err(match status {
            StatusCode::NOT_FOUND => FetchError::NotFound(msg),
            s if s.is_server_error()
                || s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS =>
            {
                FetchError::Transient(msg)
            }
            StatusCode::UNAUTHORIZED => FetchError::Fatal(format!(
                "{msg} (pass a token with --token-file FILE or $TREECTL_TOKEN)"
            )),
            _ => FetchError::Fatal(msg),
        })
    }

    /// One GET of `path` from source `src`, body capped at `cap`.
    fn get_once(&self, src: usize, path: &str, cap: u64) -> Result<Vec<u8>, FetchError> {
        let url = format!("{}{path}", self.sources[src]);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .request(self.client.get(&url))
            .send()
            .map_err(|e| Self::classify_send(&url, e))?;
        let resp = Self::check_status(&url, resp)?;
        read_body(resp, cap, self.opts, self.counters).map_err(|e| e.with_context(&url))
    }

    /// GET with retries and backoff on transient failures.
    fn get(&self, src: usize, path: &str, cap: u64) -> Result<Vec<u8>, FetchError> {
        let mut delay = self.opts.retry_delay;
        let mut attempt = 0;
        loop {
            match self.get_once(src, path, cap) {
                Err(FetchError::Transient(m)) if attempt < self.opts.retries => {
                    tracing_retry(&m);
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Fetches one object's wire form and hands it to `sink` (which
    /// verifies it), trying every live source in order.
    fn fetch_object(&self, obj: ObjectRef, sink: &Sink) -> Result<(), FetchError> {
        let path = object_path(&obj);
        let mut first: Option<FetchError> = None;
        let live: Vec<usize> = (0..self.sources.len())
            .filter(|&i| !self.dead[i].load(Ordering::Relaxed))
            .collect();
        let order = if live.is_empty() {
            (0..self.sources.len()).collect()
        } else {
            live
        };
        for src in order {
            let result = self
                .get(src, &path, self.opts.max_object_bytes)
                .and_then(|data| {
                    sink(obj, data).map_err(|e| {
                        FetchError::Fatal(format!("{} sent a bad object: {e:#}", self.sources[src]))
                    })
                });
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if matches!(e, FetchError::Transient(_)) {
                        self.dead[src].store(true, Ordering::Relaxed);
                    }
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.expect("at least one source"))
    }

    /// Fetches `objs` from source `src` as one batched pack; returns the
    /// objects that did not arrive when the pack was cut short.
    fn fetch_pack_once(
        &self,
        src: usize,
        objs: &[ObjectRef],
        sink: &Sink,
    ) -> (usize, Option<FetchError>) {
        let url = format!("{}/v1/objects/fetch", self.sources[src]);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&FetchRequest {
            objects: objs.to_vec(),
        })
        .expect("fetch request serializes");
        let resp = match self
            .request(self.client.post(&url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
        {
            Ok(r) => r,
            Err(e) => return (0, Some(Self::classify_send(&url, e))),
        };
        let resp = match Self::check_status(&url, resp) {
            Ok(r) => r,
            Err(e) => return (0, Some(e)),
        };
        // Buffered: a record's tag, id and length are small reads.
        let reader =
            io::BufReader::with_capacity(256 << 10, Metered::new(resp, self.opts, self.counters));
        let mut pack = PackReader::new(reader, self.opts.max_object_bytes);
        let mut done = 0;
        for want in objs {
            match pack.next_record() {
                Ok(Some((kind, id, data))) => {
                    if kind != want.kind || id != want.id {
                        return (
                            done,
                            Some(FetchError::Fatal(format!(
                                "{url} sent {kind} object {id} where {} was expected",
                                describe(want)
                            ))),
                        );
                    }
                    if let Err(e) = sink(*want, data) {
                        return (
                            done,
                            Some(FetchError::Fatal(format!(
                                "{} from {url}: {e:#}",
                                describe(want)
                            ))),
                        );
                    }
                    done += 1;
                }
                Ok(None) => {
                    return (
                        done,
                        Some(FetchError::Fatal(format!("{url}: the pack ended early"))),
                    )
                }
                Err(e) => {
                    let msg = format!("{url}: {e}");
                    let err = match e {
                        PackError::Truncated | PackError::Io(_) => FetchError::Transient(msg),
                        _ => FetchError::Fatal(msg),
                    };
                    return (done, Some(err));
                }
            }
        }
        (done, None)
    }

    /// Fetches `objs`: batched from the first live batching source (with
    /// retries), then per-object GETs (with failover) for whatever is left.
    fn fetch_chunk(&self, objs: &[ObjectRef], sink: &Sink, abort: &AtomicBool) -> Result<()> {
        let mut rest = objs;
        if let Some(src) = (0..self.sources.len())
            .find(|&i| self.batched[i] && !self.dead[i].load(Ordering::Relaxed))
        {
            let mut delay = self.opts.retry_delay;
            let mut attempt = 0;
            while !rest.is_empty() && !abort.load(Ordering::Relaxed) {
                let (done, err) = self.fetch_pack_once(src, rest, sink);
                rest = &rest[done..];
                match err {
                    None => break,
                    Some(FetchError::Transient(m)) if attempt < self.opts.retries => {
                        tracing_retry(&m);
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(30));
                        attempt += 1;
                    }
                    Some(FetchError::Transient(_)) => {
                        self.dead[src].store(true, Ordering::Relaxed);
                        break;
                    }
                    // A bad object: fetch the rest one by one, from every
                    // source in turn, and report if none has it right.
                    Some(_) => break,
                }
            }
        }
        for obj in rest {
            if abort.load(Ordering::Relaxed) {
                bail!("stopped");
            }
            self.fetch_object(*obj, sink)
                .map_err(|e| anyhow!("{}", e.message()))?;
        }
        Ok(())
    }

    /// Fetches every object of `objs` with `jobs` workers; stops at the
    /// first error.
    fn fetch_all(&self, objs: &[ObjectRef], sink: &Sink) -> Result<()> {
        if objs.is_empty() {
            return Ok(());
        }
        let jobs = self.opts.jobs.max(1);
        // Chunks small enough to keep every worker busy to the end (a few
        // per worker, so no worker is left alone with a long tail), large
        // enough that a batched request carries many objects.
        let chunk = if self.batched.iter().any(|b| *b) {
            (objs.len() / (jobs * 4)).clamp(16.min(objs.len().div_ceil(jobs)).max(1), 256)
        } else {
            1
        };
        let next = AtomicUsize::new(0);
        let abort = AtomicBool::new(false);
        let error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..jobs.min(objs.len().div_ceil(chunk)) {
                s.spawn(|| loop {
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let start = next.fetch_add(chunk, Ordering::Relaxed);
                    if start >= objs.len() {
                        return;
                    }
                    let end = (start + chunk).min(objs.len());
                    if let Err(e) = self.fetch_chunk(&objs[start..end], sink, &abort) {
                        let mut slot = error.lock().expect("error slot poisoned");
                        if slot.is_none() && !abort.load(Ordering::Relaxed) {
                            *slot = Some(e);
                        }
                        abort.store(true, Ordering::Relaxed);
                        return;
                    }
                });
            }
        });
        match error.into_inner().expect("error slot poisoned") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

type Sink<'s> = dyn Fn(ObjectRef, Vec<u8>) -> Result<()> + Sync + 's;

fn tracing_retry(msg: &str) {
    if std::env::var_os("TREECTL_DEBUG").is_some() {
        eprintln!("retrying: {msg}");
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn describe(obj: &ObjectRef) -> String {
    format!("{} object {}", obj.kind, obj.id)
}

/// `/objects/XX/<62 hex>.<archive extension>`.
fn object_path(obj: &ObjectRef) -> String {
    let hex = obj.id.to_hex();
    format!(
        "/objects/{}/{}.{}",
        &hex[..2],
        &hex[2..],
        extension(obj.kind, RepoMode::Archive)
    )
}

impl FetchError {
    fn with_context(self, url: &str) -> FetchError {
        match self {
            FetchError::Transient(m) => FetchError::Transient(format!("{url}: {m}")),
            FetchError::NotFound(m) => FetchError::NotFound(format!("{url}: {m}")),
            FetchError::Fatal(m) => FetchError::Fatal(format!("{url}: {m}")),
        }
    }
}

/// A body reader that counts bytes and aborts a transfer slower than the
/// low-speed limit (as `TimedOut`, which callers treat as transient).
struct Metered<'a, R> {
    inner: R,
    opts: &'a PullOptions,
    counters: &'a Counters,
    window_start: Instant,
    window_bytes: u64,
}

impl<'a, R: Read> Metered<'a, R> {
    fn new(inner: R, opts: &'a PullOptions, counters: &'a Counters) -> Self {
        Metered {
            inner,
            opts,
            counters,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.window_bytes += n as u64;
        let elapsed = self.window_start.elapsed();
        if elapsed >= self.opts.low_speed_time {
            let floor = self.opts.low_speed_limit as f64 * elapsed.as_secs_f64();
            if (self.window_bytes as f64) < floor && n > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "transfer slower than {} bytes/s for {:?} (low-speed limit)",
                        self.opts.low_speed_limit, self.opts.low_speed_time
                    ),
                ));
            }
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        Ok(n)
    }
}

/// Reads a response body of at most `cap` bytes: a larger declared length
/// is refused before reading, a longer body while reading.
fn read_body(
    resp: Response,
    cap: u64,
    opts: &PullOptions,
    counters: &Counters,
) -> Result<Vec<u8>, FetchError> {
    if let Some(len) = resp.content_length() {
        if len > cap {
            return Err(FetchError::Fatal(format!(
                "the body declares {len} bytes, over the limit of {cap}"
            )));
        }
    }
    let declared = resp.content_length();
    let mut reader = Metered::new(resp, opts, counters);
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(cap) as usize);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let inner = e
                    .get_ref()
                    .map(|i| root_cause(i))
                    .unwrap_or_else(|| e.to_string());
                let what = if e.kind() == io::ErrorKind::TimedOut {
                    "stalled"
                } else {
                    "was cut short"
                };
                return Err(FetchError::Transient(format!(
                    "the body {what} after {} bytes: {inner}",
                    out.len()
                )));
            }
        };
        if out.len() as u64 + n as u64 > cap {
            return Err(FetchError::Fatal(format!(
                "the body is longer than the limit of {cap} bytes"
            )));
        }
        out.extend_from_slice(&buf[..n]);
    }
    if let Some(len) = declared {
        if out.len() as u64 != len {
            return Err(FetchError::Transient(format!(
                "the body was cut short after {} of {len} bytes",
                out.len()
            )));
        }
    }
    Ok(out)
}

/// Checks a file object's declared (uncompressed) size before it is
/// decompressed, so a decompression bomb is refused up front.
fn check_declared_size(obj: &ObjectRef, data: &[u8], max: u64) -> Result<()> {
    if obj.kind != ObjectKind::File {
        return Ok(());
    }
    let len = data
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .context("the object is shorter than its header length")?;
    let header = data
        .get(4..4 + len)
        .context("the object is shorter than its header")?;
    let header = FileHeader::decode(header).context("decoding the file header")?;
    if header.size > max {
        bail!(
            "it declares {} bytes of content, over the limit of {max}",
            header.size
        );
    }
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Verifies an index's signature with any trusted key (integrity only
/// without keys), its format and its expiry.
pub fn verify_index(signed: &SignedIndex, keys: &[PublicKey], now: i64) -> Result<RefIndex> {
    let index = if keys.is_empty() {
        signed.index_unverified()?
    } else {
        let mut first = None;
        let mut good = None;
        for key in keys {
            match signed.verify(key) {
                Ok(i) => {
                    good = Some(i);
                    break;
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        match good {
            Some(i) => i,
            None => return Err(first.expect("at least one key").into()),
        }
    };
    index.check_fresh(now)?;
    Ok(index)
}

/// Checks an accepted index against the trust state: serials never go
/// down, and the same serial means the same index. Returns the ref entry.
pub fn check_trust<'i>(
    state: &TrustState,
    index: &'i RefIndex,
    payload_sha256: &str,
    remote: &str,
    ref_name: &str,
) -> Result<&'i RefEntry> {
    if index.serial < state.serial {
        bail!(
            "the ref index has serial {}, lower than serial {} already accepted from {remote}: refusing a replayed or stale index (a mirror may be behind)",
            index.serial,
            state.serial
        );
    }
    if index.serial == state.serial
        && state
            .index_sha256
            .as_deref()
            .is_some_and(|h| h != payload_sha256)
    {
        bail!(
            "the ref index has serial {} like the one accepted from {remote} before, but different content: refusing it",
            index.serial
        );
    }
    let entry = index.refs.get(ref_name).ok_or_else(|| {
        let names: Vec<&str> = index.refs.keys().map(String::as_str).collect();
        anyhow!(
            "{remote} does not publish {ref_name} (published: {})",
            if names.is_empty() {
                "nothing".to_owned()
            } else {
                names.join(", ")
            }
        )
    })?;
    if let Some(trusted) = state.refs.get(ref_name) {
        if entry.serial < trusted.serial {
            bail!(
                "{remote}:{ref_name} has serial {}, lower than serial {} accepted before: refusing a downgrade",
                entry.serial,
                trusted.serial
            );
        }
    }
    Ok(entry)
}

/// The resumable staging of one remote's pull: verified trees, dirmetas
/// and the commit, kept until the whole closure is present.
struct MetaStaging {
    dir: PathBuf,
}

impl MetaStaging {
    fn open(repo: &Repo, remote: &str) -> Result<MetaStaging> {
        let dir = repo.path().join("tmp").join(format!("pull-{remote}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(MetaStaging { dir })
    }

    fn path(&self, obj: &ObjectRef) -> PathBuf {
        self.dir
            .join(format!("{}.{}", obj.id.to_hex(), obj.kind.name()))
    }

    /// A verified object from an earlier, interrupted pull.
    fn load(&self, obj: &ObjectRef) -> Option<Vec<u8>> {
        let data = fs::read(self.path(obj)).ok()?;
        verify_wire_form(&obj.id, obj.kind, &data).ok()?;
        Some(data)
    }

    fn save(&self, obj: &ObjectRef, data: &[u8]) -> Result<()> {
        let path = self.path(obj);
        let tmp = self.dir.join(format!(".{}.tmp", obj.id.to_hex()));
        fs::write(&tmp, data)
            .and_then(|()| fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))
    }

    fn remove(self) -> Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.dir.display())),
        }
    }
}

/// Pulls `remote_name:ref_name` into `repo`.
pub fn pull(
    repo: &Repo,
    remote_name: &str,
    ref_name: &RefName,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<PullOutcome> {
    let started = Instant::now();
    let remote: Remote = remote::get_remote(repo, remote_name)?;
    let trust = TrustState::load(repo, remote_name)?;
    let counters = progress.counters();
    let mut fetcher = Fetcher::new(remote.sources(), opts, counters)?;

    // 1. The index, from the first source that passes every check.
    let mut accepted = None;
    let mut first_err: Option<String> = None;
    for src in 0..fetcher.sources.len() {
        let attempt = || -> Result<(SignedIndex, RefIndex, String)> {
            let bytes = fetcher
                .get(src, "/summary.json", opts.max_index_bytes)
                .map_err(|e| match e {
                    FetchError::NotFound(_) => anyhow!(
                        "{} has no summary.json: nothing is published there",
                        fetcher.sources[src]
                    ),
                    e => anyhow!("{}", e.message()),
                })?;
            let signed = SignedIndex::parse(&bytes)?;
            let index = verify_index(&signed, &remote.trusted_keys, now())?;
            let sha = hex_sha256(signed.payload.as_bytes());
            check_trust(&trust, &index, &sha, remote_name, ref_name.as_str())?;
            Ok((signed, index, sha))
        };
        match attempt() {
            Ok(ok) => {
                accepted = Some((src, ok));
                break;
            }
            Err(e) => {
                let e = format!("{e:#}");
                first_err = Some(match first_err {
                    None => format!(
                        "pulling {remote_name}:{ref_name} from {}: {e}",
                        fetcher.sources[src]
                    ),
                    Some(before) => {
                        format!("{before}; then from mirror {}: {e}", fetcher.sources[src])
                    }
                });
            }
        }
    }
    let Some((index_src, (_signed, index, index_sha))) = accepted else {
        bail!("{}", first_err.expect("at least one source"));
    };
    let entry = index.refs[ref_name.as_str()].clone();
    let commit_id = entry.commit;
    let where_ = format!("pulling {remote_name}:{ref_name}");

    // 2. The commit's detached signature, bound to the ref.
    if !remote.trusted_keys.is_empty() {
        let path = format!("/signatures/{}.json", commit_id.to_hex());
        let bytes = fetcher
            .get(index_src, &path, 1 << 20)
            .map_err(|e| match e {
                FetchError::NotFound(_) => anyhow!(
                    "commit {commit_id} has no signature at {}: refusing unsigned content (the remote has a trusted key)",
                    fetcher.sources[index_src]
                ),
                e => anyhow!("{}", e.message()),
            })
            .with_context(|| where_.clone())?;
        let sigs = CommitSignatures::parse(&commit_id, &bytes).with_context(|| where_.clone())?;
        let mut ok = Err(anyhow!("no trusted key"));
        for key in &remote.trusted_keys {
            match sigs.verify(ref_name, key) {
                Ok(()) => {
                    ok = Ok(());
                    break;
                }
                Err(e) => {
                    if ok.is_err() {
                        ok = Err(e.into());
                    }
                }
            }
        }
        ok.with_context(|| where_.clone())?;
    }

    let already = treectl_repo::refs::try_read_remote_ref(repo, remote_name, ref_name)?;
    fetcher.probe();
    // Prune waits until this pull is done, so nothing it relies on goes.
    let _lock = RepoLock::acquire(repo.path(), LockKind::Shared)?;
    let staging = MetaStaging::open(repo, remote_name)?;

    // 3. The commit, then trees and dirmetas level by level.
    let metas: Mutex<HashMap<ObjectRef, Vec<u8>>> = Mutex::new(HashMap::new());
    let fetched = AtomicU64::new(0);
    let meta_sink = |obj: ObjectRef, data: Vec<u8>| -> Result<()> {
        verify_wire_form(&obj.id, obj.kind, &data)?;
        staging.save(&obj, &data)?;
        fetched.fetch_add(1, Ordering::Relaxed);
        counters.objects_done.fetch_add(1, Ordering::Relaxed);
        metas.lock().expect("metas poisoned").insert(obj, data);
        failpoint::hit("pull-object");
        Ok(())
    };
    // `need` are objects not in the store, in the order found (parents
    // before children); trees in the store have their whole closure.
    let mut need_meta: Vec<ObjectRef> = Vec::new();
    let commit_ref = ObjectRef {
        id: commit_id,
        kind: ObjectKind::Commit,
    };
    let get_meta = |obj: &ObjectRef, level: &mut Vec<ObjectRef>| {
        if let Some(d) = staging.load(obj) {
            metas.lock().expect("metas poisoned").insert(*obj, d);
        } else {
            level.push(*obj);
        }
    };
    let commit: Commit = if repo.has_object(&commit_id, ObjectKind::Commit) {
        repo.read_commit(&commit_id)?
    } else {
        let mut level = Vec::new();
        get_meta(&commit_ref, &mut level);
        counters
            .objects_total
            .fetch_add(level.len() as u64, Ordering::Relaxed);
        fetcher
            .fetch_all(&level, &meta_sink)
            .with_context(|| where_.clone())?;
        need_meta.push(commit_ref);
        let data = metas.lock().expect("metas poisoned")[&commit_ref].clone();
        Commit::decode(&data).with_context(|| format!("decoding commit {commit_id}"))?
    };

    let mut files: Vec<ObjectRef> = Vec::new();
    let mut seen: HashSet<ObjectRef> = HashSet::new();
    let mut current: Vec<(ObjectId, ObjectId)> = vec![(commit.root_tree, commit.root_meta)];
    let mut depth = 0;
    while !current.is_empty() {
        depth += 1;
        if depth > 4096 {
            bail!("{where_}: the tree is more than 4096 directories deep");
        }
        let mut level = Vec::new();
        let mut walk = Vec::new();
        for (tree, meta) in &current {
            let m = ObjectRef {
                id: *meta,
                kind: ObjectKind::DirMeta,
            };
            if seen.insert(m) && !repo.has_object(meta, ObjectKind::DirMeta) {
                need_meta.push(m);
                get_meta(&m, &mut level);
            }
            let t = ObjectRef {
                id: *tree,
                kind: ObjectKind::Tree,
            };
            if seen.insert(t) && !repo.has_object(tree, ObjectKind::Tree) {
                need_meta.push(t);
                get_meta(&t, &mut level);
                walk.push(t);
            }
        }
        counters
            .objects_total
            .fetch_add(level.len() as u64, Ordering::Relaxed);
        fetcher
            .fetch_all(&level, &meta_sink)
            .with_context(|| where_.clone())?;
        let mut next = Vec::new();
        let metas_now = metas.lock().expect("metas poisoned");
        for t in walk {
            let tree =
                Tree::decode(&metas_now[&t]).with_context(|| format!("decoding tree {}", t.id))?;
            for entry in tree.entries {
                match entry.kind {
                    EntryKind::Regular { file } | EntryKind::Symlink { file } => {
                        let f = ObjectRef {
                            id: file,
                            kind: ObjectKind::File,
                        };
                        if seen.insert(f) && !repo.has_object(&file, ObjectKind::File) {
                            files.push(f);
                        }
                    }
                    EntryKind::Dir { tree, meta } => next.push((tree, meta)),
                }
            }
        }
        drop(metas_now);
        current = next;
    }

    // 4. Files, committed in batches.
    counters
        .objects_total
        .fetch_add(files.len() as u64, Ordering::Relaxed);
    progress.phase("objects");
    // Each batch is committed on a thread of its own while the next one
    // downloads (at most one commit in flight).
    std::thread::scope(|s| -> Result<()> {
        let mut committing: Option<std::thread::ScopedJoinHandle<'_, Result<()>>> = None;
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<()>>| -> Result<()> {
            h.join()
                .map_err(|_| anyhow!("a commit thread panicked"))?
                .context("storing pulled objects")
        };
        for batch in files.chunks(opts.commit_every.max(1)) {
            let txn = Transaction::begin(repo)?;
            let file_sink = |obj: ObjectRef, data: Vec<u8>| -> Result<()> {
                check_declared_size(&obj, &data, opts.max_object_bytes)?;
                txn.write_wire_form(&obj.id, obj.kind, &data)?;
                fetched.fetch_add(1, Ordering::Relaxed);
                counters.objects_done.fetch_add(1, Ordering::Relaxed);
                failpoint::hit("pull-object");
                Ok(())
            };
            let got = fetcher
                .fetch_all(batch, &file_sink)
                .with_context(|| where_.clone());
            if let Some(h) = committing.take() {
                join(h)?;
            }
            got?;
            // The metadata transaction below flushes these renames before
            // any tree naming the files enters the store.
            committing = Some(s.spawn(move || txn.commit_unflushed().map_err(anyhow::Error::from)));
        }
        committing.map_or(Ok(()), join)
    })?;

    // 5. Trees, dirmetas and the commit, children first; then the trust
    // state; then the ref.
    // This commit also flushes the file batches' renames (even with no
    // metadata to store).
    if !need_meta.is_empty() || !files.is_empty() {
        let txn = Transaction::begin(repo)?;
        let metas = metas.into_inner().expect("metas poisoned");
        for obj in children_first(&need_meta, &metas, &commit)? {
            let data = metas
                .get(&obj)
                .with_context(|| format!("{} was not fetched", describe(&obj)))?;
            txn.write_wire_form(&obj.id, obj.kind, data)?;
        }
        txn.commit(&[])?;
    }
    failpoint::hit("pull-before-ref");
    let mut state = trust.clone();
    state.serial = index.serial;
    state.index_sha256 = Some(index_sha);
    state.generated = index.generated;
    state.refs.insert(
        ref_name.to_string(),
        TrustedRef {
            serial: entry.serial,
            commit: commit_id,
        },
    );
    state.save(repo, remote_name)?;
    remote::write_remote_ref(repo, remote_name, ref_name, &commit_id)?;
    staging.remove()?;
    progress.finish();
    Ok(PullOutcome {
        remote: remote_name.to_owned(),
        ref_name: ref_name.to_string(),
        commit: commit_id,
        serial: index.serial,
        version: entry.version.clone(),
        unchanged: already == Some(commit_id),
        objects_fetched: fetched.load(Ordering::Relaxed),
        bytes_fetched: counters.bytes.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The needed trees, dirmetas and commit in an order where every object
/// comes after the objects it names (dirmetas first, trees in post-order,
/// the commit last), so the store never names a missing object.
fn children_first(
    need: &[ObjectRef],
    metas: &HashMap<ObjectRef, Vec<u8>>,
    commit: &Commit,
) -> Result<Vec<ObjectRef>> {
    let needed: HashSet<ObjectRef> = need.iter().copied().collect();
    let mut order: Vec<ObjectRef> = need
        .iter()
        .filter(|o| o.kind == ObjectKind::DirMeta)
        .copied()
        .collect();
    let mut done: HashSet<ObjectId> = HashSet::new();
    let mut stack = vec![(commit.root_tree, false)];
    while let Some((id, expanded)) = stack.pop() {
        let obj = ObjectRef {
            id,
            kind: ObjectKind::Tree,
        };
        if expanded {
            order.push(obj);
            continue;
        }
        if !needed.contains(&obj) || !done.insert(id) {
            continue;
        }
        stack.push((id, true));
        let data = metas
            .get(&obj)
            .with_context(|| format!("{} was not fetched", describe(&obj)))?;
        for entry in Tree::decode(data)?.entries {
            if let EntryKind::Dir { tree, .. } = entry.kind {
                stack.push((tree, false));
            }
        }
    }
    order.extend(need.iter().filter(|o| o.kind == ObjectKind::Commit));
    Ok(order)
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses `NAME:REF`.
pub fn parse_target(target: &str) -> Result<(String, RefName)> {
    let (name, r) = target
        .split_once(':')
        .with_context(|| format!("{target:?} is not REMOTE:REF (for example origin:os/stable)"))?;
    remote::validate_name(name)?;
    Ok((name.to_owned(), RefName::new(r)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use treectl_repo::sign::SecretKey;

    fn index(serial: u64, ref_serial: u64) -> RefIndex {
        let mut i = RefIndex::empty();
        i.serial = serial;
        i.expires = 1000;
        i.refs.insert(
            "os/stable".into(),
            RefEntry {
                commit: ObjectId::of(b"c"),
                serial: ref_serial,
                timestamp: 0,
                version: None,
                published: 0,
            },
        );
        i
    }

    #[test]
    fn trust_serials_never_go_down() {
        let mut state = TrustState {
            serial: 5,
            index_sha256: Some("aa".into()),
            ..TrustState::default()
        };
        state.refs.insert(
            "os/stable".into(),
            TrustedRef {
                serial: 4,
                commit: ObjectId::of(b"c"),
            },
        );
        assert!(check_trust(&state, &index(6, 6), "bb", "o", "os/stable").is_ok());
        assert!(check_trust(&state, &index(5, 4), "aa", "o", "os/stable").is_ok());
        let refused = |i: RefIndex, sha: &str| -> String {
            match check_trust(&state, &i, sha, "o", "os/stable") {
                Ok(_) => panic!("accepted serial {}", i.serial),
                Err(e) => format!("{e:#}"),
            }
        };
        assert!(refused(index(4, 4), "cc").contains("lower than serial 5"));
        assert!(refused(index(5, 4), "cc").contains("different content"));
        assert!(refused(index(7, 3), "dd").contains("downgrade"));
        assert!(check_trust(&state, &index(7, 7), "dd", "o", "os/testing").is_err());
    }

    #[test]
    fn index_signature_and_expiry() {
        let key = SecretKey::from_seed([9; 32]);
        let other = SecretKey::from_seed([10; 32]);
        let signed = SignedIndex::sign(&index(1, 1), Some(&key));
        assert!(verify_index(&signed, &[key.public()], 10).is_ok());
        assert!(verify_index(&signed, &[other.public(), key.public()], 10).is_ok());
        assert!(verify_index(&signed, &[other.public()], 10).is_err());
        assert!(verify_index(&signed, &[key.public()], 1001).is_err());
        let unsigned = SignedIndex::sign(&index(1, 1), None);
        assert!(verify_index(&unsigned, &[key.public()], 10).is_err());
        assert!(verify_index(&unsigned, &[], 10).is_ok());
    }

    #[test]
    fn targets() {
        let (n, r) = parse_target("origin:os/stable").expect("valid");
        assert_eq!((n.as_str(), r.as_str()), ("origin", "os/stable"));
        assert!(parse_target("os/stable").is_err());
        assert!(parse_target("a/b:os").is_err());
    }
}

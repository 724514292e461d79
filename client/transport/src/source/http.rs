//! A remote's URL and mirrors as an object source: one keep-alive client,
//! the sources tried in order, the batched `/v1/objects/fetch` where a
//! server offers it and plain GETs of the archive layout (static mirrors)
//! otherwise. From a static mirror whose signed index lists packs, the
//! objects the packs hold come in Range requests of whole runs
//! ([`super::packs`]), anything else (and whatever a bad range spoils) by
//! plain GETs. Transient failures are retried ([`RetryPolicy`]); a source
//! that keeps failing is marked dead and the next one is tried.

use std::collections::HashSet;
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use reqwest::blocking::{Client, RequestBuilder, Response};
use treectl_release::packs::{PackIndex, PackRef, MAX_PACK_INDEX_BYTES};
use treectl_store::failpoint;
use treectl_store::store::relative_object_path;
use treectl_store::RepoMode;
use treectl_wire::{
    FetchRequest, HealthResponse, ObjectRef, ObjectSize, PackReader, SizesRequest, SizesResponse,
};

use super::packs::{piece_bytes, PackMap, PackRange};
use super::{ObjectSource, Sink};
use crate::body::{cut, read_capped, Metered};
use crate::client::{HttpPolicy, LowSpeed};
use crate::error::{root_cause, TransportError};
use crate::parallel::{in_parallel, Stop};
use crate::progress::Counters;
use crate::retry::RetryPolicy;

/// Settings of an [`HttpSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSourceOptions {
    pub http: HttpPolicy,
    pub retry: RetryPolicy,
    /// Requests in flight at once.
    pub jobs: usize,
    /// Largest object, as sent.
    pub max_object_bytes: u64,
    /// Use plain GETs even when a server offers the batched fetch.
    pub no_batch: bool,
    /// Ignore a static mirror's packs: one GET per object.
    pub no_packs: bool,
    pub token: Option<String>,
}

/// A remote's sources (its URL, then its mirrors).
pub struct HttpSource<'a> {
    client: Client,
    sources: Vec<String>,
    /// Sources that exhausted their retries on a transient failure.
    dead: Vec<AtomicBool>,
    /// Whether each source offers `/v1/objects/fetch`.
    batched: Vec<bool>,
    /// Answers refused from one source and then taken from another
    /// ([`HttpSource::fallbacks`]).
    fallbacks: Mutex<Vec<String>>,
    /// Where the remote's packs hold objects, once their indexes are read.
    packs: PackMap,
    /// Packs that answered a range wrongly: not asked again this pull.
    bad_packs: Mutex<HashSet<treectl_store::ObjectId>>,
    opts: HttpSourceOptions,
    counters: &'a Counters,
}

impl<'a> HttpSource<'a> {
    pub fn new(
        sources: Vec<String>,
        opts: HttpSourceOptions,
        counters: &'a Counters,
    ) -> Result<Self, TransportError> {
        let n = sources.len();
        Ok(HttpSource {
            client: opts.http.client()?,
            sources,
            dead: (0..n).map(|_| AtomicBool::new(false)).collect(),
            batched: vec![false; n],
            fallbacks: Mutex::new(Vec::new()),
            packs: PackMap::default(),
            bad_packs: Mutex::new(HashSet::new()),
            opts,
            counters,
        })
    }

    /// The sources' base URLs, in the order they are tried.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Records that `path` was refused from each source of `refused` (a
    /// bad or failed answer) and then taken from source `used`, so a
    /// broken or hostile mirror does not go unnoticed behind a good one.
    pub fn note_fallback(&self, path: &str, refused: &[(usize, TransportError)], used: usize) {
        let mut notes = self.fallbacks.lock().unwrap_or_else(|e| e.into_inner());
        for (src, err) in refused {
            notes.push(format!(
                "{}{path} was refused ({}); used {} instead",
                self.sources[*src],
                err.chain_text(),
                self.sources[used]
            ));
        }
    }

    /// Every fallback so far, one line each, in order.
    pub fn fallbacks(&self) -> Vec<String> {
        self.fallbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn low_speed(&self) -> LowSpeed {
        self.opts.http.low_speed
    }

    fn request(&self, req: RequestBuilder) -> RequestBuilder {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match &self.opts.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Asks each source whether it is a treectl server with the batched
    /// fetch (`/v1/health` answers); static mirrors answer 404.
    pub fn probe(&mut self) {
        if self.opts.no_batch {
            return;
        }
        let wait = self
            .opts
            .http
            .connect_timeout
            .min(self.opts.http.request_timeout);
        for i in 0..self.sources.len() {
            let url = format!("{}/v1/health", self.sources[i]);
            self.batched[i] = self
                .request(self.client.get(&url))
                .timeout(wait)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| read_capped(r, 64 << 10, self.low_speed(), Some(self.counters)).ok())
                .and_then(|b| serde_json::from_slice::<HealthResponse>(&b).ok())
                .is_some_and(|h| h.status == "ok");
        }
    }

    /// Reads the indexes of `listed` (the packs the verified signed index
    /// lists), for a remote that is only a static file server, so objects
    /// come out of the packs. An index that cannot be fetched, or whose
    /// SHA-256, pack or size is not what the signed index says, is left
    /// out: its objects come by plain GETs. Returns how many packs are used.
    pub fn load_packs(&mut self, listed: &[PackRef]) -> usize {
        if self.opts.no_packs || listed.is_empty() || self.batched.iter().any(|b| *b) {
            return 0;
        }
        let loaded: Mutex<Vec<(usize, PackIndex)>> = Mutex::new(Vec::new());
        let numbered: Vec<(usize, &PackRef)> = listed.iter().enumerate().collect();
        in_parallel(self.opts.jobs, &numbered, 1, |chunk, _stop| {
            for &(i, pack) in chunk {
                match self.pack_index(pack) {
                    Ok(index) => loaded.lock().expect("packs poisoned").push((i, index)),
                    Err(e) => debug_pack_unused(&e),
                }
            }
            Ok::<(), TransportError>(())
        })
        .expect("a pack index that fails is left out, never an error");
        let mut loaded = loaded.into_inner().expect("packs poisoned");
        loaded.sort_by_key(|(i, _)| *i);
        for (i, index) in &loaded {
            self.packs.add(listed[*i].clone(), index);
        }
        loaded.len()
    }

    /// One pack's index from the first source that has it right.
    fn pack_index(&self, pack: &PackRef) -> Result<PackIndex, TransportError> {
        let path = format!("/{}", pack.index_path());
        let mut first = None;
        for src in self.live_order() {
            let url = format!("{}{path}", self.sources[src]);
            let got = self
                .get(src, &path, pack.index_size.min(MAX_PACK_INDEX_BYTES))
                .and_then(|bytes| check_pack_index(&url, pack, &bytes));
            match got {
                Ok(index) => return Ok(index),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.expect("at least one source"))
    }

    /// Fetches the objects of one pack range, verified by `sink` one by
    /// one. A transient failure resumes at the first object not yet
    /// handed over. Plain GETs fetch instead: the rest of the range after
    /// a wrong status or `Content-Range` (and that pack is not asked again
    /// this pull) or a transient failure past the retries, and each object
    /// that fails verification (the rest of the range is still read).
    fn fetch_range(&self, r: &PackRange, sink: &Sink, stop: &Stop) -> Result<(), TransportError> {
        let mut done = 0;
        let mut spoiled = Vec::new();
        let path = format!("/{}", r.pack.pack_path());
        if !self
            .bad_packs
            .lock()
            .expect("bad packs")
            .contains(&r.pack.name)
        {
            let src = self.live_order()[0];
            let got = self.opts.retry.run(|| {
                if done == r.objects.len() || stop.is_set() {
                    return Ok(());
                }
                self.read_range(src, &path, r, &mut done, &mut spoiled, sink, stop)
            });
            if let Err(e) = got {
                if matches!(e, TransportError::Stopped) {
                    return Err(e);
                }
                debug_pack_unused(&e);
                if !e.is_transient() {
                    self.bad_packs
                        .lock()
                        .expect("bad packs")
                        .insert(r.pack.name);
                }
            }
        }
        spoiled.extend(r.objects[done..].iter().map(|o| o.0));
        for obj in spoiled {
            if stop.is_set() {
                return Err(TransportError::Stopped);
            }
            self.fetch_object(obj, sink)?;
        }
        Ok(())
    }

    /// One Range request for `r`'s objects from `done` on; advances `done`
    /// past each object read, adding to `spoiled` those `sink` refused.
    #[allow(clippy::too_many_arguments)]
    fn read_range(
        &self,
        src: usize,
        path: &str,
        r: &PackRange,
        done: &mut usize,
        spoiled: &mut Vec<ObjectRef>,
        sink: &Sink,
        stop: &Stop,
    ) -> Result<(), TransportError> {
        let url = format!("{}{path}", self.sources[src]);
        let start = r.objects[*done].1;
        let last = r.end - 1;
        let resp = self
            .request(self.client.get(&url))
            .header(reqwest::header::RANGE, format!("bytes={start}-{last}"))
            .send()
            .map_err(|e| send_error(&url, e))?;
        let resp = check_status(&url, resp)?;
        let want = format!("bytes {start}-{last}/{}", r.pack.size);
        let got = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT || got != want {
            return Err(TransportError::BadRange {
                url,
                status: resp.status().as_u16(),
                got: got.to_owned(),
                want,
            });
        }
        let metered = Metered::new(resp, self.low_speed(), Some(self.counters));
        let mut body = io::BufReader::with_capacity(256 << 10, metered);
        let mut pos = start;
        let mut read = 0usize;
        for &(obj, offset, length) in &r.objects[*done..] {
            if stop.is_set() {
                return Err(TransportError::Stopped);
            }
            // The gap between wanted objects (another object) is skipped.
            let gap = offset - pos;
            let skipped =
                io::copy(&mut (&mut body).take(gap), &mut io::sink()).map_err(|e| cut(&e, read))?;
            if skipped != gap {
                return Err(short_range(read + skipped as usize));
            }
            read += gap as usize;
            if length > self.opts.max_object_bytes {
                // Too large to hold: the plain GET refuses it with the cap.
                io::copy(&mut (&mut body).take(length), &mut io::sink())
                    .map_err(|e| cut(&e, read))?;
                spoiled.push(obj);
            } else {
                let mut data = vec![0; length as usize];
                body.read_exact(&mut data).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        short_range(read)
                    } else {
                        cut(&e, read)
                    }
                })?;
                if let Err(e) = sink(obj, data) {
                    debug_pack_unused(&TransportError::BadPackObject {
                        what: format!("{} object {}", obj.kind, obj.id),
                        url: url.clone(),
                        err: Box::new(e),
                    });
                    spoiled.push(obj);
                }
            }
            read += length as usize;
            pos = offset + length;
            *done += 1;
        }
        // Nothing may follow the range's last byte.
        if !body.fill_buf().map_err(|e| cut(&e, read))?.is_empty() {
            return Err(TransportError::TooLong {
                limit: r.end - start,
            });
        }
        Ok(())
    }

    /// One GET of `path` from source `src`, body capped at `cap`.
    fn get_once(&self, src: usize, path: &str, cap: u64) -> Result<Vec<u8>, TransportError> {
        let url = format!("{}{path}", self.sources[src]);
        let resp = self
            .request(self.client.get(&url))
            .send()
            .map_err(|e| send_error(&url, e))?;
        let resp = check_status(&url, resp)?;
        read_capped(resp, cap, self.low_speed(), Some(self.counters)).map_err(|e| e.context(&url))
    }

    /// GET `path` (`/…`) from source `src`, retrying transient failures.
    pub fn get(&self, src: usize, path: &str, cap: u64) -> Result<Vec<u8>, TransportError> {
        self.opts.retry.run(|| self.get_once(src, path, cap))
    }

    /// Downloads `path` (`/…`, a file of `size` bytes) into `dest`,
    /// resuming after the bytes `dest` already holds with a Range request
    /// (a source that ignores it sends the whole file, which replaces
    /// them). Tries every live source in order, each with retries; more
    /// than `size` bytes is an error, never a longer file.
    pub fn download(
        &self,
        path: &str,
        dest: &std::path::Path,
        size: u64,
    ) -> Result<(), TransportError> {
        let mut first: Option<TransportError> = None;
        for src in self.live_order() {
            match self
                .opts
                .retry
                .run(|| self.download_once(src, path, dest, size))
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.expect("at least one source"))
    }

    fn download_once(
        &self,
        src: usize,
        path: &str,
        dest: &std::path::Path,
        size: u64,
    ) -> Result<(), TransportError> {
        use std::io::{Seek, Write};
        let url = format!("{}{path}", self.sources[src]);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dest)
            .map_err(TransportError::io("opening", dest))?;
        let have = file
            .seek(io::SeekFrom::End(0))
            .map_err(TransportError::io("reading", dest))?;
        if have == size {
            return Ok(());
        }
        let mut req = self.client.get(&url);
        if have > 0 && have < size {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = self.request(req).send().map_err(|e| send_error(&url, e))?;
        let resp = check_status(&url, resp)?;
        let start = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            have
        } else {
            // The whole file: start over.
            file.set_len(0)
                .map_err(TransportError::io("writing", dest))?;
            0
        };
        file.seek(io::SeekFrom::Start(start))
            .map_err(TransportError::io("writing", dest))?;
        // One byte more than the rest, to notice an endless body.
        let rest = size.saturating_sub(start);
        let mut body = io::Read::take(
            Metered::new(resp, self.low_speed(), Some(self.counters)),
            rest + 1,
        );
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0u64;
        loop {
            let n = io::Read::read(&mut body, &mut buf).map_err(|e| {
                TransportError::BodyCut {
                    got: (start + got) as usize,
                    stalled: e.kind() == io::ErrorKind::TimedOut,
                    cause: e.to_string(),
                }
                .context(&url)
            })?;
            if n == 0 {
                break;
            }
            got += n as u64;
            if got > rest {
                // Keep what was asked for; the rest is refused.
                file.set_len(size)
                    .map_err(TransportError::io("writing", dest))?;
                return Err(TransportError::TooLong { limit: size });
            }
            file.write_all(&buf[..n])
                .map_err(TransportError::io("writing", dest))?;
            failpoint::hit("pull-delta-bytes");
        }
        if got < rest {
            return Err(TransportError::BodyShort {
                got: (start + got) as usize,
                declared: size,
            });
        }
        Ok(())
    }

    /// Fetches one object's wire form into `sink`, trying every live
    /// source in order; returns the first source's failure.
    fn fetch_object(&self, obj: ObjectRef, sink: &Sink) -> Result<(), TransportError> {
        let path = format!(
            "/{}",
            relative_object_path(&obj.id, obj.kind, RepoMode::Archive)
        );
        let mut refused: Vec<(usize, TransportError)> = Vec::new();
        for src in self.live_order() {
            let result = self
                .get(src, &path, self.opts.max_object_bytes)
                .and_then(|data| {
                    sink(obj, data).map_err(|e| TransportError::BadObject {
                        url: self.sources[src].clone(),
                        err: Box::new(e),
                    })
                });
            match result {
                Ok(()) => {
                    self.note_fallback(&path, &refused, src);
                    return Ok(());
                }
                Err(e) => {
                    if e.is_transient() {
                        self.dead[src].store(true, Ordering::Relaxed);
                    }
                    refused.push((src, e));
                }
            }
        }
        Err(refused.into_iter().next().expect("at least one source").1)
    }

    /// The sources not marked dead (all of them when every one is).
    fn live_order(&self) -> Vec<usize> {
        let live: Vec<usize> = (0..self.sources.len())
            .filter(|&i| !self.dead[i].load(Ordering::Relaxed))
            .collect();
        if live.is_empty() {
            (0..self.sources.len()).collect()
        } else {
            live
        }
    }

    /// Fetches `objs` from source `src` as one batched pack. Returns how
    /// many arrived (a prefix of `objs`) and why the rest did not.
    fn fetch_pack_once(
        &self,
        src: usize,
        objs: &[ObjectRef],
        sink: &Sink,
    ) -> (usize, Option<TransportError>) {
        let url = format!("{}/v1/objects/fetch", self.sources[src]);
        let body = serde_json::to_vec(&FetchRequest {
            objects: objs.to_vec(),
        })
        .expect("fetch request serializes");
        let sent = self
            .request(self.client.post(&url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .map_err(|e| send_error(&url, e))
            .and_then(|r| check_status(&url, r));
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return (0, Some(e)),
        };
        // Buffered: a record's tag, id and length are small reads.
        let metered = Metered::new(resp, self.low_speed(), Some(self.counters));
        let reader = io::BufReader::with_capacity(256 << 10, metered);
        let mut pack = PackReader::new(reader, self.opts.max_object_bytes);
        for (done, want) in objs.iter().enumerate() {
            if let Err(e) = next_object(&mut pack, &url, want, sink) {
                return (done, Some(e));
            }
        }
        (objs.len(), None)
    }

    /// Fetches `objs`: batched from the first live batching source (with
    /// retries), then per-object GETs (with failover) for whatever is left.
    fn fetch_chunk(
        &self,
        objs: &[ObjectRef],
        sink: &Sink,
        stop: &Stop,
    ) -> Result<(), TransportError> {
        let mut rest = objs;
        if let Some(src) = (0..self.sources.len())
            .find(|&i| self.batched[i] && !self.dead[i].load(Ordering::Relaxed))
        {
            let batched = self.opts.retry.run(|| {
                if rest.is_empty() || stop.is_set() {
                    return Ok(());
                }
                let (done, err) = self.fetch_pack_once(src, rest, sink);
                rest = &rest[done..];
                err.map_or(Ok(()), Err)
            });
            // Transient to the end: this source is dead. Anything else (a
            // bad object): fetch the rest one by one, from every source in
            // turn, and report if none has it right.
            if batched.is_err_and(|e| e.is_transient()) {
                self.dead[src].store(true, Ordering::Relaxed);
            }
        }
        for obj in rest {
            if stop.is_set() {
                return Err(TransportError::Stopped);
            }
            self.fetch_object(*obj, sink)?;
        }
        Ok(())
    }

    /// The sizes of `objs`, without their bytes: from the first live
    /// source that is a treectl server (`/v1/objects/sizes`, which also
    /// gives a file's content size), else from the pack indexes or HEAD
    /// requests (the wire size alone).
    pub fn sizes(&self, objs: &[ObjectRef]) -> Result<Vec<ObjectSize>, TransportError> {
        /// Objects per sizes request.
        const SIZES_BATCH: usize = 20_000;
        if let Some(src) = (0..self.sources.len())
            .find(|&i| self.batched[i] && !self.dead[i].load(Ordering::Relaxed))
        {
            let url = format!("{}/v1/objects/sizes", self.sources[src]);
            let mut out = Vec::with_capacity(objs.len());
            for chunk in objs.chunks(SIZES_BATCH) {
                let body = serde_json::to_vec(&SizesRequest {
                    objects: chunk.to_vec(),
                })
                .expect("sizes request serializes");
                let answer = self.opts.retry.run(|| {
                    let resp = self
                        .request(self.client.post(&url))
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                        .send()
                        .map_err(|e| send_error(&url, e))?;
                    let resp = check_status(&url, resp)?;
                    read_capped(resp, 64 << 20, self.low_speed(), Some(self.counters))
                        .map_err(|e| e.context(&url))
                })?;
                let parsed: SizesResponse =
                    serde_json::from_slice(&answer).map_err(|err| TransportError::BadAnswer {
                        what: format!("sizing {} objects", chunk.len()),
                        err,
                    })?;
                if parsed.sizes.len() != chunk.len() {
                    return Err(TransportError::Usage(format!(
                        "{url} answered {} sizes for {} objects",
                        parsed.sizes.len(),
                        chunk.len()
                    )));
                }
                out.extend(parsed.sizes);
            }
            return Ok(out);
        }
        objs.iter()
            .map(|obj| {
                // A pack index already says how long an object is.
                if let Some(wire) = self.packs.length(obj) {
                    return Ok(ObjectSize {
                        wire,
                        content: None,
                    });
                }
                let path = format!(
                    "/{}",
                    relative_object_path(&obj.id, obj.kind, RepoMode::Archive)
                );
                let mut last = None;
                for src in self.live_order() {
                    let url = format!("{}{path}", self.sources[src]);
                    let got = self.opts.retry.run(|| {
                        let resp = self
                            .request(self.client.head(&url))
                            .send()
                            .map_err(|e| send_error(&url, e))?;
                        let resp = check_status(&url, resp)?;
                        resp.headers()
                            .get(reqwest::header::CONTENT_LENGTH)
                            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                            .ok_or_else(|| {
                                TransportError::Usage(format!("{url} gave no Content-Length"))
                            })
                    });
                    match got {
                        Ok(wire) => {
                            return Ok(ObjectSize {
                                wire,
                                content: None,
                            })
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or(TransportError::Stopped))
            })
            .collect()
    }

    /// Objects per worker's request: small enough to keep every worker
    /// busy to the end (a few per worker, so no worker is left alone with
    /// a long tail), large enough that a batched request carries many.
    fn chunk_size(&self, n: usize) -> usize {
        let jobs = self.opts.jobs.max(1);
        if self.batched.iter().any(|b| *b) {
            (n / (jobs * 4)).clamp(16.min(n.div_ceil(jobs)).max(1), 256)
        } else {
            1
        }
    }
}

impl ObjectSource for HttpSource<'_> {
    fn fetch(&self, objs: &[ObjectRef], sink: &Sink) -> Result<(), TransportError> {
        let mut loose = objs;
        let planned;
        if !self.packs.is_empty() {
            let piece = piece_bytes(self.packs.packed_bytes(objs), self.opts.jobs);
            let (ranges, rest) = self.packs.plan(objs, piece);
            in_parallel(self.opts.jobs, &ranges, 1, |c, stop| {
                c.iter().try_for_each(|r| self.fetch_range(r, sink, stop))
            })?;
            planned = rest;
            loose = &planned;
        }
        let chunk = self.chunk_size(loose.len());
        in_parallel(self.opts.jobs, loose, chunk, |c, stop| {
            self.fetch_chunk(c, sink, stop)
        })
    }
}

/// Checks a fetched pack index against the signed index's entry: its
/// length and SHA-256, then that it describes that pack.
fn check_pack_index(url: &str, pack: &PackRef, bytes: &[u8]) -> Result<PackIndex, TransportError> {
    let bad = |reason: String| TransportError::BadPackIndex {
        url: url.to_owned(),
        reason,
    };
    let sha = treectl_store::ObjectId::of(bytes);
    if bytes.len() as u64 != pack.index_size || sha != pack.index_sha256 {
        return Err(bad(format!(
            "{} bytes with SHA-256 {sha}, the signed index says {} bytes with {}",
            bytes.len(),
            pack.index_size,
            pack.index_sha256
        )));
    }
    let index = PackIndex::decode(bytes).map_err(|e| bad(e.to_string()))?;
    if index.pack != pack.name || index.size != pack.size {
        return Err(bad(format!(
            "it describes pack {} of {} bytes, not {} of {}",
            index.pack, index.size, pack.name, pack.size
        )));
    }
    Ok(index)
}

/// A range body that ended after `got` bytes.
fn short_range(got: usize) -> TransportError {
    TransportError::BodyCut {
        got,
        stalled: false,
        cause: "the range ended early".to_owned(),
    }
}

/// With `TREECTL_DEBUG` set, says why a pack is not used (its objects then
/// come by plain GETs).
fn debug_pack_unused(e: &TransportError) {
    if std::env::var_os("TREECTL_DEBUG").is_some() {
        eprintln!("not using a pack: {}", e.chain_text());
    }
}

/// Reads the pack's next record, which must be `want`, into `sink`.
fn next_object<R: io::Read>(
    pack: &mut PackReader<R>,
    url: &str,
    want: &ObjectRef,
    sink: &Sink,
) -> Result<(), TransportError> {
    let (kind, id, data) = match pack.next_record() {
        Ok(Some(record)) => record,
        Ok(None) => {
            return Err(TransportError::PackEnded {
                url: url.to_owned(),
            })
        }
        Err(err) => {
            return Err(TransportError::Pack {
                url: url.to_owned(),
                err,
            })
        }
    };
    let what = format!("{} object {}", want.kind, want.id);
    if kind != want.kind || id != want.id {
        return Err(TransportError::WrongObject {
            url: url.to_owned(),
            kind,
            id,
            want: what,
        });
    }
    sink(*want, data).map_err(|e| TransportError::BadPackObject {
        what,
        url: url.to_owned(),
        err: Box::new(e),
    })
}

fn send_error(url: &str, e: reqwest::Error) -> TransportError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "failed"
    };
    TransportError::Request {
        url: url.to_owned(),
        what,
        cause: root_cause(&e),
    }
}

fn check_status(url: &str, resp: Response) -> Result<Response, TransportError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    Err(TransportError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
    })
}

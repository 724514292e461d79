//! The `/v1/` API: which objects are missing, upload, batched fetch,
//! publish, revert, history, health and metrics. Specified in
//! `docs/http-api.md`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;
use treectl_release::publish::{self, EventKind, HistoryEntry, PublishOutcome, Publisher};
use treectl_release::sign::PublicKey;
use treectl_store::refs::RefName;
use treectl_store::store::Transaction;
use treectl_store::ObjectKind;
use treectl_store::Repo;
use treectl_wire::{
    FetchRequest, HealthResponse, HistoryResponse, HoldRequest, MissingRequest, MissingResponse,
    ObjectRef, ObjectSize, PackReader, PromoteRequest, PublishCheckResponse, PublishRequest,
    PublishResponse, ReleaseRequest, RevertRequest, RolloutRequest, RotateRequest, RotateResponse,
    SizesRequest, SizesResponse, UploadResponse,
};

use crate::auth::{Caller, Scope};
use crate::error::{publish_error, repo_error, ApiError};
use crate::metrics::Metrics;
use crate::AppState;

/// Most objects one missing or fetch request may name.
pub const MAX_OBJECTS_PER_REQUEST: usize = 100_000;

/// Reads a request body of at most `limit` bytes; 413 beyond.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            too_large()
        } else {
            ApiError::bad_request(format!("reading the request body: {inner}"))
        }
    })
}

async fn read_json<T: DeserializeOwned>(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(body, headers, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON request body: {e}")))
}

fn ref_name(name: &str) -> Result<RefName, ApiError> {
    RefName::new(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Runs blocking repository work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("a repository task", &e))?
}

pub async fn health(State(state): State<Arc<AppState>>) -> Result<Json<HealthResponse>, ApiError> {
    let repo = state.repo.clone();
    let serial = blocking(move || {
        publish::current_index(&repo)
            .map(|i| i.serial)
            .map_err(|e| ApiError::internal("reading the ref index", &e))
    })
    .await?;
    Ok(Json(HealthResponse {
        status: "ok".into(),
        serial,
    }))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn missing(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MissingResponse>, ApiError> {
    state.auth_read(&headers)?;
    let req: MissingRequest = read_json(body, &headers, state.limits.max_json_bytes).await?;
    if req.objects.len() > MAX_OBJECTS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "{} objects in one request; at most {MAX_OBJECTS_PER_REQUEST}",
            req.objects.len()
        )));
    }
    let repo = state.repo.clone();
    let missing = blocking(move || {
        Ok(req
            .objects
            .into_iter()
            .filter(|o| !repo.has_object(&o.id, o.kind))
            .collect())
    })
    .await?;
    Ok(Json(MissingResponse { missing }))
}

/// Verifies every object of a pack and stores them in one transaction:
/// nothing becomes visible unless all of them verify.
fn store_pack(repo: &Repo, body: &[u8], max_object: u64) -> Result<UploadResponse, ApiError> {
    let mut reader = PackReader::new(body, max_object);
    let txn = Transaction::begin(repo).map_err(|e| repo_error("starting an upload", e))?;
    let (mut received, mut stored) = (0, 0);
    while let Some((kind, id, data)) = reader
        .next_record()
        .map_err(|e| ApiError::bad_request(format!("invalid upload: {e}")))?
    {
        received += 1;
        match txn.write_wire_form(&id, kind, &data) {
            Ok(true) => stored += 1,
            Ok(false) => {}
            Err(
                e @ (treectl_store::Error::Corrupt { .. } | treectl_store::Error::Decode { .. }),
            ) => {
                return Err(ApiError::bad_request(format!(
                    "uploaded {kind} {id} does not match its id: {e}; nothing from this upload was stored"
                )))
            }
            Err(e) => return Err(repo_error("storing an uploaded object", e)),
        }
    }
    txn.commit(&[])
        .map_err(|e| repo_error("committing an upload", e))?;
    Ok(UploadResponse { received, stored })
}

pub async fn upload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UploadResponse>, ApiError> {
    let caller = state.auth(&headers, Scope::Publish)?;
    // Bounded concurrent uploads: each holds at most one body in memory.
    let _permit = state
        .uploads
        .acquire()
        .await
        .map_err(|e| ApiError::internal("waiting for an upload slot", &e))?;
    let result = async {
        let bytes = read_body(body, &headers, state.limits.max_upload_bytes).await?;
        let len = bytes.len() as u64;
        let repo = state.repo.clone();
        let max_object = state.limits.max_object_bytes;
        let out = blocking(move || store_pack(&repo, &bytes, max_object)).await?;
        Ok::<_, ApiError>((out, len))
    }
    .await;
    match result {
        Ok((out, len)) => {
            Metrics::add(&state.metrics.objects_received, out.received as u64);
            Metrics::add(&state.metrics.objects_stored, out.stored as u64);
            Metrics::add(&state.metrics.upload_bytes, len);
            tracing::info!(
                who = %caller.name,
                received = out.received,
                stored = out.stored,
                bytes = len,
                "upload stored"
            );
            Ok(Json(out))
        }
        Err(e) => {
            Metrics::add(&state.metrics.uploads_rejected, 1);
            tracing::warn!(who = %caller.name, error = %e.message, "upload refused");
            Err(e)
        }
    }
}

/// The wire-form and content sizes of objects, so a client can price a
/// pull before downloading anything (see `docs/http-api.md`).
pub async fn sizes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SizesResponse>, ApiError> {
    state.auth_read(&headers)?;
    let req: SizesRequest = read_json(body, &headers, state.limits.max_json_bytes).await?;
    if req.objects.len() > MAX_OBJECTS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "{} objects in one request; at most {MAX_OBJECTS_PER_REQUEST}",
            req.objects.len()
        )));
    }
    let repo = state.repo.clone();
    let sizes = blocking(move || {
        req.objects
            .iter()
            .map(|o| {
                if !repo.has_object(&o.id, o.kind) {
                    return Err(ApiError::not_found(format!(
                        "{} object {} is not in the repository",
                        o.kind, o.id
                    )));
                }
                object_size(&repo, o).map_err(|e| repo_error("sizing an object", e))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(SizesResponse { sizes }))
}

/// An object's wire size (its file's size in an archive repository) and,
/// for a file object, its content size (from its header alone).
fn object_size(repo: &Repo, o: &ObjectRef) -> Result<ObjectSize, treectl_store::Error> {
    let wire = match repo.mode() {
        treectl_store::RepoMode::Archive => {
            let path = repo.object_path(&o.id, o.kind);
            std::fs::metadata(&path)
                .map_err(treectl_store::Error::io("reading the size of", &path))?
                .len()
        }
        _ => repo.read_wire_form(&o.id, o.kind)?.len() as u64,
    };
    let content = match o.kind {
        ObjectKind::File => Some(repo.read_file_header(&o.id)?.size),
        _ => None,
    };
    Ok(ObjectSize { wire, content })
}

/// Streams the requested objects as one pack (see `docs/http-api.md`).
pub async fn fetch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.auth_read(&headers)?;
    let req: FetchRequest = read_json(body, &headers, state.limits.max_json_bytes).await?;
    if req.objects.len() > MAX_OBJECTS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "{} objects in one request; at most {MAX_OBJECTS_PER_REQUEST}",
            req.objects.len()
        )));
    }
    if let Some(o) = req
        .objects
        .iter()
        .find(|o| !state.repo.has_object(&o.id, o.kind))
    {
        return Err(ApiError::not_found(format!(
            "{} object {} is not in the repository",
            o.kind, o.id
        )));
    }
    // One blocking task reads the objects and writes the pack in large
    // pieces (no task switch per object, few body frames).
    const PIECE: usize = 256 * 1024;
    let (reader, mut writer) = tokio::io::duplex(2 * PIECE);
    let repo = state.repo.clone();
    let metrics = state.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(2 * PIECE);
        treectl_wire::write_pack_start(&mut buf).expect("writing to a Vec");
        // Ending without the end marker tells the client the pack is
        // incomplete; an error sending means the client went away.
        // Objects in `buf`, counted as fetched once sent.
        let mut unsent = 0;
        // The kinds and sizes of the objects in `buf`.
        let mut pending: Vec<(ObjectKind, u64)> = Vec::new();
        let mut send =
            |buf: &mut Vec<u8>, unsent: &mut u64, pending: &mut Vec<(ObjectKind, u64)>| -> bool {
                let ok = rt.block_on(writer.write_all(buf)).is_ok();
                if ok {
                    Metrics::add(&metrics.metrics.objects_fetched, *unsent);
                    for (kind, len) in pending.iter() {
                        metrics.metrics.object_sent(*kind, *len);
                    }
                }
                *unsent = 0;
                pending.clear();
                buf.clear();
                ok
            };
        for o in req.objects {
            let data = match repo.read_wire_form(&o.id, o.kind) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(object = %o.id, error = %e, "batched fetch cut short");
                    send(&mut buf, &mut unsent, &mut pending);
                    return;
                }
            };
            buf.extend_from_slice(&treectl_wire::pack_record_head(
                o.kind,
                &o.id,
                data.len() as u64,
            ));
            buf.extend_from_slice(&data);
            unsent += 1;
            pending.push((o.kind, data.len() as u64));
            if buf.len() >= PIECE && !send(&mut buf, &mut unsent, &mut pending) {
                return;
            }
        }
        buf.push(treectl_wire::PACK_END);
        if send(&mut buf, &mut unsent, &mut pending) {
            let _ = rt.block_on(writer.shutdown());
        }
    });
    Ok((
        [(header::CONTENT_TYPE, treectl_wire::PACK_CONTENT_TYPE)],
        Body::from_stream(ReaderStream::with_capacity(reader, PIECE)),
    )
        .into_response())
}

/// One publishing request: the caller needs the publish scope, the body is
/// read as `Req`, writes are serialised per repository (reads go on
/// meanwhile), and `act` runs on the blocking pool with the publisher and
/// the caller's name.
async fn publishing<Req, Out>(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    act: impl FnOnce(&Publisher<'_>, Req, &str) -> Result<Out, ApiError> + Send + 'static,
) -> Result<(Caller, Out), ApiError>
where
    Req: DeserializeOwned + Send + 'static,
    Out: Send + 'static,
{
    let caller = state.auth(headers, Scope::Publish)?;
    let req: Req = read_json(body, headers, state.limits.max_json_bytes).await?;
    let _guard = state.write_lock.lock().await;
    let st = state.clone();
    let who = caller.name.clone();
    let out = blocking(move || act(&st.publisher(), req, &who)).await?;
    Ok((caller, out))
}

fn publish_options(req: &PublishRequest) -> publish::PublishOptions {
    publish::PublishOptions {
        force: req.force,
        rollout: req.rollout,
        barrier: req.barrier,
    }
}

pub async fn publish_ref(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let (caller, outcome) = publishing(&state, &headers, body, |p, req: PublishRequest, who| {
        p.publish(
            &ref_name(&req.ref_name)?,
            &req.commit,
            who,
            &publish_options(&req),
        )
        .map_err(|e| publish_error("publishing", e))
    })
    .await?;
    Metrics::add(&state.metrics.publishes, 1);
    Ok(Json(released(&state, &caller.name, &outcome, "published")))
}

pub async fn rotate_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RotateResponse>, ApiError> {
    let (caller, outcome) = publishing(&state, &headers, body, |p, req: RotateRequest, _| {
        let keys = req
            .keys
            .iter()
            .map(|h| {
                PublicKey::from_hex(h).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{h:?} is not an ed25519 public key (64 hex digits)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        p.rotate(&keys, req.threshold)
            .map_err(|e| publish_error("rotating the keys", e))
    })
    .await?;
    state
        .metrics
        .index_serial
        .store(outcome.index_serial, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        who = caller.name,
        version = outcome.keys.version,
        keys = outcome.key_ids.join(","),
        "rotated the signing keys"
    );
    Ok(Json(RotateResponse {
        version: outcome.keys.version,
        threshold: outcome.keys.threshold,
        keys: outcome.keys.keys,
        key_ids: outcome.key_ids,
        serial: outcome.index_serial,
    }))
}

pub async fn revert_ref(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let (caller, outcome) = publishing(&state, &headers, body, |p, req: RevertRequest, who| {
        let name = ref_name(&req.ref_name)?;
        if req.reason.trim().is_empty() {
            return Err(ApiError::bad_request(
                "a revert needs a reason (--reason TEXT)",
            ));
        }
        p.revert(&name, req.to.as_deref(), &req.reason, who)
            .map_err(|e| publish_error("reverting", e))
    })
    .await?;
    debug_assert_eq!(outcome.entry.kind, EventKind::Revert);
    Metrics::add(&state.metrics.reverts, 1);
    Ok(Json(released(&state, &caller.name, &outcome, "reverted")))
}

pub async fn promote_ref(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let (caller, outcome) = publishing(&state, &headers, body, |p, req: PromoteRequest, who| {
        let from = ref_name(&req.from)?;
        let to = ref_name(&req.to)?;
        if from == to {
            return Err(ApiError::bad_request("promote needs two different refs"));
        }
        p.promote(&from, &to, who, req.force)
            .map_err(|e| publish_error("promoting", e))
    })
    .await?;
    Metrics::add(&state.metrics.publishes, 1);
    Ok(Json(released(&state, &caller.name, &outcome, "promoted")))
}

/// Would this publish be refused for a hold or a rejection? Asked by
/// `push` before it uploads anything; changes nothing, so it takes no
/// write lock.
pub async fn publish_check(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishCheckResponse>, ApiError> {
    state.auth(&headers, Scope::Publish)?;
    let req: PublishRequest = read_json(body, &headers, state.limits.max_json_bytes).await?;
    let name = ref_name(&req.ref_name)?;
    let st = state.clone();
    blocking(move || {
        st.publisher()
            .check_publishable(&name, &req.commit, &publish_options(&req))
            .map_err(|e| publish_error("checking a publish", e))
    })
    .await?;
    Ok(Json(PublishCheckResponse { publishable: true }))
}

pub async fn rollout_ref(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let (caller, outcome) = publishing(&state, &headers, body, |p, req: RolloutRequest, who| {
        let name = ref_name(&req.ref_name)?;
        let action: publish::RolloutAction = req.action.parse().map_err(ApiError::bad_request)?;
        p.rollout(&name, action, who)
            .map_err(|e| publish_error("changing the rollout", e))
    })
    .await?;
    Ok(Json(released(&state, &caller.name, &outcome, "rollout")))
}

pub async fn hold_ref(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<HistoryEntry>, ApiError> {
    let (caller, entry) = publishing(&state, &headers, body, |p, req: HoldRequest, who| {
        p.hold(&ref_name(&req.ref_name)?, &req.reason, who)
            .map_err(|e| publish_error("holding", e))
    })
    .await?;
    tracing::info!(who = caller.name, r#ref = %entry.ref_name, reason = entry.reason.as_deref().unwrap_or(""), "held");
    Ok(Json(entry))
}

pub async fn release_ref(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<HistoryEntry>, ApiError> {
    let (caller, entry) = publishing(&state, &headers, body, |p, req: ReleaseRequest, who| {
        p.release(&ref_name(&req.ref_name)?, who)
            .map_err(|e| publish_error("releasing", e))
    })
    .await?;
    tracing::info!(who = caller.name, r#ref = %entry.ref_name, "released");
    Ok(Json(entry))
}

/// Records a publish or revert in the metrics and the log; the response.
fn released(state: &AppState, who: &str, outcome: &PublishOutcome, what: &str) -> PublishResponse {
    state
        .metrics
        .index_serial
        .store(outcome.index_serial, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(who, r#ref = %outcome.entry.ref_name, commit = %outcome.entry.commit, serial = outcome.index_serial, "{what}");
    PublishResponse::from(&outcome.entry)
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    #[serde(rename = "ref")]
    ref_name: String,
}

pub async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    state.auth_read(&headers)?;
    let Query(q) = query.map_err(|_| ApiError::bad_request("history needs ?ref=REF"))?;
    let name = ref_name(&q.ref_name)?;
    let repo = state.repo.clone();
    let entries = blocking(move || {
        publish::read_history(&repo)
            .map(|h| {
                h.into_iter()
                    .filter(|e| e.ref_name == name.as_str())
                    .collect()
            })
            .map_err(|e| publish_error("reading the history", e))
    })
    .await?;
    Ok(Json(HistoryResponse {
        ref_name: q.ref_name,
        entries,
    }))
}

/// Unknown `/v1/` paths.
pub async fn unknown_api() -> ApiError {
    ApiError::not_found("no such API endpoint; see docs/http-api.md")
}

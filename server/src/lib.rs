//! The treectl HTTP server: serves a repository directory read-only (the
//! directory is the wire format, so any static web server can mirror it)
//! and adds uploads, publishing, signing, reverts and history under `/v1/`.
//! This is the only crate in the workspace that knows axum; the `treectl`
//! client runs its binary, `treectl-server`, for `treectl serve`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use treectl_server::{ServerConfig, serve};
//! let config = ServerConfig::new("/srv/repo".into(), "127.0.0.1:8080".into());
//! serve(config).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod error;
pub mod files;
pub mod metrics;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{Mutex, Semaphore};
use treectl_release::publish::{self, Publisher};
use treectl_release::sign::SecretKey;
use treectl_release::summary::DEFAULT_VALIDITY_SECS;
use treectl_store::Repo;

use crate::auth::{Caller, Scope, Tokens};
use crate::error::ApiError;
use crate::files::ObjectCache;
use crate::metrics::Metrics;

/// Size limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest upload body (one pack).
    pub max_upload_bytes: usize,
    /// Largest single object in a pack.
    pub max_object_bytes: u64,
    /// Largest JSON request body.
    pub max_json_bytes: usize,
    /// Uploads processed at once; more wait.
    pub upload_concurrency: usize,
    /// Memory for small objects kept between requests (0: none).
    pub object_cache_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_upload_bytes: 256 << 20,
            max_object_bytes: 256 << 20,
            max_json_bytes: 16 << 20,
            upload_concurrency: 4,
            object_cache_bytes: 64 << 20,
        }
    }
}

/// Everything `treectl serve` is told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub repo: PathBuf,
    pub listen: String,
    /// Secret keys that sign the index and published commits: before any
    /// key rotation the first signs; after one, those of the current key
    /// set.
    pub sign_keys: Vec<PathBuf>,
    pub tokens: Option<PathBuf>,
    pub limits: Limits,
    /// How long a written index stays valid.
    pub validity_secs: i64,
}

impl ServerConfig {
    pub fn new(repo: PathBuf, listen: String) -> ServerConfig {
        ServerConfig {
            repo,
            listen,
            sign_keys: Vec::new(),
            tokens: None,
            limits: Limits::default(),
            validity_secs: DEFAULT_VALIDITY_SECS,
        }
    }
}

/// Shared state of the handlers.
pub struct AppState {
    pub repo: Arc<Repo>,
    /// The repository path with symlinks resolved (for the read side).
    pub repo_root: PathBuf,
    /// The repository directory, opened once: files are opened beneath it.
    pub root_dir: OwnedFd,
    /// Small objects kept in memory for the read side.
    pub objects: ObjectCache,
    pub keys: Vec<SecretKey>,
    pub tokens: Tokens,
    pub limits: Limits,
    pub validity_secs: i64,
    /// Serialises publishes and reverts within this process (the publish
    /// lock file serialises them across processes).
    pub write_lock: Mutex<()>,
    pub uploads: Semaphore,
    pub metrics: Metrics,
}

impl AppState {
    /// The publisher for this repository and key.
    pub fn publisher(&self) -> Publisher<'_> {
        Publisher {
            repo: &self.repo,
            keys: &self.keys,
            validity_secs: self.validity_secs,
        }
    }

    pub fn new(
        repo: Repo,
        keys: Vec<SecretKey>,
        tokens: Tokens,
        limits: Limits,
        validity_secs: i64,
    ) -> anyhow::Result<AppState> {
        let repo_root = std::fs::canonicalize(repo.path())
            .with_context(|| format!("resolving {}", repo.path().display()))?;
        let root_dir = rustix::fs::open(
            &repo_root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .with_context(|| format!("opening {}", repo_root.display()))?;
        let serial = publish::current_index(&repo)?.serial;
        let metrics = Metrics::default();
        metrics
            .index_serial
            .store(serial, std::sync::atomic::Ordering::Relaxed);
        Ok(AppState {
            repo: Arc::new(repo),
            repo_root,
            root_dir,
            objects: ObjectCache::new(limits.object_cache_bytes),
            keys,
            tokens,
            uploads: Semaphore::new(limits.upload_concurrency.max(1)),
            limits,
            validity_secs,
            write_lock: Mutex::new(()),
            metrics,
        })
    }

    /// Checks the bearer token for `scope`.
    pub fn auth(&self, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.tokens.check(header, scope).map_err(|f| {
            Metrics::add(&self.metrics.auth_failures, 1);
            ApiError::from(f)
        })
    }

    /// Checks read access (anonymous unless the tokens file says otherwise).
    pub fn auth_read(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.auth(headers, Scope::Read)
    }
}

async fn log_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // A clone of the URI shares its bytes: no copy per request.
    let uri = req.uri().clone();
    let path = uri.path();
    if path.starts_with("/v1/") {
        Metrics::add(&state.metrics.api_requests, 1);
    }
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    state.metrics.status(status);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::error!(%method, %path, status, ms, "request");
    } else if status >= 400 {
        tracing::info!(%method, %path, status, ms, "request");
    } else {
        tracing::debug!(%method, %path, status, ms, "request");
    }
    resp
}

/// The router: `/v1/` API plus the repository's files.
pub fn app(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route("/objects/missing", post(api::missing))
        .route("/objects", post(api::upload))
        .route("/objects/fetch", post(api::fetch))
        .route("/objects/sizes", post(api::sizes))
        .route("/publish", post(api::publish_ref))
        .route("/publish/check", post(api::publish_check))
        .route("/revert", post(api::revert_ref))
        .route("/keys/rotate", post(api::rotate_keys))
        .route("/promote", post(api::promote_ref))
        .route("/rollout", post(api::rollout_ref))
        .route("/hold", post(api::hold_ref))
        .route("/release", post(api::release_ref))
        .route("/history", get(api::history))
        .fallback(api::unknown_api);
    Router::new()
        .nest("/v1", v1)
        .fallback(files::serve_file)
        .layer(middleware::from_fn_with_state(state.clone(), log_requests))
        .with_state(state)
}

/// Opens the repository, finishes any interrupted publish, and builds the
/// state.
pub fn prepare(config: &ServerConfig) -> anyhow::Result<Arc<AppState>> {
    let repo = Repo::open(&config.repo)?;
    let keys = config
        .sign_keys
        .iter()
        .map(|p| SecretKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let tokens = match &config.tokens {
        Some(p) => Tokens::load(p)?,
        None => Tokens::none(),
    };
    publish::recover(&repo).context("finishing an interrupted publish")?;
    if !keys.is_empty() {
        Publisher {
            repo: &repo,
            keys: &keys,
            validity_secs: config.validity_secs,
        }
        .refresh(config.validity_secs / 2)
        .context("re-signing the ref index")?;
    }
    Ok(Arc::new(AppState::new(
        repo,
        keys,
        tokens,
        config.limits.clone(),
        config.validity_secs,
    )?))
}

/// How often a running server asks whether its index needs re-signing:
/// hourly, or every quarter of the validity when that is shorter. The
/// index is re-signed once less than half its validity is left, so a check
/// at least every quarter re-signs it before it expires (an hourly check
/// alone let an index valid for under two hours expire between checks).
fn refresh_interval(validity_secs: i64) -> Duration {
    Duration::from_secs((validity_secs / 4).clamp(1, 3600) as u64)
}

/// Re-signs the index well before it expires, as long as the server runs.
async fn refresh_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(refresh_interval(state.validity_secs));
    loop {
        tick.tick().await;
        let _guard = state.write_lock.lock().await;
        let st = state.clone();
        let result =
            tokio::task::spawn_blocking(move || st.publisher().refresh(st.validity_secs / 2)).await;
        match result {
            Ok(Ok(true)) => tracing::info!("re-signed the ref index before it expires"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!("re-signing the ref index: {e}"),
            Err(e) => tracing::error!("re-signing the ref index: {e}"),
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Binds, prints `listening on http://ADDR` on stdout, and serves until
/// SIGTERM or SIGINT, then finishes in-flight requests.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let state = prepare(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, repo = %config.repo.display(), signed = !state.keys.is_empty(), "serving");
    if !state.keys.is_empty() {
        tokio::spawn(refresh_loop(state.clone()));
    }
    // Without TCP_NODELAY a response whose headers and body go out in two
    // writes waits for the client's delayed ACK (about 40 ms per request).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("setting TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_checked_hourly_or_every_quarter_of_a_shorter_validity() {
        assert_eq!(
            refresh_interval(DEFAULT_VALIDITY_SECS),
            Duration::from_secs(3600)
        );
        assert_eq!(refresh_interval(4 * 3600), Duration::from_secs(3600));
        assert_eq!(refresh_interval(3600), Duration::from_secs(900));
        assert_eq!(refresh_interval(8), Duration::from_secs(2));
        // Never zero (a zero interval would spin).
        assert_eq!(refresh_interval(1), Duration::from_secs(1));
        assert_eq!(refresh_interval(0), Duration::from_secs(1));
    }
}

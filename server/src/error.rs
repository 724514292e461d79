//! API errors: a status code and a JSON `{ "error": "..." }` body. Details
//! of internal failures go to the log, not to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use treectl_release::publish::PublishError;
use treectl_store::Error as RepoError;
use treectl_wire::ErrorBody;

use crate::auth::AuthFailure;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A failure the client cannot fix: logged in full, answered briefly.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> ApiError {
        tracing::error!("{context}: {err}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{context} failed on the server; the server log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"treectl\""),
            );
        }
        resp
    }
}

impl From<AuthFailure> for ApiError {
    fn from(f: AuthFailure) -> ApiError {
        match f {
            AuthFailure::Unauthenticated(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
            AuthFailure::Forbidden { name } => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("token {name:?} has the read scope only; this needs the publish scope"),
            ),
        }
    }
}

/// Maps a repository error met while serving `context`.
pub fn repo_error(context: &str, err: RepoError) -> ApiError {
    match &err {
        RepoError::InvalidRef { .. } | RepoError::InvalidRevision { .. } => {
            ApiError::bad_request(err.to_string())
        }
        RepoError::NotFound { .. }
        | RepoError::RefNotFound { .. }
        | RepoError::UnknownRevision { .. }
        | RepoError::NoParent { .. } => ApiError::not_found(err.to_string()),
        RepoError::AmbiguousPrefix { .. } => ApiError::new(StatusCode::CONFLICT, err.to_string()),
        _ => ApiError::internal(context, &err),
    }
}

pub fn publish_error(context: &str, err: PublishError) -> ApiError {
    match err {
        PublishError::Incomplete { .. }
        | PublishError::NothingToRevertTo { .. }
        | PublishError::AlreadyAt { .. }
        | PublishError::Rejected { .. }
        | PublishError::Held { .. }
        | PublishError::AlreadyHeld { .. }
        | PublishError::NotHeld { .. }
        | PublishError::Backwards { .. }
        | PublishError::NoRollout { .. }
        | PublishError::NotInKeySet { .. }
        | PublishError::NotCurrentKey { .. }
        | PublishError::NoSigningKey
        | PublishError::KeySet(treectl_release::keyset::KeySetError::BelowThreshold { .. }) => {
            ApiError::new(StatusCode::CONFLICT, err.to_string())
        }
        PublishError::KeySet(treectl_release::keyset::KeySetError::Malformed { .. }) => {
            ApiError::bad_request(err.to_string())
        }
        PublishError::BadPercent { .. } => ApiError::bad_request(err.to_string()),
        PublishError::NoReason => ApiError::bad_request(err.to_string()),
        PublishError::NotPublished { .. } => ApiError::not_found(err.to_string()),
        PublishError::Repo(e) => repo_error(context, e),
        other => ApiError::internal(context, &other),
    }
}

//! `ApiError`: every failure a client sees, rendered as a `metav1.Status`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use shoal_api::StatusError;
use shoal_store::StoreError;

/// An error answered to a client. Wraps the Status it renders.
#[derive(Debug)]
pub struct ApiError(pub StatusError);

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> Self {
        ApiError(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(match &e {
            StoreError::Compacted { requested, .. } => {
                StatusError::expired(format!("too old resource version: {requested}"))
            }
            StoreError::FutureRevision { requested, current } => {
                StatusError::too_large_resource_version(requested.0, current.0)
            }
            StoreError::Closed => StatusError::service_unavailable("the store is shutting down"),
            other => {
                tracing::error!(error = %other, source = ?std::error::Error::source(other), "store error");
                StatusError::internal(other.to_string())
            }
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub fn status_response(e: &StatusError) -> Response {
    let mut body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
    body.push(b'\n');
    let mut resp = (
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        status_response(&self.0)
    }
}

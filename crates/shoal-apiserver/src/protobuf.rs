//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`).

use crate::error::ApiResult;
use serde_json::Value;
use shoal_api::StatusError;

pub fn decode(_bytes: &[u8]) -> ApiResult<Value> {
    Err(StatusError::unsupported_media_type("application/vnd.kubernetes.protobuf").into())
}

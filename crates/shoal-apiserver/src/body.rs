//! Request bodies: JSON, YAML and Kubernetes protobuf, by `Content-Type`.

use crate::error::ApiResult;
use serde_json::Value;
use shoal_api::StatusError;

/// The most a request body may hold (Kubernetes' limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses YAML (one document) into JSON values.
pub fn from_yaml(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("body is not UTF-8: {e}"))?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// Decodes the body of a create or update of `kind`: as [`decode_object`], with a JSON body
/// that does not parse refused in kube-apiserver's words (`the object provided is
/// unrecognized (must be of type Namespace): couldn't get version/kind; json parse error:
/// ...`, with the start of the body as its `summarizeData` shows it).
pub fn decode_as(kind: &str, content_type: &str, bytes: &[u8]) -> ApiResult<Value> {
    let json = matches!(media_type(content_type), "" | "application/json" | "*/*");
    match serde_json::from_slice::<Value>(bytes) {
        Err(e) if json && bytes.len() <= MAX_BODY => {
            const SHOWN: usize = 30;
            let (head, more) = if bytes.len() > SHOWN {
                (&bytes[..SHOWN], " ...")
            } else {
                (bytes, "")
            };
            let summary = match head.first() {
                None => "<empty>".to_owned(),
                Some(b'{') => format!("{}{more}", String::from_utf8_lossy(head)),
                Some(_) => {
                    let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
                    format!("{hex}{more}")
                }
            };
            Err(StatusError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: {e} ({summary})"
            ))
            .into())
        }
        _ => decode_object(content_type, bytes),
    }
}

/// Decodes an object body by its content type.
pub fn decode_object(content_type: &str, bytes: &[u8]) -> ApiResult<Value> {
    if bytes.len() > MAX_BODY {
        return Err(StatusError::too_large("the request body is larger than 3 MiB").into());
    }
    let value = match media_type(content_type) {
        "" | "application/json" | "*/*" => serde_json::from_slice(bytes).map_err(|e| {
            StatusError::bad_request(format!("error decoding request body as JSON: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            from_yaml(bytes).map_err(|e| {
                StatusError::bad_request(format!("error decoding request body as YAML: {e}"))
            })?
        }
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(bytes)?,
        other => return Err(StatusError::unsupported_media_type(other).into()),
    };
    if !value.is_object() {
        return Err(StatusError::bad_request("the request body must be an object").into());
    }
    Ok(value)
}

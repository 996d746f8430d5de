//! What a body must say about its type: `apiVersion` and `kind` matching the resource it was
//! sent to, and (through k8s-openapi) fields of the right types, unknown fields refused,
//! warned about or ignored as `fieldValidation` asks.

use crate::error::{ApiError, ApiResult};
use crate::request::FieldValidation;
use crate::typed;
use serde_json::{Value, json};
use shoal_api::{ResourceInfo, StatusError};

fn kind_error(info: &ResourceInfo, msg: &str) -> ApiError {
    StatusError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {msg}",
        info.kind, info.version, info.kind
    ))
    .into()
}

/// Checks types and unknown fields through k8s-openapi.
pub(super) fn check_typed(
    info: &ResourceInfo,
    o: &Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    let Some(rt) = typed::round_trip_kind(info.group, info.kind, o) else {
        return Ok(());
    };
    let typed = rt.map_err(|e| kind_error(info, &e))?;
    if validation == FieldValidation::Ignore {
        return Ok(());
    }
    report_unknown(typed::unknown_fields(o, &typed), validation, warnings)
}

/// Checks types and unknown fields of `o` as the k8s-openapi type `T` (a version other than
/// the stored one).
pub(crate) fn check_typed_as<T: serde::de::DeserializeOwned + serde::Serialize>(
    info: &ResourceInfo,
    o: &Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    let message = format!(
        "{}.{}",
        crate::protobuf::package(&info.api_version()),
        info.kind
    );
    let typed = typed::round_trip::<T>(&message, o).map_err(|e| kind_error(info, &e))?;
    if validation == FieldValidation::Ignore {
        return Ok(());
    }
    report_unknown(typed::unknown_fields(o, &typed), validation, warnings)
}

/// Refuses (`Strict`) or warns about (`Warn`) the unknown fields at `paths`.
pub(super) fn report_unknown(
    paths: Vec<String>,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    let unknown: Vec<String> = paths
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if unknown.is_empty() || validation == FieldValidation::Ignore {
        return Ok(());
    }
    match validation {
        FieldValidation::Strict => Err(StatusError::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))
        .into()),
        _ => {
            warnings.extend(unknown);
            Ok(())
        }
    }
}

/// Checks `apiVersion`/`kind` of a body against the resource it was sent to.
pub fn check_type_meta(info: &ResourceInfo, o: &mut Value) -> ApiResult<()> {
    let want_av = info.api_version();
    let av = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = o
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !av.is_empty() && av != want_av {
        return Err(StatusError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        ))
        .into());
    }
    if !kind.is_empty() && kind != info.kind {
        // What kube-apiserver's decoder says when the body is another kind (its conversion
        // into the endpoint's type fails), with the start of the body.
        let body = serde_json::to_string(o).unwrap_or_default();
        let summary = match body.char_indices().nth(30) {
            Some((at, _)) => format!("{} ...", &body[..at]),
            None => body,
        };
        let package = crate::protobuf::package(if av.is_empty() { &want_av } else { &av });
        let version = package.rsplit('.').next().unwrap_or("v1");
        let group = info
            .group
            .split('.')
            .next()
            .filter(|g| !g.is_empty())
            .unwrap_or("core");
        return Err(StatusError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): converting ({version}.{kind}) to ({group}.{}): unknown conversion ({summary})",
            info.kind, info.kind
        ))
        .into());
    }
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(want_av));
        m.insert("kind".into(), json!(info.kind));
    }
    Ok(())
}

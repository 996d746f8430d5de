//! `metav1.Status` errors: the code, reason, message and details kubectl prints.

use serde::Serialize;
use serde_json::{Map, Value};

/// One cause of an `Invalid` (or other) error, naming the field (`metav1.StatusCause`, its
/// fields in Kubernetes' order, empty ones omitted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, detail: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {}: {detail}",
                quote_value(&value.to_string())
            ),
            field: field.into(),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Cause {
            reason: "FieldValueDuplicate".into(),
            message: format!("Duplicate value: {}", quote_value(&value.to_string())),
            field: field.into(),
        }
    }
    pub fn not_supported(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                quote_value(&value.to_string()),
                list.join(", ")
            ),
            field: field.into(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {}", detail.into()),
            field: field.into(),
        }
    }
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
    pub fn to_line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

fn quote_value(v: &str) -> String {
    if v.parse::<f64>().is_ok() || v == "true" || v == "false" {
        v.to_owned()
    } else {
        format!("\"{v}\"")
    }
}

/// `metav1.StatusDetails`: fields in Kubernetes' order, empty ones omitted (`"group": ""`
/// never appears).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_after_seconds: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl Details {
    /// The object an error (or a deletion) is about.
    pub fn object(name: &str, group: &str, kind: &str) -> Self {
        Details {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind.to_owned(),
            ..Details::default()
        }
    }
}

/// A `metav1.Status` body, serialised as kube-apiserver writes it: `kind, apiVersion,
/// metadata, status, message, reason, details, code`, empty fields omitted.
#[derive(Serialize)]
struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Map<String, Value>,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Details>,
    #[serde(skip_serializing_if = "is_zero_u16")]
    code: u16,
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

/// The `Status` a successful deletion answers with (`status: Success`, the deleted object
/// named in `details`).
pub fn success(details: &Details) -> Value {
    serde_json::to_value(StatusBody {
        kind: "Status",
        api_version: "v1",
        metadata: Map::new(),
        status: "Success",
        message: "",
        reason: "",
        details: Some(details),
        code: 0,
    })
    .unwrap_or_default()
}

/// A failed request, rendered as a `metav1.Status` with the HTTP status equal to `code`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: most errors carry none, and a `Result` stays small.
    pub details: Option<Box<Details>>,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for StatusError {}

/// `deployments.apps` for grouped resources, `pods` for core ones.
pub fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(name: &str, group: &str, kind: &str) -> Details {
    Details::object(name, group, kind)
}

impl StatusError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        StatusError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    fn with_details(mut self, d: Details) -> Self {
        self.details = Some(Box::new(d));
        self
    }

    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
        )
        .with_details(details(name, group, resource))
    }
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(Details::default())
    }
    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource, group)),
        )
        .with_details(details(name, group, resource))
    }
    pub fn conflict(resource: &str, group: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(resource, group)
            ),
        )
        .with_details(details(name, group, resource))
    }
    pub fn stale(resource: &str, group: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    /// 422 with one cause per invalid field; kubectl prints the causes.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let lines: Vec<String> = causes.iter().map(Cause::to_line).collect();
        // `GroupKind.String()`: `Deployment.apps`, `Pod`.
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let message = if lines.len() == 1 {
            format!("{qualified} \"{name}\" is invalid: {}", lines[0])
        } else {
            format!("{qualified} \"{name}\" is invalid: [{}]", lines.join(", "))
        };
        let d = Details {
            causes,
            ..details(name, group, kind)
        };
        Self::new(422, "Invalid", message).with_details(d)
    }
    /// An error with a code someone else chose (an admission policy's denial); the reason
    /// follows the code as Kubernetes maps them.
    pub fn with_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Gone",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            500..=599 => "InternalError",
            _ => "BadRequest",
        };
        StatusError::new(code, reason, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// 422 for a patch that cannot be applied (a failed `test`, a missing path).
    pub fn invalid_patch(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    /// 403 about one object (or, without a name, a collection), as Kubernetes'
    /// `NewForbidden` words it.
    pub fn forbidden_object(resource: &str, group: &str, name: &str, why: &str) -> Self {
        let what = if name.is_empty() {
            qualified(resource, group)
        } else {
            format!("{} \"{name}\"", qualified(resource, group))
        };
        Self::new(403, "Forbidden", format!("{what} is forbidden: {why}"))
            .with_details(details(name, group, resource))
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"
            ),
        )
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }
    /// 410 for a resourceVersion older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Gone", message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// `504 Timeout` for a resourceVersion the server has not reached within its wait, with
    /// the cause clients test for (`ResourceVersionTooLarge`) and a retry hint.
    pub fn too_large_resource_version(requested: i64, current: i64) -> Self {
        let mut e = Self::timeout(format!(
            "Timeout: Too large resource version: {requested}, current: {current}"
        ));
        e.details = Some(Box::new(Details {
            causes: vec![Cause {
                reason: "ResourceVersionTooLarge".into(),
                message: "Too large resource version".into(),
                field: String::new(),
            }],
            retry_after_seconds: 1,
            ..Details::default()
        }));
        e
    }

    /// The `metav1.Status` body, as kube-apiserver writes it.
    pub fn to_status(&self) -> Value {
        serde_json::to_value(StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: Map::new(),
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref(),
            code: self.code,
        })
        .unwrap_or_default()
    }
}

//! What a request is about: resource, namespace, name, subresource and query parameters,
//! parsed from the path as the Kubernetes API server's RequestInfo does.

use crate::error::ApiError;
use shoal_api::{ResourceInfo, StatusError, Subresource, resources};

/// A resolved resource request.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<Subresource>,
    /// For `.../proxy/PATH`: `/PATH` (empty when nothing follows `proxy`).
    pub proxy_path: String,
}

/// Parses `/api/v1/...` or `/apis/<group>/<version>/...` (path already split after the
/// prefix). Returns `None` for paths that are not resource requests (discovery).
pub fn parse_target(
    catalog: &crate::crd::Catalog,
    group: &str,
    version: &str,
    parts: &[&str],
) -> Result<Target, ApiError> {
    let mut parts = parts.to_vec();
    let mut namespace = None;
    // `namespaces/{ns}/{resource}/...`, except `namespaces/{name}/status|finalize` which are
    // subresources of the namespace itself.
    if parts.first() == Some(&"namespaces")
        && parts.len() > 2
        && !matches!(parts[2], "status" | "finalize")
    {
        namespace = Some(parts[1].to_owned());
        parts.drain(..2);
    }
    let Some(plural) = parts.first() else {
        return Err(StatusError::path_not_found().into());
    };
    let info = resources::find(group, version, plural)
        .or_else(|| catalog.find(group, version, plural))
        .ok_or_else(StatusError::path_not_found)?;
    if namespace.is_some() && !info.namespaced {
        return Err(StatusError::path_not_found().into());
    }
    let name = parts.get(1).map(|s| (*s).to_owned());
    let subresource = match parts.get(2) {
        None => None,
        Some(s) => match Subresource::parse(s) {
            Some(sub) if info.has(sub) => Some(sub),
            _ => return Err(StatusError::path_not_found().into()),
        },
    };
    if parts.len() > 3 && subresource != Some(Subresource::Proxy) {
        return Err(StatusError::path_not_found().into());
    }
    let proxy_path = parts
        .get(3..)
        .filter(|rest| !rest.is_empty())
        .map(|rest| format!("/{}", rest.join("/")))
        .unwrap_or_default();
    Ok(Target {
        info,
        namespace,
        name,
        subresource,
        proxy_path,
    })
}

/// Query parameters, keeping repeated keys.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// A boolean parameter ([`shoal_api::query::flag`]).
    pub fn flag(&self, key: &str) -> bool {
        shoal_api::query::flag(self.get(key))
    }
    /// The query string again, encoded (for forwarding).
    pub fn encoded(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.0)
            .finish()
    }
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                StatusError::bad_request(format!(
                    "invalid value for {key}: {v:?} is not an integer"
                ))
                .into()
            }),
        }
    }
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(v) => Err(StatusError::bad_request(format!(
                "Invalid dry run value: {v:?}, supported values: \"All\""
            ))
            .into()),
        }
    }
}

/// How strictly unknown and duplicate fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn from_query(q: &Query) -> Result<Self, ApiError> {
        match q.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(v) => Err(StatusError::bad_request(format!(
                "fieldValidation {v:?} is invalid, must be one of: Ignore, Warn, Strict"
            ))
            .into()),
        }
    }
}

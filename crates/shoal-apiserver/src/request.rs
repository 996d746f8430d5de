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

/// What a request asks to do, from its method and path alone (Kubernetes' `RequestInfo`), for
/// authorization and the audit log: it needs no knowledge of which resources exist, so a
/// request for an unknown resource is authorized (and refused) like any other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection` for
    /// a resource request; the lower-case method otherwise.
    pub verb: String,
    /// `None` for a non-resource request (discovery, `/version`, `/healthz`).
    pub resource: Option<ResourceAttributes>,
    pub path: String,
}

/// The resource a request is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl ResourceAttributes {
    /// `pods` or `pods/log`.
    pub fn combined(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

impl RequestInfo {
    pub fn parse(method: &http::Method, path: &str, query: &Query) -> Self {
        let non_resource = || RequestInfo {
            verb: method.as_str().to_ascii_lowercase(),
            resource: None,
            path: path.to_owned(),
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let (group, version, mut rest) = match parts.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return non_resource(),
        };
        if rest.is_empty() {
            return non_resource();
        }
        // The deprecated `/watch/` prefix.
        let mut watch = false;
        if rest[0] == "watch" {
            watch = true;
            rest = &rest[1..];
        }
        let mut namespace = "";
        if rest.first() == Some(&"namespaces")
            && let Some(ns) = rest.get(1)
        {
            namespace = ns;
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        let Some(resource) = rest.first() else {
            return non_resource();
        };
        let mut name = rest.get(1).copied().unwrap_or("").to_owned();
        let subresource = rest.get(2).copied().unwrap_or("").to_owned();
        let verb = match (method.as_str(), name.is_empty()) {
            ("GET" | "HEAD", true) if watch || query.flag("watch") => "watch",
            ("GET" | "HEAD", true) => "list",
            ("GET" | "HEAD", false) if watch => "watch",
            ("GET" | "HEAD", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "deletecollection",
            ("DELETE", false) => "delete",
            _ => "",
        };
        let verb = if verb.is_empty() {
            method.as_str().to_ascii_lowercase()
        } else if verb == "get"
            && *resource == "pods"
            && matches!(subresource.as_str(), "exec" | "attach" | "portforward")
        {
            // A WebSocket upgrade is a GET, but it creates a session like SPDY's POST does
            // (Kubernetes' AuthorizePodWebsocketUpgradeCreatePermission, on since 1.31).
            "create".to_owned()
        } else {
            verb.to_owned()
        };
        // A list or watch of one name by field selector is about that name.
        if matches!(verb.as_str(), "list" | "watch")
            && let Some(sel) = query.get("fieldSelector")
        {
            let one = sel.split(',').find_map(|r| {
                r.strip_prefix("metadata.name==")
                    .or_else(|| r.strip_prefix("metadata.name="))
            });
            if let Some(n) = one {
                name = n.to_owned();
            }
        }
        RequestInfo {
            verb,
            resource: Some(ResourceAttributes {
                group: group.to_owned(),
                version: version.to_owned(),
                resource: (*resource).to_owned(),
                subresource,
                namespace: namespace.to_owned(),
                name,
            }),
            path: path.to_owned(),
        }
    }
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

#[cfg(test)]
mod request_info_tests {
    use super::*;
    use http::Method;

    fn info(m: Method, path: &str, q: Option<&str>) -> RequestInfo {
        RequestInfo::parse(&m, path, &Query::parse(q))
    }

    #[test]
    fn paths_read_as_kube_apiservers_request_info() {
        let r = info(Method::GET, "/api/v1/namespaces/dev/pods", None);
        let a = r.resource.unwrap();
        assert_eq!(
            (r.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "pods", "dev")
        );
        let r = info(Method::GET, "/api/v1/namespaces/dev/pods/p/log", None);
        assert_eq!(r.resource.unwrap().combined(), "pods/log");
        let r = info(Method::GET, "/api/v1/pods", Some("watch=true"));
        assert_eq!(r.verb, "watch");
        // A namespace is its own namespace.
        let r = info(Method::DELETE, "/api/v1/namespaces/dev", None);
        let a = r.resource.unwrap();
        assert_eq!(
            (r.verb.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("delete", "dev", "dev")
        );
        let r = info(Method::PUT, "/api/v1/namespaces/dev/finalize", None);
        assert_eq!(r.resource.unwrap().subresource, "finalize");
        let r = info(
            Method::GET,
            "/apis/apps/v1/namespaces/d/deployments",
            Some("fieldSelector=metadata.name%3Dweb"),
        );
        assert_eq!(r.resource.unwrap().name, "web");
        let r = info(Method::DELETE, "/apis/example.com/v1/widgets", None);
        assert_eq!(r.verb, "deletecollection");
        for p in ["/api", "/apis/apps/v1", "/version", "/openapi/v2"] {
            let r = info(Method::GET, p, None);
            assert!(r.resource.is_none() && r.verb == "get", "{p}");
        }
    }
}

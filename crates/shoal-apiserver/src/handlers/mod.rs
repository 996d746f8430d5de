//! Request dispatch: paths are parsed as the Kubernetes API server's RequestInfo does, then
//! served by verb (this file: the routes). Reads come from the watch cache (`list.rs`,
//! `watch.rs`); writes go through the [`crate::registry::Registry`] (`write.rs`); `response.rs`
//! shapes what is sent back.

mod list;
mod response;
mod stream;
mod watch;
mod write;

use list::*;
use response::*;
pub(crate) use stream::list_seats;
use stream::*;
use watch::*;
use write::*;

use crate::ApiServer;
use crate::cache::{CacheEvent, CachedObject, Subscription, WatchType, watch_line};
use crate::discovery;
use crate::error::{ApiError, ApiResult, status_response};
use crate::patch::PatchType;
use crate::registry::{DeleteOptions, ObjectRef, ScaleChange, WriteOptions, Written};
use crate::request::{FieldValidation, Query, Target, parse_target};
use crate::table::{self, IncludeObject};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use shoal_api::selector::{FieldSelector, LabelSelector};
use shoal_api::{ResourceInfo, StatusError, Subresource};
use shoal_store::{RangeRequest, Revision};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// The single entry point for every request, in a `request{verb, resource, ns, name}` span
/// (the resource fields are filled in once the path is understood).
pub async fn dispatch(State(server): State<Arc<ApiServer>>, req: Request) -> Response {
    use tracing::Instrument;
    use tracing::field::Empty;
    let method = req.method().clone();
    let span =
        tracing::info_span!("request", verb = %method, resource = Empty, ns = Empty, name = Empty);
    async move {
        let path = req.uri().path().to_owned();
        if let Some((ns, name, sub)) = crate::kubelet_proxy::streaming_target(&path) {
            return match crate::kubelet_proxy::stream(&server, req, &ns, &name, sub).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
        }
        let query = Query::parse(req.uri().query());
        let headers = req.headers().clone();
        let req_user = req
            .extensions()
            .get::<Arc<crate::auth::UserInfo>>()
            .cloned();
        let body = match axum::body::to_bytes(req.into_body(), crate::body::MAX_BODY + 1).await {
            Ok(b) => b,
            Err(_) => {
                return status_response(&StatusError::too_large(
                    "the request body is larger than 3 MiB",
                ));
            }
        };
        let user = req_user;
        match route(
            &server,
            &method,
            &path,
            &query,
            &headers,
            user.as_ref(),
            body,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }
    .instrument(span)
    .await
}

async fn route(
    s: &Arc<ApiServer>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    user: Option<&Arc<crate::auth::UserInfo>>,
    body: Bytes,
) -> ApiResult<Response> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let agg = discovery::wants_aggregated(&accept(headers));
    let catalog = s.cache.catalog();
    // A group no definition serves yet may be one created an instant ago that has not reached
    // the cache: look once more after it has caught up (a client reads its own writes).
    if let ["apis", g, ..] = parts.as_slice()
        && !shoal_api::resources::groups().contains(g)
        && !catalog.serves_group(g)
    {
        s.cache.sync().await?;
    }
    match parts.as_slice() {
        [
            "apis",
            crate::resource_metrics::GROUP,
            crate::resource_metrics::VERSION,
            rest @ ..,
        ] => {
            let body = crate::resource_metrics::serve(s, method, rest, q).await?;
            Ok(value_response(StatusCode::OK, &body))
        }
        ["metrics"] => {
            for (resource, n) in s.cache.object_counts() {
                metrics::gauge!("apiserver_storage_objects", "resource" => resource).set(n as f64);
            }
            Ok((
                [(header::CONTENT_TYPE, shoal_metrics::CONTENT_TYPE)],
                shoal_metrics::render(),
            )
                .into_response())
        }
        ["version"] => {
            let mut r = value_response(StatusCode::OK, &discovery::version());
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            Ok(r)
        }
        [".well-known", "openid-configuration"] => Ok(value_response(
            StatusCode::OK,
            &s.service_accounts.openid_configuration(),
        )),
        ["openid", "v1", "jwks"] => {
            let mut r = value_response(StatusCode::OK, s.service_accounts.jwks());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            );
            Ok(r)
        }
        ["healthz" | "livez", ..] => Ok((StatusCode::OK, "ok").into_response()),
        // Ready while every supervised task of the process runs (a task that panicked is
        // reported until it has run again for a while).
        ["readyz", ..] => {
            let (ok, body) = s.supervisor.readyz(q.get("verbose").is_some());
            let code = if ok {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            Ok((code, body).into_response())
        }
        ["api"] if agg => Ok(aggregated(discovery::aggregated(catalog, true))),
        ["apis"] if agg => Ok(aggregated(discovery::aggregated(catalog, false))),
        ["api"] => Ok(value_response(StatusCode::OK, &discovery::api_versions())),
        ["apis"] => Ok(value_response(
            StatusCode::OK,
            &discovery::api_group_list(catalog),
        )),
        ["api", "v1"] => Ok(value_response(
            StatusCode::OK,
            &discovery::resource_list(catalog, "", "v1").unwrap_or_default(),
        )),
        ["apis", g] => discovery::group(catalog, g)
            .map(|v| value_response(StatusCode::OK, &v))
            .ok_or_else(|| StatusError::path_not_found().into()),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] if method == Method::POST => {
            let review = crate::body::decode_object(content_type(headers), &body)?;
            Ok(value_response(StatusCode::CREATED, &s.token_review(review)))
        }
        [
            "apis",
            g @ ("authorization.k8s.io" | "authentication.k8s.io"),
            "v1",
            rest @ ..,
        ] if method == Method::POST
            && matches!(rest, [_] | ["namespaces", _, _])
            && crate::rbac::review::kind_of(g, rest[rest.len() - 1]).is_some() =>
        {
            let kind = crate::rbac::review::kind_of(g, rest[rest.len() - 1]).unwrap_or_default();
            let namespace = match rest {
                ["namespaces", ns, _] if kind == "LocalSubjectAccessReview" => Some(*ns),
                [_] if kind != "LocalSubjectAccessReview" => None,
                _ => return Err(StatusError::path_not_found().into()),
            };
            let review = crate::body::decode_object(content_type(headers), &body)?;
            let admin = crate::auth::UserInfo::admin();
            let who = user.map_or(&admin, |u| u.as_ref());
            let answer = crate::rbac::review::answer(&s.cache, kind, who, namespace, review)?;
            Ok(value_response(StatusCode::CREATED, &answer))
        }
        ["apis", g, v] => discovery::resource_list(catalog, g, v)
            .map(|v| value_response(StatusCode::OK, &v))
            .ok_or_else(|| StatusError::path_not_found().into()),
        ["openapi", "v2"] => {
            if accept(headers).contains("protobuf") {
                let mut r = Response::new(Body::from(crate::openapi::OpenApi::v2_protobuf()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    ),
                );
                Ok(r)
            } else {
                Ok(json_response(StatusCode::OK, s.openapi.v2_json().to_vec()))
            }
        }
        ["openapi", "v3"] => Ok(value_response(StatusCode::OK, &s.openapi.root(catalog))),
        ["openapi", "v3", rest @ ..] => {
            let gv = rest.join("/");
            s.openapi
                .doc(catalog, &gv)
                .map(|b| json_response(StatusCode::OK, b.to_vec()))
                .ok_or_else(|| StatusError::path_not_found().into())
        }
        ["api", "v1", rest @ ..] => {
            resource(
                s,
                method,
                described(with_trailing_slash(
                    parse_target(catalog, "", "v1", rest)?,
                    path,
                )),
                q,
                headers,
                user,
                body,
            )
            .await
        }
        ["apis", g, v, rest @ ..] => {
            resource(
                s,
                method,
                described(with_trailing_slash(
                    parse_target(catalog, g, v, rest)?,
                    path,
                )),
                q,
                headers,
                user,
                body,
            )
            .await
        }
        _ => Err(StatusError::path_not_found().into()),
    }
}

/// A proxied path keeps the trailing slash the split dropped (`/proxy/ui/` is not `/proxy/ui`).
fn with_trailing_slash(mut t: Target, path: &str) -> Target {
    if path.ends_with('/') && t.subresource == Some(Subresource::Proxy) {
        t.proxy_path.push('/');
    }
    t
}

/// Records what a request is about on its span.
fn described(t: Target) -> Target {
    let span = tracing::Span::current();
    span.record("resource", t.info.plural);
    if let Some(ns) = &t.namespace {
        span.record("ns", ns.as_str());
    }
    if let Some(name) = &t.name {
        span.record("name", name.as_str());
    }
    t
}

fn aggregated(v: Value) -> Response {
    let mut r = value_response(StatusCode::OK, &v);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED),
    );
    r
}

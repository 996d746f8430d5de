//! Writes by verb: create, replace, patch (and apply), scale, binding, eviction, delete and
//! delete-collection, each handed to the registry.

use super::*;

pub(super) fn write_options(
    q: &Query,
    headers: &HeaderMap,
    user: Option<&Arc<crate::auth::UserInfo>>,
) -> ApiResult<WriteOptions> {
    let manager = match q.get("fieldManager") {
        Some(m) if !m.is_empty() => m.to_owned(),
        // Kubernetes names an Update's manager after the client's user agent.
        _ => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_owned())
            .unwrap_or_default(),
    };
    if manager.len() > 128 {
        return Err(StatusError::bad_request("fieldManager must be at most 128 characters").into());
    }
    Ok(WriteOptions {
        dry_run: q.dry_run()?,
        manager,
        validation: FieldValidation::from_query(q)?,
        user: user.cloned(),
    })
}

pub(super) async fn resource(
    s: &Arc<ApiServer>,
    method: &Method,
    t: Target,
    q: &Query,
    headers: &HeaderMap,
    user: Option<&Arc<crate::auth::UserInfo>>,
    body: Bytes,
) -> ApiResult<Response> {
    let info = t.info;
    let ns = if info.namespaced {
        t.namespace.as_deref()
    } else {
        None
    };
    let name = t.name.as_deref();
    let reg = &s.registry;
    match (method.clone(), name, t.subresource) {
        (Method::GET, None, None) if q.flag("watch") => watch(s, info, ns, q, headers).await,
        (Method::GET, None, None) => list(s, info, ns, q, headers).await,
        (
            Method::GET,
            Some(n),
            None | Some(Subresource::Status) | Some(Subresource::EphemeralContainers),
        ) => get(s, info, ns, n, q, headers).await,
        (Method::GET, Some(n), Some(Subresource::Scale)) => Ok(value_response(
            StatusCode::OK,
            &reg.get_scale(info, ns, n).await?,
        )),
        (Method::POST, None, None) => {
            if s.cache.catalog().terminating(info) {
                return Err(StatusError::method_not_allowed(
                    "create not allowed while custom resource definition is terminating",
                )
                .into());
            }
            let obj = crate::body::decode_as(info.kind, content_type(headers), &body)?;
            Ok(written(
                info,
                reg.create(
                    info,
                    ns.or(Some("default")).filter(|_| info.namespaced),
                    obj,
                    &write_options(q, headers, user)?,
                )
                .await?,
            ))
        }
        (Method::POST, Some(n), Some(Subresource::Binding)) => {
            let b = crate::body::decode_object(content_type(headers), &body)?;
            reg.bind(info, ns, n, &b).await?;
            Ok(value_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (Method::POST, Some(n), Some(Subresource::Eviction)) => {
            // The Eviction's own deleteOptions (grace period, preconditions), if any.
            let opts = match crate::body::decode_object(content_type(headers), &body) {
                Ok(e) => e
                    .get("deleteOptions")
                    .map(DeleteOptions::from_body)
                    .unwrap_or_default(),
                Err(_) => DeleteOptions::default(),
            };
            reg.evict(info, ns.unwrap_or("default"), n, &opts).await?;
            Ok(value_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (Method::POST, Some(n), Some(Subresource::Token)) => {
            let request = crate::body::decode_object(content_type(headers), &body)?;
            let issued = crate::serviceaccount::token_request(
                &s.service_accounts,
                &s.cache,
                ns.unwrap_or("default"),
                n,
                request,
                user.map(|u| u.as_ref()),
            )
            .await?;
            Ok(value_response(StatusCode::CREATED, &issued))
        }
        (
            Method::PUT,
            Some(n),
            None
            | Some(Subresource::Status)
            | Some(Subresource::Finalize)
            | Some(Subresource::Approval)
            | Some(Subresource::EphemeralContainers),
        ) => {
            let obj = crate::body::decode_as(info.kind, content_type(headers), &body)?;
            let sub = t.subresource.filter(|s| {
                matches!(
                    s,
                    Subresource::Status | Subresource::Approval | Subresource::EphemeralContainers
                )
            });
            Ok(written(
                info,
                reg.update(
                    ObjectRef::new(info, ns, n).subresource(sub),
                    obj,
                    &write_options(q, headers, user)?,
                )
                .await?,
            ))
        }
        (Method::PUT, Some(n), Some(Subresource::Scale)) => {
            let scale = crate::body::decode_object(content_type(headers), &body)?;
            let out = reg
                .update_scale(
                    ObjectRef::new(info, ns, n),
                    ScaleChange::Replace(scale),
                    &write_options(q, headers, user)?,
                )
                .await?;
            Ok(value_response(StatusCode::OK, &out))
        }
        (
            Method::PATCH,
            Some(n),
            sub @ (None
            | Some(Subresource::Status)
            | Some(Subresource::Scale)
            | Some(Subresource::Approval)
            | Some(Subresource::EphemeralContainers)),
        ) => {
            let ct = content_type(headers);
            let kind = PatchType::from_content_type(ct)
                .ok_or_else(|| StatusError::unsupported_media_type(ct))?;
            if kind == PatchType::Strategic
                && sub != Some(Subresource::Scale)
                && crate::crd::custom(info).is_some()
            {
                // Custom resources have no patch strategies to merge by.
                return Err(StatusError::with_code(
                    415,
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                )
                .into());
            }
            if body.len() > crate::body::MAX_BODY {
                return Err(StatusError::too_large("the request body is larger than 3 MiB").into());
            }
            let opts = write_options(q, headers, user)?;
            if sub == Some(Subresource::Scale) {
                let out = reg
                    .update_scale(
                        ObjectRef::new(info, ns, n),
                        ScaleChange::Patch(kind, &body),
                        &opts,
                    )
                    .await?;
                return Ok(value_response(StatusCode::OK, &out));
            }
            let force = q.flag("force");
            if force && kind != PatchType::Apply {
                return Err(
                    StatusError::bad_request("force may only be set for apply patches").into(),
                );
            }
            let r = ObjectRef::new(info, ns, n).subresource(sub);
            if kind == PatchType::Apply {
                let applied = crate::body::from_yaml(&body)
                    .map_err(|e| StatusError::bad_request(format!("error decoding YAML: {e}")))?;
                return Ok(written(info, reg.apply(r, applied, force, &opts).await?));
            }
            Ok(written(info, reg.patch(r, kind, &body, &opts).await?))
        }
        (Method::DELETE, Some(n), None) => {
            let opts = delete_options(q, headers, user, &body)?;
            let (obj, gone) = reg.delete(info, ns, n, &opts).await?;
            if gone {
                Ok(value_response(
                    StatusCode::OK,
                    &shoal_api::status::success(&shoal_api::Details {
                        uid: crate::meta::str_field(&obj, "uid").to_owned(),
                        ..shoal_api::Details::object(n, info.group, info.plural)
                    }),
                ))
            } else {
                Ok(value_response(StatusCode::OK, &obj))
            }
        }
        (Method::DELETE, None, None) => {
            delete_collection(s, info, ns, q, headers, user, &body).await
        }
        (_, Some(n), Some(Subresource::Proxy)) => {
            let query = q.encoded();
            crate::proxy::proxy(
                s,
                crate::proxy::ProxyRequest {
                    plural: info.plural,
                    namespace: ns,
                    id: n,
                    path: &t.proxy_path,
                    query: Some(&query),
                    method,
                    headers,
                    body,
                },
            )
            .await
        }
        (Method::GET, Some(n), Some(Subresource::Log)) if info.plural == "pods" => {
            crate::kubelet_proxy::pod_log(s, ns.unwrap_or("default"), n, q).await
        }
        (
            _,
            Some(_),
            Some(
                sub @ (Subresource::Log
                | Subresource::Exec
                | Subresource::Attach
                | Subresource::PortForward),
            ),
        ) => Err(StatusError::bad_request(format!(
            "{} is not supported yet: the kubelet serves only logs",
            sub.name()
        ))
        .into()),
        _ => Err(StatusError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            info.qualified()
        ))
        .into()),
    }
}

pub(super) fn delete_options(
    q: &Query,
    headers: &HeaderMap,
    user: Option<&Arc<crate::auth::UserInfo>>,
    body: &[u8],
) -> ApiResult<DeleteOptions> {
    let mut opts = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        DeleteOptions::from_body(&crate::body::decode_object(content_type(headers), body)?)
    };
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation = Some(p.to_owned());
    }
    if let Some(g) = q.int("gracePeriodSeconds")? {
        opts.grace_period = Some(g);
    }
    if q.flag("orphanDependents") && opts.propagation.is_none() {
        opts.propagation = Some("Orphan".into());
    }
    opts.dry_run |= q.dry_run()?;
    opts.user = user.cloned();
    Ok(opts)
}

pub(super) async fn delete_collection(
    s: &Arc<ApiServer>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
    user: Option<&Arc<crate::auth::UserInfo>>,
    body: &[u8],
) -> ApiResult<Response> {
    let filter = Filter::new(info, ns, q)?;
    let opts = delete_options(q, headers, user, body)?;
    s.cache.sync().await?;
    let mut deleted = Vec::new();
    for o in s.cache.resource(info).list(&filter.prefix, None) {
        if !filter.matches_obj(&o) {
            continue;
        }
        let name = o
            .value()
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let o_ns = o
            .value()
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match s.registry.delete(info, o_ns.as_deref(), &name, &opts).await {
            Ok((obj, _)) => deleted.push(obj),
            Err(ApiError(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": {"resourceVersion": s.cache.revision().to_string()}, "items": deleted});
    Ok(value_response(StatusCode::OK, &list))
}

//! What the API server keeps in the store for itself: the system namespaces and the
//! `kubernetes` Service in `default`, with the endpoints through which pods reach the API.

use crate::error::ApiError;
use crate::registry::{ObjectRef, WriteOptions};
use crate::{ApiServer, request};
use serde_json::{Value, json};
use shoal_store::StoreError;
use std::net::SocketAddr;

pub(crate) const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn options() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        manager: "shoal-apiserver".into(),
        validation: request::FieldValidation::Strict,
        user: None,
    }
}

fn backend(e: ApiError) -> StoreError {
    StoreError::Backend(e.0.message.into())
}

impl ApiServer {
    /// Creates the system namespaces, the system PriorityClasses, the `local-path`
    /// StorageClass, the `shoal` IngressClass and the `wasmtime` and `runc` RuntimeClasses if
    /// missing.
    pub(crate) async fn bootstrap(&self) -> Result<(), StoreError> {
        let info = shoal_api::resources::find("", "v1", "namespaces")
            .expect("namespaces are in the resource table");
        for ns in SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.registry.create(info, None, obj, &options()).await {
                Ok(_) => {}
                Err(ApiError(e)) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(backend(e)),
            }
        }
        let classes = shoal_api::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("priorityclasses are in the resource table");
        for (name, value, description) in crate::kinds::priority::SYSTEM_CLASSES {
            let obj = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": description});
            match self.registry.create(classes, None, obj, &options()).await {
                Ok(_) => {}
                Err(ApiError(e)) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(backend(e)),
            }
        }
        let storage = shoal_api::resources::find("storage.k8s.io", "v1", "storageclasses")
            .expect("storageclasses are in the resource table");
        let ingress = shoal_api::resources::find("networking.k8s.io", "v1", "ingressclasses")
            .expect("ingressclasses are in the resource table");
        let runtime = shoal_api::resources::find("node.k8s.io", "v1", "runtimeclasses")
            .expect("runtimeclasses are in the resource table");
        // One RuntimeClass per runtime handler a node may offer (`status.runtimeHandlers`):
        // Wasm components, and OCI containers through containerd.
        let runtime_class = |name: &str| {
            json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                "metadata": {"name": name}, "handler": name})
        };
        for (info, obj) in [
            (storage, crate::kinds::storage::local_path_class()),
            (ingress, crate::kinds::ingress::shoal_class()),
            (runtime, runtime_class("wasmtime")),
            (runtime, runtime_class("runc")),
        ] {
            match self.registry.create(info, None, obj, &options()).await {
                Ok(_) => {}
                Err(ApiError(e)) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(backend(e)),
            }
        }
        self.reconcile_flowcontrol().await?;
        self.reconcile_rbac().await
    }

    /// The FlowSchemas and PriorityLevelConfigurations that describe this server's fixed
    /// priority levels, written as they are at every start (users may only read them).
    async fn reconcile_flowcontrol(&self) -> Result<(), StoreError> {
        for (plural, obj) in self.flow.objects() {
            let info = shoal_api::resources::find(crate::flowcontrol::GROUP, "v1", plural)
                .expect("flow control kinds are in the resource table");
            let name = crate::meta::name(&obj).to_owned();
            match self
                .registry
                .create(info, None, obj.clone(), &options())
                .await
            {
                Ok(_) => {}
                Err(ApiError(e)) if e.reason == "AlreadyExists" => {
                    let r = ObjectRef::new(info, None, &name);
                    if let Err(e) = self.registry.update(r, obj.clone(), &options()).await {
                        tracing::warn!(%name, error = %e.0.message, "cannot update a flow control object");
                    }
                }
                Err(e) => return Err(backend(e)),
            }
            if info.kind == "FlowSchema" {
                // Every schema's level exists: none is dangling.
                let level = obj
                    .pointer("/spec/priorityLevelConfiguration/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let mut with_status = obj;
                with_status["status"] = json!({"conditions": [{"type": "Dangling",
                    "status": "False", "reason": "Found",
                    "message": format!("This FlowSchema references the PriorityLevelConfiguration object named \"{level}\" and it exists"),
                    "lastTransitionTime": crate::meta::now()}]});
                let r = ObjectRef::new(info, None, &name)
                    .subresource(Some(shoal_api::Subresource::Status));
                if let Err(e) = self.registry.update(r, with_status, &options()).await {
                    tracing::warn!(%name, error = %e.0.message, "cannot update a flow control object");
                }
            }
        }
        Ok(())
    }

    /// Kubernetes' default roles and bindings: created when missing; one that lost rules or
    /// subjects gets them back unless it is annotated `autoupdate: "false"`.
    async fn reconcile_rbac(&self) -> Result<(), StoreError> {
        let wanted = crate::rbac::defaults::cluster_roles()
            .into_iter()
            .map(|r| ("clusterroles", r))
            .chain(
                crate::rbac::defaults::cluster_role_bindings()
                    .into_iter()
                    .map(|b| ("clusterrolebindings", b)),
            );
        for (plural, obj) in wanted {
            let info = shoal_api::resources::find(crate::rbac::GROUP, "v1", plural)
                .expect("RBAC kinds are in the resource table");
            let name = crate::meta::name(&obj).to_owned();
            let current = self
                .cache
                .resource(info)
                .get(&info.storage_key(None, &name))
                .map(|c| c.value().clone());
            let Some(current) = current else {
                match self.registry.create(info, None, obj, &options()).await {
                    Ok(_) => {}
                    Err(ApiError(e)) if e.reason == "AlreadyExists" => {}
                    Err(e) => return Err(backend(e)),
                }
                continue;
            };
            let autoupdate = current
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(crate::rbac::defaults::AUTOUPDATE))
                .and_then(Value::as_str);
            if autoupdate == Some("false") {
                continue;
            }
            let key = if plural == "clusterroles" {
                "rules"
            } else {
                "subjects"
            };
            let mut merged = current
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let missing: Vec<Value> = obj
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|w| !merged.contains(w))
                .cloned()
                .collect();
            // An aggregated role's rules are the aggregation controller's to keep.
            if missing.is_empty() || current.get("aggregationRule").is_some() {
                continue;
            }
            tracing::info!(%name, kind = info.kind, "restoring a default RBAC object");
            merged.extend(missing);
            let mut updated = current.clone();
            updated[key] = Value::Array(merged);
            let r = ObjectRef::new(info, None, &name);
            if let Err(e) = self.registry.update(r, updated, &options()).await {
                tracing::warn!(%name, error = %e.0.message, "cannot restore a default RBAC object");
            }
        }
        Ok(())
    }

    /// Publishes `addr`, where this API server serves, as the `kubernetes` Service's endpoint:
    /// the Service at the first address of the Service range (port 443 → `addr`'s port), its
    /// EndpointSlice and its Endpoints, created or brought up to date. Kubernetes' API servers
    /// do the same on start (the "bootstrap controller").
    pub async fn publish_endpoint(&self, addr: SocketAddr) -> Result<(), StoreError> {
        let cluster_ip = self.registry.network.cidr.first_host().to_string();
        let ip = match addr.ip() {
            a if a.is_unspecified() => "127.0.0.1".to_owned(),
            a => a.to_string(),
        };
        let port = addr.port();
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        });
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "shoal-apiserver"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        });
        let endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        });
        self.replace_if_moved(&cluster_ip).await?;
        for (group, plural, obj) in [
            ("", "services", service),
            ("discovery.k8s.io", "endpointslices", slice),
            ("", "endpoints", endpoints),
        ] {
            self.ensure(group, plural, obj).await?;
        }
        Ok(())
    }

    /// Deletes the `kubernetes` Service if it holds another address than `cluster_ip` (the
    /// range changed across a restart); it is created again at the right one.
    async fn replace_if_moved(&self, cluster_ip: &str) -> Result<(), StoreError> {
        let info = shoal_api::resources::find("", "v1", "services")
            .expect("services are in the resource table");
        let current = self
            .cache
            .resource(info)
            .get(&info.storage_key(Some("default"), "kubernetes"));
        let moved = current.is_some_and(|c| {
            c.value().pointer("/spec/clusterIP").and_then(Value::as_str) != Some(cluster_ip)
        });
        if moved {
            tracing::warn!(
                cluster_ip,
                "the Service range changed: re-creating the kubernetes Service"
            );
            match self
                .registry
                .delete(info, Some("default"), "kubernetes", &Default::default())
                .await
            {
                Ok(_) => {}
                Err(ApiError(e)) if e.reason == "NotFound" => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(())
    }

    /// Server-side applies `obj` as the API server's own field manager.
    async fn ensure(&self, group: &str, plural: &str, obj: Value) -> Result<(), StoreError> {
        let info = shoal_api::resources::RESOURCES
            .iter()
            .find(|i| i.group == group && i.plural == plural)
            .expect("bootstrap kinds are in the resource table");
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_owned);
        let r = ObjectRef::new(info, ns.as_deref(), &name);
        self.registry
            .apply(r, obj, true, &options())
            .await
            .map(drop)
            .map_err(backend)
    }
}

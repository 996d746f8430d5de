//! From a pod spec to what the runtime runs: volumes on disk, environment, argv, limits.

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod,
    ResourceFieldSelector, Secret, Volume,
};
use kube::api::Api;
use shoal_runtime::{ContainerConfig, Mount};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Why a pod's volumes or a container's configuration cannot be prepared; the message is what
/// the user sees (`kubectl describe`), as Kubernetes words it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(pub String);

/// A prepared volume: the host directory that backs it.
#[derive(Debug, Clone)]
pub struct VolumeDir {
    pub path: PathBuf,
    pub readonly: bool,
}

fn ns_of(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// Where keyed data comes from: a ConfigMap or a Secret of the pod's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    /// As Kubernetes' messages name it (`configmap "x" not found`).
    fn lower(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Secret => "secret",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Source::ConfigMap => "ConfigMap",
            Source::Secret => "Secret",
        }
    }

    /// Its data by key (binaryData and stringData included), `None` if it does not exist.
    async fn fetch(
        self,
        client: &kube::Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ResolveError> {
        let failed =
            |e: kube::Error| ResolveError(format!("cannot read {} {name:?}: {e}", self.lower()));
        Ok(match self {
            Source::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await
                .map_err(failed)?
                .map(|cm| {
                    let mut out: BTreeMap<String, Vec<u8>> = cm
                        .data
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    out.extend(cm.binary_data.into_iter().flatten().map(|(k, v)| (k, v.0)));
                    out
                }),
            Source::Secret => Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await
                .map_err(failed)?
                .map(|s| {
                    let mut out: BTreeMap<String, Vec<u8>> = s
                        .data
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    out.extend(
                        s.string_data
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k, v.into_bytes())),
                    );
                    out
                }),
        })
    }

    /// Its data; `None` if it is missing and `optional`, an error if it is missing otherwise.
    async fn required(
        self,
        client: &kube::Client,
        ns: &str,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ResolveError> {
        match self.fetch(client, ns, name).await? {
            Some(data) => Ok(Some(data)),
            None if optional == Some(true) => Ok(None),
            None => Err(ResolveError(format!("{} {name:?} not found", self.lower()))),
        }
    }

    /// The value of `key`; `None` if it (or the whole source) is missing and `optional`.
    async fn key(
        self,
        client: &kube::Client,
        ns: &str,
        name: &str,
        key: &str,
        optional: Option<bool>,
    ) -> Result<Option<String>, ResolveError> {
        let Some(mut data) = self.required(client, ns, name, optional).await? else {
            return Ok(None);
        };
        match data.remove(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None if optional == Some(true) => Ok(None),
            None => Err(ResolveError(format!(
                "couldn't find key {key} in {} {ns}/{name}",
                self.kind()
            ))),
        }
    }
}

/// A key path inside a volume must stay inside it.
fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf, ResolveError> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(dir.join(p))
    } else {
        Err(ResolveError(format!(
            "invalid path {rel:?}: must be relative and may not contain '..'"
        )))
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), ResolveError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ResolveError(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::write(path, data)
        .map_err(|e| ResolveError(format!("cannot write {}: {e}", path.display())))
}

/// Writes `data` into `dir`, all keys or just `items` (which must exist unless `optional`).
fn project(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    source: Source,
) -> Result<(), ResolveError> {
    match items {
        None => {
            for (k, v) in data {
                write_file(&safe_join(dir, k)?, v)?;
            }
        }
        Some(items) => {
            for it in items {
                let v = data.get(&it.key).ok_or_else(|| {
                    let kind = match source {
                        Source::Secret => "secret",
                        Source::ConfigMap => "config",
                    };
                    ResolveError(format!(
                        "{} references non-existent {kind} key: {}",
                        source.lower(),
                        it.key
                    ))
                })?;
                write_file(&safe_join(dir, &it.path)?, v)?;
            }
        }
    }
    Ok(())
}

fn field_value(
    pod: &Pod,
    sel: &ObjectFieldSelector,
    ip: Option<IpAddr>,
    host_ip: IpAddr,
) -> Result<String, ResolveError> {
    let m = &pod.metadata;
    let path = sel.field_path.as_str();
    let bracket = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['").or_else(|| r.strip_prefix("[\"")))
            .and_then(|r| r.strip_suffix("']").or_else(|| r.strip_suffix("\"]")))
    };
    let map_text = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&m.labels),
        "metadata.annotations" => map_text(&m.annotations),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ip.map(|i| i.to_string()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        _ => {
            if let Some(k) = bracket("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = bracket("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(ResolveError(format!("unsupported fieldPath: {path}")));
            }
        }
    })
}

fn resource_value(
    pod: &Pod,
    default_container: Option<&str>,
    sel: &ResourceFieldSelector,
) -> Result<String, ResolveError> {
    let spec = pod.spec.as_ref();
    let name = sel.container_name.as_deref().or(default_container);
    let c = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| Some(c.name.as_str()) == name)
        .ok_or_else(|| {
            ResolveError(format!(
                "resourceFieldRef: no container {:?}",
                name.unwrap_or("")
            ))
        })?;
    let res = c.resources.as_ref();
    let (group, key) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| ResolveError(format!("unsupported resource: {}", sel.resource)))?;
    let q = match group {
        "limits" => res.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(key)),
        "requests" => res
            .and_then(|r| r.requests.as_ref())
            .and_then(|l| l.get(key)),
        _ => {
            return Err(ResolveError(format!(
                "unsupported resource: {}",
                sel.resource
            )));
        }
    };
    let value = match q {
        Some(q) => shoal_api::quantity::parse(&q.0).map_err(|e| ResolveError(e.to_string()))?,
        // An unset limit is the node's allocatable, as Kubernetes reports it.
        None => match key {
            "cpu" => std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            _ => 0.0,
        },
    };
    let divisor = match &sel.divisor {
        Some(d) => shoal_api::quantity::parse(&d.0).map_err(|e| ResolveError(e.to_string()))?,
        None => 1.0,
    };
    let divisor = if divisor == 0.0 { 1.0 } else { divisor };
    Ok(((value / divisor).ceil() as u64).to_string())
}

/// Creates every volume of `pod` under `dir` and returns them by name, with when the
/// service account tokens among them are due for renewal ([`write_tokens`]).
pub async fn volumes(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
    host_ip: IpAddr,
) -> Result<(HashMap<String, VolumeDir>, Option<std::time::Duration>), ResolveError> {
    let ns = ns_of(pod);
    let mut out = HashMap::new();
    let empty = vec![];
    let vols: &Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .unwrap_or(&empty);
    for v in vols {
        let path = dir.join(&v.name);
        let mk = |p: &Path| {
            std::fs::create_dir_all(p)
                .map_err(|e| ResolveError(format!("cannot create volume {:?}: {e}", v.name)))
        };
        let readonly;
        let path = if let Some(cm) = &v.config_map {
            readonly = true;
            mk(&path)?;
            if let Some(data) = Source::ConfigMap
                .required(client, ns, &cm.name, cm.optional)
                .await?
            {
                project(&path, &data, cm.items.as_ref(), Source::ConfigMap)?;
            }
            path
        } else if let Some(s) = &v.secret {
            readonly = true;
            mk(&path)?;
            let name = s.secret_name.clone().unwrap_or_default();
            if let Some(data) = Source::Secret
                .required(client, ns, &name, s.optional)
                .await?
            {
                project(&path, &data, s.items.as_ref(), Source::Secret)?;
            }
            path
        } else if let Some(p) = &v.projected {
            readonly = true;
            mk(&path)?;
            for source in p.sources.iter().flatten() {
                if let Some(cm) = &source.config_map {
                    if let Some(data) = Source::ConfigMap
                        .required(client, ns, &cm.name, cm.optional)
                        .await?
                    {
                        project(&path, &data, cm.items.as_ref(), Source::ConfigMap)?;
                    }
                } else if let Some(s) = &source.secret {
                    if let Some(data) = Source::Secret
                        .required(client, ns, &s.name, s.optional)
                        .await?
                    {
                        project(&path, &data, s.items.as_ref(), Source::Secret)?;
                    }
                } else if let Some(d) = &source.downward_api {
                    for f in d.items.iter().flatten() {
                        write_file(
                            &safe_join(&path, &f.path)?,
                            downward_file(pod, f, host_ip)?.as_bytes(),
                        )?;
                    }
                } else if source.service_account_token.is_none() {
                    return Err(ResolveError(format!(
                        "volume {:?}: only configMap, secret, downwardAPI and serviceAccountToken projections are supported",
                        v.name
                    )));
                }
            }
            path
        } else if let Some(d) = &v.downward_api {
            readonly = true;
            mk(&path)?;
            for f in d.items.iter().flatten() {
                write_file(
                    &safe_join(&path, &f.path)?,
                    downward_file(pod, f, host_ip)?.as_bytes(),
                )?;
            }
            path
        } else if let Some(h) = &v.host_path {
            readonly = false;
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => mk(&p)?,
                "" | "Directory" => {
                    if !p.is_dir() {
                        return Err(ResolveError(format!(
                            "hostPath type check failed: {} is not a directory",
                            h.path
                        )));
                    }
                }
                other => {
                    return Err(ResolveError(format!(
                        "hostPath type {other:?} is not supported: a Wasm component mounts directories only"
                    )));
                }
            }
            p
        } else if v.empty_dir.is_some() {
            readonly = false;
            mk(&path)?;
            path
        } else if let Some(c) = &v.persistent_volume_claim {
            readonly = c.read_only.unwrap_or(false);
            let p = claim_dir(client, ns, &c.claim_name).await?;
            mk(&p)?;
            p
        } else {
            return Err(ResolveError(format!(
                "volume {:?}: only emptyDir, configMap, secret, hostPath, downwardAPI, projected and persistentVolumeClaim volumes are supported",
                v.name
            )));
        };
        out.insert(v.name.clone(), VolumeDir { path, readonly });
    }
    let refresh = write_tokens(client, pod, dir).await?;
    Ok((out, refresh))
}

/// Requests a token for each `serviceAccountToken` projection of `pod` (bound to the pod, so
/// it stops working when the pod is gone) and writes it into its volume under `dir`, replacing
/// the file at once; returns when the tokens are due for renewal (at 80% of their life, as
/// Kubernetes' kubelet renews them), `None` without any.
pub async fn write_tokens(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
) -> Result<Option<std::time::Duration>, ResolveError> {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::ServiceAccount;
    let ns = ns_of(pod);
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let mut refresh: Option<std::time::Duration> = None;
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(p) = &v.projected else { continue };
        for t in p
            .sources
            .iter()
            .flatten()
            .filter_map(|s| s.service_account_token.as_ref())
        {
            let seconds = t.expiration_seconds.unwrap_or(3600);
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: t.audience.iter().cloned().collect(),
                    expiration_seconds: Some(seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..Default::default()
            };
            let issued = Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .create_token_request(&account, &Default::default(), &request)
                .await
                .map_err(|e| {
                    ResolveError(format!(
                        "failed to fetch token for serviceaccount {account:?}: {e}"
                    ))
                })?;
            let token = issued.status.map(|s| s.token).unwrap_or_default();
            let file = safe_join(&dir.join(&v.name), &t.path)?;
            // A reader never sees half a token: the new file replaces the old in one rename.
            let tmp = file.with_extension("tmp");
            write_file(&tmp, token.as_bytes())?;
            std::fs::rename(&tmp, &file)
                .map_err(|e| ResolveError(format!("cannot write {}: {e}", file.display())))?;
            let due = std::time::Duration::from_secs((seconds.max(0) as u64) * 4 / 5);
            refresh = Some(refresh.map_or(due, |r| r.min(due)));
        }
    }
    Ok(refresh)
}

/// The directory of the volume bound to the claim `ns/name` (a `local` or `hostPath`
/// PersistentVolume); an error while the claim is missing or not bound yet.
async fn claim_dir(client: &kube::Client, ns: &str, name: &str) -> Result<PathBuf, ResolveError> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = claims
        .get_opt(name)
        .await
        .map_err(|e| ResolveError(format!("cannot read persistentvolumeclaim {name:?}: {e}")))?
        .ok_or_else(|| ResolveError(format!("persistentvolumeclaim \"{name}\" not found")))?;
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty())
        .filter(|_| claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .ok_or_else(|| ResolveError(format!("persistentvolumeclaim \"{name}\" is not bound")))?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume)
        .await
        .map_err(|e| ResolveError(format!("cannot read persistentvolume {volume:?}: {e}")))?
        .ok_or_else(|| ResolveError(format!("persistentvolume \"{volume}\" not found")))?;
    let spec = pv.spec.unwrap_or_default();
    spec.local
        .map(|l| l.path)
        .or(spec.host_path.map(|h| h.path))
        .map(PathBuf::from)
        .ok_or_else(|| {
            ResolveError(format!(
                "persistentvolume \"{volume}\": only local and hostPath volumes can be mounted"
            ))
        })
}

fn downward_file(
    pod: &Pod,
    f: &DownwardAPIVolumeFile,
    host_ip: IpAddr,
) -> Result<String, ResolveError> {
    if let Some(sel) = &f.field_ref {
        field_value(pod, sel, None, host_ip)
    } else if let Some(sel) = &f.resource_field_ref {
        resource_value(pod, None, sel)
    } else {
        Err(ResolveError(format!(
            "downwardAPI item {:?} has neither fieldRef nor resourceFieldRef",
            f.path
        )))
    }
}

/// Expands `$(VAR)` references from `env`; `$$` is a literal `$`; unknown references stay.
pub fn expand(s: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(') {
            match r.find(')') {
                Some(end) => {
                    let name = &r[..end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &r[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = r;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment of container `c`, in Kubernetes' order: `base` (the Service variables),
/// `envFrom` sources, then `env`.
pub async fn environment(
    client: &kube::Client,
    pod: &Pod,
    c: &Container,
    base: Vec<(String, String)>,
    ip: IpAddr,
    host_ip: IpAddr,
) -> Result<Vec<(String, String)>, ResolveError> {
    let ns = ns_of(pod);
    let mut vars: Vec<(String, String)> = base;
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| match vars
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(slot) => slot.1 = v,
        None => vars.push((k, v)),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (source, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (Source::ConfigMap, &r.name, r.optional),
            (None, Some(r)) => (Source::Secret, &r.name, r.optional),
            (None, None) => continue,
        };
        let Some(data) = source.required(client, ns, name, optional).await? else {
            continue;
        };
        for (k, v) in data {
            set(
                &mut vars,
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            let key_ref = match (&from.config_map_key_ref, &from.secret_key_ref) {
                (Some(r), _) => Some((Source::ConfigMap, &r.name, &r.key, r.optional)),
                (None, Some(r)) => Some((Source::Secret, &r.name, &r.key, r.optional)),
                (None, None) => None,
            };
            if let Some((source, name, key, optional)) = key_ref {
                match source.key(client, ns, name, key, optional).await? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(sel) = &from.field_ref {
                field_value(pod, sel, Some(ip), host_ip)?
            } else if let Some(sel) = &from.resource_field_ref {
                resource_value(pod, Some(&c.name), sel)?
            } else {
                String::new()
            }
        } else {
            let known: HashMap<String, String> = vars.iter().cloned().collect();
            expand(e.value.as_deref().unwrap_or(""), &known)
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

/// Everything the runtime needs to create container `c`.
pub fn container_config(
    c: &Container,
    env: Vec<(String, String)>,
    volumes: &HashMap<String, VolumeDir>,
    image: String,
    log_path: PathBuf,
) -> Result<ContainerConfig, ResolveError> {
    let known: HashMap<String, String> = env.iter().cloned().collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|a| expand(a, &known)).collect()
    };
    let (command, args) = (expand_all(&c.command), expand_all(&c.args));
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes.get(&m.name).ok_or_else(|| {
            ResolveError(format!(
                "volumeMount {:?}: no volume of that name in the pod",
                m.name
            ))
        })?;
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = safe_join(&v.path, sub)?;
                std::fs::create_dir_all(&p)
                    .map_err(|e| ResolveError(format!("cannot create subPath {sub:?}: {e}")))?;
                p
            }
            None => v.path.clone(),
        };
        mounts.push(Mount {
            host_path,
            container_path: m.mount_path.clone(),
            readonly: v.readonly || m.read_only == Some(true),
        });
    }
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let memory_limit = limits
        .and_then(|l| l.get("memory"))
        .map(|q| shoal_api::quantity::bytes(&q.0))
        .transpose()
        .map_err(|e| ResolveError(e.to_string()))?;
    let cpu_limit_millis = limits
        .and_then(|l| l.get("cpu"))
        .map(|q| shoal_api::quantity::millis(&q.0))
        .transpose()
        .map_err(|e| ResolveError(e.to_string()))?;
    Ok(ContainerConfig {
        name: c.name.clone(),
        image,
        command,
        args,
        env,
        working_dir: c.working_dir.clone(),
        mounts,
        ports: c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect(),
        memory_limit,
        cpu_limit_millis,
        log_path,
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_kubernetes() {
        let env: HashMap<String, String> = [
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "x y".to_owned()),
        ]
        .into();
        assert_eq!(expand("$(A)-$(B)", &env), "1-x y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(MISSING)", &env), "$(MISSING)");
        assert_eq!(expand("cost $5 $(A", &env), "cost $5 $(A");
    }

    #[test]
    fn key_paths_stay_inside_the_volume() {
        let d = Path::new("/v");
        assert!(safe_join(d, "a/b").is_ok());
        assert!(safe_join(d, "../etc/passwd").is_err());
        assert!(safe_join(d, "/etc/passwd").is_err());
        assert!(safe_join(d, "").is_err());
    }
}

/// The registry part of an image name, as pull secrets name registries: the first path element
/// when it looks like a host (a dot, a port, `localhost`), else `docker.io`.
pub fn image_registry(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// A registry as a docker config's key names it (`https://index.docker.io/v1/`,
/// `127.0.0.1:5000`, `https://ghcr.io`): its host, with Docker Hub's aliases as `docker.io`.
fn config_registry(key: &str) -> &str {
    let host = key
        .split_once("://")
        .map_or(key, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

/// The credentials for `registry` in a docker config (`.dockerconfigjson`'s `auths`, or a
/// legacy `.dockercfg`'s top level): `username`/`password`, or `auth` (base64 of `user:pass`).
pub fn docker_config_auth(
    config: &serde_json::Value,
    registry: &str,
) -> Option<shoal_runtime::ImageAuth> {
    use base64::Engine;
    let entries = config.get("auths").unwrap_or(config).as_object()?;
    let entry = entries
        .iter()
        .find(|(key, _)| config_registry(key) == registry)?
        .1;
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let (Some(username), Some(password)) = (text("username"), text("password")) {
        return Some(shoal_runtime::ImageAuth {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text("auth")?)
        .ok()?;
    let (username, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(shoal_runtime::ImageAuth {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// The credentials the pod's `imagePullSecrets` hold for `image`'s registry (the first secret
/// that has some), read as the kubelet reads them; secrets that are missing or of another
/// type are passed over.
pub async fn pull_auth(
    client: &kube::Client,
    pod: &Pod,
    image: &str,
) -> Option<shoal_runtime::ImageAuth> {
    let spec = pod.spec.as_ref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let registry = image_registry(image);
    for reference in spec.image_pull_secrets.iter().flatten() {
        let Ok(Some(secret)) = secrets.get_opt(&reference.name).await else {
            continue;
        };
        let key = match secret.type_.as_deref() {
            Some("kubernetes.io/dockerconfigjson") => ".dockerconfigjson",
            Some("kubernetes.io/dockercfg") => ".dockercfg",
            _ => continue,
        };
        let Some(config) = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.0).ok())
        else {
            continue;
        };
        if let Some(auth) = docker_config_auth(&config, registry) {
            return Some(auth);
        }
    }
    None
}

#[cfg(test)]
mod pull_secret_tests {
    use super::*;

    #[test]
    fn pull_secrets_match_the_images_registry() {
        assert_eq!(image_registry("busybox"), "docker.io");
        assert_eq!(image_registry("library/busybox:1"), "docker.io");
        assert_eq!(image_registry("127.0.0.1:5000/app:v1"), "127.0.0.1:5000");
        assert_eq!(image_registry("ghcr.io/me/app"), "ghcr.io");
        let config = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
            "127.0.0.1:5000": {"auth": "cHVsbGVyOnB1bGwtc2VjcmV0"},
        }});
        let hub = docker_config_auth(&config, "docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "pw")
        );
        let local = docker_config_auth(&config, "127.0.0.1:5000").unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("puller", "pull-secret")
        );
        assert!(docker_config_auth(&config, "ghcr.io").is_none());
        // A legacy .dockercfg has the registries at the top.
        let legacy = serde_json::json!({"ghcr.io": {"username": "u", "password": "p"}});
        assert!(docker_config_auth(&legacy, "ghcr.io").is_some());
    }
}

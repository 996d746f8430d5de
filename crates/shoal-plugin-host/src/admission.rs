//! The `admission` world: a policy validates (or mutates) one request per fresh instance.

use crate::health::Health;
use crate::{CallState, Host, PluginError, PluginKey, classify, guard};
use std::sync::Arc;
use std::time::Duration;

mod bindings {
    wasmtime::component::bindgen!({
        world: "admission",
        path: "wit",
        exports: { default: async },
    });
}

pub use bindings::shoal::plugin::admission_types::{
    AdmissionRequest, AdmissionResponse, GroupVersionKind, GroupVersionResource, UserInfo,
};

/// How long loading may spend checking settings.
const SETTINGS_TIMEOUT: Duration = Duration::from_secs(2);

/// A policy's answer, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    pub message: String,
    /// 400–599; 403 when the plugin gave none.
    pub code: u16,
    pub warnings: Vec<String>,
    /// A JSON patch (an array of operations), for mutating policies.
    pub patch: Option<serde_json::Value>,
}

/// A compiled, linked admission policy, ready for fresh instances.
#[derive(Clone)]
pub struct AdmissionModule {
    host: Host,
    pre: bindings::AdmissionPre<CallState>,
    health: Arc<Health>,
    pub digest: String,
}

impl AdmissionModule {
    /// Compiles `bytes` (checking `expected_digest` if given), links it against the admission
    /// world, and has it check `settings`: any failure means the module must not serve. Its
    /// calls are accounted to a health of its own (see [`AdmissionModule::load_as`]).
    pub async fn load(
        host: &Host,
        bytes: &[u8],
        expected_digest: Option<&str>,
        settings: &str,
    ) -> Result<Self, PluginError> {
        let key = PluginKey::cluster("ClusterAdmissionPolicy", "offline");
        let health = Health::new(key, "admission policy".into(), "PolicyFailed", None);
        Self::load_as(host, health, bytes, expected_digest, settings).await
    }

    /// As [`AdmissionModule::load`], with calls (the settings check included) accounted to
    /// `health`: its breaker, failure count, logs and notices.
    pub async fn load_as(
        host: &Host,
        health: Arc<Health>,
        bytes: &[u8],
        expected_digest: Option<&str>,
        settings: &str,
    ) -> Result<Self, PluginError> {
        let (pre, digest) = host
            .prepare(bytes, expected_digest, "admission", |l| {
                wasmtime_wasi::p2::add_to_linker_async(l)
            })
            .await?;
        let pre = bindings::AdmissionPre::new(pre).map_err(|e| {
            PluginError::Invalid(format!("does not implement shoal:plugin/admission: {e:#}"))
        })?;
        let module = AdmissionModule {
            host: host.clone(),
            pre,
            health,
            digest,
        };
        module.check_settings(settings).await?;
        Ok(module)
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    async fn check_settings(&self, settings: &str) -> Result<(), PluginError> {
        let mut store = wasmtime::Store::new(self.host.engine(), self.host.state(SETTINGS_TIMEOUT));
        guard(&mut store, true);
        let r = async {
            let inst = self.pre.instantiate_async(&mut store).await?;
            inst.call_validate_settings(&mut store, settings).await
        }
        .await;
        self.health.log_output(&store.data().output);
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(PluginError::Settings(msg)),
            Err(e) => Err(classify(&store, e)),
        }
    }

    /// Runs `validate` (or `mutate`) in a fresh instance with `timeout`, through the
    /// policy's health: refused at once while it is benched, its output logged, its outcome
    /// recorded.
    pub async fn review(
        &self,
        request: &AdmissionRequest,
        mutating: bool,
        timeout: Duration,
    ) -> Result<Verdict, PluginError> {
        let call = self.health.begin()?;
        let result = self.review_once(request, mutating, timeout).await;
        if let Err(e) = &result {
            call.fail(e);
        }
        result
    }

    async fn review_once(
        &self,
        request: &AdmissionRequest,
        mutating: bool,
        timeout: Duration,
    ) -> Result<Verdict, PluginError> {
        let mut store = wasmtime::Store::new(self.host.engine(), self.host.state(timeout));
        guard(&mut store, true);
        let r = async {
            let inst = self.pre.instantiate_async(&mut store).await?;
            if mutating {
                inst.call_mutate(&mut store, request).await
            } else {
                inst.call_validate(&mut store, request).await
            }
        };
        // The epoch deadline interrupts a guest that computes; this catches one blocked in
        // the host (it has nothing to block on today, but the bound is the contract).
        let r = match tokio::time::timeout(timeout + Duration::from_millis(100), r).await {
            Ok(r) => r,
            Err(_) => {
                return Err(PluginError::Timeout {
                    after: timeout,
                    written: crate::Written(store.data().output.last_lines()),
                });
            }
        };
        // Classified first: the error carries the last lines before the log takes them.
        let resp = r.map_err(|e| classify(&store, e));
        self.health.log_output(&store.data().output);
        let resp = resp?;
        verdict(resp, mutating)
    }
}

/// Checks what the guest answered.
fn verdict(r: AdmissionResponse, mutating: bool) -> Result<Verdict, PluginError> {
    let code = match r.code {
        None => 403,
        Some(c) if (400..600).contains(&c) => c,
        Some(c) => {
            return Err(PluginError::Answer(format!(
                "code {c} is not an HTTP error code (400-599)"
            )));
        }
    };
    let patch = match r.patch {
        None => None,
        Some(_) if !mutating => {
            return Err(PluginError::Answer(
                "a validating policy returned a patch; set mutating: true to allow mutation".into(),
            ));
        }
        Some(p) => {
            let v: serde_json::Value = serde_json::from_str(&p)
                .map_err(|e| PluginError::Answer(format!("patch is not JSON: {e}")))?;
            if !v.is_array() {
                return Err(PluginError::Answer(
                    "patch is not a JSON patch (an array of operations)".into(),
                ));
            }
            Some(v)
        }
    };
    Ok(Verdict {
        allowed: r.allowed,
        message: r.message.unwrap_or_default(),
        code,
        warnings: r.warnings,
        patch,
    })
}

/// A request with empty fields, to fill in.
pub fn request(operation: &str, kind: GroupVersionKind, settings: &str) -> AdmissionRequest {
    AdmissionRequest {
        uid: String::new(),
        operation: operation.to_owned(),
        resource: GroupVersionResource {
            group: kind.group.clone(),
            version: kind.version.clone(),
            resource: String::new(),
        },
        kind,
        sub_resource: String::new(),
        namespace: String::new(),
        name: String::new(),
        object: None,
        old_object: None,
        user_info: UserInfo {
            username: String::new(),
            uid: String::new(),
            groups: Vec::new(),
        },
        dry_run: false,
        settings: settings.to_owned(),
    }
}

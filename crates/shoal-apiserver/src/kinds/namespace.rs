//! Namespaces: a DNS-1123 label for a name, the `kubernetes` finalizer, `Active` on create and
//! `Terminating` while their content is deleted; the system namespaces cannot be deleted.

use super::Strategy;
use super::defaulting::{child, obj, set_default};
use crate::error::ApiResult;
use serde_json::{Value, json};
use shoal_api::{ResourceInfo, StatusError};

pub(super) struct NamespaceStrategy;
pub(super) static NAMESPACE: NamespaceStrategy = NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::Label
    }

    fn default(&self, o: &mut Value) {
        let Some(root) = obj(o) else { return };
        let spec = child(root, "spec");
        if let Some(s) = obj(spec) {
            set_default(s, "finalizers", json!(["kubernetes"]));
        }
    }

    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        Some(json!({"phase": "Active"}))
    }

    /// `spec.finalizers` (the namespace controller's `kubernetes`) keep a deleted namespace
    /// until its content is gone.
    fn holds_deletion(&self, o: &Value) -> bool {
        o.pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    }

    fn begin_deletion(&self, o: &mut Value) {
        o["status"] = json!({"phase": "Terminating"});
    }

    /// NamespaceLifecycle: the system namespaces may not be deleted.
    fn check_delete(&self, info: &ResourceInfo, o: &Value) -> ApiResult<()> {
        let name = crate::meta::name(o);
        if crate::bootstrap::SYSTEM_NAMESPACES.contains(&name) {
            return Err(StatusError::forbidden_object(
                info.plural,
                info.group,
                name,
                "this namespace may not be deleted",
            )
            .into());
        }
        Ok(())
    }
}

//! PodDisruptionBudgets (`policy/v1`): one of `minAvailable` and `maxUnavailable`, a status
//! whose counters are always present, and the eviction check `pods/eviction` makes against
//! them ([`crate::registry::Registry::evict`]).

use super::Strategy;
use super::defaulting::{obj, status_counters};
use serde_json::Value;
use shoal_api::Cause;

pub(super) struct DisruptionBudgetStrategy;
pub(super) static DISRUPTION_BUDGET: DisruptionBudgetStrategy = DisruptionBudgetStrategy;

impl Strategy for DisruptionBudgetStrategy {
    fn default(&self, o: &mut Value) {
        if let Some(root) = obj(o) {
            status_counters(
                root,
                &[
                    "disruptionsAllowed",
                    "currentHealthy",
                    "desiredHealthy",
                    "expectedPods",
                ],
            );
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        if spec.get("minAvailable").is_some() && spec.get("maxUnavailable").is_some() {
            out.push(Cause::invalid(
                "spec",
                spec,
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        for key in ["minAvailable", "maxUnavailable"] {
            match spec.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v >= 0) => {}
                Some(Value::String(s))
                    if s.strip_suffix('%')
                        .and_then(|p| p.parse::<u32>().ok())
                        .is_some_and(|p| p <= 100) => {}
                Some(v) => out.push(Cause::invalid(
                    format!("spec.{key}"),
                    v,
                    "must be a non-negative integer or a percentage between 0% and 100%",
                )),
            }
        }
    }
}

//! NetworkPolicies: `SetDefaults_NetworkPolicy` (each rule's ports default to TCP; policy
//! types default to `Ingress`, plus `Egress` when egress rules are given).

use super::Strategy;
use super::defaulting::{each, obj, set_default};
use serde_json::{Value, json};

pub(super) struct NetworkPolicyStrategy;
pub(super) static NETWORK_POLICY: NetworkPolicyStrategy = NetworkPolicyStrategy;

impl Strategy for NetworkPolicyStrategy {
    fn default(&self, o: &mut Value) {
        let Some(spec) = o.get_mut("spec").and_then(obj) else {
            return;
        };
        for direction in ["ingress", "egress"] {
            each(spec.get_mut(direction), |rule| {
                each(rule.get_mut("ports"), |p| {
                    set_default(p, "protocol", json!("TCP"))
                });
            });
        }
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        if spec
            .get("policyTypes")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            spec.insert("policyTypes".into(), types);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_default_to_tcp_and_types_follow_the_rules_given() {
        let mut p = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        NETWORK_POLICY.default(&mut p);
        assert_eq!(p["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(p["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let mut p = json!({"spec": {"podSelector": {}}});
        NETWORK_POLICY.default(&mut p);
        assert_eq!(p["spec"]["policyTypes"], json!(["Ingress"]));
        let mut p = json!({"spec": {"podSelector": {}, "policyTypes": ["Egress"]}});
        NETWORK_POLICY.default(&mut p);
        assert_eq!(p["spec"]["policyTypes"], json!(["Egress"]));
    }
}

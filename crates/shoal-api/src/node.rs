//! What components ask of a Node ([`NodeExt`]).

use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};

/// The Node annotation with the subnet of the node's container pods, which the other nodes
/// route to through the node's InternalIP (host-gw).
pub const CONTAINER_POD_CIDR: &str = "node.shoal.dev/container-pod-cidr";

pub trait NodeExt {
    /// Its condition of `type_`, if reported.
    fn condition(&self, type_: &str) -> Option<&NodeCondition>;
    /// Whether its `Ready` condition is `True`.
    fn is_ready(&self) -> bool;
    /// Its taints.
    fn taints(&self) -> &[Taint];
}

impl NodeExt for Node {
    fn condition(&self, type_: &str) -> Option<&NodeCondition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == type_))
    }

    fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }

    fn taints(&self) -> &[Taint] {
        self.spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[])
    }
}

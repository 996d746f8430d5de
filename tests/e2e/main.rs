//! End-to-end tests: the real `shoal` binary, the real kubectl, kube-rs.

mod admission;
mod autoscaling;
mod containers;
mod day2;
mod durability;
mod etcd_cluster;
mod identities;
mod ingress;
mod kube_client;
mod kubectl;
mod kubelet;
mod memory;
mod plugin_safety;
mod policies;
mod python_client;
mod rbac;
mod scheduler;
mod serverless;
mod serviceaccounts;
mod services;
mod store_tools;
mod workloads;

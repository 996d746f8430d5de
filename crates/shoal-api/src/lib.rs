//! Shoal's API model, with no I/O.
//!
//! Owns the resource table ([`resources`]: group, version, kind, plural, short names, scope,
//! subresources, printer columns), the Kubernetes `Status` error shape ([`status::StatusError`])
//! and label and field selectors ([`selector`]). The typed Kubernetes objects come from
//! `k8s-openapi`, re-exported as [`k8s`].
//!
//! Start at [`resources::RESOURCES`].

pub mod events;
pub mod net;
pub mod node;
pub mod pod;
pub mod policy;
pub mod predicates;
pub mod printers;
pub mod quantity;
pub mod query;
pub mod quota;
pub mod resources;
pub mod selector;
pub mod serverless;
pub mod status;
pub mod version;

pub use k8s_openapi as k8s;
pub use resources::{ResourceInfo, Subresource};
pub use status::{Cause, Details, StatusError};

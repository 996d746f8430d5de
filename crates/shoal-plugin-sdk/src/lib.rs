//! Write Shoal plugins in Rust. Enable the feature of the world you implement (`admission`
//! or `scheduler`), implement [`admission::Policy`] or [`scheduler::Plugin`], and name the
//! type in [`admission_policy!`] or [`scheduler_plugin!`]:
//!
//! ```ignore
//! use shoal_plugin_sdk::admission::{Policy, Request, Response};
//!
//! struct NoLatest;
//! impl Policy for NoLatest {
//!     type Settings = serde_json::Value;
//!     fn validate(req: &Request, _: &Self::Settings) -> Response {
//!         match req.object_str("/spec/containers/0/image") {
//!             Some(i) if i.ends_with(":latest") => Response::deny("images must be pinned"),
//!             _ => Response::allow(),
//!         }
//!     }
//! }
//! shoal_plugin_sdk::admission_policy!(NoLatest);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` is the plugin.

#[cfg(feature = "admission")]
pub mod admission;
#[cfg(feature = "scheduler")]
pub mod scheduler;

#[doc(hidden)]
pub use serde_json;

/// Parses settings JSON (`{}` when empty) into `T`, naming what is wrong.
pub fn parse_settings<T: serde::de::DeserializeOwned>(settings: &str) -> Result<T, String> {
    let s = if settings.trim().is_empty() {
        "{}"
    } else {
        settings
    };
    serde_json::from_str(s).map_err(|e| format!("invalid settings: {e}"))
}

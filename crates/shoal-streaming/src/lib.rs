//! Kubernetes' streaming protocols, server side, as the kubelet serves them for `kubectl exec`,
//! `attach`, `cp` and `port-forward` (the API server only authenticates and relays the upgraded
//! connection):
//!
//! - exec and attach over WebSocket, `v5.channel.k8s.io` (what kubectl 1.30+ asks first) and
//!   `v4.channel.k8s.io`: binary messages whose first byte is the channel (0 stdin, 1 stdout, 2
//!   stderr, 3 the closing `Status`, 4 terminal resize, 255 close of a channel, v5 only);
//! - exec and attach over SPDY/3.1 (kubectl's fallback, or `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`),
//!   `v5`/`v4` (a `Status` on the error stream) and `v3`/`v2` (plain-text errors) with one stream
//!   per standard stream named by its `streamType` header;
//! - port-forward over SPDY/3.1 (`portforward.k8s.io`: a pair of error and data streams per
//!   connection, with `port` and `requestID` headers), directly or tunnelled through WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`, what kubectl 1.31+ asks first).

mod exec;
mod portforward;
pub mod spdy;
mod upgrade;
mod websocket;

pub use exec::{ExecOptions, Runner, exec};
pub use portforward::{Dialer, port_forward};

/// The WebSocket subprotocols exec and attach speak, preferred first.
pub const WEBSOCKET_CHANNEL_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The SPDY stream protocols exec and attach speak, preferred first.
pub const SPDY_CHANNEL_PROTOCOLS: [&str; 4] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];
/// Port-forward's SPDY stream protocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// Port-forward's SPDY tunnelled in WebSocket.
pub const PORT_FORWARD_WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

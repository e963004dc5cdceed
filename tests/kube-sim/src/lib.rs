//! kube-sim: a simulated Kubernetes API server that real kubectl and kube-rs accept, with Istio's controllers emulated.

pub mod ca;
pub mod cidr;
pub mod compression;
pub mod controllers;
pub mod discovery;
pub mod fields;
pub mod kinds;
pub mod levers;
pub mod patch;
pub mod proto;
pub mod rbac;
pub mod registry;
pub mod scenario;
pub mod schema;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod testenv;
pub mod typed;
pub mod util;
pub mod version;

pub use levers::{ContinueExpiry, Denial, Fault, FaultKind, RequestLog, RequestRecord};
pub use scenario::{Error, Scenario};
pub use server::{Server, ServerOptions};
pub use version::{KubeVersion, RuntimeConfig, VersionError};

//! meshvm: add VMs to an Istio mesh — the library behind the `kubectl meshvm` plugins.
//!
//! Binaries are thin; every verb lives here as `observe → plan → apply`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod archive;
pub mod args;
pub mod bundle;
pub mod complete;
pub mod dispatch;
pub mod doctor;
pub mod errors;
pub mod flags;
pub mod global;
pub mod istio;
pub mod kube;
pub mod names;
pub mod output;
pub mod pki;
pub mod plan;
pub mod prepare;
pub mod rbac;
pub mod read;
pub mod register;
pub mod scope;
pub mod snapshot;
pub mod terminal;
pub mod vmfiles;

//! CLI and end-to-end tests of the kubectl-meshvm binaries: one binary, one module per area.

mod bad_input;
mod bundle;
mod common;
mod faults;
mod krew;
mod kubectl_plugin;
mod prepare;
mod register;
mod secrets;

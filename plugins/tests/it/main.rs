//! CLI and end-to-end tests of the kubectl-meshvm binaries: one binary, one module per area.

mod bad_input;
mod bundle;
mod common;
mod completion;
mod doctor;
mod faults;
mod help;
mod hints;
mod krew;
mod kubectl_plugin;
mod matrix;
mod prepare;
mod prometheus;
mod rbac;
mod register;
mod secrets;

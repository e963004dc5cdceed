//! kube-sim integration tests: one binary, one module per area.

mod binary;
mod compression;
mod controllers;
mod kube_rs;
mod kubectl;
mod levers;
mod rbac;
mod scenarios;
mod versions;

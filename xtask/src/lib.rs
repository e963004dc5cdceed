//! The project's tooling shared by `cargo xtask` and the tests: release archives and the krew
//! manifest (what proves a krew install works), and the runbook's flow with the version matrix
//! it runs on (what the demo and the matrix test run).

pub mod archive;
pub mod flow;
pub mod krew;

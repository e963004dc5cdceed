//! Release tooling shared by `cargo xtask dist` and the tests that prove a krew install works.

pub mod archive;
pub mod krew;

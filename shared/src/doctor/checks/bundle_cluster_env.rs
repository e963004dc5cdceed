//! PLACEHOLDER written by the lead so the crate compiles while the real check is written: overwrite freely.

use crate::doctor::{Check, CheckContext, Finding};
use crate::snapshot::Snapshot;

/// Placeholder for `bundle.cluster-env`.
pub struct BundleClusterEnv;

impl Check for BundleClusterEnv {
    fn id(&self) -> &'static str {
        "bundle.cluster-env"
    }
    fn describe(&self) -> &'static str {
        "not written yet"
    }
    fn run(&self, _snap: &Snapshot, _ctx: &CheckContext) -> Vec<Finding> {
        vec![Finding::skip(self.id(), "not written yet")]
    }
}

//! Doctor's report: table, JSON, YAML and SARIF, and the exit outcome.

use super::Finding;
use crate::istio::Era;

/// Everything doctor found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The era of the (first) cluster.
    pub era: Option<Era>,
    /// Auto mTLS in effect.
    pub auto_mtls: bool,
    /// Findings in check order.
    pub findings: Vec<Finding>,
}

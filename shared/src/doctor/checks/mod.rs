//! Every doctor check, one per file, listed once in [`ALL`].

use super::Check;

/// Every check, in report order.
pub static ALL: &[&dyn Check] = &[];

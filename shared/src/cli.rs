//! The verbs' shared edge, re-exported from the layers that own each part: [`crate::flags`]
//! (flags and durations), [`crate::errors`] (outcome, `Diagnose`, exit status), [`crate::output`]
//! (tables, `-o json|yaml`) and [`crate::terminal`] (colour, logging, spinner, prompts). New code
//! imports from those modules; this facade keeps `crate::cli::…` paths working.

pub use crate::dispatch::parse;
pub use crate::errors::*;
pub use crate::flags::*;
pub use crate::output::*;
pub use crate::terminal::*;

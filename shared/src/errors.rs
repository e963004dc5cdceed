//! How a verb ends: its [`Outcome`], the [`Diagnose`] trait every error implements, and
//! [`write_error`], which renders errors the kubectl way — `error: <what>` with the whole cause chain
//! and, where useful, `hint: <what to do>` — (`crate::terminal::exit` maps them to exit 1, or 2 for
//! usage errors). The bottom layer: it imports nothing of the crate.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::io::{self, Write};

/// How a verb ended when it did not fail with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done (exit 0).
    Success,
    /// The verb ran but found failures it already reported, e.g. doctor (exit 1).
    Findings,
}

/// What an error tells the edge beyond its message.
pub trait Diagnose: StdError {
    /// A line telling the operator what to do next.
    fn hint(&self) -> Option<String> {
        None
    }
    /// Usage errors exit 2, all others 1.
    fn is_usage(&self) -> bool {
        false
    }
}

/// A bad combination of flags or arguments found after parsing (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    /// What is wrong, naming the flag.
    pub message: String,
    /// What to type instead.
    pub hint: Option<String>,
}

impl UsageError {
    /// A usage error with an optional hint.
    pub fn new(message: impl Into<String>, hint: Option<&str>) -> Self {
        Self {
            message: message.into(),
            hint: hint.map(str::to_owned),
        }
    }
}

impl Diagnose for UsageError {
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
    fn is_usage(&self) -> bool {
        true
    }
}

/// Render an error with its whole source chain, skipping sources already quoted by their parent.
pub fn error_chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !line.is_empty() && !text.contains(&line) {
            let _ = write!(text, ": {line}");
        }
        source = cause.source();
    }
    text
}

/// True when some error in the chain is a broken pipe (the reader went away: not an error).
pub fn is_broken_pipe(err: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::BrokenPipe
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Write `error: …` and `hint: …` lines for an error.
pub fn write_error<E: Diagnose>(out: &mut impl Write, err: &E, color: bool) -> io::Result<()> {
    let (red, yellow, reset) = if color {
        ("\x1b[31;1m", "\x1b[33;1m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    writeln!(out, "{red}error{reset}: {}", error_chain(err))?;
    if let Some(hint) = err.hint() {
        writeln!(out, "{yellow}hint{reset}: {hint}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to create secret istio-system/cacerts")]
    struct Outer(#[source] io::Error);
    impl Diagnose for Outer {
        fn hint(&self) -> Option<String> {
            Some("check RBAC".into())
        }
    }

    #[test]
    fn errors_render_with_chain_and_hint() {
        let err = Outer(io::Error::other("connection refused"));
        let mut out = Vec::new();
        write_error(&mut out, &err, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error: failed to create secret istio-system/cacerts: connection refused\nhint: check RBAC\n"
        );
    }
}

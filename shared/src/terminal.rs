//! What only makes sense on a terminal, and what replaces it elsewhere: colour (never with
//! `NO_COLOR`), logging at the `-v` level on stderr, a spinner, and confirmation prompts (which
//! refuse without a terminal and name `--yes`).

use std::io::{self, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

use crate::errors::{Diagnose, Outcome, is_broken_pipe, write_error};
use crate::flags::CommonArgs;

/// Colour only on a terminal, and never when `NO_COLOR` is set to something.
pub fn color_enabled(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Send logs to stderr at the level `-v` asks for. `RUST_LOG` overrides.
pub fn init_logging(verbose: u8) {
    // Only meshvm's own messages by default: kube-rs logs transport errors at ERROR level that
    // meshvm already reports once, with context, as `error: …`.
    let default = match verbose {
        0 => "meshvm=warn",
        1 => "meshvm=info",
        2 => "meshvm=debug,kube_client=info",
        _ => "meshvm=trace,kube_client=debug,kube=debug,info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(color_enabled(&io::stderr()))
        .with_target(verbose >= 2)
        .try_init();
}

/// A spinner on stderr while slow work runs; hidden when stderr is not a terminal.
pub fn progress(message: impl Into<std::borrow::Cow<'static, str>>) -> indicatif::ProgressBar {
    if !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A confirmation prompt could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Not on a terminal, and `--yes` was not given.
    #[error("{action} needs confirmation, and there is no terminal to ask on")]
    NotATerminal {
        /// What would have been confirmed.
        action: String,
    },
    /// The terminal could not be read.
    #[error("could not read the answer to the confirmation prompt")]
    Io(#[source] dialoguer::Error),
}

impl Diagnose for PromptError {
    fn hint(&self) -> Option<String> {
        match self {
            PromptError::NotATerminal { .. } => {
                Some("run again with --yes to confirm non-interactively".into())
            }
            PromptError::Io(_) => None,
        }
    }
}

/// Ask before doing `action`: `--yes` answers yes; without a terminal it is an error naming `--yes`.
pub fn confirm(action: &str, yes: bool) -> Result<bool, PromptError> {
    if yes {
        return Ok(true);
    }
    if !(io::stdin().is_terminal() && io::stderr().is_terminal()) {
        return Err(PromptError::NotATerminal {
            action: action.to_owned(),
        });
    }
    dialoguer::Confirm::new()
        .with_prompt(format!("{action}?"))
        .default(false)
        .interact_on(&dialoguer::console::Term::stderr())
        .map_err(PromptError::Io)
}

/// Turn a verb's result into the process exit status, printing errors on stderr.
pub fn exit<E: Diagnose + 'static>(result: Result<Outcome, E>) -> ExitCode {
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let mut stderr = io::stderr().lock();
            let _ = write_error(&mut stderr, &err, color_enabled(&io::stderr()));
            ExitCode::from(if err.is_usage() { 2 } else { 1 })
        }
    }
}

/// What every verb binary does after parsing: logging at the `-v` level.
pub fn start(common: &CommonArgs) {
    init_logging(common.verbose);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to create secret istio-system/cacerts")]
    struct Outer(#[source] io::Error);
    impl Diagnose for Outer {}

    #[test]
    fn broken_pipe_is_not_an_error() {
        let err = Outer(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&err));
        assert_eq!(exit(Err(err)), ExitCode::SUCCESS);
        let err = Outer(io::Error::other("boom"));
        assert!(!is_broken_pipe(&err));
    }

    #[test]
    fn prompts_refuse_without_terminal_and_name_yes() {
        assert!(confirm("delete namespace x", true).unwrap());
        // Tests never run with a terminal on stdin and stderr both.
        if !(io::stdin().is_terminal() && io::stderr().is_terminal()) {
            let err = confirm("delete namespace x", false).unwrap_err();
            assert!(err.hint().unwrap().contains("--yes"));
            assert!(err.to_string().contains("delete namespace x"));
        }
    }
}

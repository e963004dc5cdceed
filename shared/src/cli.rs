//! Common flags, output format, dry-run, exit status, error rendering, prompts and progress.
//!
//! Every verb flattens [`KubeArgs`] and [`CommonArgs`] into its own clap struct, resolves them
//! into plain options, and ends through [`exit`], which renders errors the kubectl way:
//! `error: <what>` and, where useful, `hint: <what to do>`.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Connection flags every verb accepts, with kubectl's names and meanings.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(next_help_heading = "Connection (as kubectl)")]
pub struct KubeArgs {
    /// Path to the kubeconfig file to use (default: $KUBECONFIG, then ~/.kube/config)
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (doctor accepts it more than once)
    #[arg(long, value_name = "NAME")]
    pub context: Vec<String>,
    /// The kubeconfig cluster to use
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The namespace scope for this request (overrides the context's namespace)
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Username to impersonate for the operation
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate for the operation (repeatable)
    #[arg(long = "as-group", value_name = "GROUP")]
    pub as_group: Vec<String>,
    /// How long to wait for one server request before giving up (e.g. 1s, 2m, 0 = no limit)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

impl KubeArgs {
    /// The one context a single-cluster verb may use; more than one is a usage error.
    pub fn single_context(&self) -> Result<Option<&str>, UsageError> {
        match self.context.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.as_str())),
            _ => Err(UsageError::new(
                "--context was given more than once",
                Some("only `kubectl meshvm doctor` checks several clusters; give one --context"),
            )),
        }
    }
}

/// Flags shared by every verb that are not about the connection.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct CommonArgs {
    /// More logging on stderr: -v info, -vv debug, -vvv trace
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// `-o` for verbs that print objects or tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A human-readable table
    #[default]
    Table,
    /// JSON
    Json,
    /// YAML
    Yaml,
}

/// `--dry-run`, as kubectl spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Change the cluster
    #[default]
    None,
    /// Print what would be sent; contact the server only to read
    Client,
    /// Send every write with `dryRun=All`: the server validates, nothing is stored
    Server,
}

impl DryRun {
    /// Whether writes are held back in any form.
    pub fn is_dry(self) -> bool {
        self != DryRun::None
    }
}

/// Flags of verbs that change the cluster.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct MutateArgs {
    /// Only show (client) or only validate on the server (server) what would change
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, default_value = "none", default_missing_value = "client")]
    pub dry_run: DryRun,
    /// Answer yes to confirmation prompts (needed when stdin/stderr are not a terminal)
    #[arg(short = 'y', long)]
    pub yes: bool,
}

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
fn is_broken_pipe(err: &(dyn StdError + 'static)) -> bool {
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

/// A verb whose issue has not landed yet: never a fake success.
#[derive(Debug, thiserror::Error)]
#[error("not implemented yet: `kubectl meshvm {verb}`")]
pub struct NotImplemented {
    /// The verb.
    pub verb: &'static str,
}

impl Diagnose for NotImplemented {}

/// Parse a verb's flags, first warning on stderr when the dispatcher that started this binary
/// is another version (a half-upgraded install), even for `--help`.
pub fn parse<T: clap::Parser>() -> T {
    warn_version_skew();
    T::parse()
}

/// What every verb binary does after parsing: logging at the `-v` level.
pub fn start(common: &CommonArgs) {
    init_logging(common.verbose);
}

fn warn_version_skew() {
    let dispatcher = std::env::var(crate::dispatch::VERSION_ENV).ok();
    if let Some(warning) =
        crate::dispatch::version_skew(env!("CARGO_PKG_VERSION"), dispatcher.as_deref())
    {
        let _ = writeln!(io::stderr().lock(), "{warning}");
    }
}

/// Parse kubectl's duration words: `0`, `30` (seconds), `500ms`, `1s`, `2m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; use e.g. 30s, 2m or 0 for no limit".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if !text.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "{text:?} is not a duration; use e.g. 30s, 2m, 1h30m or 0"
        ));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: missing unit after {rest:?} (use ms, s, m or h)"))?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?}: {number:?} is not a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
                ));
            }
        };
        total += Duration::from_secs_f64(value * scale);
        rest = next;
    }
    Ok(total)
}

/// Write a table the way kubectl prints one: a header row, no borders, columns left-aligned and
/// three spaces apart, no trailing blanks. ANSI colour in a cell does not upset the alignment.
pub fn write_table<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> io::Result<()> {
    let mut builder = tabled::builder::Builder::default();
    builder.push_record(header);
    for row in rows {
        builder.push_record(row);
    }
    let mut table = builder.build();
    table
        .with(tabled::settings::Style::empty())
        .with(tabled::settings::Padding::new(0, 3, 0, 0));
    for line in table.to_string().lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Serialize `value` as YAML text (the way `kubectl get -o yaml` prints objects).
pub fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, io::Error> {
    serde_saphyr::to_string(value).map_err(|e| io::Error::other(e.to_string()))
}

/// Print `value` as JSON or YAML, or return `false` for table output (the caller draws it).
pub fn write_data<T: serde::Serialize>(
    out: &mut impl Write,
    format: OutputFormat,
    value: &T,
) -> io::Result<bool> {
    match format {
        OutputFormat::Table => Ok(false),
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
            writeln!(out)?;
            Ok(true)
        }
        OutputFormat::Yaml => {
            out.write_all(to_yaml(value)?.as_bytes())?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Demo {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        mutate: MutateArgs,
        #[arg(short, long, value_enum, default_value = "table")]
        output: OutputFormat,
    }

    #[test]
    fn cli_is_consistent() {
        Demo::command().debug_assert();
    }

    #[test]
    fn flags_parse_like_kubectl() {
        let d = Demo::parse_from([
            "x",
            "-n",
            "foo",
            "--context",
            "a",
            "--as",
            "me",
            "--as-group",
            "g1",
            "--as-group",
            "g2",
            "--request-timeout",
            "2m",
            "--dry-run",
            "-o",
            "yaml",
            "-vv",
        ]);
        assert_eq!(d.kube.namespace.as_deref(), Some("foo"));
        assert_eq!(d.kube.single_context().unwrap(), Some("a"));
        assert_eq!(d.kube.as_group, ["g1", "g2"]);
        assert_eq!(d.kube.request_timeout, Duration::from_secs(120));
        assert_eq!(
            d.mutate.dry_run,
            DryRun::Client,
            "bare --dry-run means client"
        );
        assert_eq!(d.output, OutputFormat::Yaml);
        assert_eq!(d.common.verbose, 2);
        let d = Demo::parse_from(["x", "--dry-run=server"]);
        assert_eq!(d.mutate.dry_run, DryRun::Server);
        assert_eq!(
            d.kube.request_timeout,
            Duration::from_secs(30),
            "default 30s"
        );
    }

    #[test]
    fn two_contexts_are_a_usage_error_for_single_cluster_verbs() {
        let d = Demo::parse_from(["x", "--context", "a", "--context", "b"]);
        let err = d.kube.single_context().unwrap_err();
        assert!(err.is_usage());
        assert!(err.hint().unwrap().contains("doctor"));
    }

    #[test]
    fn tables_align_like_kubectl_even_with_colour() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            ["NAME", "STATUS"],
            [
                ["a".to_string(), "\x1b[31mfail\x1b[0m".to_string()],
                ["longer-name".to_string(), "pass".to_string()],
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "NAME          STATUS\na             \x1b[31mfail\x1b[0m\nlonger-name   pass\n"
        );
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("45", Duration::from_secs(45)),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), want, "{text}");
        }
        for bad in ["", "s", "10x", "1h30", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

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

//! The flags every verb shares, with kubectl's names and meanings: connection (`KubeArgs`),
//! verbosity (`CommonArgs`), `-o` (`OutputFormat`), `--dry-run`/`--yes` (`MutateArgs`), and
//! kubectl's duration words. Above `errors` only.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::errors::UsageError;

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
    /// `-n`, merged with the older spelling a verb still accepts for it (`--vm-namespace` on
    /// prepare and bundle): either names the namespace; both may be given only with one value.
    /// `None` when neither was given (the context's namespace applies: [`crate::kube::resolve_namespace`]).
    pub fn namespace_flag(
        &self,
        alias: &str,
        alias_value: Option<&str>,
    ) -> Result<Option<String>, UsageError> {
        match (self.namespace.as_deref(), alias_value) {
            (Some(n), Some(a)) if n != a => Err(UsageError::new(
                format!("-n {n} and {alias} {a} name two different namespaces"),
                Some(&format!(
                    "give the namespace once, with -n ({alias} is an older name for it)"
                )),
            )),
            (Some(n), _) => Ok(Some(n.to_owned())),
            (None, a) => Ok(a.map(str::to_owned)),
        }
    }

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

/// Parse kubectl's duration words: `0`, `30` (seconds), `500ms`, `1s`, `2m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; use e.g. 30s, 2m or 0 for no limit".into());
    }
    // kubectl parses with Go's time.ParseDuration, whose durations are int64 nanoseconds
    // (about 292 years): longer ones are refused there, and here, instead of overflowing.
    let max = Duration::from_nanos(i64::MAX as u64);
    let too_long = || {
        format!(
            "{text:?} is too long: a duration is at most {}h",
            max.as_secs() / 3600
        )
    };
    if let Ok(secs) = text.parse::<u64>() {
        let d = Duration::from_secs(secs);
        return if d > max { Err(too_long()) } else { Ok(d) };
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
        total = Duration::try_from_secs_f64(value * scale)
            .ok()
            .and_then(|d| total.checked_add(d))
            .filter(|d| *d <= max)
            .ok_or_else(too_long)?;
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::Diagnose as _;
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
        for bad in [
            "",
            "s",
            "10x",
            "1h30",
            "abc",
            "99999999999999999999h",
            "18446744073709551615",
            "9223372037s",
            "2562048h1h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
        assert!(
            parse_duration("2562047h").is_ok(),
            "the longest Go duration in hours"
        );
    }
}

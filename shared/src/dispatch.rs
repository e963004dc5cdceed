//! `kubectl meshvm`: find the verb among kubectl-style global flags and hand over to its binary.
//!
//! kubectl sends `kubectl meshvm -n foo prepare …` to `kubectl-meshvm` with everything after
//! `meshvm`; krew links only this binary, so it finds the sibling `kubectl-meshvm-<verb>` next to
//! its real (symlink-resolved) path, else on PATH, and execs it with the remaining arguments.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::args::VERBS;

/// Environment variable through which the dispatcher tells a verb binary its own version.
pub const VERSION_ENV: &str = "MESHVM_DISPATCHER_VERSION";

/// Long flags that take a value in the next word (unless written `--flag=value`).
const VALUE_FLAGS: [&str; 11] = [
    "--kubeconfig",
    "--context",
    "--cluster",
    "--user",
    "--namespace",
    "--as",
    "--as-group",
    "--request-timeout",
    "--output",
    "--istio-namespace",
    "--dry-run",
];
/// Short flags that take a value (as the next word, or glued: `-nfoo`).
const VALUE_SHORTS: [char; 2] = ['n', 'o'];

/// What the dispatcher should do with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Print the verb listing.
    Help,
    /// Print the version.
    Version,
    /// Run a verb binary with these arguments.
    Verb {
        /// The verb (`prepare`, `bundle`, `register`, `doctor`).
        verb: &'static str,
        /// Arguments for the verb binary, global flags included, in their order.
        args: Vec<OsString>,
    },
    /// The first word that is not a flag is not a verb.
    Unknown(String),
}

/// Find the verb: skip global flags and their values; the first other word is the verb.
pub fn route(args: &[OsString]) -> Route {
    let mut i = 0;
    let mut help = false;
    while i < args.len() {
        let word = args[i].to_string_lossy();
        if word == "--" {
            i += 1;
            break;
        }
        if word == "-h" || word == "--help" {
            help = true;
        } else if word == "--version" {
            return Route::Version;
        } else if let Some(long) = word.strip_prefix("--") {
            let bare = long.split('=').next().unwrap_or(long);
            // `--dry-run` alone means client; only a following mode word is its value.
            let takes_value = VALUE_FLAGS.contains(&format!("--{bare}").as_str())
                && !long.contains('=')
                && (bare != "dry-run"
                    || args
                        .get(i + 1)
                        .is_some_and(|n| matches!(n.to_str(), Some("none" | "client" | "server"))));
            if takes_value {
                i += 1;
            }
        } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            let first = short.chars().next().unwrap_or_default();
            if VALUE_SHORTS.contains(&first) && short.len() == 1 {
                i += 1;
            }
        } else {
            break;
        }
        i += 1;
    }
    let Some(word) = args.get(i) else {
        return Route::Help;
    };
    let text = word.to_string_lossy();
    let (verb, extra) = match text.as_ref() {
        "deregister" => ("register", Some("--deregister")),
        other => match VERBS.iter().find(|(v, _)| *v == other) {
            Some((v, _)) => (*v, None),
            None if help => return Route::Help,
            None => return Route::Unknown(other.to_owned()),
        },
    };
    let mut rest: Vec<OsString> = args[..i].to_vec();
    rest.retain(|a| a != "--");
    if let Some(flag) = extra {
        rest.push(flag.into());
    }
    rest.extend(args[i + 1..].iter().cloned());
    Route::Verb { verb, args: rest }
}

/// What a verb binary parses its flags with: first a warning on stderr when the dispatcher that
/// started it is another version (a half-upgraded install), even for `--help`.
pub fn parse<T: clap::Parser>() -> T {
    if let Some(warning) = version_skew(
        env!("CARGO_PKG_VERSION"),
        std::env::var(VERSION_ENV).ok().as_deref(),
    ) {
        let _ = writeln!(io::stderr().lock(), "{warning}");
    }
    T::parse()
}

/// The listing `kubectl meshvm` prints without a verb.
pub fn write_help(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "kubectl meshvm {} — add VMs to an Istio mesh, across networks, through the gateway\n",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(
        out,
        "Usage: kubectl meshvm [connection flags] <verb> [flags]\n"
    )?;
    writeln!(out, "Verbs:")?;
    for (verb, line) in VERBS {
        writeln!(out, "  {verb:<10}{line}")?;
    }
    writeln!(
        out,
        "\nRun `kubectl meshvm <verb> --help` for a verb's flags. `deregister` is `register --deregister`."
    )
}

/// The binary that implements `verb`: beside our real path first (krew's store), then PATH.
pub fn locate(verb: &str, own_exe: Option<&Path>) -> Option<PathBuf> {
    let name = format!("kubectl-meshvm-{verb}{}", std::env::consts::EXE_SUFFIX);
    if let Some(dir) = own_exe
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let sibling = dir.join(&name);
        if sibling.is_file() {
            return Some(sibling);
        }
    }
    which::which(OsStr::new(&name)).ok()
}

/// A verb binary's warning when the dispatcher that started it is another version.
pub fn version_skew(own: &str, dispatcher: Option<&str>) -> Option<String> {
    match dispatcher {
        Some(theirs) if !theirs.is_empty() && theirs != own => Some(format!(
            "warning: kubectl-meshvm is version {theirs} but this verb binary is {own}; reinstall meshvm so all its binaries match"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatcher cannot parse with clap (it must not reject a verb's flags), so its list of
    /// value-taking global flags is checked against the verbs' clap definitions: every flag all
    /// four verbs share that takes a value is skipped with its value, and every listed flag is
    /// one that takes a value in some verb.
    #[test]
    fn value_flags_match_the_verbs_clap_definitions() {
        use std::collections::BTreeSet;
        let tree = crate::args::command_tree();
        let verbs: Vec<&clap::Command> = tree.get_subcommands().collect();
        let takes_value = |a: &clap::Arg| a.get_action().takes_values();
        let longs = |c: &clap::Command| -> BTreeSet<String> {
            c.get_arguments()
                .filter(|a| takes_value(a))
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect()
        };
        let shared: BTreeSet<String> = verbs
            .iter()
            .map(|c| longs(c))
            .reduce(|a, b| a.intersection(&b).cloned().collect())
            .unwrap();
        let any: BTreeSet<String> = verbs.iter().flat_map(|c| longs(c)).collect();
        let listed: BTreeSet<String> = VALUE_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        let missing: Vec<_> = shared.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "value flags every verb has, not skipped by the dispatcher: {missing:?}"
        );
        let stray: Vec<_> = listed.difference(&any).collect();
        assert!(
            stray.is_empty(),
            "dispatcher value flags no verb takes a value for: {stray:?}"
        );
        let shorts: BTreeSet<char> = verbs
            .iter()
            .flat_map(|c| c.get_arguments())
            .filter(|a| takes_value(a))
            .filter_map(clap::Arg::get_short)
            .filter(|s| {
                verbs
                    .iter()
                    .all(|c| c.get_arguments().any(|a| a.get_short() == Some(*s)))
            })
            .collect();
        let listed: BTreeSet<char> = VALUE_SHORTS.iter().copied().collect();
        assert!(
            shorts.is_subset(&listed),
            "short value flags every verb has: {shorts:?}, listed: {listed:?}"
        );
    }

    fn r(words: &[&str]) -> Route {
        route(&words.iter().map(OsString::from).collect::<Vec<_>>())
    }
    fn verb(v: &'static str, args: &[&str]) -> Route {
        Route::Verb {
            verb: v,
            args: args.iter().map(OsString::from).collect(),
        }
    }

    #[test]
    fn routes() {
        let cases: &[(&[&str], Route)] = &[
            (&[], Route::Help),
            (&["--help"], Route::Help),
            (&["-h"], Route::Help),
            (&["--version"], Route::Version),
            (&["prepare", "-x"], verb("prepare", &["-x"])),
            (&["-n", "foo", "prepare"], verb("prepare", &["-n", "foo"])),
            (
                &["-nfoo", "doctor", "-o", "json"],
                verb("doctor", &["-nfoo", "-o", "json"]),
            ),
            (
                &["--namespace=foo", "bundle"],
                verb("bundle", &["--namespace=foo"]),
            ),
            (
                &[
                    "--kubeconfig",
                    "/k",
                    "--context",
                    "c",
                    "-v",
                    "doctor",
                    "--help",
                ],
                verb(
                    "doctor",
                    &["--kubeconfig", "/k", "--context", "c", "-v", "--help"],
                ),
            ),
            (
                &["--context", "doctor", "doctor"],
                verb("doctor", &["--context", "doctor"]),
            ),
            (
                &["--dry-run", "register", "s"],
                verb("register", &["--dry-run", "s"]),
            ),
            (
                &["--dry-run", "server", "register"],
                verb("register", &["--dry-run", "server"]),
            ),
            (
                &["deregister", "svc", "1.2.3.4"],
                verb("register", &["--deregister", "svc", "1.2.3.4"]),
            ),
            (&["--help", "doctor"], verb("doctor", &["--help"])),
            (&["frobnicate"], Route::Unknown("frobnicate".into())),
            (&["-n", "x", "frob"], Route::Unknown("frob".into())),
            (&["--", "doctor"], verb("doctor", &[])),
        ];
        for (words, want) in cases {
            assert_eq!(&r(words), want, "{words:?}");
        }
    }

    #[test]
    fn help_lists_every_verb_once() {
        let mut out = Vec::new();
        write_help(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for (v, _) in VERBS {
            assert_eq!(text.matches(&format!("  {v} ")).count(), 1, "{v} in {text}");
        }
    }

    #[test]
    fn skew_warning() {
        assert!(
            version_skew("0.1.0", Some("0.2.0"))
                .unwrap()
                .contains("0.2.0")
        );
        assert!(version_skew("0.1.0", Some("0.1.0")).is_none());
        assert!(version_skew("0.1.0", None).is_none());
    }
}

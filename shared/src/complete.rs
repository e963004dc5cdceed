//! `kubectl_complete-meshvm`: answers kubectl's plugin completion protocol (kubectl ≥ 1.26).
//!
//! kubectl runs `kubectl_complete-meshvm <words after "meshvm"…> <word being completed>` and
//! reads Cobra's `__complete` format: one `value<TAB>description` per line, then `:<directive>`.
//! The candidates come from the same clap tree the verbs parse with, so nothing is listed by hand.

use std::ffi::OsString;
use std::io::{self, Write};

/// Cobra's ShellCompDirectiveNoFileComp: do not fall back to file names.
const NO_FILE_COMP: u8 = 4;
/// Cobra's ShellCompDirectiveDefault: let the shell complete file names.
const DEFAULT: u8 = 0;

/// Write the completions for `words` (the last one is the word being completed).
///
/// kubectl itself lists `kubectl-meshvm-<verb>` binaries it finds on PATH as sub-commands (the
/// `cargo install` layout), so a verb kubectl will already offer is left out here; under krew
/// only `kubectl-meshvm` is on PATH and every verb comes from us. Either way each shows once.
pub fn write_completions(out: &mut impl Write, words: &[OsString]) -> io::Result<()> {
    write_completions_with(out, words, |verb| {
        which::which(format!(
            "kubectl-meshvm-{verb}{}",
            std::env::consts::EXE_SUFFIX
        ))
        .is_ok()
    })
}

/// [`write_completions`] with the "does kubectl list this verb itself?" test injected.
pub fn write_completions_with(
    out: &mut impl Write,
    words: &[OsString],
    kubectl_lists: impl Fn(&str) -> bool,
) -> io::Result<()> {
    let mut cmd = crate::args::command_tree();
    let completing_verb = words.len() <= 1;
    let mut args: Vec<OsString> = vec!["meshvm".into()];
    let mut words = words.to_vec();
    // `deregister` is `register --deregister`.
    if let Some(first) = words.first_mut()
        && first == "deregister"
    {
        *first = "register".into();
    }
    if words.is_empty() {
        words.push(OsString::new());
    }
    args.extend(words);
    let index = args.len() - 1;
    let candidates = clap_complete::engine::complete(&mut cmd, args, index, None)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut any = false;
    for c in &candidates {
        let value = c.get_value().to_string_lossy().into_owned();
        if c.is_hide_set() || !seen.insert(value.clone()) {
            continue;
        }
        if completing_verb
            && crate::args::VERBS.iter().any(|(v, _)| *v == value)
            && kubectl_lists(&value)
        {
            continue;
        }
        any = true;
        match c.get_help() {
            Some(help) => {
                let help = help.to_string();
                let line = help.lines().next().unwrap_or_default();
                writeln!(out, "{value}\t{line}")?;
            }
            None => writeln!(out, "{value}")?,
        }
    }
    writeln!(out, ":{}", if any { NO_FILE_COMP } else { DEFAULT })
}

/// The completion binaries' whole body: print the completions for `words` on stdout.
pub fn main(words: &[OsString]) -> std::process::ExitCode {
    let mut out = io::stdout().lock();
    match write_completions(&mut out, words).and_then(|()| out.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr().lock(), "error: completion failed: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(words: &[&str]) -> String {
        let mut out = Vec::new();
        let words: Vec<OsString> = words.iter().map(OsString::from).collect();
        write_completions_with(&mut out, &words, |_| false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn offers_each_verb_once() {
        let text = complete(&[""]);
        for (verb, _) in crate::args::VERBS {
            let n = text
                .lines()
                .filter(|l| l.split('\t').next() == Some(verb))
                .count();
            assert_eq!(n, 1, "{verb} in {text}");
        }
        assert!(text.ends_with(":4\n"), "{text}");
    }

    #[test]
    fn leaves_out_verbs_kubectl_lists_itself() {
        let mut out = Vec::new();
        write_completions_with(&mut out, &[OsString::new()], |v| v == "doctor").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.lines().any(|l| l.starts_with("doctor\t")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("prepare\t")), "{text}");
    }

    #[test]
    fn offers_a_verbs_flags() {
        let text = complete(&["doctor", "--"]);
        for flag in [
            "--filename",
            "--bundle",
            "--fix",
            "--context",
            "--kubeconfig",
            "--output",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{flag}\t")) || l == flag),
                "{flag} missing in {text}"
            );
        }
        assert!(
            !text.contains("--vm-namespace"),
            "prepare's flag leaked: {text}"
        );
    }

    #[test]
    fn offers_enum_values() {
        let text = complete(&["doctor", "-o", ""]);
        assert!(text.contains("sarif"), "{text}");
    }
}

//! `kubectl_complete-meshvm`: answers kubectl's plugin completion protocol (kubectl ≥ 1.26).
//!
//! kubectl runs `kubectl_complete-meshvm <words after "meshvm"…> <word being completed>` and
//! reads Cobra's `__complete` format: one `value<TAB>description` per line, then `:<directive>`.
//! Flags and verbs come from the same clap tree the verbs parse with, so nothing is listed by
//! hand. The values of flags that name things — namespaces, contexts, Services, ServiceAccounts,
//! WorkloadGroups, the gateway Service — come from the kubeconfig and the cluster, read with the
//! connection flags already on the command line (`--kubeconfig`, `--context`, `-n`, …), as
//! kubectl's own `__complete` does for `kubectl get pods -n <TAB>`.

use std::ffi::OsString;
use std::io::{self, Write};

/// Cobra's ShellCompDirectiveNoFileComp: do not fall back to file names.
const NO_FILE_COMP: u8 = 4;
/// Cobra's ShellCompDirectiveDefault: let the shell complete file names.
const DEFAULT: u8 = 0;

/// How long completion may spend asking the cluster before it offers nothing: a shell waits on it.
const CLUSTER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// `deregister` as completion describes it (it is `register --deregister`, no binary of its own).
const DEREGISTER: (&str, &str) = (
    "deregister",
    "Remove a VM's address from its Service, or its WorkloadEntry (register --deregister)",
);

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
    let (verb, mut words) = split_verb(words);
    let completing_verb = verb.is_none();
    let mut args: Vec<OsString> = vec!["meshvm".into()];
    if let Some(verb) = verb {
        args.push(verb.into());
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
        if completing_verb && value == "register" {
            writeln!(out, "{}\t{}", DEREGISTER.0, DEREGISTER.1)?;
        }
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

/// The verb the words name (after any connection flags before it; `deregister` is `register`),
/// and the verb's words: the flags given before the verb, then the rest, the word being
/// completed last. No verb yet: `None` and the words as given (the verb is being completed).
fn split_verb(words: &[OsString]) -> (Option<&'static str>, Vec<OsString>) {
    let Some((_, before)) = words.split_last() else {
        return (None, Vec::new());
    };
    match crate::dispatch::route(before) {
        crate::dispatch::Route::Verb { verb, mut args } => {
            if let Some(last) = words.last() {
                args.push(last.clone());
            }
            (Some(verb), args)
        }
        _ => (None, words.to_vec()),
    }
}

/// What a flag's value (or a positional word) names, to be read from the kubeconfig or the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Noun {
    Namespace,
    Context,
    Cluster,
    User,
    Service,
    ServiceAccount,
    WorkloadGroup,
    /// A Service of the Istio namespace that fronts gateway Pods (`--gateway-service`).
    GatewayService,
}

/// The noun a flag's value names, for the flags that name something that exists.
fn noun_of(flag: &str) -> Option<Noun> {
    Some(match flag {
        "-n" | "--namespace" | "--vm-namespace" | "--istio-namespace" => Noun::Namespace,
        "--context" => Noun::Context,
        "--cluster" => Noun::Cluster,
        "--user" => Noun::User,
        "--service" => Noun::Service,
        "-s" | "--service-account" => Noun::ServiceAccount,
        "--workload-group" => Noun::WorkloadGroup,
        "--gateway-service" => Noun::GatewayService,
        _ => return None,
    })
}

/// What the last word is: the value of a naming flag (or `register`'s SERVICE word), with the
/// prefix typed so far; `None` when clap's static completion answers (flags, enum values, files).
fn wanted(verb: &str, words: &[OsString], cmd: &clap::Command) -> Option<(Noun, String)> {
    let (current, before) = words.split_last()?;
    let current = current.to_string_lossy();
    if let Some((flag, prefix)) = current.split_once('=')
        && flag.starts_with("--")
    {
        return noun_of(flag).map(|n| (n, prefix.to_owned()));
    }
    if current.starts_with('-') {
        return None;
    }
    if let Some(previous) = before.last().map(|w| w.to_string_lossy())
        && takes_value(cmd, &previous)
    {
        return noun_of(&previous).map(|n| (n, current.into_owned()));
    }
    // `register SERVICE IP PORT…`: the first positional word names a Service.
    if verb == "register" && positionals(before, cmd) == 0 {
        return Some((Noun::Service, current.into_owned()));
    }
    None
}

/// Whether `word` is a flag of `cmd` that takes its value in the next word.
fn takes_value(cmd: &clap::Command, word: &str) -> bool {
    let arg = if let Some(long) = word.strip_prefix("--") {
        cmd.get_arguments().find(|a| {
            a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|al| al.contains(&long))
        })
    } else if let Some(short) = word.strip_prefix('-').filter(|s| s.chars().count() == 1) {
        let c = short.chars().next().unwrap_or_default();
        cmd.get_arguments().find(|a| a.get_short() == Some(c))
    } else {
        None
    };
    arg.is_some_and(|a| {
        a.get_action().takes_values() && a.get_num_args().is_none_or(|n| n.min_values() > 0)
    })
}

/// How many positional words `words` hold (flags and their values skipped).
fn positionals(words: &[OsString], cmd: &clap::Command) -> usize {
    let mut n = 0;
    let mut skip = false;
    for word in words {
        let word = word.to_string_lossy();
        if skip {
            skip = false;
        } else if word.starts_with('-') {
            skip = !word.contains('=') && takes_value(cmd, &word);
        } else {
            n += 1;
        }
    }
    n
}

/// The names the cluster (or kubeconfig) has for `noun`, starting with `prefix`, sorted.
/// `verb_words` are the verb's words before the one being completed: their connection flags
/// pick the kubeconfig, context and namespace.
async fn names(
    noun: Noun,
    prefix: &str,
    verb_words: &[OsString],
    cmd: &clap::Command,
) -> Result<Vec<String>, String> {
    use clap::FromArgMatches;
    let mut argv: Vec<OsString> = vec!["meshvm".into()];
    argv.extend(verb_words.iter().cloned());
    let matches = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .map_err(|e| e.to_string())?;
    let mut kube = crate::flags::KubeArgs::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    if kube.request_timeout.is_zero() || kube.request_timeout > CLUSTER_DEADLINE {
        kube.request_timeout = CLUSTER_DEADLINE;
    }
    let flag = |id: &str| matches.try_get_one::<String>(id).ok().flatten().cloned();
    let mut found: Vec<String> = match noun {
        Noun::Context | Noun::Cluster | Noun::User => {
            let (config, _) = crate::kube::load_kubeconfig(kube.kubeconfig.as_deref())
                .map_err(|e| e.to_string())?;
            match noun {
                Noun::Context => config.contexts.into_iter().map(|c| c.name).collect(),
                Noun::Cluster => config.clusters.into_iter().map(|c| c.name).collect(),
                _ => config.auth_infos.into_iter().map(|u| u.name).collect(),
            }
        }
        _ => {
            let context = kube.context.first().cloned();
            let conn = crate::kube::connect(&kube, context.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            let namespace = flag("vm_namespace").unwrap_or_else(|| conn.namespace().to_owned());
            let istio_namespace = flag("istio_namespace")
                .unwrap_or_else(|| crate::istio::DEFAULT_ISTIO_NAMESPACE.to_owned());
            cluster_names(&conn, noun, &namespace, &istio_namespace)
                .await
                .map_err(|e| e.to_string())?
        }
    };
    found.retain(|n| n.starts_with(prefix));
    found.sort();
    found.dedup();
    Ok(found)
}

/// The names of `noun` in the cluster: namespaces cluster-wide, the rest in `namespace`
/// (gateway Services in `istio_namespace`).
async fn cluster_names(
    conn: &crate::kube::Connection,
    noun: Noun,
    namespace: &str,
    istio_namespace: &str,
) -> Result<Vec<String>, crate::kube::Error> {
    use ::kube::api::{Api, DynamicObject, ListParams};
    use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};

    use crate::kube::Request;
    use crate::read::{list_all, list_metadata};

    let lp = ListParams::default();
    let named = |metas: Vec<::kube::api::ObjectMeta>| -> Vec<String> {
        metas.into_iter().filter_map(|m| m.name).collect()
    };
    Ok(match noun {
        Noun::Namespace => {
            let api: Api<Namespace> = Api::all(conn.client.clone());
            named(list_metadata(conn, &api, Request::new("list", "namespaces"), &lp).await?)
        }
        Noun::Service => {
            let api: Api<Service> = Api::namespaced(conn.client.clone(), namespace);
            let action = Request::new("list", "services").ns(namespace);
            named(list_metadata(conn, &api, action, &lp).await?)
        }
        Noun::ServiceAccount => {
            let api: Api<ServiceAccount> = Api::namespaced(conn.client.clone(), namespace);
            let action = Request::new("list", "serviceaccounts").ns(namespace);
            named(list_metadata(conn, &api, action, &lp).await?)
        }
        Noun::WorkloadGroup => {
            let kind = crate::istio::IstioKind::WorkloadGroup;
            let Some(version) = kind.served_version(conn).await? else {
                return Ok(Vec::new());
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(conn.client.clone(), namespace, &kind.resource(&version));
            let action = Request::new("list", kind.resource_name()).ns(namespace);
            named(list_metadata(conn, &api, action, &lp).await?)
        }
        Noun::GatewayService => {
            // A gateway's Service selects its Pods by an `istio` label naming a gateway: 1.4.2's
            // charts/gateways/values.yaml:31 `istio: ingressgateway`, 1.22.0's
            // samples/multicluster/rendered/eastwest-gateway.network1.iop.yaml:12
            // `istio: eastwestgateway`; istiod's own Service selects `istio: pilot`.
            let api: Api<Service> = Api::namespaced(conn.client.clone(), istio_namespace);
            let action = Request::new("list", "services").ns(istio_namespace);
            list_all(conn, &api, action, &lp, |s: Service| {
                let gateway = s
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.selector.as_ref())
                    .and_then(|sel| sel.get("istio"))
                    .is_some_and(|v| v.ends_with("gateway"));
                gateway.then_some(s.metadata.name).flatten()
            })
            .await?
        }
        Noun::Context | Noun::Cluster | Noun::User => Vec::new(),
    })
}

/// The completions that come from the kubeconfig or the cluster, when the last word names
/// something (`-n <TAB>`, `--context <TAB>`, `register <TAB>`…): `None` when clap's static
/// completion should answer. Failing to reach the cluster offers nothing (and no file names).
pub async fn cluster_completions(words: &[OsString]) -> Option<Vec<String>> {
    let (verb, words) = split_verb(words);
    let verb = verb?;
    let cmd = crate::args::command_tree().find_subcommand(verb)?.clone();
    let (noun, prefix) = wanted(verb, &words, &cmd)?;
    let before = &words[..words.len() - 1];
    let found = tokio::time::timeout(CLUSTER_DEADLINE, names(noun, &prefix, before, &cmd)).await;
    Some(match found {
        Ok(Ok(names)) => names,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "completion could not list {noun:?}");
            Vec::new()
        }
        Err(_) => Vec::new(),
    })
}

/// The completion binaries' whole body: print the completions for `words` on stdout.
pub async fn main(words: &[OsString]) -> std::process::ExitCode {
    let from_cluster = cluster_completions(words).await;
    let mut out = io::stdout().lock();
    let written = match from_cluster {
        Some(names) => names
            .iter()
            .try_for_each(|n| writeln!(out, "{n}"))
            .and_then(|()| writeln!(out, ":{NO_FILE_COMP}")),
        None => write_completions(&mut out, words),
    };
    match written.and_then(|()| out.flush()) {
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
    fn offers_deregister_beside_register_and_verbs_after_global_flags() {
        let text = complete(&[""]);
        assert!(
            text.lines().any(|l| l.starts_with("deregister\t")),
            "{text}"
        );
        let text = complete(&["-n", "x", "--context", "c", ""]);
        assert!(text.lines().any(|l| l.starts_with("doctor\t")), "{text}");
        let text = complete(&["-n", "x", "doctor", "--fi"]);
        assert!(text.lines().any(|l| l.starts_with("--fix")), "{text}");
        let text = complete(&["deregister", "--deregister"]);
        assert!(text.contains("--deregister"), "{text}");
    }

    #[test]
    fn names_are_asked_of_the_cluster_only_for_flags_that_name_things() {
        let tree = crate::args::command_tree();
        let register = tree.find_subcommand("register").unwrap();
        let words = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            wanted(
                "register",
                &words(&["-n", "vm", "--workload-group", "v"]),
                register
            ),
            Some((Noun::WorkloadGroup, "v".into()))
        );
        assert_eq!(
            wanted("register", &words(&["--service=ab"]), register),
            Some((Noun::Service, "ab".into()))
        );
        // SERVICE is the first positional word only; IP is not a name.
        assert_eq!(
            wanted("register", &words(&["-n", "x", "web"]), register),
            Some((Noun::Service, "web".into()))
        );
        assert_eq!(wanted("register", &words(&["web", "1"]), register), None);
        assert_eq!(wanted("register", &words(&["-o", ""]), register), None);
        assert_eq!(wanted("register", &words(&["--addr"]), register), None);
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

//! `kubectl meshvm doctor`: pre-flight checks before STRICT mTLS.
//!
//! `Snapshot` → every check in [`checks::ALL`] → [`report::Report`]. Checks are pure: they read
//! a [`Snapshot`] and a [`CheckContext`] (era, auto mTLS, the resolved mesh model) and return
//! findings; IO lives in [`crate::snapshot`] and in the report writer.

pub mod checks;
pub mod fix;
#[cfg(test)]
mod live_tests;
pub mod mesh;
pub mod report;
pub mod strict;
#[cfg(test)]
pub(crate) mod testutil;
pub mod traffic;

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::args::{DoctorArgs, DoctorOutput, FailOn};
use crate::errors::{Diagnose, Outcome, UsageError};
use crate::flags::KubeArgs;
use crate::istio::{DEFAULT_ISTIO_NAMESPACE, Era};
use crate::kube::Connection;
use crate::snapshot::{Kind, Obj, Origin, Snapshot, VmBundle};

pub use report::Report;

/// Why doctor could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that do not go together.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Manifests or the bundle could not be read.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
    /// The cluster could not be read or written.
    #[error(transparent)]
    Kube(#[from] crate::kube::Error),
    /// A `--fix` write did not land.
    #[error(transparent)]
    Write(crate::plan::write::Error),
    /// `--fix` needs confirmation that cannot be asked for.
    #[error(transparent)]
    Prompt(#[from] crate::terminal::PromptError),
    /// `--fix --strict` or `--undo` could not go ahead.
    #[error(transparent)]
    Strict(#[from] strict::Error),
    /// `--prometheus`'s header or CA files could not be used.
    #[error(transparent)]
    Prometheus(#[from] traffic::SetupError),
    /// Writing the report failed.
    #[error("failed to write the report")]
    Print(#[source] io::Error),
    /// `--istio-namespace` names a namespace without an Istio control plane.
    #[error(
        "no Istio control plane in namespace {namespace} (context {context}): no istiod, istio-pilot or istio-citadel Deployment and no istio ConfigMap there"
    )]
    NoControlPlane {
        /// The namespace `--istio-namespace` named.
        namespace: String,
        /// The kubeconfig context read.
        context: String,
        /// Where the cluster's control plane runs, when one was found.
        found: Option<String>,
    },
}

impl Diagnose for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Usage(e) => e.hint(),
            Error::Snapshot(e) => e.hint(),
            Error::Kube(e) => e.hint(),
            Error::Write(e) => e.hint(),
            Error::Prompt(e) => e.hint(),
            Error::Prometheus(e) => e.hint(),
            Error::Strict(e) => e.hint(),
            Error::Print(_) => None,
            Error::NoControlPlane { found: Some(ns), .. } => Some(format!(
                "found one in {ns}: pass --istio-namespace {ns} (or drop the flag: doctor finds it)"
            )),
            Error::NoControlPlane { found: None, .. } => Some(
                "pass --istio-namespace NS, the namespace istiod (Istio 1.4: istio-pilot and istio-citadel) runs in; this cluster shows no Istio control plane in any namespace"
                    .into(),
            ),
        }
    }
    fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }
}

/// Where doctor reads the mesh from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `-f` manifests (`-` is standard input).
    Files(Vec<PathBuf>),
    /// Live clusters: the current context (`[]`) or each `--context`.
    Live(Vec<String>),
    /// Only `--bundle`, judged on its own.
    BundleOnly,
}

/// Doctor's validated options.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Where the mesh comes from.
    pub source: Source,
    /// `--bundle`.
    pub bundle: Option<PathBuf>,
    /// What changes the checks' judgement.
    pub checks: CheckOptions,
    /// `-o`.
    pub output: DoctorOutput,
    /// `--fail-on`.
    pub fail_on: FailOn,
    /// `--fix`.
    pub fix: bool,
    /// `--yes`.
    pub yes: bool,
    /// `-R`: read `-f` directories' subdirectories too.
    pub recursive: bool,
    /// `--dry-run` of `--fix`.
    pub dry_run: crate::flags::DryRun,
    /// Connection flags.
    pub kube: KubeArgs,
    /// `--prometheus` and its companions: traffic evidence ([`traffic`]).
    pub prometheus: Option<traffic::PrometheusOptions>,
    /// `--fix --strict`: the staged STRICT rollout ([`strict`]).
    pub strict: bool,
    /// `-n a,b` with `--strict`: the namespaces it is limited to (empty: all).
    pub strict_namespaces: Vec<String>,
    /// `--undo-file`.
    pub undo_file: Option<PathBuf>,
    /// `--undo`.
    pub undo: Option<PathBuf>,
    /// `--wait` of `--strict`: how long to wait for each namespace (`Duration::ZERO`: no limit).
    pub wait: Option<std::time::Duration>,
}

impl DoctorOptions {
    /// Validate the flags (no IO).
    pub fn resolve(args: DoctorArgs) -> Result<Self, UsageError> {
        let source = if !args.filename.is_empty() {
            if !args.kube.context.is_empty() {
                return Err(UsageError::new(
                    "-f and --context cannot be combined",
                    Some("check manifests with -f, or clusters with --context, in separate runs"),
                ));
            }
            if args
                .filename
                .iter()
                .filter(|p| p.as_os_str() == "-")
                .count()
                > 1
            {
                // kubectl refuses the same (kubernetes/cli-runtime@v0.33.9
                // pkg/resource/builder.go:388-392, StdinMultiUseError).
                return Err(UsageError::new(
                    "-f - can be given once: standard input is read once",
                    Some(
                        "concatenate the manifests into one stream: cat a.yaml b.yaml | kubectl meshvm doctor -f -",
                    ),
                ));
            }
            Source::Files(args.filename)
        } else if args.bundle.is_some() && args.kube.context.is_empty() && !args.fix {
            Source::BundleOnly
        } else {
            Source::Live(args.kube.context.clone())
        };
        if args.mutate.dry_run.is_dry() && !args.fix {
            return Err(UsageError::new(
                "--dry-run goes with --fix (doctor writes nothing without it)",
                Some(
                    "run `kubectl meshvm doctor --fix --dry-run=server` to see what --fix would create",
                ),
            ));
        }
        if args.fix {
            match &source {
                Source::Files(_) => {
                    return Err(UsageError::new(
                        "--fix needs a live cluster, not -f manifests",
                        Some(
                            "add the suggested DestinationRules to your manifests, or drop -f to fix the current context",
                        ),
                    ));
                }
                Source::Live(contexts) if contexts.len() > 1 => {
                    return Err(UsageError::new(
                        "--fix works on one cluster at a time",
                        Some("run `kubectl meshvm doctor --fix --context NAME` once per cluster"),
                    ));
                }
                _ => {}
            }
        }
        let prometheus = match &args.prometheus {
            Some(url) => {
                if matches!(&source, Source::Live(contexts) if contexts.len() > 1) {
                    return Err(UsageError::new(
                        "--prometheus goes with one cluster: its traffic is judged against that cluster's peer authentication",
                        Some(
                            "run doctor once per cluster, each with --context NAME and that cluster's --prometheus URL",
                        ),
                    ));
                }
                if source == Source::BundleOnly {
                    return Err(UsageError::new(
                        "--prometheus needs the mesh (a cluster or -f manifests), not --bundle alone",
                        Some(
                            "add --context NAME (or run in the cluster's current context without --bundle)",
                        ),
                    ));
                }
                Some(traffic::PrometheusOptions::resolve(
                    url,
                    args.window.as_deref().unwrap_or("24h"),
                    &args.prometheus_header,
                    args.prometheus_ca.clone(),
                )?)
            }
            None => None,
        };
        // With --strict, -n names the namespaces to roll out to (comma-separated: kubectl's -n
        // is one value); it is not the connection's namespace, which doctor does not use.
        let strict_namespaces = if args.strict {
            strict::namespaces_flag(args.kube.namespace.as_deref())
        } else {
            Vec::new()
        };
        if args.wait && args.mutate.dry_run.is_dry() {
            return Err(UsageError::new(
                "--wait watches a rollout that writes: --dry-run writes nothing to wait for",
                Some(
                    "drop --wait to see the plan, or --dry-run to roll out namespace by namespace",
                ),
            ));
        }
        let mut kube = args.kube;
        if args.strict {
            kube.namespace = None;
        }
        Ok(Self {
            source,
            prometheus,
            strict: args.strict,
            strict_namespaces,
            undo_file: args.undo_file,
            undo: args.undo,
            wait: args
                .wait
                .then(|| args.timeout.unwrap_or(strict::DEFAULT_WAIT_TIMEOUT)),
            bundle: args.bundle,
            checks: CheckOptions {
                auto_mtls: args.auto_mtls,
                now: None,
                istio_namespace: (args.istio_namespace != DEFAULT_ISTIO_NAMESPACE)
                    .then_some(args.istio_namespace),
                expiry_warning_days: Some(args.expiry_warning_days),
            },
            output: args.output,
            fail_on: args.fail_on,
            fix: args.fix,
            yes: args.mutate.yes,
            recursive: args.recursive,
            dry_run: args.mutate.dry_run,
            kube,
        })
    }
}

/// `kubectl meshvm doctor`.
pub async fn main(args: DoctorArgs) -> Result<Outcome, Error> {
    crate::rbac::Verb::Doctor.set_current();
    if args.print_rbac {
        crate::rbac::print(
            crate::rbac::Verb::Doctor,
            &crate::rbac::Namespaces {
                istio: args.istio_namespace.clone(),
                vm: None,
            },
        );
        return Ok(Outcome::Success);
    }
    let opts = DoctorOptions::resolve(args)?;
    let color = crate::terminal::color_enabled(&io::stdout());
    run(&opts, &mut io::stdout().lock(), &mut io::stderr(), color).await
}

/// Observe, check, optionally fix, and write the report to `out` (`--fix` talk goes to `err`).
pub async fn run(
    opts: &DoctorOptions,
    out: &mut impl Write,
    err: &mut impl Write,
    color: bool,
) -> Result<Outcome, Error> {
    // The header and CA files first: a wrong path is bad input, before any cluster is read.
    let prometheus = opts
        .prometheus
        .as_ref()
        .map(traffic::Client::new)
        .transpose()?;
    if let Some(path) = &opts.undo {
        return strict::undo(opts, path, err).await;
    }
    let mut conns: Vec<Connection> = Vec::new();
    let mut snaps = match &opts.source {
        Source::Files(paths) => vec![Snapshot::from_inputs(
            paths,
            opts.recursive,
            &mut io::stdin().lock(),
        )?],
        Source::BundleOnly => vec![Snapshot::default()],
        Source::Live(contexts) => {
            let wanted: Vec<Option<&str>> = if contexts.is_empty() {
                vec![None]
            } else {
                contexts.iter().map(|c| Some(c.as_str())).collect()
            };
            let mut snaps = Vec::new();
            for context in wanted {
                let conn = crate::kube::connect(&opts.kube, context).await?;
                let spinner = crate::terminal::progress(format!(
                    "reading the mesh of context {}",
                    conn.context
                ));
                let snap =
                    Snapshot::observe_in(&conn, opts.checks.istio_namespace.as_deref()).await;
                spinner.finish_and_clear();
                snaps.push(snap?);
                conns.push(conn);
            }
            snaps
        }
    };
    if let Some(ns) = &opts.checks.istio_namespace {
        for snap in &mut snaps {
            check_istio_namespace(snap, ns)?;
        }
    }
    for note in snaps.iter().flat_map(|s| &s.notes) {
        let _ = writeln!(err, "note: {note}");
    }
    if let Some(path) = &opts.bundle {
        snaps[0].bundle = Some(VmBundle::read(path)?);
    }
    if opts.fix
        && !opts.strict
        && let Some(conn) = conns.first()
    {
        let planned = {
            let ctx = CheckContext::new(&snaps[0], &opts.checks, vec![]);
            fix::plan(&snaps[0], &ctx)
        };
        if planned.is_empty() {
            let _ = writeln!(
                err,
                "--fix: nothing to apply (only the runbook's DestinationRules are applied; see the hints for the rest)"
            );
        } else {
            let _ = writeln!(
                err,
                "--fix: creates as meshvm (each only while no object of its name exists):\n---\n{}",
                fix::render_yaml(&planned)
            );
            if opts.dry_run.is_dry() {
                fix::dry_run(conn, &planned, opts.dry_run, err)
                    .await
                    .map_err(fix_error)?;
            } else if crate::terminal::confirm(
                &format!(
                    "apply {} DestinationRule(s) to context {}",
                    planned.len(),
                    conn.context
                ),
                opts.yes,
            )? {
                // One row per rule, so a failure part-way says what was and was not written.
                let mut plan = fix::rows(&planned);
                let result =
                    crate::plan::write::execute(conn, &mut plan, crate::flags::DryRun::None).await;
                let _ = plan.write(err, crate::flags::OutputFormat::Table, false);
                if let Err(failure) = result {
                    return Err(fix_error(failure.error));
                }
                let bundle = snaps[0].bundle.take();
                let spinner = crate::terminal::progress("reading the mesh again after --fix");
                let snap = Snapshot::observe_in(conn, opts.checks.istio_namespace.as_deref()).await;
                spinner.finish_and_clear();
                snaps[0] = snap?;
                snaps[0].bundle = bundle;
            }
        }
    }
    let mut report = run_all(&snaps, &opts.checks);
    if let Some(client) = &prometheus {
        let spinner = crate::terminal::progress(format!(
            "asking Prometheus at {} who sent plaintext",
            client.options().url
        ));
        let evidence = client.evidence().await;
        spinner.finish_and_clear();
        let ctx = CheckContext::new(&snaps[0], &opts.checks, vec![]);
        report
            .findings
            .extend(traffic::findings(&evidence, client.options(), |ns| {
                ctx.mesh.ns_mode(ns)
            }));
        report.namespaces =
            Report::readiness(snaps.iter().flat_map(namespaces_of), &report.findings);
    }
    // --fix --strict: on the readiness just judged (with --prometheus, its evidence too).
    let manifests = match conns.first() {
        Some(conn) if opts.strict => {
            Some(rollout(opts, conn, prometheus.as_ref(), &snaps[0], &report, err).await?)
        }
        _ => None,
    };
    if let Some(manifests) = manifests.filter(|_| {
        opts.dry_run == crate::flags::DryRun::Client && opts.output == DoctorOutput::Yaml
    }) {
        // GitOps: the plan as manifests, and nothing else, on stdout.
        return match out.write_all(manifests.as_bytes()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::Print(e)),
            _ => Ok(Outcome::Success),
        };
    }
    // One named context: its findings say so too, and their hints target it.
    if let Source::Live(contexts) = &opts.source
        && let [context] = contexts.as_slice()
    {
        for f in &mut report.findings {
            attribute(f, context);
        }
    }
    // A kubeconfig named on the command line is named in every hinted command too, or the
    // command would run against another cluster.
    if let Some(path) = &opts.kube.kubeconfig {
        let path = path.to_string_lossy();
        for f in &mut report.findings {
            f.hint = hint_with_flag(&f.hint, "--kubeconfig", &path);
        }
    }
    // Without a terminal --fix cannot ask, so a hinted `doctor --fix` carries --yes: run as
    // printed in a script, it does what it says (prepare's restart hint does the same).
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        for f in &mut report.findings {
            f.hint = fix_for_scripts(&f.hint);
        }
    }
    match report.write(
        out,
        opts.output,
        color && opts.output == DoctorOutput::Table,
    ) {
        Ok(()) => {}
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Error::Print(e)),
    }
    if opts.strict {
        // The rollout is what was asked: blocked namespaces are its expected answer, said
        // above, not a failure of the run.
        return Ok(Outcome::Success);
    }
    Ok(report.outcome(opts.fail_on))
}

/// `--fix --strict`: plan on `report`'s readiness, show, confirm, write the undo file, apply.
/// Returns the plan as manifests.
async fn rollout(
    opts: &DoctorOptions,
    conn: &Connection,
    prometheus: Option<&traffic::Client>,
    snap: &Snapshot,
    report: &Report,
    err: &mut impl Write,
) -> Result<String, Error> {
    let ctx = CheckContext::new(snap, &opts.checks, vec![]);
    let era = ctx.era.ok_or(strict::Error::NoEra)?;
    let kind = match era {
        Era::Legacy => crate::istio::IstioKind::Policy,
        Era::Modern => crate::istio::IstioKind::PeerAuthentication,
    };
    let version = kind
        .served_version(conn)
        .await?
        .ok_or_else(|| strict::Error::NotServed {
            resource: kind.resource_name(),
        })?;
    let rollout = strict::plan(&ctx, &report.namespaces, &opts.strict_namespaces, &version)?;
    let manifests = rollout.manifests();
    if !rollout.blocked.is_empty() {
        let _ = write!(
            err,
            "--fix --strict: left alone, blocked (fix what blocks them, then run again):\n{}",
            rollout.describe_blocked()
        );
    }
    if !rollout.already.is_empty() {
        let _ = writeln!(
            err,
            "--fix --strict: already STRICT: {}",
            rollout.already.join(", ")
        );
    }
    if let Some(note) = &rollout.mesh_note {
        let _ = writeln!(err, "--fix --strict: {note}");
    }
    if rollout.steps.is_empty() {
        let _ = writeln!(err, "--fix --strict: nothing to apply");
        // Asked for, the undo file is there: with nothing to undo, as nothing changed.
        if let Some(path) = opts.undo_file.as_ref().filter(|_| !opts.dry_run.is_dry()) {
            rollout.undo(&conn.context).write_new(path)?;
            let _ = writeln!(
                err,
                "--fix --strict: wrote an empty undo to {} (nothing changed)",
                strict::shell_word(&path.to_string_lossy())
            );
        }
        return Ok(manifests);
    }
    let to_stdout =
        opts.dry_run == crate::flags::DryRun::Client && opts.output == DoctorOutput::Yaml;
    if !to_stdout {
        let _ = writeln!(
            err,
            "--fix --strict: makes STRICT in context {}:\n---\n{manifests}",
            conn.context
        );
    }
    let mut plan = rollout.rows();
    if opts.dry_run.is_dry() {
        let result = crate::plan::write::execute(conn, &mut plan, opts.dry_run).await;
        let how = match opts.dry_run {
            crate::flags::DryRun::Server => {
                "the API server validated each write (dryRun=All) and stored nothing"
            }
            _ => "nothing was sent",
        };
        let _ = writeln!(err, "--fix --strict (dry run): {how}; no undo file written");
        let _ = plan.write(err, crate::flags::OutputFormat::Table, false);
        result.map_err(|failure| fix_error(failure.error))?;
    } else if crate::terminal::confirm(
        &format!(
            "make {} object(s) STRICT in context {}",
            rollout.steps.len(),
            conn.context
        ),
        opts.yes,
    )? {
        strict::Apply {
            opts,
            conn,
            prometheus,
        }
        .run(&rollout, err)
        .await?;
    }
    Ok(manifests)
}

/// Whether a Deployment or ConfigMap is part of an Istio control plane: istiod (also revisioned,
/// `istiod-<rev>`), 1.4's istio-pilot or istio-citadel, or the mesh config ConfigMap (`istio`,
/// `istio-<rev>` holding `mesh`).
fn is_control_plane(obj: &Obj) -> bool {
    match obj.kind() {
        "Deployment" => {
            matches!(obj.name(), "istiod" | "istio-pilot" | "istio-citadel")
                || obj.name().starts_with("istiod-")
        }
        "ConfigMap" => {
            obj.name() == "istio"
                || (obj.name().starts_with("istio-") && obj.data_keys().contains("mesh"))
        }
        _ => false,
    }
}

/// `--istio-namespace NS` must name a namespace holding an Istio control plane: on a live cluster
/// a wrong one is an error (naming where the control plane is, when the Deployments and
/// ConfigMaps doctor lists cluster-wide show one), rather than a report about objects that do not
/// exist. With `-f` the manifests need not hold the control plane, so it is no error; when they
/// hold one elsewhere, a note says so. A cluster that refuses to list Deployments cannot tell.
fn check_istio_namespace(snap: &mut Snapshot, ns: &str) -> Result<(), Error> {
    use crate::snapshot::SourceKind;
    let planes: Vec<&Obj> = snap
        .of(Kind::Deployment)
        .iter()
        .chain(snap.of(Kind::ConfigMap))
        .filter(|o| is_control_plane(o))
        .collect();
    if planes.iter().any(|o| o.namespace() == ns) {
        return Ok(());
    }
    // Deployments first: a remote cluster's istio ConfigMap is no control plane to judge.
    let found = planes
        .iter()
        .find(|o| o.kind() == "Deployment")
        .or(planes.first())
        .map(|o| o.namespace().to_string());
    match snap.source {
        SourceKind::Live => {
            if snap.refused.contains_key(&Kind::Deployment) {
                return Ok(());
            }
            Err(Error::NoControlPlane {
                namespace: ns.to_string(),
                context: snap.context.clone().unwrap_or_default(),
                found,
            })
        }
        SourceKind::Files => {
            if let Some(found) = found {
                snap.notes.push(crate::snapshot::Note {
                    origin: None,
                    message: format!(
                        "the manifests hold an Istio control plane in namespace {found}, not in --istio-namespace {ns}; judged with {ns} as given"
                    ),
                });
            }
            Ok(())
        }
        SourceKind::None => Ok(()),
    }
}

/// `hint` with `--yes` added to each backticked command that would ask first (`kubectl meshvm
/// doctor … --fix`, `kubectl meshvm prepare … --restart-control-plane`) and neither confirms nor
/// is a dry run.
fn fix_for_scripts(hint: &str) -> String {
    hint.split('`')
        .enumerate()
        .map(|(i, part)| {
            let words: Vec<&str> = part.split_whitespace().collect();
            let asks = (part.starts_with("kubectl meshvm doctor") && words.contains(&"--fix"))
                || (part.starts_with("kubectl meshvm prepare")
                    && words.contains(&"--restart-control-plane"));
            if i % 2 == 1
                && asks
                && !words
                    .iter()
                    .any(|w| matches!(*w, "--yes" | "-y") || w.starts_with("--dry-run"))
            {
                format!("{part} --yes")
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// Mark a finding as from kubeconfig context `context`, and make every kubectl command in its
/// hint target that context.
fn attribute(f: &mut Finding, context: &str) {
    f.context = Some(context.to_string());
    f.hint = hint_for_context(&f.hint, context);
}

/// `hint` with `--context NAME` in every kubectl command it holds, so each runs against the
/// cluster the finding is from: after `kubectl meshvm VERB` (kubectl passes a plugin the flags
/// that follow its name), else right after `kubectl` (a global flag). Commands that already
/// name a context are left alone.
pub fn hint_for_context(hint: &str, context: &str) -> String {
    hint_with_flag(hint, "--context", context)
}

/// `hint` with the connection flag `name value` (`--context`, `--kubeconfig`) in every kubectl
/// command it holds that does not name it already, placed as [`hint_for_context`] says; the
/// value is quoted for the shell when it needs to be.
pub fn hint_with_flag(hint: &str, name: &str, value: &str) -> String {
    let quoted = if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'))
    {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\"'\"'"))
    };
    let flag = format!(" {name} {quoted}");
    let mut out = String::with_capacity(hint.len() + 32);
    let mut rest = hint;
    while let Some(at) = rest.find("kubectl") {
        let before = rest[..at].chars().last();
        let after = &rest[at + "kubectl".len()..];
        let starts_command = before
            .is_none_or(|c| c.is_whitespace() || matches!(c, '`' | '(' | '\'' | '"' | ':' | '|'))
            && after.starts_with(' ');
        out.push_str(&rest[..at + "kubectl".len()]);
        rest = after;
        if !starts_command {
            continue;
        }
        // The command runs to the end of its quoting or line.
        let end = rest.find(['`', '\n', ')']).unwrap_or(rest.len());
        if rest[..end].contains(name) {
            continue;
        }
        if let Some(plugin) = rest.strip_prefix(" meshvm ") {
            let verb_len = plugin
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .unwrap_or(plugin.len());
            let upto = " meshvm ".len() + verb_len;
            out.push_str(&rest[..upto]);
            rest = &rest[upto..];
        }
        out.push_str(&flag);
    }
    out.push_str(rest);
    out
}

/// A `--fix` write's failure as doctor's error.
fn fix_error(error: crate::plan::write::Error) -> Error {
    match error {
        crate::plan::write::Error::Kube(e) => Error::Kube(*e),
        other @ (crate::plan::write::Error::Raced { .. }
        | crate::plan::write::Error::Invalid { .. }) => Error::Write(other),
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing to report.
    #[default]
    Pass,
    /// The check could not run from this source.
    Skip,
    /// Probably harmless, worth a look.
    Warn,
    /// STRICT (or the VM) will break.
    Fail,
}

impl Severity {
    /// The lowercase name used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Pass => "pass",
            Severity::Skip => "skip",
            Severity::Warn => "warn",
            Severity::Fail => "fail",
        }
    }
}

/// When a finding's problem bites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Breaks {
    /// Already broken, whatever the peer authentication mode.
    #[serde(rename = "now")]
    Now,
    /// Breaks once STRICT mTLS is turned on.
    #[serde(rename = "when-strict")]
    WhenStrict,
}

impl Breaks {
    /// The name used in JSON/YAML (`now`, `when-strict`).
    pub fn as_str(self) -> &'static str {
        match self {
            Breaks::Now => "now",
            Breaks::WhenStrict => "when-strict",
        }
    }
    /// The wording used in the table and messages.
    pub fn wording(self) -> &'static str {
        match self {
            Breaks::Now => "breaks now",
            Breaks::WhenStrict => "breaks when STRICT is turned on",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One result of one check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finding {
    /// The check's stable id, e.g. `mtls.default-dr`.
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// `Kind ns/name` of the object concerned, or empty.
    pub object: String,
    /// What was found.
    pub message: String,
    /// What to do about it (may be a suggested patch); empty when nothing to do.
    pub hint: String,
    /// Where the object came from, for SARIF.
    pub origin: Option<Origin>,
    /// The kubeconfig context, when several clusters are checked.
    pub context: Option<String>,
    /// The namespaces the finding concerns (sorted, unique); empty: the whole mesh.
    pub namespaces: Vec<String>,
    /// For warn/fail: whether it breaks now or when STRICT is turned on.
    pub breaks: Option<Breaks>,
}

impl Finding {
    /// A finding with no object.
    pub fn new(check: &'static str, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            check,
            severity,
            object: String::new(),
            message: message.into(),
            hint: String::new(),
            origin: None,
            context: None,
            namespaces: Vec::new(),
            breaks: None,
        }
    }
    /// The one `pass` a check emits when it has nothing to report.
    pub fn pass(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Pass, message)
    }
    /// A `skip`: the source cannot answer.
    pub fn skip(check: &'static str, reason: impl Into<String>) -> Self {
        Self::new(check, Severity::Skip, reason)
    }
    /// A `warn`.
    pub fn warn(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Warn, message)
    }
    /// A `fail`.
    pub fn fail(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Fail, message)
    }
    /// Name the object (and remember where it came from).
    #[must_use]
    pub fn on(mut self, obj: &Obj) -> Self {
        self.object = obj.reference();
        self.origin = obj.origin.as_deref().cloned();
        self
    }
    /// Name an object that is not in the snapshot (e.g. a missing one).
    #[must_use]
    pub fn object(mut self, reference: impl Into<String>) -> Self {
        self.object = reference.into();
        self
    }
    /// Say which namespaces the finding concerns (added to those already named).
    #[must_use]
    pub fn namespaces<S: AsRef<str>>(mut self, namespaces: impl IntoIterator<Item = S>) -> Self {
        for ns in namespaces {
            let ns = ns.as_ref();
            if !ns.is_empty() && !self.namespaces.iter().any(|n| n == ns) {
                self.namespaces.push(ns.to_string());
            }
        }
        self.namespaces.sort();
        self
    }
    /// Say the finding concerns one namespace.
    #[must_use]
    pub fn ns(self, namespace: &str) -> Self {
        self.namespaces([namespace])
    }
    /// It is broken already, whatever the peer authentication mode.
    #[must_use]
    pub fn now(mut self) -> Self {
        self.breaks = Some(Breaks::Now);
        self
    }
    /// It breaks once STRICT is turned on.
    #[must_use]
    pub fn when_strict(mut self) -> Self {
        self.breaks = Some(Breaks::WhenStrict);
        self
    }
    /// Set when it breaks.
    #[must_use]
    pub fn breaks(mut self, breaks: Breaks) -> Self {
        self.breaks = Some(breaks);
        self
    }
    /// Add a hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }
}

/// What every check may read besides the snapshot.
pub struct CheckContext<'a> {
    /// The era (`None`: unknown).
    pub era: Option<Era>,
    /// Auto mTLS in effect.
    pub auto_mtls: bool,
    /// Where auto mTLS came from, for messages.
    pub auto_mtls_source: &'static str,
    /// The Istio namespace.
    pub istio_ns: String,
    /// The root namespace (mesh-wide rules live here).
    pub root_ns: String,
    /// Now, in seconds since the epoch (injected so tests are stable).
    pub now: i64,
    /// Certificates expiring within this many seconds warn.
    pub expiry_warn_secs: i64,
    /// The other clusters of a multi-`--context` run, for cross-cluster checks.
    pub others: Vec<&'a Snapshot>,
    /// The mesh model (DestinationRule index, destinations, peer authentication).
    pub mesh: mesh::Mesh<'a>,
    /// The workloads (live Pods, else the pod templates of `-f` controllers), computed once
    /// for every check that judges workloads.
    pub workloads: Vec<checks::workloads::Workload<'a>>,
}

/// Settings from the command line that change how checks judge.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// `--auto-mtls=true|false`.
    pub auto_mtls: Option<bool>,
    /// Override "now" (seconds since the epoch); tests pin it.
    pub now: Option<i64>,
    /// `--istio-namespace`, when it differs from what the snapshot shows.
    pub istio_namespace: Option<String>,
    /// `--expiry-warning-days` (default 30).
    pub expiry_warning_days: Option<u32>,
}

impl<'a> CheckContext<'a> {
    /// Resolve the context of one snapshot.
    pub fn new(snap: &'a Snapshot, opts: &CheckOptions, others: Vec<&'a Snapshot>) -> Self {
        let era = snap
            .era()
            .or_else(|| snap.bundle.as_ref().and_then(VmBundle::era));
        let configured = snap.auto_mtls_configured();
        let (auto_mtls, auto_mtls_source) = match (opts.auto_mtls, configured) {
            (Some(v), _) => (v, "--auto-mtls"),
            (None, Some(v)) => (v, "the mesh config's enableAutoMtls"),
            (None, None) => match era {
                Some(Era::Modern) => (true, "the modern era's default"),
                Some(Era::Legacy) => (false, "the legacy era's default"),
                None => (false, "the default for an unknown era"),
            },
        };
        let now = opts.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        let istio_ns = opts
            .istio_namespace
            .clone()
            .unwrap_or_else(|| snap.istio_namespace().to_string());
        let root_ns = snap
            .mesh_config()
            .and_then(|m| m.root_namespace.clone())
            .unwrap_or_else(|| istio_ns.clone());
        let mesh = mesh::Mesh::new(snap, &root_ns, &istio_ns, era);
        Self {
            era,
            auto_mtls,
            auto_mtls_source,
            istio_ns,
            root_ns,
            now,
            expiry_warn_secs: i64::from(opts.expiry_warning_days.unwrap_or(30)) * 24 * 3600,
            others,
            mesh,
            workloads: checks::workloads::collect(snap),
        }
    }
}

/// One doctor check.
pub trait Check: Sync {
    /// The stable id (`mtls.default-dr`).
    fn id(&self) -> &'static str;
    /// One line saying what the check looks at (SARIF rule description, `--help`).
    fn describe(&self) -> &'static str;
    /// Run over one snapshot.
    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding>;
    /// When this check's warn/fail findings break, unless a finding says so itself.
    fn breaks(&self) -> Breaks {
        Breaks::WhenStrict
    }
    /// Whether the check runs on a bundle alone (`--bundle` without a cluster or manifests):
    /// the `bundle.*` checks, and checks that judge the bundle among other things.
    fn bundle_check(&self) -> bool {
        self.id().starts_with("bundle.")
    }
    /// Whether the check is about VMs joining (gateway, bundle, network, VM identity): its
    /// findings that name no namespace concern the namespaces VMs live in.
    fn vm_scoped(&self) -> bool {
        false
    }
}

/// Fill in what a warn/fail finding leaves unsaid: when it breaks (the check's default) and
/// which namespaces it concerns — a DestinationRule's destinations' namespaces (none for a
/// mesh-wide host), else the named object's namespace outside the Istio namespace, else (VM
/// checks) the namespaces of WorkloadGroups/WorkloadEntries; otherwise the whole mesh.
fn scope(
    f: &mut Finding,
    check: &dyn Check,
    snap: &Snapshot,
    ctx: &CheckContext,
    rule_at: &std::collections::HashMap<(&str, &str), usize>,
) {
    if !matches!(f.severity, Severity::Warn | Severity::Fail) {
        return;
    }
    if f.breaks.is_none() {
        f.breaks = Some(check.breaks());
    }
    if !f.namespaces.is_empty() {
        return;
    }
    let dr = f
        .object
        .strip_prefix("DestinationRule ")
        .and_then(|r| r.split_once('/'));
    if let Some(rule) = dr
        .and_then(|key| rule_at.get(&key))
        .map(|&i| &ctx.mesh.rules[i])
    {
        if mesh::is_mesh_wide(&rule.host) {
            return;
        }
        let mut nss: Vec<String> = ctx
            .mesh
            .dests_matching(&rule.host)
            .iter()
            .filter(|d| !d.exempt)
            .map(|d| d.ns().to_string())
            .collect();
        nss.extend(mesh::host_namespace(&rule.host).map(str::to_string));
        nss.extend(mesh::namespace_wide(&rule.host).map(str::to_string));
        nss.retain(|n| n != &ctx.istio_ns && !mesh::SYSTEM_NAMESPACES.contains(&n.as_str()));
        let taken = std::mem::take(f);
        *f = taken.namespaces(nss);
        return;
    }
    let object_ns = f
        .object
        .split_once(' ')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(ns, _)| ns.to_string());
    if let Some(ns) = object_ns.filter(|ns| *ns != ctx.istio_ns) {
        let taken = std::mem::take(f);
        *f = taken.ns(&ns);
        return;
    }
    if check.vm_scoped() {
        let vm_ns: Vec<&str> = snap
            .of(Kind::WorkloadGroup)
            .iter()
            .chain(snap.of(Kind::WorkloadEntry))
            .map(Obj::namespace)
            .collect();
        let taken = std::mem::take(f);
        *f = taken.namespaces(vm_ns);
    }
}

/// A `skip` for checks the source cannot serve at all: mTLS checks on a cluster without an Istio
/// control plane or DestinationRules we may list. (A bundle-only run does not run the mesh
/// checks at all: [`run_all`].)
fn precondition(check: &dyn Check, snap: &Snapshot) -> Option<Finding> {
    use crate::snapshot::SourceKind;
    let id = check.id();
    if snap.source == SourceKind::Live && id.starts_with("mtls.") {
        if let Some(why) = snap.refused.get(&Kind::DestinationRule) {
            return Some(Finding::skip(
                id,
                format!("cannot list DestinationRules: {why}"),
            ));
        }
        if !snap.knows(Kind::DestinationRule) || snap.era().is_none() {
            return Some(Finding::skip(
                id,
                "no Istio control plane (istiod, istio-pilot or istio-citadel Deployment) in the cluster: nothing to pre-flight",
            ));
        }
        // Without the era's peer authentication kind every port would look PERMISSIVE: say
        // the kind is not served rather than pass on an empty list.
        let policy = match snap.era() {
            Some(Era::Legacy) => Kind::MeshPolicy,
            _ => Kind::PeerAuthentication,
        };
        if let Some(why) = snap.not_served.get(&policy) {
            return Some(Finding::skip(
                id,
                format!("cannot judge mTLS: the cluster does not serve {policy} ({why})"),
            ));
        }
    }
    None
}

/// The namespaces a snapshot shows (Namespace objects, and those holding Services, workloads,
/// DestinationRules or policies), without Kubernetes' system namespaces: the rows of the
/// readiness table.
fn namespaces_of(snap: &Snapshot) -> Vec<String> {
    let mut out: std::collections::BTreeSet<String> = snap
        .of(Kind::Namespace)
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    for kind in [
        Kind::Service,
        Kind::Pod,
        Kind::DestinationRule,
        Kind::PeerAuthentication,
        Kind::Policy,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
    ] {
        out.extend(
            snap.of(kind)
                .iter()
                .map(|o| o.namespace().to_string())
                .filter(|n| !n.is_empty()),
        );
    }
    out.extend(
        snap.controllers
            .iter()
            .map(Obj::namespace)
            .filter(|n| !n.is_empty())
            .map(str::to_string),
    );
    out.into_iter()
        .filter(|n| !mesh::SYSTEM_NAMESPACES.contains(&n.as_str()))
        .collect()
}

/// Run every check over every snapshot (one per `--context`, or the single source). A snapshot
/// with neither cluster nor manifests (`--bundle` alone) runs only the bundle checks, and the
/// report then says nothing of the mesh (auto mTLS, Pilot release, namespaces).
pub fn run_all(snaps: &[Snapshot], opts: &CheckOptions) -> Report {
    let bundle_only = snaps
        .iter()
        .all(|s| s.source == crate::snapshot::SourceKind::None);
    let mut batches: Vec<Vec<Finding>> = Vec::new();
    let mut era = None;
    let mut auto_mtls = false;
    let mut release = None;
    for (i, snap) in snaps.iter().enumerate() {
        let others = snaps
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s)
            .collect();
        let ctx = CheckContext::new(snap, opts, others);
        // Each DestinationRule by (namespace, name), for `scope`: one lookup per finding.
        let rule_at: std::collections::HashMap<(&str, &str), usize> = ctx
            .mesh
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.ns, r.obj.name()), i))
            .collect();
        // `-f`: where each object is, for findings that name one without carrying its origin.
        let mut origins: std::collections::HashMap<String, &Origin> =
            std::collections::HashMap::new();
        if snap.source == crate::snapshot::SourceKind::Files {
            for o in snap.all().chain(&snap.controllers) {
                if let Some(origin) = &o.origin {
                    // The first document wins, as for SARIF's locations.
                    origins.entry(o.reference()).or_insert(origin);
                }
            }
        }
        if i == 0 {
            era = ctx.era;
            auto_mtls = ctx.auto_mtls;
            release = ctx.era.map(|_| ctx.mesh.release.describe());
        }
        for check in checks::ALL {
            if bundle_only && !check.bundle_check() {
                continue;
            }
            let mut produced = match precondition(*check, snap) {
                Some(skip) => vec![skip],
                None => checks::dedupe(check.run(snap, &ctx)),
            };
            for f in &mut produced {
                scope(f, *check, snap, &ctx, &rule_at);
                if f.origin.is_none()
                    && let Some(origin) = origins.get(&f.object)
                {
                    f.origin = Some((*origin).clone());
                }
                if snaps.len() > 1
                    && let Some(context) = &snap.context
                {
                    attribute(f, context);
                }
            }
            batches.push(produced);
        }
    }
    // Joined once the checks' context is gone: tens of thousands of findings twice over, next
    // to the mesh model, were doctor's peak on a large cluster.
    let mut findings = Vec::with_capacity(batches.iter().map(Vec::len).sum());
    for batch in batches {
        findings.extend(batch);
    }
    let fallback_origin = snaps
        .first()
        .and_then(|s| s.all().find_map(|o| o.origin.clone()))
        .map(|o| Origin { line: 1, ..*o });
    let namespaces = if bundle_only {
        Vec::new()
    } else {
        Report::readiness(snaps.iter().flat_map(namespaces_of), &findings)
    };
    Report {
        era,
        auto_mtls,
        release: release.filter(|_| !bundle_only),
        findings,
        fallback_origin,
        namespaces,
        notes: snaps.iter().flat_map(|s| s.notes.iter().cloned()).collect(),
        bundle_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn resolve(argv: &[&str]) -> Result<DoctorOptions, UsageError> {
        let mut full = vec!["kubectl-meshvm-doctor"];
        full.extend_from_slice(argv);
        DoctorOptions::resolve(DoctorArgs::try_parse_from(full).unwrap())
    }

    #[test]
    fn hints_carry_an_explicit_kubeconfig() {
        assert_eq!(
            hint_with_flag(
                "`kubectl meshvm doctor --fix` or `kubectl -n x get pods`",
                "--kubeconfig",
                "/tmp/my config"
            ),
            "`kubectl meshvm doctor --kubeconfig '/tmp/my config' --fix` or `kubectl --kubeconfig '/tmp/my config' -n x get pods`"
        );
        let named = "`kubectl meshvm doctor --kubeconfig k --fix`";
        assert_eq!(hint_with_flag(named, "--kubeconfig", "other"), named);
    }

    #[test]
    fn fix_hints_confirm_for_scripts() {
        assert_eq!(
            fix_for_scripts(
                "`kubectl meshvm doctor --fix --context w` creates it; `kubectl get x`"
            ),
            "`kubectl meshvm doctor --fix --context w --yes` creates it; `kubectl get x`"
        );
        let unchanged = "`kubectl meshvm doctor --fix --dry-run=server` shows it; `kubectl meshvm doctor --fix --yes`";
        assert_eq!(fix_for_scripts(unchanged), unchanged);
        assert_eq!(fix_for_scripts("no command"), "no command");
    }

    #[test]
    fn sources() {
        assert_eq!(resolve(&[]).unwrap().source, Source::Live(vec![]));
        assert_eq!(
            resolve(&["--context", "a", "--context", "b"])
                .unwrap()
                .source,
            Source::Live(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            resolve(&["-f", "x.yaml", "-f", "dir"]).unwrap().source,
            Source::Files(vec!["x.yaml".into(), "dir".into()])
        );
        assert_eq!(
            resolve(&["--bundle", "b.tar.gz"]).unwrap().source,
            Source::BundleOnly
        );
        assert_eq!(
            resolve(&["--bundle", "b", "--context", "a"])
                .unwrap()
                .source,
            Source::Live(vec!["a".into()])
        );
    }

    #[test]
    fn bad_combinations() {
        assert!(
            resolve(&["-f", "x", "--context", "a"])
                .unwrap_err()
                .to_string()
                .contains("-f and --context")
        );
        assert!(
            resolve(&["-f", "x", "--fix"])
                .unwrap_err()
                .to_string()
                .contains("--fix needs a live cluster")
        );
        assert!(resolve(&["--fix", "--context", "a", "--context", "b"]).is_err());
        assert_eq!(
            resolve(&["--fix", "--bundle", "b"]).unwrap().source,
            Source::Live(vec![])
        );
    }

    #[test]
    fn hints_target_the_findings_context() {
        let h = |hint: &str| hint_for_context(hint, "west");
        assert_eq!(
            h("`kubectl meshvm doctor --fix` applies it; or apply:\nkind: X"),
            "`kubectl meshvm doctor --context west --fix` applies it; or apply:\nkind: X"
        );
        assert_eq!(
            h("set it (kubectl -n a patch destinationrule d --type=merge -p '{}'), or not"),
            "set it (kubectl --context west -n a patch destinationrule d --type=merge -p '{}'), or not"
        );
        assert_eq!(
            h(
                "plug in a CA: `kubectl meshvm prepare --ca-dir DIR`, or kubectl create secret generic cacerts -n istio-system"
            ),
            "plug in a CA: `kubectl meshvm prepare --context west --ca-dir DIR`, or kubectl --context west create secret generic cacerts -n istio-system"
        );
        assert_eq!(
            h("re-create the bundle with `kubectl meshvm bundle`"),
            "re-create the bundle with `kubectl meshvm bundle --context west`"
        );
        // Not a command: kubectl-meshvm, "kubectl's", or one that names its context already.
        for same in [
            "install kubectl-meshvm",
            "as kubectl's -R",
            "`kubectl --context east get pods`",
            "",
        ] {
            assert_eq!(h(same), same);
        }
        assert_eq!(
            hint_for_context("kubectl get pods", "it's prod"),
            "kubectl --context 'it'\"'\"'s prod' get pods"
        );
    }

    #[test]
    fn stdin_is_read_once() {
        let err = resolve(&["-f", "-", "-f", "-"]).unwrap_err();
        assert!(err.message.contains("-f - can be given once"), "{err}");
        assert_eq!(
            resolve(&["-f", "-", "-f", "x.yaml"]).unwrap().source,
            Source::Files(vec!["-".into(), "x.yaml".into()])
        );
    }

    #[test]
    fn istio_namespace_must_hold_a_control_plane() {
        let mut live = Snapshot::from_yaml(testutil::LEGACY).unwrap();
        live.source = crate::snapshot::SourceKind::Live;
        live.context = Some("west".into());
        check_istio_namespace(&mut live, "istio-system").unwrap();
        let err = check_istio_namespace(&mut live, "istio").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no Istio control plane in namespace istio (context west): no istiod, istio-pilot or istio-citadel Deployment and no istio ConfigMap there"
        );
        assert_eq!(
            err.hint().unwrap(),
            "found one in istio-system: pass --istio-namespace istio-system (or drop the flag: doctor finds it)"
        );
        // Nothing to point at: only the hint to pass the right one.
        let mut bare = Snapshot::from_yaml("").unwrap();
        bare.source = crate::snapshot::SourceKind::Live;
        let err = check_istio_namespace(&mut bare, "istio").unwrap_err();
        assert!(err.hint().unwrap().starts_with("pass --istio-namespace NS"));
        // Deployments it may not list: it cannot tell, so no error.
        bare.refused.insert(Kind::Deployment, "forbidden".into());
        check_istio_namespace(&mut bare, "istio").unwrap();
        // A revisioned istiod counts; so does the mesh ConfigMap alone.
        let mut revisioned = Snapshot::from_yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod-1-22, namespace: mesh}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: remote}\n").unwrap();
        revisioned.source = crate::snapshot::SourceKind::Live;
        check_istio_namespace(&mut revisioned, "mesh").unwrap();
        check_istio_namespace(&mut revisioned, "remote").unwrap();
        // -f: no error; a note when the manifests hold the control plane elsewhere.
        let mut files = Snapshot::from_yaml(testutil::LEGACY).unwrap();
        check_istio_namespace(&mut files, "istio").unwrap();
        assert_eq!(files.notes.len(), 1);
        assert!(
            files.notes[0]
                .message
                .starts_with("the manifests hold an Istio control plane in namespace istio-system, not in --istio-namespace istio"),
            "{:?}",
            files.notes
        );
    }

    #[tokio::test]
    async fn bundle_alone_runs_only_the_bundle_checks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("istio-token"), "t").unwrap();
        for format in ["json", "table"] {
            let opts = resolve(&["--bundle", dir.path().to_str().unwrap(), "-o", format]).unwrap();
            let mut out = Vec::new();
            run(&opts, &mut out, &mut Vec::new(), false).await.unwrap();
            let text = String::from_utf8(out).unwrap();
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let mut checks: Vec<&str> = v["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["check"].as_str().unwrap())
                    .collect();
                checks.dedup();
                let bundle: Vec<&str> = checks::ALL
                    .iter()
                    .filter(|c| c.bundle_check())
                    .map(|c| c.id())
                    .collect();
                assert_eq!(checks, bundle, "{v:#}");
                assert!(v.get("autoMtls").is_none() && v.get("pilotRelease").is_none());
                assert_eq!(v["namespaces"], serde_json::json!([]));
                assert_eq!(v["era"], "modern", "from the bundle's istio-token");
            } else {
                assert!(
                    !text.contains("auto mTLS")
                        && !text.contains("bundle only")
                        && !text.contains("mtls.")
                        && !text.contains("NAMESPACE"),
                    "{text}"
                );
                assert!(text.contains("bundle checks only"), "{text}");
            }
        }
    }

    #[tokio::test]
    async fn file_findings_carry_file_and_line_also_when_a_check_names_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, testutil::LEGACY).unwrap();
        let snap = Snapshot::from_files(std::slice::from_ref(&path)).unwrap();
        let report = run_all(std::slice::from_ref(&snap), &CheckOptions::default());
        let named: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| !f.object.is_empty() && snap.all().any(|o| o.reference() == f.object))
            .collect();
        assert!(!named.is_empty());
        for f in named {
            let origin = f.origin.as_ref().unwrap_or_else(|| panic!("{f:?}"));
            assert_eq!(origin.file, path);
            assert!(origin.line > 1);
        }
    }

    #[test]
    fn check_options() {
        let o = resolve(&[
            "--auto-mtls",
            "true",
            "--istio-namespace",
            "mesh",
            "--expiry-warning-days",
            "7",
        ])
        .unwrap();
        assert_eq!(o.checks.auto_mtls, Some(true));
        assert_eq!(o.checks.istio_namespace.as_deref(), Some("mesh"));
        assert_eq!(o.checks.expiry_warning_days, Some(7));
        assert_eq!(resolve(&[]).unwrap().checks.istio_namespace, None);
    }

    #[test]
    fn run_all_scopes_findings_and_answers_per_namespace() {
        let yaml = format!(
            "{}---\n{}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: batch}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: job, namespace: batch}}\nspec: {{template: {{spec: {{containers: [{{name: a}}]}}}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec: {{host: reviews, trafficPolicy: {{tls: {{mode: DISABLE}}}}}}\n",
            testutil::LEGACY,
            testutil::DEFAULT_DR
        );
        let snap = Snapshot::from_yaml(&yaml).unwrap();
        let report = run_all(std::slice::from_ref(&snap), &CheckOptions::default());
        let conflict = report
            .findings
            .iter()
            .find(|f| f.check == "mtls.dr-conflict" && f.severity == Severity::Fail)
            .expect("the DISABLE rule conflicts");
        assert_eq!(
            conflict.namespaces,
            ["bookinfo"],
            "scoped to the rule's host"
        );
        assert_eq!(conflict.breaks, Some(Breaks::WhenStrict));
        assert!(
            report
                .findings
                .iter()
                .filter(|f| matches!(f.severity, Severity::Warn | Severity::Fail))
                .all(|f| f.breaks.is_some()),
            "every warn/fail says when it breaks"
        );
        let row = |n: &str| report.namespaces.iter().find(|r| r.name == n).unwrap();
        assert!(!row("bookinfo").ready);
        assert!(row("bookinfo").blockers.contains(&"mtls.dr-conflict"));
        assert!(!row("batch").blockers.contains(&"mtls.dr-conflict"));
        assert!(row("batch").warnings.contains(&"mtls.plaintext-clients"));
        assert!(!row("bookinfo").warnings.contains(&"mtls.plaintext-clients"));
    }

    #[tokio::test]
    async fn sarif_points_at_the_manifest_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yaml");
        let rule = "# a conflicting rule\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\nspec: {host: reviews, trafficPolicy: {tls: {mode: DISABLE}}}\n";
        std::fs::write(&path, format!("{}---\n{rule}", testutil::LEGACY)).unwrap();
        let opts = resolve(&["-f", path.to_str().unwrap(), "-o", "sarif"]).unwrap();
        let mut out = Vec::new();
        run(&opts, &mut out, &mut Vec::new(), false).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let results = v["runs"][0]["results"].as_array().unwrap();
        let conflict = results
            .iter()
            .find(|r| r["ruleId"] == "mtls.dr-conflict")
            .unwrap();
        let location = &conflict["locations"][0]["physicalLocation"];
        assert_eq!(
            location["artifactLocation"]["uri"],
            path.to_string_lossy().as_ref()
        );
        let line = testutil::LEGACY.lines().count() + 3;
        assert_eq!(location["region"]["startLine"], line, "{conflict:#}");
    }

    #[tokio::test]
    async fn files_run_writes_the_report_and_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, testutil::LEGACY).unwrap();
        let opts = resolve(&["-f", path.to_str().unwrap(), "-o", "json"]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = run(&opts, &mut out, &mut err, false).await.unwrap();
        assert_eq!(outcome, Outcome::Findings);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["era"], "legacy");
        let failed: Vec<&str> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "fail")
            .map(|f| f["check"].as_str().unwrap())
            .collect();
        assert!(
            failed.contains(&"mtls.default-dr") && failed.contains(&"mtls.control-plane-plaintext"),
            "{failed:?}"
        );
        // The same mesh with the planned fixes applied (as manifests) passes.
        let snap = Snapshot::from_files(std::slice::from_ref(&path)).unwrap();
        let ctx = CheckContext::new(&snap, &CheckOptions::default(), vec![]);
        let fixed = fix::render_yaml(&fix::plan(&snap, &ctx));
        std::fs::write(dir.path().join("fix.yaml"), fixed).unwrap();
        let opts = resolve(&["-f", dir.path().to_str().unwrap()]).unwrap();
        let outcome = run(&opts, &mut Vec::new(), &mut Vec::new(), false)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Success);
    }
}
